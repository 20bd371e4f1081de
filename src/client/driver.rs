//! The client's task ([`Driver`]): it waits for the next input (a command, a frame, a write,
//! the connection attempt, the one sleep), hands it to the session, carries out the session's
//! outputs and sends the turn's notices to the sink in one batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::io::ReadHalf;
use tokio::sync::mpsc;

use super::connection::{Connection, Outgoing};
use super::gate::ReadGate;
use super::published::Published;
use super::timer::Timer;
use super::write_times::WriteTimes;
use super::{open, transport, ActionAck, Batch, ClientOptions, Command, Route, Stream};
use crate::protocol::{Frame, FrameError, FrameReader};
use crate::session::{ConnectionState, Notice, Output, Session, SessionError, Timing, Xorshift};

/// Frames read in one burst before the batch goes out, so a flood cannot starve the host.
const BURST: usize = 256;

type Connecting = Pin<Box<dyn Future<Output = Result<Stream, SessionError>> + Send>>;

/// Waits for `future` if there is one, forever otherwise (a disabled `select!` branch).
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_frame(
    reader: Option<(&mut FrameReader<ReadHalf<Stream>>, &ReadGate)>,
) -> Option<Result<Frame, FrameError>> {
    match reader {
        Some((reader, gate)) => {
            std::future::poll_fn(|cx| gate.poll(cx, |cx| reader.poll_next_unpin(cx))).await
        }
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

pub(super) struct Driver<S> {
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
    forgotten: bool,
    /// The session's state as last reported ([`Notice::State`]).
    state: ConnectionState,
}

impl<S: Fn(Batch) + Send + Sync + 'static> Driver<S> {
    pub(super) fn new(options: ClientOptions, sink: Arc<S>, stats: Arc<Published>) -> Self {
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
            forgotten: false,
            state: ConnectionState::Closed,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
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
            // What was written may be answered before the loop would report it (`gate.rs`).
            if self.write_now() {
                if let Some(connection) = self.connection.as_ref() {
                    connection.gate.after_write();
                }
            }
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
            Some(Connection { reader, gate, out }) => (
                Some((reader, &*gate)).filter(|_| !behind),
                Some(out).filter(|o| o.wants_write()),
            ),
            None => (None, None),
        };
        // In this order, not a random one (which costs a thread-local random number, on every
        // turn): none can keep another waiting. The timer and the rare branches come first;
        // a frame before a command, because each frame's turn then takes every command queued
        // (`run`), while a command's turn reads no frame.
        tokio::select! {
            biased;
            () = self.timer.expired() => Input::Timeout,
            opened = maybe(self.connecting.as_mut()) => Input::Opened(opened),
            () = backlog.taken.notified(), if behind => Input::Caught,
            written = write_some(out) => Input::Written(written),
            frame = next_frame(reader) => Input::Frame(frame),
            command = commands.recv() => Input::Command(command),
        }
    }

    fn handle(&mut self, input: Input) {
        let writes = self.session.event_writes();
        let closing = matches!(input, Input::Command(Some(Command::Close { .. })));
        let first_notice = self.batch.notices.len();
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
                Command::Reconnect => self.session.reconnect_now(self.now),
                Command::Crash => panic!("crash requested"),
            },
            Input::Opened(Ok(stream)) => {
                self.connecting = None;
                if let Some(credentials) = &self.options.credentials {
                    credentials.opened();
                }
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
        self.report_state(first_notice, closing);
        let window = self.options.session.max_in_flight.max(1) as u64;
        if let Some(rtt) = self
            .write_times
            .update(writes, self.session.event_writes(), window)
        {
            let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX - 1);
            self.stats.rtt.store(nanos + 1, Ordering::Relaxed);
        }
    }

    fn apply(&mut self, mut outputs: Vec<Output>) {
        for output in outputs.drain(..) {
            match output {
                Output::Connect => {
                    // The material for this attempt: files are read again now, and refused
                    // material (or an expired certificate) fails the attempt, not the client.
                    let tls = match &self.options.credentials {
                        None => Ok(self.options.tls.clone()),
                        Some(credentials) => credentials
                            .attempt(std::time::SystemTime::now())
                            .map(Some)
                            .map_err(|err| SessionError::new(err.code(), err.to_string())),
                    };
                    let tls = match tls {
                        Ok(tls) => tls,
                        Err(err) => {
                            self.connecting = Some(Box::pin(std::future::ready(Err(err))));
                            continue;
                        }
                    };
                    self.connecting = Some(Box::pin(open(
                        self.options.reactor.clone(),
                        Route {
                            host: self.options.host.clone(),
                            port: self.options.port,
                            resolver: self.options.resolver.clone(),
                            servername: self.options.servername.clone(),
                            proxy: self.options.proxy.clone(),
                        },
                        tls,
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
                Output::Emit(notice) => {
                    if self.batch.notices.capacity() == 0 {
                        self.batch.notices = Batch::spare_list();
                    }
                    self.batch.notices.push(notice)
                }
                Output::Forget(stored) => {
                    if let Some(store) = &self.options.store {
                        store.forget(stored);
                        self.forgotten = true;
                    }
                }
            }
        }
        Session::recycle(outputs);
    }

    /// Puts a [`Notice::State`] before the notices of the input just handled (from
    /// `first_notice` on) if the session's state changed: so JavaScript, in `connect` or
    /// `drained`, already sees the state they announce. Rare (connection changes only).
    fn report_state(&mut self, first_notice: usize, closing: bool) {
        let state = self.session.state();
        if state == self.state {
            return;
        }
        let failed = self.state == ConnectionState::Connecting
            && matches!(state, ConnectionState::Backoff | ConnectionState::Closed)
            && !closing;
        let delay = match state {
            ConnectionState::Backoff => self
                .session
                .poll_timeout()
                .map(|at| at.saturating_duration_since(self.now)),
            _ => None,
        };
        self.state = state;
        let at = first_notice.min(self.batch.notices.len());
        self.batch.notices.insert(
            at,
            Notice::State {
                state,
                delay,
                failed,
            },
        );
    }

    /// Writes the write queue while the socket takes it: the next event or acknowledgement is on
    /// the wire before JavaScript hears of the batch that made it, so the peer works on it
    /// meanwhile, and no extra turn of the loop is spent only on writing. What the socket does
    /// not take now is left to the next turn's `select!`, which also waits for it with the
    /// task's own waker. Whether anything was written.
    fn write_now(&mut self) -> bool {
        let mut wrote = false;
        while let Some(out) = self
            .connection
            .as_mut()
            .map(|c| &mut c.out)
            .filter(|out| out.wants_write())
        {
            match out.write_some().now_or_never() {
                Some(Ok(())) => wrote = true,
                Some(Err(err)) => {
                    self.handle(Input::Written(Err(err)));
                    break;
                }
                None => break,
            }
        }
        wrote
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
        if std::mem::take(&mut self.forgotten) {
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
        self.stats.store_oldest(self.session.oldest_pending());
        let durations = self.session.take_durations();
        if !durations.is_empty() {
            self.stats.add_durations(durations);
        }
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
    use crate::session::Notice;
    use tokio::io::AsyncWriteExt;

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
            id: Value::String(format!("a{n}").into()),
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
        assert_eq!(buffer(&mut driver), 0, "forgotten again");
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
}
