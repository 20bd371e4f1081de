//! How to reach the gateway and how to behave there ([`ClientOptions`]).

#[cfg(doc)]
use crate::session::Timing;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::ClientConfig;

use super::{Backlog, EventStore, ProxyChoice, Reactor, Resolve, SystemResolver, Tokio};
use crate::credentials::ClientCredentials;
use crate::defaults;
use crate::session::SessionConfig;

/// How to reach the gateway and how to behave there.
#[derive(Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// How names are resolved: the system's resolver unless the host supplies one.
    pub resolver: Arc<dyn Resolve>,
    /// The name sent for SNI and checked in the gateway's certificate, when not `host`.
    pub servername: Option<String>,
    /// Straight to the gateway, through a proxy, or as the environment says (the default).
    pub proxy: ProxyChoice,
    /// TLS (mutual, with the device certificate inside the config) or, when `None`, plain TCP
    /// (the original's rule: plain TCP exactly when the host is `'localhost'`).
    pub tls: Option<Arc<ClientConfig>>,
    /// TLS material asked for a configuration at every connection attempt (files read again,
    /// replaceable at run time); when given, it is used instead of `tls`.
    pub credentials: Option<Arc<ClientCredentials>>,
    pub session: SessionConfig,
    /// The wait between a dropped connection and the next attempt; the original waits 1 s.
    /// This and the next three become the session's [`Timing`].
    pub reconnect_delay: Duration,
    /// Above `reconnect_delay`, the wait doubles with every failed attempt up to this, with
    /// jitter, so that devices cut off together do not all return at the same moment.
    pub max_reconnect_delay: Duration,
    /// Bound on TCP + TLS + WELCOME; an attempt that takes longer fails with `ETIMEDOUT`.
    pub connect_timeout: Option<Duration>,
    /// Bound on waiting for an event's acknowledgement; past it the connection is taken for
    /// dead (a server that stopped reading, a half-open link) and is replaced.
    pub ack_timeout: Option<Duration>,
    /// TCP keepalive idle time; the kernel also gives up on unacknowledged writes after twice
    /// this (`TCP_USER_TIMEOUT`, where the OS has it).
    pub keep_alive: Option<Duration>,
    /// Where sockets get their readiness and side work runs: [`Tokio`] unless the host has
    /// a loop of its own.
    pub reactor: Arc<dyn Reactor>,
    /// The durable outbox the host appends events to (`None`: events are kept in memory
    /// only). The driver removes each event from it when the session forgets it (`Output::Forget`).
    pub store: Option<Arc<EventStore>>,
    /// What the host has not yet taken of the notices handed to the sink; the driver stops
    /// reading while it is over its bound (see [`Backlog`]).
    pub backlog: Arc<Backlog>,
}

impl ClientOptions {
    /// Plain TCP to `host:port` with the original's defaults.
    pub fn new(host: impl Into<String>, port: u16, device_name: impl Into<String>) -> Self {
        ClientOptions {
            host: host.into(),
            port,
            resolver: Arc::new(SystemResolver),
            servername: None,
            proxy: ProxyChoice::Environment,
            tls: None,
            credentials: None,
            session: SessionConfig::new(device_name),
            reconnect_delay: defaults::RECONNECT_DELAY,
            max_reconnect_delay: defaults::RECONNECT_DELAY,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            ack_timeout: defaults::ACK_TIMEOUT,
            keep_alive: defaults::KEEP_ALIVE,
            reactor: Arc::new(Tokio),
            store: None,
            backlog: Arc::default(),
        }
    }
}
