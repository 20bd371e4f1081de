//! The client driver: one tokio task per client that owns everything with a clock or a socket
//! (name resolution, TCP, TLS, the clock) and feeds what happens to the protocol [`Session`],
//! with the time. It carries out the session's [`Output`]s, sleeps until the session's
//! earliest deadline ([`Session::poll_timeout`], one sleep) and hands its notices to a sink in
//! batches, one
//! batch per burst of input, so a JavaScript host is woken once per burst and never per frame.
//! The next queued event is written the moment the previous one is acknowledged, inside this
//! task, without a round trip through the host.
//!
//! The task needs a tokio runtime context for its timers and name resolution. By default it
//! runs on that runtime and its sockets use tokio's reactor; a host with an event loop of its
//! own supplies a [`Reactor`] and polls the task there (the Node binding does, on the
//! JavaScript thread's libuv loop). Dropping the [`ClientHandle`] ends the task and its
//! connection.

mod store;
mod transport;

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::ClientConfig;

use crate::defaults;
use crate::errors::ErrorCode;
use crate::protocol::{ErrorBody, Frame, FrameError, FrameReader};
use crate::session::{
    ActionKey, Notice, OutgoingEvent, Output, Session, SessionConfig, SessionError, SessionStats,
    Timing, Xorshift,
};

pub use store::{EventStore, Restored, StoreStats};
pub use transport::{
    open, prepare_socket, Connecting as TcpConnecting, Reactor, Stream, Task, Tokio, Traffic,
};

/// How to reach the gateway and how to behave there.
#[derive(Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// TLS (mutual, with the device certificate inside the config) or, when `None`, plain TCP
    /// (the original's rule: plain TCP exactly when the host is `'localhost'`).
    pub tls: Option<Arc<ClientConfig>>,
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
    /// only). The driver removes each event from it when the session releases it.
    pub store: Option<Arc<EventStore>>,
    /// What the host has not yet taken of the notices handed to the sink; the driver stops
    /// reading while it is over its bound (see [`Backlog`]).
    pub backlog: Arc<Backlog>,
}

/// Read-ahead bound between the driver and a host whose thread may be busy. The driver counts
/// what each frame it reads costs ([`Backlog::FRAME_COST`] plus its length) and stops reading
/// the socket once [`Backlog::LIMIT`] is passed; the host calls [`Backlog::taken`] when it
/// takes the notices off the sink, which wakes the driver. TCP then pushes back on the gateway:
/// a flood meets a busy JavaScript thread with a few MB read ahead, not with everything the
/// network can carry. Under the libuv driver the host takes every batch at the end of the
/// turn that made it, so the bound is never reached there.
#[derive(Debug, Default)]
pub struct Backlog {
    cost: AtomicUsize,
    taken: Notify,
}

impl Backlog {
    /// Read-ahead allowed before the driver waits for the host.
    pub const LIMIT: usize = 4 << 20;
    /// What a frame costs beyond its bytes (its notice and the values made of it): so that a
    /// flood of tiny frames is bounded by count too.
    pub const FRAME_COST: usize = 512;

    /// The host took every notice handed to it so far.
    pub fn taken(&self) {
        if self.cost.swap(0, Ordering::AcqRel) > 0 {
            self.taken.notify_one();
        }
    }

    fn read(&self, frame: &Frame) {
        self.cost
            .fetch_add(Self::FRAME_COST + frame.body.len(), Ordering::AcqRel);
    }

    fn full(&self) -> bool {
        self.cost.load(Ordering::Acquire) >= Self::LIMIT
    }
}

impl ClientOptions {
    /// Plain TCP to `host:port` with the original's defaults.
    pub fn new(host: impl Into<String>, port: u16, device_name: impl Into<String>) -> Self {
        ClientOptions {
            host: host.into(),
            port,
            tls: None,
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

/// What the host asks of the client.
// `Crash` is a test hook of the Node binding, not a non-exhaustive marker: without the
// binding nothing constructs it, which is what the lint takes it for.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug)]
pub enum Command {
    /// The user's `connect()`; `cycle` is echoed back in [`Batch::idle`] so the host can tell
    /// an idle report that predates its latest `connect()` from a current one.
    Connect {
        cycle: u64,
    },
    /// Boxed, as is [`Command::Ack`]'s body: the command channel keeps a block of 32 commands
    /// per client from the start, so the size of a command is paid 32 times by every client.
    Send(Box<OutgoingEvent>),
    /// Events found in the durable outbox, queued ahead of anything sent after them
    /// ([`Session::restore`]).
    Restore(Vec<OutgoingEvent>),
    Ack(Box<ActionAck>),
    Close {
        keep_queue: bool,
    },
    /// Panics inside the client's task, to prove that a panic is caught and reported.
    #[doc(hidden)]
    Crash,
}

/// An action's acknowledgement, as the host gives it ([`Command::Ack`]).
#[derive(Debug)]
pub struct ActionAck {
    /// The action's id as delivered ([`crate::session::Notice::Action`]'s `key`).
    pub id: ActionKey,
    /// Set when the action failed.
    pub error: Option<ErrorBody>,
}

/// Notices for the host, gathered over one burst of input.
#[derive(Debug, Default)]
pub struct Batch {
    pub notices: Vec<Notice>,
    /// Set when the client has nothing left to do (no socket, no attempt, no timer) after a
    /// `connect()` with this cycle number: the host may stop keeping its process alive for it.
    pub idle: Option<u64>,
    /// The client stopped for good (a bug in this package, caught): the host must fail every
    /// callback it still holds with this error. Never set otherwise.
    pub fatal: Option<SessionError>,
}

impl Batch {
    /// Appends a later batch: its notices after these, its idle and fatal reports over these.
    pub fn absorb(&mut self, later: Batch) {
        self.notices.extend(later.notices);
        if later.idle.is_some() {
            self.idle = later.idle;
        }
        if later.fatal.is_some() {
            self.fatal = later.fatal;
        }
    }
}

/// The host's side of a running client. Dropping it ends the client's task.
#[derive(Clone)]
pub struct ClientHandle {
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Published>,
}

impl ClientHandle {
    /// Queues a command; false when the task has already ended.
    pub fn command(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// The client's counters, read from any thread without waiting for its task: the
    /// session's as of the end of the task's latest turn, the bytes as of the latest read or
    /// write of the socket.
    pub fn stats(&self) -> ClientStats {
        self.stats.read()
    }
}

/// What a client has done, as `client.stats()` shows it (README, `client.stats()`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientStats {
    /// The protocol's counters.
    pub session: SessionStats,
    /// Bytes written to the socket, TLS records and handshakes included.
    pub bytes_sent: u64,
    /// Bytes read from the socket, TLS records and handshakes included.
    pub bytes_received: u64,
    /// Between the write of the frame of the event acknowledged last and the read of its
    /// acknowledgement; `None` before the first acknowledgement.
    pub rtt: Option<Duration>,
}

/// The counters as the host reads them while the task runs, maybe on another thread: relaxed
/// atomics, stored by the driver once per turn (the session's) and added to by the socket
/// ([`Traffic`]). A reader may see one turn's values beside the previous turn's, never a torn
/// number.
#[derive(Debug, Default)]
struct Published {
    queued: AtomicU64,
    in_flight: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    resent: AtomicU64,
    failed_closed: AtomicU64,
    failed_queue_full: AtomicU64,
    actions_received: AtomicU64,
    actions_acked: AtomicU64,
    reconnects: AtomicU64,
    events_written: AtomicU64,
    last_acked_write: AtomicU64,
    connected: AtomicBool,
    drained: AtomicBool,
    /// Nanoseconds plus one; 0 before the first round trip.
    rtt: AtomicU64,
    traffic: Arc<Traffic>,
}

impl Published {
    fn store(&self, s: &SessionStats) {
        let relaxed = Ordering::Relaxed;
        self.queued.store(s.queued, relaxed);
        self.in_flight.store(s.in_flight, relaxed);
        self.acknowledged.store(s.acknowledged, relaxed);
        self.rejected.store(s.rejected, relaxed);
        self.resent.store(s.resent, relaxed);
        self.failed_closed.store(s.failed_closed, relaxed);
        self.failed_queue_full.store(s.failed_queue_full, relaxed);
        self.actions_received.store(s.actions_received, relaxed);
        self.actions_acked.store(s.actions_acked, relaxed);
        self.reconnects.store(s.reconnects, relaxed);
        self.events_written.store(s.events_written, relaxed);
        self.last_acked_write.store(s.last_acked_write, relaxed);
        self.connected.store(s.connected, relaxed);
        self.drained.store(s.drained, relaxed);
    }

    fn read(&self) -> ClientStats {
        let relaxed = Ordering::Relaxed;
        let rtt = self.rtt.load(relaxed);
        ClientStats {
            session: SessionStats {
                queued: self.queued.load(relaxed),
                in_flight: self.in_flight.load(relaxed),
                acknowledged: self.acknowledged.load(relaxed),
                rejected: self.rejected.load(relaxed),
                resent: self.resent.load(relaxed),
                failed_closed: self.failed_closed.load(relaxed),
                failed_queue_full: self.failed_queue_full.load(relaxed),
                actions_received: self.actions_received.load(relaxed),
                actions_acked: self.actions_acked.load(relaxed),
                reconnects: self.reconnects.load(relaxed),
                connected: self.connected.load(relaxed),
                drained: self.drained.load(relaxed),
                events_written: self.events_written.load(relaxed),
                last_acked_write: self.last_acked_write.load(relaxed),
            },
            bytes_sent: self.traffic.sent.load(relaxed),
            bytes_received: self.traffic.received.load(relaxed),
            rtt: rtt.checked_sub(1).map(Duration::from_nanos),
        }
    }
}

/// Creates a client: the handle, and the task to spawn on a tokio runtime. `sink` receives
/// every batch, in order, from that task. A panic inside the task is caught there and
/// reported as a last, fatal batch: it never unwinds into the host.
pub fn client<S>(options: ClientOptions, sink: S) -> (ClientHandle, impl Future<Output = ()>)
where
    S: Fn(Batch) + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Arc::new(sink);
    let stats = Arc::new(Published::default());
    let driver = Driver::new(options, sink.clone(), stats.clone());
    // Combinators rather than an `async` block: a block would keep the driver it captures
    // beside the running driver's future, twice its size in every client's task.
    let task = AssertUnwindSafe(driver.run(rx))
        .catch_unwind()
        .map(move |outcome| {
            if let Err(panic) = outcome {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                sink(Batch {
                    notices: Vec::new(),
                    idle: None,
                    fatal: Some(SessionError::new(
                        ErrorCode::Internal,
                        format!("imt-gateway internal error, the client stopped: {reason}"),
                    )),
                });
            }
        });
    (
        ClientHandle {
            commands: tx,
            stats,
        },
        task,
    )
}

/// Frames read in one burst before the batch goes out, so a flood cannot starve the host.
const BURST: usize = 256;

type Connecting = Pin<Box<dyn Future<Output = Result<Stream, SessionError>> + Send>>;

/// An open connection: frames in, bytes out.
struct Connection {
    reader: FrameReader<ReadHalf<Stream>>,
    out: Outgoing,
}

/// The writing side. Outgoing frames are kept as the session gave them (shared `Bytes`), so a
/// large event is never copied on its way to the socket.
struct Outgoing {
    writer: WriteHalf<Stream>,
    queue: VecDeque<Bytes>,
    /// The writer holds bytes that have not been flushed yet.
    unflushed: bool,
}

impl Connection {
    fn new(stream: Stream) -> Connection {
        let (read, write) = tokio::io::split(stream);
        Connection {
            // Empty until a frame arrives (see `FrameReader::release_idle`).
            reader: FrameReader::new(read),
            out: Outgoing {
                writer: write,
                queue: VecDeque::new(),
                unflushed: false,
            },
        }
    }

    /// Writes what is left (a BYE, an acknowledgement), then closes, within a bound so that
    /// a peer that stopped reading cannot hold the connection open.
    async fn finish(self) {
        let mut out = self.out;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while out.wants_write() {
                out.write_some().await?;
            }
            out.writer.shutdown().await
        })
        .await;
    }
}

/// At most this many queued frames go to the writer in one vectored write: a pipelined burst
/// becomes one TLS record and one system call, and no frame is copied to get there.
const WRITE_BATCH: usize = 64;

/// Drops the first `written` bytes of the write queue: the frames written whole, and the written
/// part of the next.
fn consume(queue: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if front.len() > written {
            front.advance(written);
            return;
        }
        written -= front.len();
        queue.pop_front();
    }
}

impl Outgoing {
    fn wants_write(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// Writes some of the write queue, or flushes once it is empty; cancel-safe, as it is raced
    /// against reading.
    async fn write_some(&mut self) -> std::io::Result<()> {
        if !self.queue.is_empty() {
            // The slices are made afresh on each poll, on the stack: kept across the wait they
            // would be a kilobyte in every client's task.
            let (writer, queue) = (&mut self.writer, &self.queue);
            let written = std::future::poll_fn(|cx| {
                let mut slices = [std::io::IoSlice::new(&[]); WRITE_BATCH];
                let count = slices
                    .iter_mut()
                    .zip(queue)
                    .map(|(slice, frame)| *slice = std::io::IoSlice::new(frame))
                    .count();
                Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            consume(&mut self.queue, written);
            self.unflushed = true;
        } else {
            self.writer.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }
}

/// Waits for `future` if there is one, forever otherwise (a disabled `select!` branch).
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_frame(
    reader: Option<&mut FrameReader<ReadHalf<Stream>>>,
) -> Option<Result<Frame, FrameError>> {
    match reader {
        Some(reader) => reader.next().await,
        None => std::future::pending().await,
    }
}

async fn write_some(out: Option<&mut Outgoing>) -> std::io::Result<()> {
    match out {
        Some(out) => out.write_some().await,
        None => std::future::pending().await,
    }
}

/// What woke the driver up.
enum Input {
    Command(Option<Command>),
    Opened(Result<Stream, SessionError>),
    Frame(Option<Result<Frame, FrameError>>),
    Written(std::io::Result<()>),
    /// The session's deadline passed.
    Timeout,
    /// The host took the notices it was behind on: reading may go on.
    Caught,
}

/// The driver's one sleep: until the session's earliest deadline
/// ([`Session::poll_timeout`], asked after every input), or none.
#[derive(Default)]
struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline the sleep is set for; `None` when the session has none.
    deadline: Option<std::time::Instant>,
}

impl Timer {
    /// Sets the sleep for `deadline`, when that is new: the sleep is made once and reset after.
    fn arm(&mut self, deadline: Option<std::time::Instant>) {
        if deadline == self.deadline {
            return;
        }
        self.deadline = deadline;
        let Some(at) = deadline else {
            return;
        };
        let at = Instant::from_std(at);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at),
            slot => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Resolves when the deadline passes (and forgets it); never while there is none.
    async fn expired(&mut self) {
        std::future::poll_fn(|cx| {
            let Some(sleep) = self.sleep.as_mut().filter(|_| self.deadline.is_some()) else {
                return std::task::Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return std::task::Poll::Pending;
            }
            self.deadline = None;
            std::task::Poll::Ready(())
        })
        .await
    }
}

/// When the events' frames were written, to time their round trips: `(first, last, at)` for
/// the writes numbered `first..=last` (see [`SessionStats::events_written`]), made by one
/// input. Only the last `max_in_flight` writes can still be acknowledged, so it keeps at most
/// that many entries, and none is made or looked up unless an event was written or
/// acknowledged.
#[derive(Default)]
struct WriteTimes(VecDeque<(u64, u64, std::time::Instant)>);

impl WriteTimes {
    /// Called after each input with the session's `(events_written, last_acked_write)` from
    /// before it: notes this input's writes, and returns the round trip of the event it saw
    /// acknowledged.
    fn update(&mut self, before: (u64, u64), after: (u64, u64), window: u64) -> Option<Duration> {
        if before == after {
            return None;
        }
        let now = std::time::Instant::now();
        let (written, acked) = after;
        let rtt = if acked != before.1 {
            // Entries are in write order: a binary search, even with a wide window.
            let at = self.0.partition_point(|(_, last, _)| *last < acked);
            self.0
                .get(at)
                .filter(|(first, _, _)| *first <= acked)
                .map(|(_, _, at)| now.saturating_duration_since(*at))
        } else {
            None
        };
        if written != before.0 {
            self.0.push_back((before.0 + 1, written, now));
            while self
                .0
                .front()
                .is_some_and(|(_, last, _)| last.saturating_add(window) <= written)
            {
                self.0.pop_front();
            }
        }
        rtt
    }
}

struct Driver<S> {
    options: ClientOptions,
    session: Session,
    /// What `ClientHandle::stats` reads, stored at the end of every turn.
    stats: Arc<Published>,
    write_times: WriteTimes,
    sink: Arc<S>,
    connection: Option<Connection>,
    connecting: Option<Connecting>,
    /// Sleeps until the session's earliest deadline.
    timer: Timer,
    /// The time of the turn's inputs, read once per turn.
    now: std::time::Instant,
    batch: Batch,
    cycle: u64,
    /// The last batch said idle; only a change is reported again.
    reported_idle: bool,
    /// The outbox was told of an answer this turn: its tombstones wait for `flush_notices`.
    released: bool,
}

impl<S: Fn(Batch) + Send + Sync + 'static> Driver<S> {
    fn new(options: ClientOptions, sink: Arc<S>, stats: Arc<Published>) -> Self {
        let timing = Timing {
            reconnect_delay: options.reconnect_delay,
            max_reconnect_delay: options.max_reconnect_delay,
            connect_timeout: options.connect_timeout,
            ack_timeout: options.ack_timeout,
        };
        Driver {
            session: Session::new(options.session.clone(), timing, Xorshift::new(seed())),
            options,
            stats,
            write_times: WriteTimes::default(),
            sink,
            connection: None,
            connecting: None,
            timer: Timer::default(),
            now: std::time::Instant::now(),
            batch: Batch::default(),
            cycle: 0,
            reported_idle: true,
            released: false,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let input = self.next_input(&mut commands).await;
            if let Input::Command(None) = input {
                break;
            }
            self.now = std::time::Instant::now();
            // Only a frame says more may be waiting to be read, and only when bytes of the next
            // one are already buffered: else the next turn's select polls the reader anyway,
            // and a poll that finds nothing still costs a pass through the TLS layers.
            let read_on = matches!(input, Input::Frame(_));
            self.handle(input);
            // Whatever else is ready right now joins the same batch.
            for _ in 0..BURST {
                match commands.try_recv() {
                    Ok(command) => self.handle(Input::Command(Some(command))),
                    Err(_) => break,
                }
            }
            let mut frames = 0;
            while read_on && frames < BURST && !self.options.backlog.full() {
                let Some(connection) = self
                    .connection
                    .as_mut()
                    .filter(|c| !c.reader.read_buffer().is_empty())
                else {
                    break;
                };
                match connection.reader.next().now_or_never() {
                    Some(frame) => self.handle(Input::Frame(frame)),
                    None => break,
                }
                frames += 1;
            }
            self.write_now();
            self.flush_notices();
            if frames == BURST {
                // More may be waiting: let the host (and other clients) run before reading on.
                YieldNow(false).await;
            }
        }
        // The host is gone: nobody is left to tell, so just let the connection go.
        if let Some(connection) = self.connection.take() {
            self.options.reactor.spawn(Box::pin(connection.finish()));
        }
    }

    async fn next_input(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Input {
        let backlog = &self.options.backlog;
        let behind = backlog.full();
        let (reader, out) = match self.connection.as_mut() {
            Some(Connection { reader, out }) => (
                Some(reader).filter(|_| !behind),
                Some(out).filter(|o| o.wants_write()),
            ),
            None => (None, None),
        };
        tokio::select! {
            command = commands.recv() => Input::Command(command),
            () = backlog.taken.notified(), if behind => Input::Caught,
            frame = next_frame(reader) => Input::Frame(frame),
            written = write_some(out) => Input::Written(written),
            opened = maybe(self.connecting.as_mut()) => Input::Opened(opened),
            () = self.timer.expired() => Input::Timeout,
        }
    }

    fn handle(&mut self, input: Input) {
        let writes = self.session.event_writes();
        let outputs = match input {
            Input::Command(None) => Vec::new(),
            Input::Command(Some(command)) => match command {
                Command::Connect { cycle } => {
                    self.cycle = cycle;
                    self.reported_idle = false;
                    self.session.connect(self.now)
                }
                Command::Send(event) => self.session.send(*event, self.now),
                Command::Restore(events) => {
                    let mut out = Vec::new();
                    for event in events {
                        out.extend(self.session.restore(event, self.now));
                    }
                    out
                }
                Command::Ack(ack) => {
                    let ActionAck { id, error } = *ack;
                    self.session.ack_action(id, error)
                }
                Command::Close { keep_queue } => self.session.close(keep_queue),
                Command::Crash => panic!("crash requested"),
            },
            Input::Opened(Ok(stream)) => {
                self.connecting = None;
                self.connection = Some(Connection::new(stream));
                self.session.connected()
            }
            Input::Opened(Err(err)) => {
                self.connecting = None;
                self.session.connect_failed(err, self.now)
            }
            Input::Frame(Some(Ok(frame))) => {
                self.options.backlog.read(&frame);
                self.session.handle_frame(Ok(frame), self.now)
            }
            Input::Frame(Some(Err(FrameError::Io(err)))) | Input::Written(Err(err)) => {
                self.connection = None;
                self.session
                    .connection_lost(Some(transport::error(&err)), self.now)
            }
            // The protocol's call (IM491, ECONNRESET); a stream that ended inside a frame has
            // no more to read.
            Input::Frame(Some(Err(err))) => {
                if matches!(err, FrameError::Truncated { .. }) {
                    self.connection = None;
                }
                self.session.handle_frame(Err(err), self.now)
            }
            Input::Frame(None) => {
                self.connection = None;
                self.session.connection_lost(None, self.now)
            }
            Input::Written(Ok(())) | Input::Caught => Vec::new(),
            // The sleep ended: at least the deadline, whatever the clocks' rounding.
            Input::Timeout => {
                let due = self
                    .session
                    .poll_timeout()
                    .map_or(self.now, |d| d.max(self.now));
                self.session.handle_timeout(due)
            }
        };
        self.apply(outputs);
        self.timer.arm(self.session.poll_timeout());
        let window = self.options.session.max_in_flight.max(1) as u64;
        if let Some(rtt) = self
            .write_times
            .update(writes, self.session.event_writes(), window)
        {
            let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX - 1);
            self.stats.rtt.store(nanos + 1, Ordering::Relaxed);
        }
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Connect => {
                    self.connecting = Some(Box::pin(open(
                        self.options.reactor.clone(),
                        self.options.host.clone(),
                        self.options.port,
                        self.options.tls.clone(),
                        self.options.keep_alive,
                        self.stats.traffic.clone(),
                    )));
                }
                Output::Write(bytes) => self.write(bytes),
                Output::CloseSocket => {
                    self.connecting = None;
                    if let Some(connection) = self.connection.take() {
                        self.options.reactor.spawn(Box::pin(connection.finish()));
                    }
                }
                Output::Emit(notice) => self.batch.notices.push(notice),
                Output::Release(stored) => {
                    if let Some(store) = &self.options.store {
                        store.release(stored);
                        self.released = true;
                    }
                }
            }
        }
    }

    /// Writes the write queue while the socket takes it: the next event or acknowledgement is on
    /// the wire before JavaScript hears of the batch that made it, so the peer works on it
    /// meanwhile, and no extra turn of the loop is spent only on writing. What the socket does
    /// not take now is left to the next turn's `select!`, which also waits for it with the
    /// task's own waker.
    fn write_now(&mut self) {
        while let Some(out) = self
            .connection
            .as_mut()
            .map(|c| &mut c.out)
            .filter(|out| out.wants_write())
        {
            match out.write_some().now_or_never() {
                Some(Ok(())) => {}
                Some(Err(err)) => {
                    self.handle(Input::Written(Err(err)));
                    break;
                }
                None => break,
            }
        }
    }

    fn write(&mut self, bytes: Bytes) {
        if let Some(connection) = self.connection.as_mut() {
            connection.out.queue.push_back(bytes);
        }
    }

    fn flush_notices(&mut self) {
        // No socket, no attempt, no timer: the session waits for the user. (Every phase but
        // `Idle` keeps one of them: an attempt, a connection, or the reconnect wait.)
        let idle = self.connection.is_none()
            && self.connecting.is_none()
            && self.session.poll_timeout().is_none();
        if idle && !self.reported_idle {
            self.reported_idle = true;
            self.batch.idle = Some(self.cycle);
        }
        if std::mem::take(&mut self.released) {
            if let Some(store) = &self.options.store {
                // The turn's tombstones in one write, before anyone hears of the answers. One
                // that cannot be written (a full disk) only means the event may be sent again
                // by a later process; the outbox counts it.
                let _ = store.flush();
            }
        }
        // Before the batch goes: whoever it wakes reads the counters that include it.
        let stats = self.session.stats();
        self.stats.store(&stats);
        // Waiting with nothing in flight, the connection keeps no read buffer: an idle
        // client's largest allocation, made again when a frame arrives. Not right after a
        // large frame, whose memory the next one may reuse (see `FrameReader::release_idle`).
        if stats.in_flight == 0 {
            if let Some(connection) = self.connection.as_mut() {
                connection.reader.release_idle();
            }
        }
        if !self.batch.notices.is_empty() || self.batch.idle.is_some() {
            (self.sink)(std::mem::take(&mut self.batch));
        }
    }
}

/// Gives way once: pending on the first poll (after asking to be polled again), ready on the
/// next. Unlike tokio's `yield_now` it needs no runtime, so it works under any executor.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// A seed for the reconnect jitter that differs between processes (the clock) and between
/// clients of one process (an address on this task's stack).
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let address = &local as *const u8 as u64;
    nanos ^ address.rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, Value};

    /// A writer that records each write call and accepts at most `limit` bytes per call.
    struct Recorder {
        writes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
        limit: usize,
    }

    impl tokio::io::AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let taken: Vec<u8> = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .take(self.limit)
                .collect();
            let n = taken.len();
            self.writes.lock().unwrap().push(taken);
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_command_and_an_idle_clients_task_stay_small() {
        // The command channel holds 32 commands per client from the start.
        assert!(
            std::mem::size_of::<Command>() <= 32,
            "{}",
            std::mem::size_of::<Command>()
        );
        let (_handle, task) = client(ClientOptions::new("localhost", 1, "device"), |_| {});
        let size = std::mem::size_of_val(&task);
        // Every client's task is this size, idle or not (2.2 KB in a debug build): what it
        // keeps across a wait counts, as the write slices did (1 KB more), and as the driver
        // kept twice by an `async` block around it did (1 KB more).
        assert!(size < 5 * 512, "the task is {size} bytes");
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_read_buffer_and_still_reads_a_large_frame() {
        use crate::protocol::FrameCodec;
        use bytes::BytesMut;
        use tokio_util::codec::Encoder;
        let notices = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = notices.clone();
        let sink = Arc::new(move |batch: Batch| seen.lock().unwrap().extend(batch.notices));
        let options = ClientOptions::new("localhost", 1, "device");
        let mut driver = Driver::new(options, sink, Arc::default());
        driver.handle(Input::Command(Some(Command::Connect { cycle: 1 })));
        let (ours, mut gateway) = tokio::io::duplex(1 << 20);
        driver.handle(Input::Opened(Ok(Box::new(ours))));
        driver.connecting = None;
        let mut wire = BytesMut::new();
        let action = |n: usize| Message::Action {
            id: Value::String(format!("a{n}")),
            kind: "x".into(),
            parameters: Value::Binary(Bytes::from(vec![n as u8; n])),
        };
        for message in [Message::Welcome, Message::Drained, action(10)] {
            FrameCodec.encode(message.to_frame(), &mut wire).unwrap();
        }
        gateway.write_all(&wire).await.unwrap();
        let buffer = |driver: &mut Driver<_>| {
            driver
                .connection
                .as_ref()
                .unwrap()
                .reader
                .read_buffer()
                .capacity()
        };
        // Reads what arrived, then ends the turn, as `run` does.
        async fn turn<S: Fn(Batch) + Send + Sync + 'static>(driver: &mut Driver<S>, frames: usize) {
            for _ in 0..frames {
                let frame = driver.connection.as_mut().unwrap().reader.next().await;
                driver.handle(Input::Frame(frame));
            }
            driver.write_now();
            driver.flush_notices();
        }
        turn(&mut driver, 3).await;
        assert_eq!(buffer(&mut driver), 0, "idle: no read buffer");
        // A large frame after the idle wait, then a small one: each read whole.
        let mut wire = BytesMut::new();
        for message in [action(300_000), action(20)] {
            FrameCodec.encode(message.to_frame(), &mut wire).unwrap();
        }
        gateway.write_all(&wire).await.unwrap();
        turn(&mut driver, 2).await;
        assert_eq!(buffer(&mut driver), 0, "released again");
        let actions: Vec<usize> = notices
            .lock()
            .unwrap()
            .iter()
            .filter_map(|notice| match notice {
                Notice::Action {
                    parameters: Value::Binary(data),
                    ..
                } => {
                    assert!(data.iter().all(|&b| b == data.len() as u8));
                    Some(data.len())
                }
                _ => None,
            })
            .collect();
        assert_eq!(actions, [10, 300_000, 20]);
    }

    #[test]
    fn write_times_give_the_round_trip_of_the_acknowledged_write_and_stay_bounded() {
        let mut times = WriteTimes::default();
        assert_eq!(times.update((0, 0), (0, 0), 2), None, "nothing happened");
        assert_eq!(times.update((0, 0), (2, 0), 2), None, "writes 1 and 2");
        std::thread::sleep(Duration::from_millis(5));
        let rtt = times
            .update((2, 0), (2, 2), 2)
            .expect("write 2 acknowledged");
        assert!(rtt >= Duration::from_millis(5), "{rtt:?}");
        // Write 1 acknowledged later, in the same input as write 3.
        let late = times
            .update((2, 2), (3, 1), 2)
            .expect("write 1 acknowledged");
        assert!(late >= rtt);
        assert_eq!(times.0.len(), 2, "writes 1-2 and 3");
        // Writes 4 and 5: only writes 4 and 5 can still be acknowledged with a window of 2.
        times.update((3, 1), (5, 1), 2);
        assert_eq!(times.0.len(), 1);
        assert_eq!(
            times.update((5, 1), (5, 3), 2),
            None,
            "write 3 is forgotten"
        );
        assert!(times.update((5, 3), (5, 5), 2).is_some());
    }

    #[tokio::test]
    async fn the_one_sleep_follows_the_session_deadline() {
        let ms = Duration::from_millis;
        let mut timer = Timer::default();
        assert_eq!(timer.expired().now_or_never(), None, "no deadline");
        let started = std::time::Instant::now();
        timer.arm(Some(started + ms(10)));
        timer.expired().await;
        assert!(started.elapsed() >= ms(10));
        assert_eq!(
            timer.expired().now_or_never(),
            None,
            "an expired deadline is forgotten"
        );
        // Moved: only the latest deadline counts.
        timer.arm(Some(started + ms(20)));
        timer.arm(Some(started + ms(80)));
        timer.expired().await;
        assert!(started.elapsed() >= ms(80), "{:?}", started.elapsed());
        // Stopped.
        timer.arm(Some(started + ms(90)));
        timer.arm(None);
        tokio::time::sleep(ms(30)).await;
        assert_eq!(timer.expired().now_or_never(), None);
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_one_write_without_being_copied() {
        let frame = |n: usize, byte: u8| Bytes::from(vec![byte; n]);
        let writes = Arc::default();
        let recorder = Recorder {
            writes: Arc::clone(&writes),
            limit: usize::MAX,
        };
        let mut connection = Connection::new(Box::new(recorder));
        let out = &mut connection.out;
        let mut partly_written = frame(8, 9);
        partly_written.advance(5);
        out.queue = [partly_written, frame(10, 1), frame(20, 2), frame(30, 3)].into();
        out.write_some().await.unwrap();
        let mut expected = vec![9; 3];
        expected.extend([vec![1; 10], vec![2; 20], vec![3; 30]].concat());
        assert_eq!(
            *writes.lock().unwrap(),
            vec![expected],
            "one write, in order"
        );
        assert!(out.queue.is_empty());

        // A short write leaves the rest queued, where it was: nothing is copied.
        let writes = Arc::default();
        let recorder = Recorder {
            writes: Arc::clone(&writes),
            limit: 25,
        };
        let mut connection = Connection::new(Box::new(recorder));
        let out = &mut connection.out;
        let big = frame(100_000, 7);
        out.queue = [frame(10, 1), big.clone(), frame(5, 2)].into();
        out.write_some().await.unwrap();
        assert_eq!(out.queue.len(), 2);
        assert_eq!(out.queue[0].len(), 100_000 - 15);
        assert_eq!(out.queue[0].as_ptr(), big[15..].as_ptr());
        while !out.queue.is_empty() {
            out.write_some().await.unwrap();
        }
        let sent: Vec<u8> = writes.lock().unwrap().concat();
        assert_eq!(sent, [vec![1; 10], vec![7; 100_000], vec![2; 5]].concat());

        // More frames than one write takes: the first WRITE_BATCH go, the rest wait.
        let recorder = Recorder {
            writes: Arc::default(),
            limit: usize::MAX,
        };
        let mut connection = Connection::new(Box::new(recorder));
        let out = &mut connection.out;
        out.queue = (0..WRITE_BATCH + 10).map(|i| frame(3, i as u8)).collect();
        out.write_some().await.unwrap();
        assert_eq!(out.queue.len(), 10);
        assert_eq!(out.queue[0], frame(3, WRITE_BATCH as u8));
    }
}
