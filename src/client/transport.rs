//! Opening the byte stream to the gateway (name resolution, TCP to each address in turn, the
//! TLS handshake with the server's name checked) and naming what went wrong with the stable
//! codes a Node user knows from `net` and `tls`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, TcpStream};
use tokio_rustls::rustls::{self, CertificateError, ClientConfig};
use tokio_rustls::TlsConnector;

use crate::errors::{io_code, ErrorCode};
use crate::session::SessionError;

/// A connected stream, plain or TLS.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

pub type Stream = Box<dyn AsyncStream>;

/// A boxed piece of work with no result, as a [`Reactor`] runs it.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A TCP connection attempt, as a [`Reactor`] makes it.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

/// Where a client's sockets get their readiness from, and where its side work runs: by
/// default the tokio runtime that runs the client. A host with an event loop of its own
/// (Node's libuv loop) can supply one, so that a byte from the gateway wakes the thread that
/// answers it and no other.
pub trait Reactor: Send + Sync {
    /// Connects to `address`; the socket is prepared with [`prepare_socket`] first.
    fn connect(&self, address: SocketAddr, keep_alive: Option<Duration>) -> Connecting;
    /// Runs `task` beside the client: a closed connection's last writes (and, in a host that
    /// drives its clients itself, the client's own task).
    fn spawn(&self, task: Task);
}

/// The tokio runtime the client's task runs on.
pub struct Tokio;

impl Reactor for Tokio {
    fn connect(&self, address: SocketAddr, keep_alive: Option<Duration>) -> Connecting {
        Box::pin(async move {
            let tcp = TcpStream::connect(address).await?;
            prepare_socket(socket2::SockRef::from(&tcp), keep_alive);
            Ok(Box::new(tcp) as Stream)
        })
    }

    fn spawn(&self, task: Task) {
        tokio::spawn(task);
    }
}

/// The bytes that went through a client's sockets, counted below TLS (so TLS records and
/// handshakes are included: what went over the wire). Relaxed atomics, added to once per
/// read or write call of the socket, which may run on another thread than the reader.
#[derive(Debug, Default)]
pub struct Traffic {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// A socket whose reads and writes are counted in a [`Traffic`].
struct Counted {
    inner: Stream,
    traffic: Arc<Traffic>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len().saturating_sub(before) as u64;
            self.traffic.received.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl Counted {
    fn count_sent(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(written)) = polled {
            self.traffic
                .sent
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_sent(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_sent(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to `host:port`, trying every address the name resolves to, and completes the TLS
/// handshake when `tls` is given. Every byte through the socket is counted in `traffic`.
pub async fn open(
    reactor: Arc<dyn Reactor>,
    host: String,
    port: u16,
    tls: Option<Arc<ClientConfig>>,
    keep_alive: Option<Duration>,
    traffic: Arc<Traffic>,
) -> Result<Stream, SessionError> {
    let addresses = lookup_host((host.as_str(), port)).await.map_err(|err| {
        SessionError::new(
            ErrorCode::NotFound,
            format!("getaddrinfo ENOTFOUND {host} ({err})"),
        )
    })?;
    let mut last = None;
    let mut tcp = None;
    for address in addresses {
        match reactor.connect(address, keep_alive).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(err) => {
                let code = io_code(&err);
                last = Some(SessionError::new(
                    code.clone(),
                    format!("connect {code} {address}"),
                ));
            }
        }
    }
    let Some(tcp) = tcp else {
        return Err(last.unwrap_or_else(|| {
            SessionError::new(ErrorCode::NotFound, format!("getaddrinfo ENOTFOUND {host}"))
        }));
    };
    let tcp: Stream = Box::new(Counted {
        inner: tcp,
        traffic,
    });
    let Some(config) = tls else {
        return Ok(tcp);
    };
    let name = ServerName::try_from(host.clone())
        .map_err(|_| SessionError::new(ErrorCode::Tls, format!("Invalid server name: {host}")))?;
    let stream = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|err| error(&err))?;
    Ok(Box::new(stream))
}

/// Readies a client socket: no Nagle delay (frames are written whole; waiting to coalesce
/// them only adds latency), and dead-peer detection when `keep_alive` is set.
pub fn prepare_socket(socket: socket2::SockRef<'_>, keep_alive: Option<Duration>) {
    let _ = socket.set_tcp_nodelay(true);
    if let Some(idle) = keep_alive {
        detect_dead_peer(socket, idle);
    }
}

/// A gateway that vanished without closing (power cut, NAT timeout) is noticed by the kernel:
/// keepalive probes after `idle` without traffic, and (Linux) written data left
/// unacknowledged for twice `idle` ends the connection. Best effort: an OS without an option
/// keeps its defaults.
fn detect_dead_peer(socket: socket2::SockRef<'_>, idle: Duration) {
    let interval = (idle / 3).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
    let keepalive = keepalive.with_retries(3);
    let _ = socket.set_tcp_keepalive(&keepalive);
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_user_timeout(Some(idle * 2));
}

/// A socket or TLS failure as the application sees it. TLS certificate problems get the codes
/// Node's `tls` module uses for them, so existing error handling keeps working.
pub fn error(err: &io::Error) -> SessionError {
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return tls_error(tls);
    }
    SessionError::new(io_code(err), err.to_string())
}

fn tls_error(err: &rustls::Error) -> SessionError {
    let code = match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ErrorCode::Cert("CERT_HAS_EXPIRED")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ErrorCode::Cert("CERT_NOT_YET_VALID")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ErrorCode::Cert("ERR_TLS_CERT_ALTNAME_INVALID")
            }
            CertificateError::UnknownIssuer => ErrorCode::Cert("UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
            CertificateError::Revoked => ErrorCode::Cert("CERT_REVOKED"),
            CertificateError::BadSignature => ErrorCode::Cert("CERT_SIGNATURE_FAILURE"),
            _ => ErrorCode::TlsCert,
        },
        // The server refused the handshake, typically our certificate.
        rustls::Error::AlertReceived(_) => ErrorCode::TlsRejected,
        _ => ErrorCode::Tls,
    };
    SessionError::new(code, format!("TLS: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prepared_socket_has_nodelay_keepalive_and_the_write_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        prepare_socket(socket2::SockRef::from(&tcp), Some(Duration::from_secs(9)));
        let socket = socket2::SockRef::from(&tcp);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(9));
            assert_eq!(
                socket.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(3)
            );
            assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
            assert_eq!(
                socket.tcp_user_timeout().unwrap(),
                Some(Duration::from_secs(18))
            );
        }
    }
}
