//! The local gateway server: the bundled stand-in for the vendor's gateway, used by the tests,
//! the demo and users' own tests. It speaks the protocol of docs/PROTOCOL.md (section 7, The
//! server side) over plain TCP or TLS (mutual TLS when given a client CA), holds actions for
//! devices until they connect, lets its embedder accept or reject each event, and by default
//! behaves like the original's test server (every event acknowledged, then echoed back as an
//! action).
//!
//! The embedder (the napi layer, or a Rust test) talks to it through [`Server`] methods and
//! receives everything that happens as [`ServerEvent`]s on one channel.
//!
//! This module holds the state shared by all connections. Each connection's protocol is a
//! sans-I/O state machine, `peer::Peer`, driven by a task in `connection.rs`.

mod connection;
pub(crate) mod hub;
pub(crate) mod peer;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::hub::{Delivery, Hub};
use crate::defaults;
use crate::protocol::{ErrorBody, Value};

/// How a server behaves.
#[derive(Clone)]
pub struct ServerOptions {
    /// TLS configuration (see [`crate::tls::server_config`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Echo every accepted event back as an action, as the original's server does.
    pub echo: bool,
    /// Hold each event's acknowledgement until [`Server::decide`] is called for it.
    pub decide_events: bool,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a connected client may take to say HELLO; `None` for ever.
    pub hello_timeout: Option<Duration>,
    /// How long a welcomed client may send nothing before it is disconnected; `None` for ever.
    pub idle_timeout: Option<Duration>,
    /// Most [`ServerEvent::weight`] of events reported and not yet [`Server::delivered`]: while
    /// more are, no connection reads from its socket, so a slow embedder holds the peers back
    /// instead of events piling up. `None` (the default for a Rust embedder, which need not
    /// call `delivered`) is no bound; the Node binding sets [`EVENT_BACKLOG`].
    pub event_backlog: Option<usize>,
}

/// The Node binding's [`ServerOptions::event_backlog`]: events of about this many bytes may
/// wait for JavaScript.
pub const EVENT_BACKLOG: usize = 16 * 1024 * 1024;

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            tls: None,
            echo: defaults::ECHO,
            decide_events: false,
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: defaults::HELLO_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            event_backlog: None,
        }
    }
}

/// What the server knows about one connected peer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    pub id: u64,
    pub remote: SocketAddr,
    /// `metadata.device_name` from the peer's HELLO; `None` before it.
    pub device_name: Option<String>,
    /// Subject of the client certificate, under mutual TLS.
    pub subject: Option<String>,
}

/// An action to deliver to a device.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundAction {
    pub id: Value,
    pub kind: String,
    pub parameters: Value,
}

/// The embedder's answer to an event (with [`ServerOptions::decide_events`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    Reject(ErrorBody),
}

/// Everything that happens on the server, in order per connection.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A peer connected (after the TLS handshake, if any).
    Connection(Arc<ConnectionInfo>),
    /// A peer said HELLO and was welcomed.
    Hello(Arc<ConnectionInfo>),
    /// A peer sent an event. With `decision`, the acknowledgement waits for [`Server::decide`].
    Event {
        conn: Arc<ConnectionInfo>,
        id: Value,
        kind: String,
        bundle: Value,
        decision: Option<u64>,
    },
    /// A peer acknowledged an action; `ticket` is [`Server::queue_action`]'s (None for echoes).
    Acknowledgement {
        conn: Arc<ConnectionInfo>,
        ticket: Option<u64>,
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
    },
    /// A queued action was discarded undelivered because the server closed.
    ActionDiscarded { ticket: u64 },
    /// A peer broke the protocol or failed the TLS handshake; the connection is closed.
    ClientError {
        conn: Option<Arc<ConnectionInfo>>,
        code: String,
        message: String,
    },
    /// A peer's connection ended.
    Disconnect(Arc<ConnectionInfo>),
    /// [`Server::close`] finished: no listener and no connection is left.
    Closed,
}

impl ServerEvent {
    /// About how many bytes the event holds: what [`ServerOptions::event_backlog`] counts.
    pub fn weight(&self) -> usize {
        const NOTICE: usize = 256;
        match self {
            ServerEvent::Event { id, bundle, .. } => NOTICE + weight(id) + weight(bundle),
            ServerEvent::Acknowledgement { correlid, .. } => NOTICE + weight(correlid),
            _ => NOTICE,
        }
    }
}

/// About how many bytes a value holds: its payload and a word or two per item.
pub(crate) fn weight(value: &Value) -> usize {
    const ITEM: usize = 32;
    ITEM + match value {
        Value::Nil | Value::Bool(_) | Value::Number(_) | Value::Date(_) => 0,
        Value::String(s) => s.len(),
        Value::Binary(b) | Value::Ext(_, b) => b.len(),
        Value::Array(items) => items.iter().map(weight).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| k.len() + weight(v)).sum(),
    }
}

/// An action waiting for delivery; echoes have no ticket and are not redelivered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Queued {
    pub(crate) action: OutboundAction,
    pub(crate) ticket: Option<u64>,
}

/// What the server asks of one connection's task.
pub(crate) enum Command {
    /// BYE with no body, then close (the original's `kick()`).
    Kick,
    /// Deliver this action now (the connection is past DRAINED).
    Action(Queued),
    /// The embedder's verdict on the connection's event with this number.
    Verdict { number: u64, verdict: Verdict },
}

/// The server's handle on one connection: its `Hub` link.
struct ConnLink {
    info: Arc<ConnectionInfo>,
    commands: mpsc::UnboundedSender<Command>,
    kill: CancellationToken,
}

impl ConnLink {
    /// Hands actions to the connection's task; those it can no longer take are returned.
    fn deliver(&self, actions: Vec<Queued>) -> Vec<Queued> {
        let mut refused = Vec::new();
        for queued in actions {
            if let Err(mpsc::error::SendError(Command::Action(queued))) =
                self.commands.send(Command::Action(queued))
            {
                refused.push(queued);
            }
        }
        refused
    }
}

#[derive(Default)]
struct State {
    /// The routing: connections, held actions, decisions (see `hub.rs`).
    hub: Hub<ConnLink>,
    listening: Option<(SocketAddr, CancellationToken)>,
    /// `close()` is under way (`Some(graceful)`): connections that register now end at once.
    closing: Option<bool>,
}

impl State {
    /// Carries out the hub's `delivery` of actions handed back by a connection of `device`:
    /// those the chosen connection's task no longer takes go to the front of the held queue.
    fn deliver(&mut self, device: Option<&str>, delivery: Option<Delivery>) {
        let Some(Delivery { conn, actions }) = delivery else {
            return;
        };
        let refused = match self.hub.entry(conn) {
            Some(entry) => entry.link.deliver(actions),
            None => actions,
        };
        self.hub.hold_front(device, refused);
    }
}

pub(crate) struct Shared {
    options: ServerOptions,
    events: mpsc::UnboundedSender<ServerEvent>,
    /// The weight of the events reported and not yet delivered (with an `event_backlog`).
    backlog: AtomicUsize,
    /// Woken when `backlog` falls.
    room: Notify,
    /// Report every event (on by default); a busy gateway whose embedder does not look at
    /// events saves the work. Events awaiting a decision are always reported.
    event_notices: AtomicBool,
    state: Mutex<State>,
    /// TLS material given by [`Server::set_tls`], used instead of `options.tls` from the next
    /// accepted connection.
    tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update; the maps stay usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS configuration for a connection accepted now; `None`: plain TCP.
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        let replaced = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        replaced.or_else(|| self.options.tls.clone())
    }

    fn event_notices(&self) -> bool {
        self.event_notices.load(Ordering::Relaxed)
    }

    fn emit(&self, event: ServerEvent) {
        if self.options.event_backlog.is_some() {
            self.backlog.fetch_add(event.weight(), Ordering::Relaxed);
        }
        // The embedder may have stopped listening; nothing is owed to it then.
        let _ = self.events.send(event);
    }

    /// Whether the events waiting for the embedder are within the bound: connections read
    /// only then.
    fn room_for_events(&self) -> bool {
        self.options
            .event_backlog
            .is_none_or(|limit| self.backlog.load(Ordering::Relaxed) <= limit)
    }

    /// Resolves once [`Shared::room_for_events`] holds.
    async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a `delivered` in between is not missed.
            room.as_mut().enable();
            if self.room_for_events() {
                return;
            }
            room.await;
        }
    }
}

/// Handle on a gateway server. Cheap to share; all methods take `&self`.
pub struct Server {
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Server {
    /// Replaces the TLS material of a TLS server: connections accepted from now on use
    /// `config`; those open keep theirs. False (nothing changed) for a plain TCP server.
    pub fn set_tls(&self, config: Arc<rustls::ServerConfig>) -> bool {
        if self.shared.options.tls.is_none() {
            return false;
        }
        *self.shared.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        true
    }

    /// A server that reports to `events`. It does nothing until [`Server::listen`].
    pub fn new(options: ServerOptions, events: mpsc::UnboundedSender<ServerEvent>) -> Server {
        Server {
            shared: Arc::new(Shared {
                options,
                events,
                backlog: AtomicUsize::new(0),
                room: Notify::new(),
                event_notices: AtomicBool::new(true),
                state: Mutex::new(State::default()),
                tls: Mutex::new(None),
            }),
            tracker: TaskTracker::new(),
        }
    }

    /// Binds and starts accepting. `host` `None` means every interface (IPv6 and IPv4 where
    /// the system allows one socket for both, as Node does); port 0 picks a free port.
    pub async fn listen(&self, host: Option<&str>, port: u16) -> io::Result<SocketAddr> {
        if self.shared.state().listening.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "Server is already listening.",
            ));
        }
        let listener = match host {
            None => bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
                .or_else(|_| bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)))?,
            Some(host) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "host not found");
                let mut bound = None;
                for addr in tokio::net::lookup_host((host, port)).await? {
                    match bind(addr) {
                        Ok(l) => {
                            bound = Some(l);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                bound.ok_or(last)?
            }
        };
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        {
            let mut state = self.shared.state();
            if state.listening.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "Server is already listening.",
                ));
            }
            state.listening = Some((addr, stop.clone()));
        }
        self.tracker.reopen();
        self.tracker.spawn(accept_loop(
            self.shared.clone(),
            listener,
            stop,
            self.tracker.clone(),
        ));
        Ok(addr)
    }

    /// Where the server listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.state().listening.as_ref().map(|(a, _)| *a)
    }

    /// The embedder has taken in events of this [`ServerEvent::weight`] in all (with an
    /// [`ServerOptions::event_backlog`]): connections held back by it read again.
    pub fn delivered(&self, weight: usize) {
        let shared = &self.shared;
        // Saturating: events reported before a close may be delivered after the next listen.
        let _ = shared
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(weight))
            });
        shared.room.notify_waiters();
    }

    /// Whether [`ServerEvent::Event`] is reported for events that need no decision.
    pub fn set_event_notices(&self, on: bool) {
        self.shared.event_notices.store(on, Ordering::Relaxed);
    }

    /// Sends BYE (no body) to every connection and closes them; the listener stays open.
    pub fn kick(&self) {
        for (_, entry) in self.shared.state().hub.entries() {
            let _ = entry.link.commands.send(Command::Kick);
        }
    }

    /// Drops every connection at once, without BYE: what `close(false)` does to them, for a
    /// graceful [`Server::close`] under way that should not wait any longer for its peers.
    /// Connections accepted later by a server that is closing are dropped too.
    pub fn drop_connections(&self) {
        let mut state = self.shared.state();
        if state.closing.is_some() {
            state.closing = Some(false);
        }
        for (_, entry) in state.hub.entries() {
            entry.link.kill.cancel();
        }
    }

    /// Stops listening, ends every connection (politely with BYE when `graceful`, else at
    /// once) and returns when no task of the server is left. Undelivered actions are discarded.
    /// True when it was listening: then a [`ServerEvent::Closed`] is emitted too.
    pub async fn close(&self, graceful: bool) -> bool {
        let was_listening = {
            let mut state = self.shared.state();
            state.closing = Some(graceful);
            for (_, entry) in state.hub.entries() {
                if graceful {
                    let _ = entry.link.commands.send(Command::Kick);
                } else {
                    entry.link.kill.cancel();
                }
            }
            match state.listening.take() {
                Some((_, stop)) => {
                    stop.cancel();
                    true
                }
                None => false,
            }
        };
        self.tracker.close();
        self.tracker.wait().await;
        let discarded: Vec<u64> = {
            let mut state = self.shared.state();
            state.closing = None;
            state.hub.discard()
        };
        for ticket in discarded {
            self.shared.emit(ServerEvent::ActionDiscarded { ticket });
        }
        if was_listening {
            self.shared.emit(ServerEvent::Closed);
        }
        was_listening
    }

    /// Queues an action for the device whose HELLO carried `device_name`: delivered live if it
    /// is connected past DRAINED, otherwise held and delivered before its next DRAINED. The
    /// returned ticket comes back in the [`ServerEvent::Acknowledgement`] for it.
    pub fn queue_action(&self, device_name: &str, action: OutboundAction) -> u64 {
        let mut state = self.shared.state();
        let (ticket, delivery) = state.hub.queue_action(device_name, action);
        if let Some(Delivery { conn, actions }) = delivery {
            // A connection whose task is gone leaves its actions held, behind the others.
            let refused = match state.hub.entry(conn) {
                Some(entry) => entry.link.deliver(actions),
                None => actions,
            };
            for queued in refused {
                state.hub.hold(device_name, queued);
            }
        }
        ticket
    }

    /// Answers the event that carried `decision`; false when nothing waits for it any more.
    pub fn decide(&self, decision: u64, verdict: Verdict) -> bool {
        let mut state = self.shared.state();
        let Some((awaited, link)) = state.hub.decide(decision) else {
            return false;
        };
        let number = awaited.number;
        link.commands
            .send(Command::Verdict { number, verdict })
            .is_ok()
    }

    /// The peers connected now, oldest first.
    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        let mut list: Vec<_> = self
            .shared
            .state()
            .hub
            .entries()
            .filter(|(_, e)| e.announced())
            .map(|(_, e)| e.link.info.clone())
            .collect();
        list.sort_by_key(|i| i.id);
        list
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(511)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(connection::run(shared.clone(), stream, remote));
                }
                // Out of descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
