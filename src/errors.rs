//! Every error code the package reports, as one enum: [`ErrorCode::code`] is the stable `code`
//! JavaScript sees on the `Error`. Socket failures are named as Node names them
//! (`ECONNREFUSED`, ...), so a user's `err.code` checks work the same as with the original's
//! `net`/`tls` sockets.

use std::fmt;
use std::io;

/// Why something failed, as the `code` of the JavaScript `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// `EPROTO`: the peer broke the protocol, or sent what could not be read.
    Proto,
    /// `IM491`: a frame over the 10 MiB cap (docs/PROTOCOL.md section 2).
    BufferExceeded,
    /// `ECLOSED`: the client was closed before the event was acknowledged.
    Closed,
    /// `EQUEUEFULL`: the outgoing queue is at its limit.
    QueueFull,
    /// `ETIMEDOUT`: no acknowledgement, or no TLS handshake, in time.
    TimedOut,
    /// `ECONNRESET`: the connection ended under us (not an OS report).
    ConnectionReset,
    /// `ENOTFOUND`: the host name did not resolve.
    NotFound,
    /// `EACK`: the gateway refused an event without saying why.
    Ack,
    /// `EBYE`: the gateway said goodbye with an error but no code.
    Bye,
    /// `EINTERNAL`: a bug in this package (a panic), not the caller's fault.
    Internal,
    /// `ERR_SOCKET_BAD_PORT`, as Node's `net` names it.
    BadPort,
    /// `ERR_SERVER_ALREADY_LISTEN`, as Node's `net` names it.
    AlreadyListening,
    /// `ERR_INVALID_ARG_VALUE`, as Node names it: an argument the native side cannot take (a
    /// value nested too deeply or holding a `BigInt`, an unknown key type).
    InvalidValue,
    /// `EINVALIDKEY`
    InvalidKey,
    /// `EINVALIDCERT`
    InvalidCert,
    /// `EINVALIDCA`
    InvalidCa,
    /// `EKEYMISMATCH`
    KeyMismatch,
    /// `ETLSCONFIG`
    TlsConfig,
    /// `ETLS`: a TLS failure with no more specific code.
    Tls,
    /// `ETLSCERT`: a certificate problem with no more specific code.
    TlsCert,
    /// `ETLSREJECTED`: the peer refused the handshake (typically our certificate).
    TlsRejected,
    /// `EOUTBOXLOCKED`: the outbox directory is open in another `Outbox` (this process or
    /// another).
    OutboxLocked,
    /// `EOUTBOXPERM`: the outbox directory, or a file in it, belongs to another user, or the
    /// directory is writable by other users.
    OutboxPerm,
    /// `EOUTBOX`: the outbox cannot be used as asked (not an outbox, a record too large, data
    /// that changed on disk).
    Outbox,
    /// `EPROXY`: the proxy refused the tunnel (its answer in the message), or the proxy
    /// setting cannot be used.
    Proxy,
    /// A hardware key's failure (`src/pkcs11.rs`): `EPKCS11MODULE`, `EPKCS11TOKEN`,
    /// `EPKCS11PIN`, `EPKCS11PINLOCKED`, `EPKCS11OBJECT`, `EPKCS11KEYTYPE`, `EPKCS11URI`, or
    /// `EPKCS11` (another failure of the token).
    Pkcs11(&'static str),
    /// A certificate verdict named as Node's `tls` names it (`CERT_HAS_EXPIRED`, ...).
    Cert(&'static str),
    /// A socket failure, named by [`io_code`] from what the OS reported.
    Io(String),
    /// A code the gateway sent (in BYE or an acknowledgement): data, passed on as it came.
    Gateway(String),
}

impl ErrorCode {
    /// The stable `code` JavaScript sees on the `Error`.
    pub fn code(&self) -> &str {
        match self {
            ErrorCode::Proto => "EPROTO",
            ErrorCode::BufferExceeded => "IM491",
            ErrorCode::Closed => "ECLOSED",
            ErrorCode::QueueFull => "EQUEUEFULL",
            ErrorCode::TimedOut => "ETIMEDOUT",
            ErrorCode::ConnectionReset => "ECONNRESET",
            ErrorCode::NotFound => "ENOTFOUND",
            ErrorCode::Ack => "EACK",
            ErrorCode::Bye => "EBYE",
            ErrorCode::Internal => "EINTERNAL",
            ErrorCode::BadPort => "ERR_SOCKET_BAD_PORT",
            ErrorCode::AlreadyListening => "ERR_SERVER_ALREADY_LISTEN",
            ErrorCode::InvalidValue => "ERR_INVALID_ARG_VALUE",
            ErrorCode::InvalidKey => "EINVALIDKEY",
            ErrorCode::InvalidCert => "EINVALIDCERT",
            ErrorCode::InvalidCa => "EINVALIDCA",
            ErrorCode::KeyMismatch => "EKEYMISMATCH",
            ErrorCode::TlsConfig => "ETLSCONFIG",
            ErrorCode::Tls => "ETLS",
            ErrorCode::TlsCert => "ETLSCERT",
            ErrorCode::TlsRejected => "ETLSREJECTED",
            ErrorCode::OutboxLocked => "EOUTBOXLOCKED",
            ErrorCode::OutboxPerm => "EOUTBOXPERM",
            ErrorCode::Outbox => "EOUTBOX",
            ErrorCode::Proxy => "EPROXY",
            ErrorCode::Cert(code) | ErrorCode::Pkcs11(code) => code,
            ErrorCode::Io(code) | ErrorCode::Gateway(code) => code,
        }
    }
}

/// The status of the bindings' errors: napi-rs throws a `napi::Error<ErrorCode>` as a JavaScript
/// `Error` whose `code` is this and whose message is the error's reason, alone.
impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        self.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The Node-style code for an I/O error.
pub fn io_code(err: &io::Error) -> ErrorCode {
    use io::ErrorKind::*;
    let known = match err.kind() {
        ConnectionRefused => "ECONNREFUSED",
        ConnectionReset => "ECONNRESET",
        ConnectionAborted => "ECONNABORTED",
        AddrInUse => "EADDRINUSE",
        AddrNotAvailable => "EADDRNOTAVAIL",
        PermissionDenied => "EACCES",
        TimedOut => "ETIMEDOUT",
        BrokenPipe => "EPIPE",
        NotFound => "ENOTFOUND",
        UnexpectedEof => "ECONNRESET",
        HostUnreachable => "EHOSTUNREACH",
        NetworkUnreachable => "ENETUNREACH",
        InvalidInput => "EINVAL",
        _ => "",
    };
    if !known.is_empty() {
        return ErrorCode::Io(known.to_owned());
    }
    ErrorCode::Io(match err.raw_os_error() {
        Some(errno) => format!("E{errno}"),
        None => "EIO".to_owned(),
    })
}

/// The OS's name for a file system error (`ENOSPC`, `EFBIG`, `EACCES`, ...), as Node's `fs`
/// names it; errors a file system does not make are named as [`io_code`] names them.
pub fn fs_code(err: &io::Error) -> ErrorCode {
    use io::ErrorKind::*;
    let known = match err.kind() {
        StorageFull => "ENOSPC",
        FileTooLarge => "EFBIG",
        QuotaExceeded => "EDQUOT",
        ReadOnlyFilesystem => "EROFS",
        NotFound => "ENOENT",
        PermissionDenied => "EACCES",
        AlreadyExists => "EEXIST",
        NotADirectory => "ENOTDIR",
        IsADirectory => "EISDIR",
        DirectoryNotEmpty => "ENOTEMPTY",
        InvalidFilename => "ENAMETOOLONG",
        ResourceBusy => "EBUSY",
        Interrupted => "EINTR",
        OutOfMemory => "ENOMEM",
        Unsupported => "ENOTSUP",
        TooManyLinks => "EMLINK",
        CrossesDevices => "EXDEV",
        StaleNetworkFileHandle => "ESTALE",
        _ => "",
    };
    if !known.is_empty() {
        return ErrorCode::Io(known.to_owned());
    }
    // EIO has the same number on every Unix, and no kind of its own.
    #[cfg(unix)]
    if err.raw_os_error() == Some(5) {
        return ErrorCode::Io("EIO".to_owned());
    }
    io_code(err)
}

/// Compares by the code JavaScript sees, as tests and callers that only know the text do.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.code() == *other
    }
}
