//! Stable error codes for socket failures, named as Node names them (`ECONNREFUSED`, ...), so
//! a user's `err.code` checks work the same as with the original's `net`/`tls` sockets.

use std::io;

/// The Node-style code for an I/O error.
pub fn io_code(err: &io::Error) -> String {
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
        return known.to_owned();
    }
    match err.raw_os_error() {
        Some(errno) => format!("E{errno}"),
        None => "EIO".to_owned(),
    }
}
