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
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, TcpStream};
use tokio_rustls::rustls::{self, CertificateError, ClientConfig};
use tokio_rustls::TlsConnector;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::eyeballs::{interleave, Race, ATTEMPT_DELAY};
use super::proxy::{self, Proxy};
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

/// How a connection reaches the gateway: straight, or through a proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ProxyChoice {
    /// As the environment says (`HTTPS_PROXY` and the others, see
    /// [`proxy::from_environment`]), for TLS connections; plain TCP goes straight.
    #[default]
    Environment,
    /// Never through a proxy (the option `proxy: false`).
    Direct,
    /// Through this proxy, TLS and plain TCP alike (the option `proxy: 'http://...'`).
    Through(Proxy),
}

/// Addresses for a name, as a [`Resolve`] finds them.
pub type Resolving = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Finds the addresses of a name: the system's resolver ([`SystemResolver`]) unless the host
/// supplies its own (the `lookup` option of the JavaScript client). A failure whose inner
/// error is a [`SessionError`] is reported with that error's code and message.
pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Resolving;
}

/// The system's resolver (`getaddrinfo`, on a blocking thread).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Resolving {
        let host = host.to_owned();
        Box::pin(async move { Ok(lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Where a connection goes: the gateway's name and port, the name its certificate must
/// carry, how names are resolved, and the way there.
#[derive(Clone)]
pub struct Route {
    pub host: String,
    pub port: u16,
    pub resolver: Arc<dyn Resolve>,
    /// The name sent for SNI and checked in the gateway's certificate, when it is not `host`
    /// (as `servername` in Node's `tls.connect`).
    pub servername: Option<String>,
    pub proxy: ProxyChoice,
}

/// Connects to the gateway along `route`, straight (racing the addresses its name resolves
/// to, [`eyeballs`]) or through a proxy (which resolves the name itself), and completes the TLS
/// handshake when `tls` is given. Every byte through the socket is counted in `traffic`.
pub async fn open(
    reactor: Arc<dyn Reactor>,
    route: Route,
    tls: Option<Arc<ClientConfig>>,
    keep_alive: Option<Duration>,
    traffic: Arc<Traffic>,
) -> Result<Stream, SessionError> {
    let Route {
        host,
        port,
        resolver,
        servername,
        proxy,
    } = route;
    let proxy = match proxy {
        ProxyChoice::Through(proxy) => Some(proxy),
        ProxyChoice::Direct => None,
        ProxyChoice::Environment if tls.is_some() => {
            proxy::from_environment(|name| std::env::var(name).ok(), &host, port).transpose()?
        }
        ProxyChoice::Environment => None,
    };
    let tcp = match &proxy {
        None => connect(&reactor, &*resolver, &host, port, keep_alive).await?,
        Some(proxy) => connect(&reactor, &*resolver, &proxy.host, proxy.port, keep_alive)
            .await
            .map_err(|err| {
                SessionError::new(err.code, format!("{} (proxy {proxy})", err.message))
            })?,
    };
    let mut tcp: Stream = Box::new(Counted {
        inner: tcp,
        traffic,
    });
    if let Some(proxy) = &proxy {
        proxy::tunnel(&mut tcp, proxy, &host, port).await?;
    }
    let Some(config) = tls else {
        return Ok(tcp);
    };
    let name = servername.unwrap_or(host);
    let name = ServerName::try_from(name.clone())
        .map_err(|_| SessionError::new(ErrorCode::Tls, format!("Invalid server name: {name}")))?;
    let stream = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|err| error(&err))?;
    Ok(Box::new(stream))
}

/// A TCP connection to `host:port`: the name resolved, then its addresses raced
/// ([`eyeballs::Race`]): IPv6 first, the next attempt 250 ms after the last or at once after
/// one failed, the first to connect kept and the others dropped.
async fn connect(
    reactor: &Arc<dyn Reactor>,
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    keep_alive: Option<Duration>,
) -> Result<Stream, SessionError> {
    let addresses = resolver.resolve(host, port).await.map_err(|err| {
        // A resolver that names its failure (the `lookup` option's `err.code`) is taken at
        // its word.
        match err.get_ref().and_then(|e| e.downcast_ref::<SessionError>()) {
            Some(named) => named.clone(),
            None => SessionError::new(
                ErrorCode::NotFound,
                format!("getaddrinfo ENOTFOUND {host} ({err})"),
            ),
        }
    })?;
    let mut race = Race::new(interleave(addresses), Instant::now(), ATTEMPT_DELAY);
    let mut attempts = FuturesUnordered::new();
    let mut last = None;
    loop {
        let now = Instant::now();
        while let Some(address) = race.start(now) {
            let attempt = reactor.connect(address, keep_alive);
            attempts.push(async move { (address, attempt.await) });
        }
        if race.is_lost() {
            return Err(last.unwrap_or_else(|| {
                SessionError::new(ErrorCode::NotFound, format!("getaddrinfo ENOTFOUND {host}"))
            }));
        }
        let next = race.poll_timeout();
        tokio::select! {
            Some((address, result)) = attempts.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(err) => {
                    let code = io_code(&err);
                    last = Some(SessionError::new(code.clone(), format!("connect {code} {address}")));
                    race.failed(Instant::now());
                }
            },
            _ = sleep_until(next) => {}
        }
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
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
        // The token could not sign (removed, PIN reset, ...): its own code (`EPKCS11TOKEN`).
        rustls::Error::Other(other) => match other.0.downcast_ref::<crate::pkcs11::Pkcs11Error>() {
            Some(token) => token.code(),
            None => ErrorCode::Tls,
        },
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

    /// A resolver that answers every name with these addresses, as a `lookup` option may.
    struct Fixed(Vec<SocketAddr>);

    impl Resolve for Fixed {
        fn resolve(&self, _host: &str, _port: u16) -> Resolving {
            let addresses = self.0.clone();
            Box::pin(async move { Ok(addresses) })
        }
    }

    /// A listener on `::1` that drops every connection's SYN: its one-place accept queue is
    /// taken by a connection nobody accepts, and the kernel drops SYNs to a full queue. `None`
    /// where the host has no IPv6 loopback.
    fn black_hole() -> Option<(socket2::Socket, std::net::TcpStream)> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV6, Type::STREAM, None).ok()?;
        socket.set_only_v6(true).ok()?;
        socket
            .bind(&SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)).into())
            .ok()?;
        socket.listen(0).ok()?;
        let address = socket.local_addr().ok()?.as_socket()?;
        let filler = std::net::TcpStream::connect(address).ok()?;
        Some((socket, filler))
    }

    fn route(port: u16, addresses: Vec<SocketAddr>) -> Route {
        Route {
            host: "gateway.test".into(),
            port,
            resolver: Arc::new(Fixed(addresses)),
            servername: None,
            proxy: ProxyChoice::Direct,
        }
    }

    /// Plain TCP, straight, on tokio, to a name that resolves to `addresses`.
    async fn open_to(addresses: Vec<SocketAddr>) -> Result<Stream, SessionError> {
        let port = addresses.first().map_or(1, SocketAddr::port);
        open(
            Arc::new(Tokio),
            route(port, addresses),
            None,
            None,
            Arc::default(),
        )
        .await
    }

    /// An address on which nobody listens: a connection to it is refused at once.
    fn refused_address() -> SocketAddr {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        closed.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_black_holed_ipv6_address_costs_one_attempt_delay_not_the_connect_timeout() {
        let Some((hole, _filler)) = black_hole() else {
            eprintln!("SKIPPED: no IPv6 loopback to make a black hole on");
            return;
        };
        let hole = hole.local_addr().unwrap().as_socket().unwrap();
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = gateway.local_addr().unwrap();
        // The black hole comes first (IPv6 first), the gateway second.
        let started = Instant::now();
        let opening = open_to(vec![good, hole]);
        let accepting = tokio::spawn(async move { gateway.accept().await });
        let stream = tokio::time::timeout(Duration::from_secs(20), opening).await;
        let took = started.elapsed();
        assert!(stream.expect("connected before 20 s").is_ok());
        let (_, peer) = accepting.await.unwrap().unwrap();
        assert!(peer.is_ipv4(), "the IPv4 gateway won");
        // Without the race this waits for the kernel's SYN retries (over a minute); with
        // it, one attempt delay. Generous for a loaded machine, far from a minute.
        assert!(
            took >= ATTEMPT_DELAY,
            "the IPv6 attempt had its 250 ms first: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    #[tokio::test]
    async fn a_refused_first_address_lets_the_next_start_at_once() {
        let refused = refused_address();
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = gateway.local_addr().unwrap();
        let started = Instant::now();
        let opening = open_to(vec![refused, good]);
        let (stream, _) = tokio::join!(opening, gateway.accept());
        assert!(stream.is_ok());
        assert!(
            started.elapsed() < ATTEMPT_DELAY,
            "no wait after a refusal: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn every_address_refused_is_the_last_refusal() {
        let refused = refused_address();
        let err = open_to(vec![refused, refused]).await.err().unwrap();
        assert_eq!(err.code.code(), "ECONNREFUSED");
        let none = open_to(vec![]).await.err().unwrap();
        assert_eq!(none.code, ErrorCode::NotFound);
    }

    /// A resolver that fails as a `lookup` callback does, with a code of its own.
    struct Failing;

    impl Resolve for Failing {
        fn resolve(&self, host: &str, _port: u16) -> Resolving {
            let err = SessionError::new(
                ErrorCode::Io("EAI_AGAIN".into()),
                format!("lookup {host} failed"),
            );
            Box::pin(async move { Err(io::Error::other(err)) })
        }
    }

    #[tokio::test]
    async fn a_resolver_that_names_its_failure_is_reported_with_that_code() {
        let mut route = route(1, vec![]);
        route.resolver = Arc::new(Failing);
        let err = open(Arc::new(Tokio), route, None, None, Arc::default())
            .await
            .err()
            .unwrap();
        assert_eq!(err.code.code(), "EAI_AGAIN");
        assert_eq!(err.message, "lookup gateway.test failed");
    }
}
