//! The protocol state of one gateway client (docs/PROTOCOL.md section 4, The client session,
//! and section 6, Errors and events) as a sans-I/O state machine: it never touches a socket or
//! reads the clock. The driver in `src/client/` owns those, feeds the session what happened (a
//! frame arrived, the socket closed, a timer fired, the user called a method) and carries out
//! the [`Output`]s it gets back, in order. Keeping every protocol decision here means the whole
//! behaviour, reconnects, timeouts, backoff and queue included, is tested by feeding inputs,
//! with no sockets and no sleeps, and a property test can throw any input sequence at it.
//!
//! Timers are the session's too, in the manner of quinn-proto: every input that can start one
//! takes the time (`now`) as an argument, the session keeps the deadline of each [`Timer`]
//! itself, and the driver asks only when the earliest is ([`Session::poll_timeout`]), sleeps
//! until then and calls [`Session::handle_timeout`]. The server's `Peer` and `Hub` answer the
//! same two calls. The reconnect jitter's random numbers come from a [`Random`] the session is
//! built with, so a test fixes them.
//!
//! Where the original client has defects (docs/PROTOCOL.md section 8, Departures from 2.0.8)
//! this implements the fix: an event in flight when the connection drops is re-sent after the
//! next DRAINED, `close()` fails the queued events' callbacks (unless asked to keep them) and
//! always stops reconnecting.
//!
//! Reconnect attempts are counted as the original counts them: each automatic reconnect (each
//! [`Timer::Reconnect`] that fires) is one attempt, WELCOME and a user `connect()` start the
//! count again, and when a connection or connection attempt ends without WELCOME after the Nth
//! attempt, with N equal to `max_reconnect_attempts`, the session gives up. The first drop or
//! failure, which leads to the first reconnect, is not itself an attempt.

use crate::defaults;
use crate::errors::ErrorCode;
use crate::protocol::value::value_writer;
use crate::protocol::{
    decode, DecodeError, ErrorBody, Frame, FrameError, Message, MessageError, Value,
};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

/// The client options that shape the protocol (the timers' lengths are in [`Timing`]; host,
/// TLS and keepalive are the driver's).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Sent in HELLO so the gateway can tell a user's devices apart.
    pub device_name: String,
    /// Reconnect after a dropped connection (`autoReconnect`).
    pub auto_reconnect: bool,
    /// Give up after this many automatic reconnects without a WELCOME; 0 is unlimited.
    pub max_reconnect_attempts: u32,
    /// How many events may await their acknowledgement at once. 1 is the original's
    /// stop-and-wait; more pipelines events over a slow link. 0 is taken as 1.
    pub max_in_flight: usize,
    /// How many events may wait for their callback at once; a `send` beyond it fails at once
    /// with `EQUEUEFULL`. 0 is unlimited.
    pub max_queue_size: usize,
}

impl SessionConfig {
    /// The original's defaults: reconnect forever, one event at a time.
    pub fn new(device_name: impl Into<String>) -> SessionConfig {
        SessionConfig {
            device_name: device_name.into(),
            auto_reconnect: defaults::AUTO_RECONNECT,
            max_reconnect_attempts: defaults::MAX_RECONNECT_ATTEMPTS,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            max_queue_size: defaults::MAX_QUEUE_SIZE,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig::new(String::new())
    }
}

/// How long the session's timers run: the client options `reconnectDelay`,
/// `maxReconnectDelay`, `connectTimeout` and `ackTimeout` (their defaults are
/// `ClientOptions::new`'s).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// The wait between a dropped connection and the next attempt.
    pub reconnect_delay: Duration,
    /// Above `reconnect_delay`, the wait doubles with every failed attempt up to this, with
    /// jitter (see [`backoff`]).
    pub max_reconnect_delay: Duration,
    /// Bound on TCP + TLS + WELCOME; an attempt that takes longer fails with `ETIMEDOUT`.
    pub connect_timeout: Option<Duration>,
    /// Bound on waiting for an event's acknowledgement; past it the connection is taken for
    /// dead (a server that stopped reading, a half-open link) and is replaced.
    pub ack_timeout: Option<Duration>,
}

/// The session's timers; the earliest deadline is [`Session::poll_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// `connectTimeout`: from the start of an attempt until WELCOME.
    Connect = 0,
    /// `ackTimeout`: while events await their acknowledgement, restarted by each one.
    Ack = 1,
    /// The reconnect delay, with backoff and jitter.
    Reconnect = 2,
}

impl Timer {
    /// Every timer, in the order of [`Timer::index`].
    pub const ALL: [Timer; 3] = [Timer::Connect, Timer::Ack, Timer::Reconnect];

    /// 0, 1, 2: a slot in a table of timers.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where the reconnect jitter's random numbers come from: the driver's [`Xorshift`], seeded
/// per process and client, or fixed draws in a test.
pub trait Random: Send {
    /// Uniform in [0, 1).
    fn draw(&mut self) -> f64;
}

impl fmt::Debug for dyn Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Random")
    }
}

/// A small xorshift generator: spreading reconnects needs no more than a seed that differs
/// between processes and clients, which the caller supplies.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed | 1)
    }
}

impl Random for Xorshift {
    fn draw(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The wait before reconnect attempt `attempts + 1`: `base` when `max` does not exceed it
/// (the original's fixed delay), else `base * 2^attempts` capped at `max`, of which the upper
/// half is scaled by `random` (in [0, 1)).
pub fn backoff(base: Duration, max: Duration, attempts: u32, random: f64) -> Duration {
    if max <= base {
        return base;
    }
    let grown = base.saturating_mul(1u32 << attempts.min(16)).min(max);
    let half = grown / 2;
    half + half.mul_f64(random)
}

/// An event handed to [`Session::send`]. The frame is encoded once, by the caller, so that
/// re-sending it after a reconnect is a cheap clone and carries the very same bytes and id.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    /// The caller's handle for the send callback, given back in [`Notice::EventDone`].
    pub seq: u64,
    /// The event id, which the server's acknowledgement names as its `correlid`.
    pub id: Value,
    /// The whole EVENT frame, header and body.
    pub frame: Bytes,
    /// Its number in the client's durable outbox, if it is kept there: given back in
    /// [`Output::Release`] once the outbox need not keep it any more.
    pub stored: Option<u64>,
}

/// An action's id as the session keeps it until the application acknowledges the action: its
/// MessagePack encoding, in memory of its own. Never a slice of the frame that brought it (a
/// large id would keep the whole frame alive) and never memory JavaScript can write into (a
/// Buffer over the frame's bytes, see `node::value`): what the acknowledgement says is what the
/// server sent. Two ids are the same action's when their encodings are equal, so matching an
/// acknowledgement is a hash lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionKey(Bytes);

impl ActionKey {
    /// The id again, to write in the acknowledgement.
    pub fn value(&self) -> Value {
        // The key is an encoding of a decoded value, which decodes (to the same value).
        decode(&self.0).unwrap_or(Value::Nil)
    }

    /// The id's MessagePack encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<&Value> for ActionKey {
    fn from(id: &Value) -> ActionKey {
        ActionKey(Bytes::from(crate::protocol::encode(id)))
    }
}

impl From<Value> for ActionKey {
    fn from(id: Value) -> ActionKey {
        ActionKey::from(&id)
    }
}

/// An EVENT frame up to this size is encoded in a buffer kept for the next one and then
/// copied out at its exact size (it may wait long in a queue of 100,000); a larger one keeps
/// the buffer it was encoded in.
const COPIED_FRAME: usize = 64 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

impl OutgoingEvent {
    /// Encodes the EVENT frame for `{id, type, bundle}`.
    pub fn new(seq: u64, id: Value, kind: impl AsRef<str>, bundle: Value) -> OutgoingEvent {
        let written: Result<_, Infallible> =
            encode_event(value_writer(&id), kind.as_ref(), value_writer(&bundle));
        let Ok((frame, _)) = written;
        OutgoingEvent {
            seq,
            id,
            frame,
            stored: None,
        }
    }

    /// Encodes the EVENT frame for `{id, type, bundle}` with the id and the bundle written by
    /// the caller's own encoders, straight from its values (JavaScript ones) into the frame;
    /// the id, needed to match the acknowledgement, is read back from the frame. An encoder's
    /// error is the result.
    pub fn encode<E: From<DecodeError>>(
        seq: u64,
        write_id: impl FnOnce(&mut BytesMut) -> Result<(), E>,
        kind: &str,
        write_bundle: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<OutgoingEvent, E> {
        let (frame, id) = encode_event(write_id, kind, write_bundle)?;
        let id = decode(&frame.slice(id))?;
        Ok(OutgoingEvent {
            seq,
            id,
            frame,
            stored: None,
        })
    }
}

/// An EVENT frame and where its id is in it (see [`Message::encode_event`]), encoded in a
/// buffer kept for the next one.
fn encode_event<E>(
    write_id: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    kind: &str,
    write_bundle: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(Bytes, Range<usize>), E> {
    SCRATCH.with(|scratch| {
        // Taken out while in use, so that an encoder that sends too is no problem.
        let mut frame = std::mem::take(&mut *scratch.borrow_mut());
        frame.clear();
        let written = Message::encode_event(&mut frame, write_id, kind, write_bundle);
        if frame.len() > COPIED_FRAME {
            return written.map(|id| (frame.freeze(), id));
        }
        let exact = written.map(|id| (Bytes::copy_from_slice(&frame), id));
        *scratch.borrow_mut() = frame;
        exact
    })
}

/// An error as the JavaScript layer shows it: `new Error(message)` with `err.code = code`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionError {
    pub code: ErrorCode,
    pub message: String,
}

impl SessionError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> SessionError {
        SessionError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for SessionError {}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a connection now (TCP, then TLS); the driver later calls [`Session::connected`] or
    /// [`Session::connect_failed`].
    Connect,
    /// Write these bytes to the socket.
    Write(Bytes),
    /// Close the socket after writing anything already output, or abandon the connection
    /// attempt in progress. The driver reports nothing more about that connection.
    CloseSocket,
    /// Tell the application.
    Emit(Notice),
    /// The event kept in the durable outbox under this number has had its answer from the
    /// gateway (accepted or rejected), or was refused by the queue: the outbox may forget it.
    /// Only for events with [`OutgoingEvent::stored`]; an event `close()` fails is kept.
    Release(u64),
}

/// What the application hears: the client's JavaScript events and send callbacks.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `connect`: the first WELCOME after `connect()`.
    Connect,
    /// `drain` (the JavaScript layer emits `drained` right after it).
    Drain,
    /// `action`; the application answers through [`Session::ack_action`] with `key`. The `id`
    /// is the application's (it may share the frame's bytes); `key` is the session's copy.
    Action {
        id: Value,
        key: ActionKey,
        kind: String,
        parameters: Value,
    },
    /// `acknowledgement`, always before the matching [`Notice::EventDone`].
    Acknowledgement {
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
    },
    /// The send callback of the event with this `seq`: exactly once per event, in send order.
    EventDone {
        seq: u64,
        result: Result<(), SessionError>,
    },
    /// `reconnect`: an automatic reconnect attempt starts now.
    Reconnect,
    /// `disconnect`: finally disconnected after having been connected.
    Disconnect,
    /// `error`: only where the original emits it (docs/PROTOCOL.md section 6.2, `error` versus
    /// recovered), since code written for it usually has no listener, and an `error` without
    /// one ends the process.
    Error(SessionError),
    /// Something the client recovered from by itself (a connection error while it
    /// reconnects, an undecodable frame, a timeout, a frame it ignored): logged and counted,
    /// never emitted as `error`.
    Recovered(SessionError),
}

/// What the session has done so far, as `client.stats()` shows it: plain counters, updated in
/// place on the paths that already run. The totals count from the session's creation; `queued`,
/// `in_flight`, `connected` and `drained` are the state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Events waiting to be written (not yet, or again after a reconnect), now.
    pub queued: u64,
    /// Events written on the current connection and awaiting their acknowledgement, now.
    pub in_flight: u64,
    /// Events the gateway acknowledged with status 0 (accepted).
    pub acknowledged: u64,
    /// Events the gateway acknowledged with an error (rejected).
    pub rejected: u64,
    /// Event frames written again on a later connection, because the one that carried them
    /// ended before their acknowledgement.
    pub resent: u64,
    /// Events whose callback got `ECLOSED` from `close()`.
    pub failed_closed: u64,
    /// Events refused with `EQUEUEFULL` (`max_queue_size`).
    pub failed_queue_full: u64,
    /// ACTIONs received.
    pub actions_received: u64,
    /// Actions whose ACKNOWLEDGEMENT was written (done or failed), on the connection that
    /// delivered them.
    pub actions_acked: u64,
    /// Automatic reconnect attempts started (each `reconnect` notice).
    pub reconnects: u64,
    /// Welcomed, on a connection that is open now.
    pub connected: bool,
    /// The gateway said DRAINED on the current connection: events flow.
    pub drained: bool,
    /// Event frames written, re-sent ones included; the n-th write is write number n. The
    /// driver times writes by these numbers (the session has no clock).
    pub events_written: u64,
    /// The number of the write of the event acknowledged last (accepted or rejected); 0 before
    /// the first acknowledgement.
    pub last_acked_write: u64,
}

/// Where the session is in its connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Never connected, closed by the user, or given up.
    Idle,
    /// [`Output::Connect`] was given; waiting for the driver's verdict.
    Connecting,
    /// HELLO was written; the server has not authorized the client yet.
    AwaitingWelcome,
    /// Welcomed; the server is still delivering the actions it held.
    Receiving,
    /// The server said DRAINED: events may be sent.
    Drained,
    /// The connection is gone and the reconnect delay is running.
    WaitingToReconnect,
}

impl Phase {
    fn socket_open(self) -> bool {
        matches!(
            self,
            Phase::AwaitingWelcome | Phase::Receiving | Phase::Drained
        )
    }
}

/// How far an event has got. Acknowledged events wait here when an earlier event is still
/// unacknowledged, because callbacks run in send order.
#[derive(Debug)]
enum Stage {
    Queued,
    Sent,
    Acked(Result<(), SessionError>),
}

#[derive(Debug)]
struct Pending {
    event: OutgoingEvent,
    stage: Stage,
    /// The number of the event's last write ([`SessionStats::events_written`]); 0 if it was
    /// never written.
    write: u64,
}

/// How the last connection or attempt ended, kept for the error emitted when reconnecting
/// gives up before any WELCOME.
#[derive(Debug)]
enum Ending {
    /// The application has already been told (a BYE error or a protocol violation).
    Reported,
    /// A connection error that reconnecting kept quiet.
    Quiet(SessionError),
    /// The peer closed the connection without an error.
    Clean,
}

/// The state machine; see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    /// Every event whose callback has not run yet, in send order.
    pending: VecDeque<Pending>,
    /// `pending[..written]` holds no `Queued` event: the next event to write is at or after
    /// this index. Writing is allowed only for indices below the window (`max_in_flight`), so
    /// held results and this scan stay bounded by it.
    written: usize,
    /// Ids of the actions delivered on the current connection and not yet acknowledged, with
    /// how many times each was (a server may deliver one id again before its acknowledgement).
    actions: HashMap<ActionKey, u32>,
    /// WELCOME was seen since the user's `connect()`: `connect` was emitted and `disconnect`
    /// is owed.
    welcomed: bool,
    /// Automatic reconnects since the last WELCOME or user `connect()`.
    attempts: u32,
    timing: Timing,
    random: Box<dyn Random>,
    /// When each timer expires, by [`Timer::index`]; `None` when it is not armed.
    armed: [Option<Instant>; 3],
    /// The time of the input being handled: timers started by it run from then.
    now: Option<Instant>,
    /// The totals of [`Session::stats`], and `queued` and `in_flight`, counted as events are
    /// queued, written, acknowledged and forgotten; `connected` and `drained` are filled in
    /// when it is read.
    counts: SessionStats,
}

const NO_EVENT_IN_QUEUE: &str = "Received acknowledgement even if there is no event in the queue.";
const DIFFERENT_EVENT: &str = "Received acknowledgement for different event.";
const MAXIMUM_BUFFER: &str = "Maximum buffer size exceeded.";

impl Session {
    /// A session that draws its reconnect jitter from `random`.
    pub fn new(config: SessionConfig, timing: Timing, random: impl Random + 'static) -> Session {
        Session {
            config,
            phase: Phase::Idle,
            pending: VecDeque::new(),
            written: 0,
            actions: HashMap::new(),
            welcomed: false,
            attempts: 0,
            timing,
            random: Box::new(random),
            armed: [None; 3],
            now: None,
            counts: SessionStats::default(),
        }
    }

    /// What the session has done and where it is, in O(1).
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            connected: matches!(self.phase, Phase::Receiving | Phase::Drained),
            drained: self.phase == Phase::Drained,
            ..self.counts
        }
    }

    /// `(events_written, last_acked_write)` of [`Session::stats`]: what the driver compares
    /// around each input to time the events' round trips.
    pub fn event_writes(&self) -> (u64, u64) {
        (self.counts.events_written, self.counts.last_acked_write)
    }

    /// The user's `connect()`. During the reconnect delay it connects at once, still in the
    /// same connection cycle (so no second `connect` notice), with a fresh attempt count.
    pub fn connect(&mut self, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if let Phase::Idle | Phase::WaitingToReconnect = self.phase {
            self.attempts = 0;
            self.stop_timer(Timer::Reconnect);
            self.start_attempt(&mut out);
        }
        out
    }

    /// A connection attempt starts, bounded by `connectTimeout`.
    fn start_attempt(&mut self, out: &mut Vec<Output>) {
        self.phase = Phase::Connecting;
        out.push(Output::Connect);
        if let Some(limit) = self.timing.connect_timeout {
            self.set_timer(Timer::Connect, limit);
        }
    }

    /// The connection (and its TLS handshake) is up: introduce the client. A connection that
    /// completes after `close()` is not wanted any more.
    pub fn connected(&mut self) -> Vec<Output> {
        match self.phase {
            Phase::Connecting => {
                self.phase = Phase::AwaitingWelcome;
                vec![Output::Write(
                    Message::hello(&self.config.device_name).to_bytes(),
                )]
            }
            Phase::Idle => vec![Output::CloseSocket],
            _ => Vec::new(),
        }
    }

    /// The connection could not be opened.
    pub fn connect_failed(&mut self, err: SessionError, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if self.phase == Phase::Connecting {
            self.connection_gone(&mut out, Ending::Quiet(err));
        }
        out
    }

    /// A decoded frame from the server. Frames that arrive when no connection is open (stale
    /// ones, after `close()`) are ignored.
    pub fn receive(&mut self, message: Message, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if !self.phase.socket_open() {
            return out;
        }
        let acknowledgement = matches!(message, Message::Acknowledgement { .. });
        match message {
            Message::Welcome if self.phase == Phase::AwaitingWelcome => {
                self.phase = Phase::Receiving;
                self.attempts = 0;
                self.stop_timer(Timer::Connect);
                if !self.welcomed {
                    self.welcomed = true;
                    out.push(Output::Emit(Notice::Connect));
                }
            }
            // What makes no sense now is ignored, as the original does: the connection goes on.
            Message::Welcome => ignore(&mut out, "Received welcome twice."),
            Message::Drained if self.phase == Phase::AwaitingWelcome => {
                ignore(&mut out, "Received drained before welcome.")
            }
            Message::Drained => {
                self.phase = Phase::Drained;
                out.push(Output::Emit(Notice::Drain));
                self.flush(&mut out);
            }
            Message::Action {
                id,
                kind,
                parameters,
            } => {
                self.counts.actions_received += 1;
                let key = ActionKey::from(&id);
                *self.actions.entry(key.clone()).or_default() += 1;
                out.push(Output::Emit(Notice::Action {
                    id,
                    key,
                    kind,
                    parameters,
                }));
            }
            Message::Acknowledgement {
                correlid,
                status,
                error,
            } => self.acknowledged(&mut out, correlid, status, error),
            Message::Bye { error: Some(error) } => {
                out.push(Output::Emit(Notice::Error(SessionError {
                    code: error.code.map_or(ErrorCode::Bye, ErrorCode::Gateway),
                    message: error.message,
                })));
                out.push(Output::CloseSocket);
                self.connection_gone(&mut out, Ending::Reported);
            }
            Message::Bye { error: None } => {
                out.push(Output::CloseSocket);
                self.connection_gone(&mut out, Ending::Clean);
            }
            Message::Hello { .. } => ignore(&mut out, "Received hello, which only a client sends."),
            Message::Event { .. } => ignore(&mut out, "Received event, which only a client sends."),
        }
        self.watch_acknowledgements(acknowledgement);
        out
    }

    /// A frame from the server as the reader framed it, or why it could not: every decision
    /// about bad input is made here, once.
    ///
    /// - a message: [`Session::receive`];
    /// - an unknown token (a newer gateway's): skipped, reported as recovered, and the
    ///   connection goes on;
    /// - a body that does not decode, or not to the token's message: a protocol error, the
    ///   connection ends (quietly unless it was the last);
    /// - a frame over 10 MiB: BYE IM491, then the connection ends;
    /// - the stream ended inside a frame: `ECONNRESET`, as a lost connection (the driver drops
    ///   the socket it read the end from).
    ///
    /// A failure to read the socket is the driver's to name ([`Session::connection_lost`]);
    /// one that comes here anyway ends the connection as `ECONNRESET`.
    pub fn handle_frame(&mut self, frame: Result<Frame, FrameError>, now: Instant) -> Vec<Output> {
        match frame {
            Ok(frame) => match Message::from_frame(&frame) {
                Ok(message) => self.receive(message, now),
                Err(err @ MessageError::UnknownToken(_)) => {
                    self.ignored(SessionError::new(ErrorCode::Proto, err.to_string()))
                }
                Err(err) => {
                    self.protocol_error(SessionError::new(ErrorCode::Proto, err.to_string()), now)
                }
            },
            Err(FrameError::Oversize { .. }) => self.buffer_exceeded(now),
            Err(err @ (FrameError::Truncated { .. } | FrameError::Io(_))) => self.connection_lost(
                Some(SessionError::new(
                    ErrorCode::ConnectionReset,
                    err.to_string(),
                )),
                now,
            ),
        }
    }

    /// A frame the client does not understand and skips (an unknown token, which a newer
    /// gateway may send): reported as recovered, and the connection goes on.
    fn ignored(&mut self, err: SessionError) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase.socket_open() {
            out.push(Output::Emit(Notice::Recovered(err)));
        }
        out
    }

    /// The server sent or announced a frame over 10 MiB: BYE IM491, as docs/PROTOCOL.md
    /// section 2 (Frames) asks of either side, then the connection ends, quietly unless it was
    /// the last.
    fn buffer_exceeded(&mut self, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if self.phase.socket_open() {
            let error = ErrorBody {
                code: Some(ErrorCode::BufferExceeded.code().into()),
                message: MAXIMUM_BUFFER.into(),
            };
            out.push(Output::Write(
                Message::Bye { error: Some(error) }.to_bytes(),
            ));
            out.push(Output::CloseSocket);
            let err = SessionError::new(ErrorCode::BufferExceeded, MAXIMUM_BUFFER);
            self.connection_gone(&mut out, Ending::Quiet(err));
        }
        out
    }

    /// The driver could not read the server's bytes (an undecodable frame): the connection
    /// ends, quietly unless it was the last, as in the original.
    fn protocol_error(&mut self, err: SessionError, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if self.phase.socket_open() {
            out.push(Output::CloseSocket);
            self.connection_gone(&mut out, Ending::Quiet(err));
        }
        out
    }

    /// The socket closed (`None`) or failed. Before [`Session::connected`] this counts as a
    /// failed connection attempt.
    pub fn connection_lost(&mut self, err: Option<SessionError>, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if self.phase.socket_open() || self.phase == Phase::Connecting {
            let ending = match err {
                Some(err) => Ending::Quiet(err),
                None => Ending::Clean,
            };
            self.connection_gone(&mut out, ending);
        }
        out
    }

    /// When the earliest armed timer expires: the driver sleeps until then and calls
    /// [`Session::handle_timeout`]. The answer changes only with an input, so the driver asks
    /// after each.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.armed.iter().flatten().min().copied()
    }

    /// The time is `now`: every timer that had expired by then when the call was made fires,
    /// earliest first (one armed again by another's firing waits for the next call). Early or
    /// repeated calls do nothing.
    ///
    /// - [`Timer::Reconnect`]: the next automatic attempt starts (`reconnect`, one more
    ///   attempt counted).
    /// - [`Timer::Connect`]: the attempt or the connection awaiting WELCOME is abandoned and
    ///   ends with `ETIMEDOUT`, quietly unless it was the last.
    /// - [`Timer::Ack`]: the connection is taken for dead and ends the same way.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut due: [Option<(Instant, Timer)>; 3] = [None; 3];
        for (slot, timer) in due.iter_mut().zip(Timer::ALL) {
            *slot = self.armed[timer.index()]
                .filter(|at| *at <= now)
                .map(|at| (at, timer));
        }
        due.sort_unstable_by_key(|d| d.map(|(at, t)| (at, t.index())));
        let mut out = Vec::new();
        for (at, timer) in due.into_iter().flatten() {
            // Still armed for the same deadline: not stopped or moved by an earlier one.
            if self.armed[timer.index()] == Some(at) {
                out.extend(self.fire(timer));
            }
        }
        out
    }

    /// `timer` expired.
    fn fire(&mut self, timer: Timer) -> Vec<Output> {
        let mut out = Vec::new();
        if self.armed[timer.index()].take().is_none() {
            return out;
        }
        match timer {
            Timer::Reconnect if self.phase == Phase::WaitingToReconnect => {
                self.attempts = self.attempts.saturating_add(1);
                self.counts.reconnects += 1;
                out.push(Output::Emit(Notice::Reconnect));
                self.start_attempt(&mut out);
            }
            Timer::Connect if matches!(self.phase, Phase::Connecting | Phase::AwaitingWelcome) => {
                let ms = self.timing.connect_timeout.unwrap_or_default().as_millis();
                let err = SessionError::new(
                    ErrorCode::TimedOut,
                    format!("The gateway did not welcome the client within {ms} ms."),
                );
                out.push(Output::CloseSocket);
                self.connection_gone(&mut out, Ending::Quiet(err));
            }
            Timer::Ack if self.phase.socket_open() => {
                let ms = self.timing.ack_timeout.unwrap_or_default().as_millis();
                let err = SessionError::new(
                    ErrorCode::TimedOut,
                    format!("No acknowledgement from the gateway within {ms} ms."),
                );
                out.push(Output::CloseSocket);
                self.connection_gone(&mut out, Ending::Quiet(err));
            }
            _ => {}
        }
        out
    }

    /// Queues an event; it is written at once when the server has drained and the window
    /// has room, else it waits, across reconnects too.
    pub fn send(&mut self, event: OutgoingEvent, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        let limit = self.config.max_queue_size;
        if limit != 0 && self.pending.len() >= limit {
            self.counts.failed_queue_full += 1;
            if let Some(stored) = event.stored {
                out.push(Output::Release(stored));
            }
            out.push(Output::Emit(Notice::EventDone {
                seq: event.seq,
                result: Err(SessionError::new(
                    ErrorCode::QueueFull,
                    format!("The queue already holds {limit} events (maxQueueSize)."),
                )),
            }));
            return out;
        }
        self.enqueue(&mut out, event);
        out
    }

    /// Queues an event found in the durable outbox, left there by an earlier client: as
    /// [`Session::send`], but never refused by `max_queue_size` (it was accepted once already;
    /// later sends are refused until the queue is below the limit again). Restored events are
    /// handed over before any new one, so they go out first, in their original order.
    pub fn restore(&mut self, event: OutgoingEvent, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        self.enqueue(&mut out, event);
        out
    }

    fn enqueue(&mut self, out: &mut Vec<Output>, event: OutgoingEvent) {
        self.pending.push_back(Pending {
            event,
            stage: Stage::Queued,
            write: 0,
        });
        self.counts.queued += 1;
        self.flush(out);
        self.watch_acknowledgements(false);
    }

    /// The application acknowledged an action. The acknowledgement goes out only on the
    /// connection that delivered the action: a server that lost the connection delivers the
    /// action again. Actions are matched by id, so an ack for an id the current connection
    /// delivered again answers that delivery; a second ack for the same delivery writes
    /// nothing. Each delivery of an id may be acknowledged once; which of several deliveries
    /// of the same id an ack answers cannot be told apart on the wire. O(1).
    pub fn ack_action(
        &mut self,
        id: impl Into<ActionKey>,
        error: Option<ErrorBody>,
    ) -> Vec<Output> {
        let key = id.into();
        let Some(count) = self.actions.get_mut(&key) else {
            return Vec::new();
        };
        *count -= 1;
        if *count == 0 {
            self.actions.remove(&key);
        }
        self.counts.actions_acked += 1;
        let status = if error.is_some() { 1 } else { 0 };
        vec![Output::Write(
            Message::Acknowledgement {
                correlid: key.value(),
                status,
                error,
            }
            .to_bytes(),
        )]
    }

    /// The user's `close()`: always stops reconnecting. Unless `keep_queue`, no callback is
    /// left hanging: every waiting event gets its `ECLOSED` error now, in send order, except
    /// one the server already acknowledged behind an unacknowledged one, which gets the
    /// server's verdict.
    pub fn close(&mut self, keep_queue: bool) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase.socket_open() || self.phase == Phase::Connecting {
            out.push(Output::CloseSocket);
        }
        self.phase = Phase::Idle;
        self.attempts = 0;
        for timer in Timer::ALL {
            self.stop_timer(timer);
        }
        self.forget_connection();
        self.disconnect(&mut out);
        if !keep_queue {
            self.written = 0;
            self.counts.queued = 0;
            for pending in self.pending.drain(..) {
                let result = match pending.stage {
                    Stage::Acked(result) => result,
                    Stage::Queued | Stage::Sent => {
                        self.counts.failed_closed += 1;
                        Err(SessionError::new(ErrorCode::Closed, "Client closed."))
                    }
                };
                out.push(Output::Emit(Notice::EventDone {
                    seq: pending.event.seq,
                    result,
                }));
            }
        }
        out
    }

    #[cfg(test)]
    fn phase(&self) -> Phase {
        self.phase
    }

    /// The server said DRAINED on the current connection, so events flow.
    #[cfg(test)]
    fn is_drained(&self) -> bool {
        self.phase == Phase::Drained
    }

    /// Events not written on the current connection (including those to be re-sent).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p.stage, Stage::Queued))
            .count()
    }

    /// Whether this timer is armed.
    #[cfg(test)]
    fn armed(&self, timer: Timer) -> bool {
        self.armed[timer.index()].is_some()
    }

    /// When this timer expires, if it is armed.
    #[cfg(test)]
    pub(crate) fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.armed[timer.index()]
    }

    /// Events written and awaiting their acknowledgement.
    fn in_flight(&self) -> usize {
        // Written events sit below `written`, which the window bounds: a cheap count even
        // with a long queue behind.
        self.pending
            .range(..self.written.min(self.pending.len()))
            .filter(|p| matches!(p.stage, Stage::Sent))
            .count()
    }

    /// Events whose callback has not run yet.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Arms `timer` to expire `after` the input being handled (every input that can arm one
    /// gives the time), replacing its earlier deadline.
    fn set_timer(&mut self, timer: Timer, after: Duration) {
        // Far enough for any wait, and no overflow for an absurd one.
        let after = after.min(Duration::from_secs(100 * 365 * 86_400));
        self.armed[timer.index()] = self.now.and_then(|now| now.checked_add(after));
    }

    /// Stops `timer` if it runs.
    fn stop_timer(&mut self, timer: Timer) {
        self.armed[timer.index()] = None;
    }

    /// `ackTimeout`: the timer runs while events are in flight and starts afresh with each
    /// `acknowledgement`.
    fn watch_acknowledgements(&mut self, acknowledgement: bool) {
        let Some(limit) = self.timing.ack_timeout else {
            return;
        };
        if self.in_flight() == 0 {
            self.stop_timer(Timer::Ack);
        } else if acknowledgement || self.armed[Timer::Ack.index()].is_none() {
            self.set_timer(Timer::Ack, limit);
        }
    }

    /// The wait before the next attempt: fixed by default, else growing with the attempts
    /// made, half of it random.
    fn reconnect_delay(&mut self) -> Duration {
        let Timing {
            reconnect_delay: base,
            max_reconnect_delay: max,
            ..
        } = self.timing;
        let random = if max > base { self.random.draw() } else { 0.0 };
        backoff(base, max, self.attempts, random)
    }

    fn window(&self) -> usize {
        self.config.max_in_flight.max(1)
    }

    /// Writes queued events in order while the server is drained and the window has room.
    fn flush(&mut self, out: &mut Vec<Output>) {
        if self.phase != Phase::Drained {
            return;
        }
        let end = self.window().min(self.pending.len());
        while self.written < end {
            if let Some(pending) = self.pending.get_mut(self.written) {
                if let Stage::Queued = pending.stage {
                    pending.stage = Stage::Sent;
                    let counts = &mut self.counts;
                    if pending.write != 0 {
                        counts.resent += 1;
                    }
                    counts.events_written += 1;
                    counts.queued = counts.queued.saturating_sub(1);
                    counts.in_flight += 1;
                    pending.write = counts.events_written;
                    out.push(Output::Write(pending.event.frame.clone()));
                }
            }
            self.written += 1;
        }
    }

    fn acknowledged(
        &mut self,
        out: &mut Vec<Output>,
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
    ) {
        let written = self.written.min(self.pending.len());
        let mut any_sent = false;
        let mut matched = None;
        for (index, pending) in self.pending.range(..written).enumerate() {
            if let Stage::Sent = pending.stage {
                any_sent = true;
                if pending.event.id == correlid {
                    matched = Some(index);
                    break;
                }
            }
        }
        let Some(index) = matched else {
            let message = if any_sent {
                DIFFERENT_EVENT
            } else {
                NO_EVENT_IN_QUEUE
            };
            return self.violation(out, ErrorCode::Proto, message);
        };
        let result = match (status, &error) {
            (0, _) => Ok(()),
            (_, Some(error)) => Err(SessionError {
                code: error
                    .code
                    .clone()
                    .map_or(ErrorCode::Ack, ErrorCode::Gateway),
                message: error.message.clone(),
            }),
            (_, None) => Err(SessionError::new(ErrorCode::Ack, "")),
        };
        out.push(Output::Emit(Notice::Acknowledgement {
            correlid,
            status,
            error,
        }));
        if let Some(pending) = self.pending.get_mut(index) {
            let counts = &mut self.counts;
            if result.is_ok() {
                counts.acknowledged += 1;
            } else {
                counts.rejected += 1;
            }
            counts.in_flight = counts.in_flight.saturating_sub(1);
            counts.last_acked_write = pending.write;
            pending.stage = Stage::Acked(result);
            if let Some(stored) = pending.event.stored {
                out.push(Output::Release(stored));
            }
        }
        self.release(out);
        self.flush(out);
    }

    /// Runs the callbacks of the acknowledged events at the head of the queue.
    fn release(&mut self, out: &mut Vec<Output>) {
        while matches!(
            self.pending.front(),
            Some(Pending {
                stage: Stage::Acked(_),
                ..
            })
        ) {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            self.written = self.written.saturating_sub(1);
            if let Stage::Acked(result) = pending.stage {
                out.push(Output::Emit(Notice::EventDone {
                    seq: pending.event.seq,
                    result,
                }));
            }
        }
    }

    /// The server broke the protocol where the original tells the application (a wrong
    /// acknowledgement): say so once, and drop the connection.
    fn violation(&mut self, out: &mut Vec<Output>, code: ErrorCode, message: &str) {
        out.push(Output::Emit(Notice::Error(SessionError::new(
            code, message,
        ))));
        out.push(Output::CloseSocket);
        self.connection_gone(out, Ending::Reported);
    }

    /// What the connection carried that only it can finish: unacknowledged events go back
    /// to be written again (same frame, same id) and its actions can no longer be acked.
    fn forget_connection(&mut self) {
        for pending in self
            .pending
            .range_mut(..self.written.min(self.pending.len()))
        {
            if let Stage::Sent = pending.stage {
                pending.stage = Stage::Queued;
            }
        }
        // Every event in flight is queued again.
        self.counts.queued += std::mem::take(&mut self.counts.in_flight);
        self.written = 0;
        self.actions = HashMap::new();
    }

    /// The connection or the attempt is over: reconnect, give up, or end the cycle.
    fn connection_gone(&mut self, out: &mut Vec<Output>, ending: Ending) {
        self.forget_connection();
        self.stop_timer(Timer::Connect);
        self.stop_timer(Timer::Ack);
        if !self.config.auto_reconnect {
            self.phase = Phase::Idle;
            if let Ending::Quiet(err) = ending {
                out.push(Output::Emit(Notice::Error(err)));
            }
            self.disconnect(out);
            return;
        }
        let limit = self.config.max_reconnect_attempts;
        if limit == 0 || self.attempts < limit {
            self.phase = Phase::WaitingToReconnect;
            if let Ending::Quiet(err) = ending {
                out.push(Output::Emit(Notice::Recovered(err)));
            }
            let delay = self.reconnect_delay();
            self.set_timer(Timer::Reconnect, delay);
            return;
        }
        self.phase = Phase::Idle;
        if self.welcomed {
            if let Ending::Quiet(err) = ending {
                out.push(Output::Emit(Notice::Recovered(err)));
            }
            self.disconnect(out);
            return;
        }
        let err = match ending {
            Ending::Reported => return,
            Ending::Quiet(err) => err,
            Ending::Clean => SessionError::new(
                ErrorCode::ConnectionReset,
                "Connection closed before the gateway welcomed the client.",
            ),
        };
        out.push(Output::Emit(Notice::Error(err)));
    }

    /// Ends the connection cycle, telling the application if it had been connected.
    fn disconnect(&mut self, out: &mut Vec<Output>) {
        if self.welcomed {
            self.welcomed = false;
            out.push(Output::Emit(Notice::Disconnect));
        }
    }
}

/// A frame that makes no sense in the current state, skipped as the original skips it.
fn ignore(out: &mut Vec<Output>, message: &str) {
    out.push(Output::Emit(Notice::Recovered(SessionError::new(
        ErrorCode::Proto,
        message,
    ))));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Token;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn text(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    fn event(seq: u64) -> OutgoingEvent {
        OutgoingEvent::new(seq, text(&format!("e{seq}")), "t", Value::Nil)
    }

    fn ack(seq: u64) -> Message {
        Message::Acknowledgement {
            correlid: text(&format!("e{seq}")),
            status: 0,
            error: None,
        }
    }

    fn acked(seq: u64) -> Output {
        Output::Emit(Notice::Acknowledgement {
            correlid: text(&format!("e{seq}")),
            status: 0,
            error: None,
        })
    }

    fn done(seq: u64) -> Output {
        Output::Emit(Notice::EventDone {
            seq,
            result: Ok(()),
        })
    }

    fn closed(seq: u64) -> Output {
        Output::Emit(Notice::EventDone {
            seq,
            result: Err(SessionError::new(ErrorCode::Closed, "Client closed.")),
        })
    }

    fn write(seq: u64) -> Output {
        Output::Write(event(seq).frame)
    }

    fn emit(notice: Notice) -> Output {
        Output::Emit(notice)
    }

    fn proto(message: &str) -> Output {
        emit(Notice::Error(SessionError::new(ErrorCode::Proto, message)))
    }

    fn recovered(code: ErrorCode, message: &str) -> Output {
        emit(Notice::Recovered(SessionError::new(code, message)))
    }

    fn hello() -> Output {
        Output::Write(Message::hello("dev").to_bytes())
    }

    fn config() -> SessionConfig {
        SessionConfig::new("dev")
    }

    /// The delays of the original: a fixed 1 s before reconnecting, no timeouts.
    fn timing() -> Timing {
        Timing {
            reconnect_delay: ms(1000),
            max_reconnect_delay: ms(1000),
            connect_timeout: None,
            ack_timeout: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    thread_local! {
        /// The test's clock: it moves only when [`fire`] fires a timer.
        static CLOCK: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }

    /// The test's time now.
    fn now() -> Instant {
        CLOCK.with(|c| {
            let at = c.get().unwrap_or_else(Instant::now);
            c.set(Some(at));
            at
        })
    }

    /// Fires `timer` if it is armed: the clock moves to its deadline (every timer due by then
    /// fires). Nothing happens when it is not armed.
    fn fire(s: &mut Session, timer: Timer) -> Vec<Output> {
        let Some(at) = s.deadline(timer) else {
            return Vec::new();
        };
        let at = at.max(now());
        CLOCK.with(|c| c.set(Some(at)));
        s.handle_timeout(at)
    }

    /// How long until `timer` expires, if it is armed.
    fn left(s: &Session, timer: Timer) -> Option<Duration> {
        s.deadline(timer)
            .map(|at| at.saturating_duration_since(now()))
    }

    /// Draws given in advance, then 0.5.
    struct Draws(VecDeque<f64>);

    impl Random for Draws {
        fn draw(&mut self) -> f64 {
            self.0.pop_front().unwrap_or(0.5)
        }
    }

    fn draws(values: &[f64]) -> Draws {
        Draws(values.iter().copied().collect())
    }

    fn session(config: SessionConfig) -> Session {
        Session::new(config, timing(), draws(&[]))
    }

    /// A session through connect, HELLO and WELCOME, not yet drained.
    fn welcomed(config: SessionConfig) -> Session {
        let mut s = session(config);
        assert_eq!(s.connect(now()), [Output::Connect]);
        assert_eq!(s.connected(), [hello()]);
        assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
        s
    }

    fn drained(config: SessionConfig) -> Session {
        let mut s = welcomed(config);
        assert_eq!(s.receive(Message::Drained, now()), [emit(Notice::Drain)]);
        s
    }

    fn refused() -> SessionError {
        SessionError::new(
            ErrorCode::Io("ECONNREFUSED".into()),
            "connect ECONNREFUSED 127.0.0.1:7777",
        )
    }

    #[test]
    fn happy_path() {
        let mut s = session(config());
        assert_eq!(s.phase(), Phase::Idle);
        assert_eq!(s.send(event(1), now()), []);
        assert_eq!(s.connect(now()), [Output::Connect]);
        assert_eq!(s.connect(now()), [], "already connecting");
        let mut expected = bytes::BytesMut::new();
        Message::hello("dev").encode(&mut expected);
        assert_eq!(s.connected(), [Output::Write(expected.freeze())]);
        assert_eq!(s.phase(), Phase::AwaitingWelcome);
        assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
        let action = Message::Action {
            id: Value::Number(5.0),
            kind: "reboot".into(),
            parameters: Value::Nil,
        };
        assert_eq!(
            s.receive(action, now()),
            [emit(Notice::Action {
                id: Value::Number(5.0),
                key: Value::Number(5.0).into(),
                kind: "reboot".into(),
                parameters: Value::Nil,
            })]
        );
        assert_eq!(s.send(event(2), now()), [], "not drained yet");
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(1)]
        );
        assert!(s.is_drained());
        assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
        assert_eq!(s.receive(ack(2), now()), [acked(2), done(2)]);
        assert_eq!(s.send(event(3), now()), [write(3)]);
        assert_eq!(s.connect(now()), [], "already connected");
    }

    fn stored(seq: u64, number: u64) -> OutgoingEvent {
        OutgoingEvent {
            stored: Some(number),
            ..event(seq)
        }
    }

    #[test]
    fn a_stored_event_is_released_when_answered_or_refused_and_kept_when_closed() {
        let mut s = drained(SessionConfig {
            max_in_flight: 2,
            max_queue_size: 3,
            ..config()
        });
        assert_eq!(s.send(stored(1, 11), now()), [write(1)]);
        assert_eq!(s.send(stored(2, 12), now()), [write(2)]);
        // Acknowledged out of order: released at once, the callback waits for event 1.
        assert_eq!(s.receive(ack(2), now()), [acked(2), Output::Release(12)]);
        let rejected = Message::Acknowledgement {
            correlid: text("e1"),
            status: 1,
            error: Some(ErrorBody {
                code: Some("E1".into()),
                message: "no".into(),
            }),
        };
        let out = s.receive(rejected, now());
        assert_eq!(out[1], Output::Release(11), "rejected is answered too");
        assert_eq!(out.len(), 4, "{out:?}");
        // Restored events pass the queue's limit; a stored event refused by it is released.
        for seq in 3..6 {
            s.restore(stored(seq, 10 + seq), now());
        }
        let out = s.send(stored(6, 16), now());
        assert_eq!(out[0], Output::Release(16));
        assert!(matches!(
            &out[1],
            Output::Emit(Notice::EventDone { seq: 6, result: Err(e) }) if e.code == ErrorCode::QueueFull
        ));
        // close() fails the rest: they stay stored.
        let out = s.close(false);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Release(_))),
            "{out:?}"
        );
    }

    #[test]
    fn ten_events_are_sent_one_at_a_time_in_order() {
        let mut s = drained(config());
        assert_eq!(s.send(event(0), now()), [write(0)]);
        for seq in 1..10 {
            assert_eq!(s.send(event(seq), now()), []);
        }
        assert_eq!((s.queued(), s.in_flight()), (9, 1));
        for seq in 0..9 {
            assert_eq!(
                s.receive(ack(seq), now()),
                [acked(seq), done(seq), write(seq + 1)]
            );
        }
        assert_eq!(s.receive(ack(9), now()), [acked(9), done(9)]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_failed_acknowledgement_fails_the_callback() {
        let mut s = drained(config());
        s.send(event(1), now());
        s.send(event(2), now());
        let error = ErrorBody {
            code: Some("IM4".into()),
            message: "Invalid bundle.".into(),
        };
        let failed = |seq: u64, error: &ErrorBody| Message::Acknowledgement {
            correlid: text(&format!("e{seq}")),
            status: 1,
            error: Some(error.clone()),
        };
        assert_eq!(
            s.receive(failed(1, &error), now()),
            [
                emit(Notice::Acknowledgement {
                    correlid: text("e1"),
                    status: 1,
                    error: Some(error.clone()),
                }),
                emit(Notice::EventDone {
                    seq: 1,
                    result: Err(SessionError::new(
                        ErrorCode::Gateway("IM4".into()),
                        "Invalid bundle."
                    )),
                }),
                write(2),
            ]
        );
        let uncoded = ErrorBody {
            code: None,
            message: "No.".into(),
        };
        let out = s.receive(failed(2, &uncoded), now());
        assert_eq!(
            out[1],
            emit(Notice::EventDone {
                seq: 2,
                result: Err(SessionError::new(ErrorCode::Ack, "No.")),
            })
        );
    }

    #[test]
    fn an_acknowledgement_for_a_different_event_drops_the_connection() {
        let mut s = drained(config());
        s.send(event(1), now());
        assert_eq!(
            s.receive(ack(7), now()),
            [proto(DIFFERENT_EVENT), Output::CloseSocket]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        assert_eq!((s.queued(), s.in_flight()), (1, 0));
    }

    #[test]
    fn an_acknowledgement_with_nothing_in_flight_drops_the_connection() {
        let mut s = drained(SessionConfig {
            auto_reconnect: false,
            ..config()
        });
        assert_eq!(
            s.receive(ack(1), now()),
            [
                proto(NO_EVENT_IN_QUEUE),
                Output::CloseSocket,
                emit(Notice::Disconnect)
            ]
        );
        assert_eq!(s.phase(), Phase::Idle);
    }

    #[test]
    fn frames_out_of_place_are_skipped_and_the_connection_goes_on() {
        let mut s = welcomed(config());
        assert_eq!(
            s.receive(Message::Welcome, now()),
            [recovered(ErrorCode::Proto, "Received welcome twice.")]
        );
        assert_eq!(s.phase(), Phase::Receiving);
        let mut s = session(config());
        s.connect(now());
        s.connected();
        assert_eq!(
            s.receive(Message::Drained, now()),
            [recovered(
                ErrorCode::Proto,
                "Received drained before welcome."
            )]
        );
        assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
        let mut s = drained(config());
        let from_server = Message::Event {
            id: text("x"),
            kind: "t".into(),
            bundle: Value::Nil,
        };
        assert_eq!(
            s.receive(from_server, now()),
            [recovered(
                ErrorCode::Proto,
                "Received event, which only a client sends."
            )]
        );
        assert_eq!(
            s.receive(Message::hello("x"), now()),
            [recovered(
                ErrorCode::Proto,
                "Received hello, which only a client sends."
            )]
        );
        let unknown = SessionError::new(ErrorCode::Proto, "Unknown message token 0x09.");
        assert_eq!(
            s.ignored(unknown.clone()),
            [emit(Notice::Recovered(unknown))]
        );
        assert!(s.is_drained());
        assert_eq!(s.send(event(1), now()), [write(1)], "events still flow");
    }

    #[test]
    fn an_undecodable_frame_ends_the_connection_quietly_unless_it_was_the_last() {
        let mut s = drained(SessionConfig {
            auto_reconnect: false,
            ..config()
        });
        let bad = SessionError::new(ErrorCode::Proto, "Failed to deserialize packet. truncated");
        assert_eq!(
            s.protocol_error(bad, now()),
            [
                Output::CloseSocket,
                proto("Failed to deserialize packet. truncated"),
                emit(Notice::Disconnect)
            ]
        );
        let mut s = drained(config());
        let bad = SessionError::new(ErrorCode::Proto, "Failed to deserialize packet. truncated");
        assert_eq!(
            s.protocol_error(bad, now()),
            [
                Output::CloseSocket,
                recovered(ErrorCode::Proto, "Failed to deserialize packet. truncated")
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        let mut s = drained(config());
        let timeout = SessionError::new(ErrorCode::TimedOut, "No acknowledgement.");
        assert_eq!(
            s.protocol_error(timeout.clone(), now()),
            [Output::CloseSocket, emit(Notice::Recovered(timeout))]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    }

    #[test]
    fn bye_with_an_error_is_reported_once() {
        let mut s = drained(SessionConfig {
            auto_reconnect: false,
            ..config()
        });
        let bye = Message::Bye {
            error: Some(ErrorBody {
                code: Some("IM401".into()),
                message: "Unauthorized.".into(),
            }),
        };
        assert_eq!(
            s.receive(bye, now()),
            [
                emit(Notice::Error(SessionError::new(
                    ErrorCode::Gateway("IM401".into()),
                    "Unauthorized."
                ))),
                Output::CloseSocket,
                emit(Notice::Disconnect)
            ]
        );
        assert_eq!(s.connection_lost(None, now()), [], "already handled");

        let mut s = drained(config());
        let bye = Message::Bye {
            error: Some(ErrorBody {
                code: None,
                message: "Go away.".into(),
            }),
        };
        assert_eq!(
            s.receive(bye, now()),
            [
                emit(Notice::Error(SessionError::new(ErrorCode::Bye, "Go away."))),
                Output::CloseSocket
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        let mut s = drained(config());
        assert_eq!(
            s.receive(Message::Bye { error: None }, now()),
            [Output::CloseSocket]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
    }

    #[test]
    fn an_event_in_flight_is_resent_after_a_reconnect() {
        let mut s = drained(config());
        assert_eq!(s.send(event(1), now()), [write(1)]);
        s.send(event(2), now());
        let reset = SessionError::new(ErrorCode::ConnectionReset, "read ECONNRESET");
        assert_eq!(
            s.connection_lost(Some(reset.clone()), now()),
            [emit(Notice::Recovered(reset))]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        assert_eq!(s.phase(), Phase::WaitingToReconnect);
        assert_eq!((s.queued(), s.in_flight()), (2, 0));
        assert_eq!(
            fire(&mut s, Timer::Reconnect),
            [emit(Notice::Reconnect), Output::Connect]
        );
        assert_eq!(s.connected(), [hello()]);
        assert_eq!(s.receive(Message::Welcome, now()), [], "no second connect");
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(1)]
        );
        assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
    }

    #[test]
    fn a_kick_and_reconnect_then_close_give_each_notice_its_count() {
        let mut s = session(config());
        let mut all = Vec::new();
        all.extend(s.connect(now()));
        all.extend(s.connected());
        all.extend(s.receive(Message::Welcome, now()));
        all.extend(s.receive(Message::Drained, now()));
        all.extend(s.receive(Message::Bye { error: None }, now()));
        all.extend(s.connection_lost(None, now()));
        all.extend(fire(&mut s, Timer::Reconnect));
        all.extend(s.connected());
        all.extend(s.receive(Message::Welcome, now()));
        all.extend(s.receive(Message::Drained, now()));
        all.extend(s.close(false));
        all.extend(s.connection_lost(None, now()));
        all.extend(fire(&mut s, Timer::Reconnect));
        let count = |n: Notice| all.iter().filter(|o| **o == emit(n.clone())).count();
        assert_eq!(count(Notice::Connect), 1);
        assert_eq!(count(Notice::Drain), 2);
        assert_eq!(count(Notice::Reconnect), 1);
        assert_eq!(count(Notice::Disconnect), 1);
        assert!(!all
            .iter()
            .any(|o| matches!(o, Output::Emit(Notice::Error(_)))));
        assert_eq!(s.phase(), Phase::Idle);
    }

    #[test]
    fn giving_up_before_any_welcome_reports_the_last_error() {
        let mut s = session(SessionConfig {
            max_reconnect_attempts: 2,
            ..config()
        });
        s.connect(now());
        let quiet = [emit(Notice::Recovered(refused()))];
        assert_eq!(s.connect_failed(refused(), now()), quiet);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
        assert_eq!(s.connect_failed(refused(), now()), quiet);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
        let last = SessionError::new(ErrorCode::TimedOut, "timed out");
        assert_eq!(
            s.connect_failed(last.clone(), now()),
            [emit(Notice::Error(last))]
        );
        assert_eq!(s.phase(), Phase::Idle);
        assert_eq!(fire(&mut s, Timer::Reconnect), []);
        // A connection that closes before WELCOME is a failed attempt too.
        let mut s = session(SessionConfig {
            max_reconnect_attempts: 1,
            ..config()
        });
        s.connect(now());
        s.connect_failed(refused(), now());
        fire(&mut s, Timer::Reconnect);
        s.connected();
        assert_eq!(
            s.connection_lost(None, now()),
            [emit(Notice::Error(SessionError::new(
                ErrorCode::ConnectionReset,
                "Connection closed before the gateway welcomed the client."
            )))]
        );
    }

    #[test]
    fn giving_up_after_a_connection_disconnects() {
        let mut s = drained(SessionConfig {
            max_reconnect_attempts: 2,
            ..config()
        });
        s.send(event(1), now());
        let quiet = [emit(Notice::Recovered(refused()))];
        assert_eq!(s.connection_lost(None, now()), []);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
        assert_eq!(s.connect_failed(refused(), now()), quiet);
        fire(&mut s, Timer::Reconnect);
        s.connected();
        // WELCOME starts the count again.
        assert_eq!(s.receive(Message::Welcome, now()), []);
        assert_eq!(s.connection_lost(None, now()), []);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
        assert_eq!(s.connect_failed(refused(), now()), quiet);
        fire(&mut s, Timer::Reconnect);
        assert_eq!(
            s.connect_failed(refused(), now()),
            [emit(Notice::Recovered(refused())), emit(Notice::Disconnect)]
        );
        assert_eq!(s.pending(), 1, "the event waits for a later connect()");
        assert_eq!(s.close(false), [closed(1)]);
    }

    #[test]
    fn close_fails_the_queue_in_order() {
        let mut s = drained(config());
        for seq in 1..=3 {
            s.send(event(seq), now());
        }
        assert_eq!(
            s.close(false),
            [
                Output::CloseSocket,
                emit(Notice::Disconnect),
                closed(1),
                closed(2),
                closed(3)
            ]
        );
        assert_eq!(s.pending(), 0);
        assert_eq!(s.close(false), []);
        assert_eq!(s.connected(), [Output::CloseSocket], "a stale connection");
    }

    #[test]
    fn close_can_keep_the_queue_for_the_next_connect() {
        let mut s = drained(config());
        s.send(event(1), now());
        s.send(event(2), now());
        assert_eq!(
            s.close(true),
            [Output::CloseSocket, emit(Notice::Disconnect)]
        );
        assert_eq!(s.receive(ack(1), now()), [], "nothing is read after close");
        assert_eq!(s.connect(now()), [Output::Connect]);
        s.connected();
        assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(1)]
        );
    }

    #[test]
    fn close_during_the_reconnect_wait_stops_reconnecting() {
        let mut s = drained(config());
        s.send(event(1), now());
        assert_eq!(s.connection_lost(None, now()), []);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        assert_eq!(
            s.close(false),
            [emit(Notice::Disconnect), closed(1)],
            "no socket to close"
        );
        assert_eq!(left(&s, Timer::Reconnect), None);
        assert_eq!(fire(&mut s, Timer::Reconnect), []);
        assert_eq!(s.phase(), Phase::Idle);
    }

    #[test]
    fn connect_during_the_reconnect_wait_connects_at_once() {
        let mut s = welcomed(config());
        s.connection_lost(None, now());
        assert_eq!(s.connect(now()), [Output::Connect]);
        assert_eq!(left(&s, Timer::Reconnect), None);
        assert_eq!(fire(&mut s, Timer::Reconnect), [], "the wait is over");
        s.connected();
        assert_eq!(s.receive(Message::Welcome, now()), [], "same cycle");
    }

    #[test]
    fn without_auto_reconnect_a_connection_error_is_reported() {
        let no_reconnect = SessionConfig {
            auto_reconnect: false,
            ..config()
        };
        let mut s = session(no_reconnect.clone());
        s.send(event(1), now());
        s.connect(now());
        assert_eq!(
            s.connect_failed(refused(), now()),
            [emit(Notice::Error(refused()))]
        );
        assert_eq!(s.phase(), Phase::Idle);
        assert_eq!(s.pending(), 1);

        let mut s = drained(no_reconnect);
        s.send(event(1), now());
        let reset = SessionError::new(ErrorCode::ConnectionReset, "read ECONNRESET");
        assert_eq!(
            s.connection_lost(Some(reset.clone()), now()),
            [emit(Notice::Error(reset)), emit(Notice::Disconnect)]
        );
        assert_eq!(s.connect(now()), [Output::Connect]);
        s.connected();
        s.receive(Message::Welcome, now());
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(1)]
        );
    }

    #[test]
    fn an_oversize_frame_is_answered_with_bye_im491_and_ends_the_connection() {
        let mut s = drained(config());
        let bye = Message::Bye {
            error: Some(ErrorBody {
                code: Some("IM491".into()),
                message: "Maximum buffer size exceeded.".into(),
            }),
        };
        assert_eq!(
            s.buffer_exceeded(now()),
            [
                Output::Write(bye.to_bytes()),
                Output::CloseSocket,
                recovered(ErrorCode::BufferExceeded, "Maximum buffer size exceeded.")
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        assert_eq!(s.buffer_exceeded(now()), [], "no connection any more");
    }

    #[test]
    fn a_full_queue_refuses_the_next_event_through_its_callback() {
        let mut s = session(SessionConfig {
            max_queue_size: 2,
            ..config()
        });
        assert_eq!(s.send(event(1), now()), []);
        assert_eq!(s.send(event(2), now()), []);
        match &s.send(event(3), now())[..] {
            [Output::Emit(Notice::EventDone {
                seq: 3,
                result: Err(err),
            })] => assert_eq!(err.code, "EQUEUEFULL"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.pending(), 2);
        // Room again once an event is done.
        s.connect(now());
        s.connected();
        s.receive(Message::Welcome, now());
        s.receive(Message::Drained, now());
        assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
        assert_eq!(s.send(event(4), now()), []);
        assert_eq!(s.pending(), 2);
    }

    #[test]
    fn a_window_of_four_still_runs_callbacks_in_send_order() {
        let mut s = drained(SessionConfig {
            max_in_flight: 4,
            ..config()
        });
        let mut writes = Vec::new();
        for seq in 0..6 {
            writes.extend(s.send(event(seq), now()));
        }
        assert_eq!(writes, [write(0), write(1), write(2), write(3)]);
        assert_eq!(s.receive(ack(2), now()), [acked(2)]);
        assert_eq!(s.receive(ack(1), now()), [acked(1)]);
        assert_eq!(
            s.receive(ack(0), now()),
            [acked(0), done(0), done(1), done(2), write(4), write(5)]
        );
        assert_eq!(s.receive(ack(5), now()), [acked(5)]);
        assert_eq!(
            s.receive(ack(2), now()),
            [proto(DIFFERENT_EVENT), Output::CloseSocket]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        // 3 and 4 are re-sent; 5, already acknowledged, is not.
        fire(&mut s, Timer::Reconnect);
        s.connected();
        s.receive(Message::Welcome, now());
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(3), write(4)]
        );
        assert_eq!(s.receive(ack(4), now()), [acked(4)]);
        assert_eq!(
            s.receive(ack(3), now()),
            [acked(3), done(3), done(4), done(5)]
        );
    }

    #[test]
    fn ack_action_answers_on_the_delivering_connection_only() {
        let mut s = drained(config());
        let action = |id: f64| Message::Action {
            id: Value::Number(id),
            kind: "x".into(),
            parameters: Value::Nil,
        };
        s.receive(action(1.0), now());
        s.receive(action(2.0), now());
        let expected = Message::Acknowledgement {
            correlid: Value::Number(1.0),
            status: 0,
            error: None,
        }
        .to_bytes();
        assert_eq!(
            s.ack_action(Value::Number(1.0), None),
            [Output::Write(expected)]
        );
        assert_eq!(s.ack_action(Value::Number(1.0), None), [], "acked already");
        let error = ErrorBody {
            code: Some("E1".into()),
            message: "Failed.".into(),
        };
        let mut expected = bytes::BytesMut::new();
        Message::Acknowledgement {
            correlid: Value::Number(2.0),
            status: 1,
            error: Some(error.clone()),
        }
        .encode(&mut expected);
        assert_eq!(
            s.ack_action(Value::Number(2.0), Some(error)),
            [Output::Write(expected.freeze())]
        );
        s.receive(action(3.0), now());
        s.connection_lost(None, now());
        fire(&mut s, Timer::Reconnect);
        s.connected();
        s.receive(Message::Welcome, now());
        assert_eq!(s.ack_action(Value::Number(3.0), None), []);
    }

    #[test]
    fn each_delivery_of_an_action_id_is_acknowledged_once_among_many() {
        // 100,000 actions outstanding, one id delivered three times: every ack finds its id
        // whatever the order, each delivery answers once, and what is acked goes.
        let mut s = drained(config());
        let action = |id: Value| Message::Action {
            id,
            kind: "x".into(),
            parameters: Value::Nil,
        };
        let id = |n: u32| match n % 3 {
            0 => text(&format!("a{n}")),
            1 => Value::Number(f64::from(n)),
            _ => Value::Binary(Bytes::from(n.to_be_bytes().to_vec())),
        };
        for n in 0..100_000 {
            s.receive(action(id(n)), now());
        }
        let twice = Value::Array(vec![text("dup"), Value::Binary(Bytes::from_static(b"\0"))]);
        for _ in 0..3 {
            s.receive(action(twice.clone()), now());
        }
        let written = |id: &Value| {
            [Output::Write(
                Message::Acknowledgement {
                    correlid: id.clone(),
                    status: 0,
                    error: None,
                }
                .to_bytes(),
            )]
        };
        for n in (0..100_000).rev().step_by(2).chain((0..100_000).step_by(2)) {
            assert_eq!(s.ack_action(id(n), None), written(&id(n)), "action {n}");
        }
        for n in [0, 1, 2, 99_999] {
            assert_eq!(s.ack_action(id(n), None), [], "action {n} acked already");
        }
        assert_eq!(s.ack_action(id(100_000), None), [], "never delivered");
        for _ in 0..3 {
            assert_eq!(s.ack_action(twice.clone(), None), written(&twice));
        }
        assert_eq!(
            s.ack_action(twice, None),
            [],
            "three deliveries, three acks"
        );
        assert_eq!(s.stats().actions_acked, 100_003);
    }

    /// [`timing`] with `connectTimeout` 300 ms and a backoff from 100 ms to 1 s.
    fn backing_off() -> Timing {
        Timing {
            reconnect_delay: ms(100),
            max_reconnect_delay: ms(1000),
            connect_timeout: Some(ms(300)),
            ack_timeout: None,
        }
    }

    fn no_welcome(limit: u64) -> SessionError {
        SessionError::new(
            ErrorCode::TimedOut,
            format!("The gateway did not welcome the client within {limit} ms."),
        )
    }

    #[test]
    fn the_session_judges_bad_frames_itself() {
        // An unknown token: skipped, and the connection goes on.
        let mut s = drained(config());
        let unknown = Frame {
            token: 0x99,
            body: Bytes::new(),
        };
        assert_eq!(
            s.handle_frame(Ok(unknown), now()),
            [recovered(ErrorCode::Proto, "Unknown message token 0x99.")]
        );
        assert!(s.is_drained());
        // A body that does not decode: the connection ends.
        let undecodable = Frame {
            token: Token::Action as u8,
            body: Bytes::from_static(&[0xc1]),
        };
        let out = s.handle_frame(Ok(undecodable), now());
        assert_eq!(out[0], Output::CloseSocket);
        assert!(
            matches!(&out[1], Output::Emit(Notice::Recovered(e)) if e.code == ErrorCode::Proto),
            "{out:?}"
        );
        assert!(s.armed(Timer::Reconnect));
        // The stream ended inside a frame: ECONNRESET.
        let mut s = drained(config());
        assert_eq!(
            s.handle_frame(Err(FrameError::Truncated { buffered: 3 }), now()),
            [recovered(
                ErrorCode::ConnectionReset,
                "Connection closed in the middle of a frame (3 bytes of it received)."
            )]
        );
        // Over 10 MiB: BYE IM491, and the connection ends.
        let mut s = drained(config());
        let out = s.handle_frame(Err(FrameError::Oversize { frame_len: 1 << 30 }), now());
        let bye = Message::Bye {
            error: Some(ErrorBody {
                code: Some("IM491".into()),
                message: MAXIMUM_BUFFER.into(),
            }),
        };
        assert_eq!(
            out[..2],
            [Output::Write(bye.to_bytes()), Output::CloseSocket]
        );
    }

    #[test]
    fn a_connect_timeout_reconnects_with_backoff_and_jitter() {
        let mut s = Session::new(config(), backing_off(), draws(&[0.0, 0.5, 0.999]));
        let connect = [Output::Connect];
        assert_eq!(s.connect(now()), connect);
        assert_eq!(left(&s, Timer::Connect), Some(ms(300)));
        // Nothing after TCP: the attempt is abandoned; the first wait is half of 100 ms at
        // least (draw 0.0).
        assert_eq!(
            fire(&mut s, Timer::Connect),
            [
                Output::CloseSocket,
                emit(Notice::Recovered(no_welcome(300)))
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(50)));
        assert_eq!(fire(&mut s, Timer::Connect), [], "fired already");
        let mut reconnect = vec![emit(Notice::Reconnect)];
        reconnect.extend(connect.clone());
        assert_eq!(fire(&mut s, Timer::Reconnect), reconnect);
        assert_eq!(left(&s, Timer::Connect), Some(ms(300)));
        // Connected but no WELCOME: the same timer, the same ending; the wait doubles (200 ms,
        // half of it fixed, draw 0.5).
        assert_eq!(s.connected(), [hello()]);
        assert_eq!(
            fire(&mut s, Timer::Connect),
            [
                Output::CloseSocket,
                emit(Notice::Recovered(no_welcome(300)))
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(150)));
        assert_eq!(fire(&mut s, Timer::Reconnect), reconnect);
        match &s.connect_failed(refused(), now())[..] {
            [Output::Emit(Notice::Recovered(_))] => {
                assert_eq!(left(&s, Timer::Connect), None);
                let wait = left(&s, Timer::Reconnect).unwrap_or_default();
                assert!(wait > ms(399) && wait < ms(400), "400 ms at most: {wait:?}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fire(&mut s, Timer::Reconnect), reconnect);
        assert_eq!(fire(&mut s, Timer::Reconnect), [], "reported twice");
        assert_eq!(s.connected(), [hello()]);
        // WELCOME stops the timer and starts the count again: back to 100 ms (draw 0.5 from
        // here on).
        assert_eq!(s.receive(Message::Welcome, now()), [emit(Notice::Connect)]);
        assert_eq!(left(&s, Timer::Connect), None);
        assert_eq!(fire(&mut s, Timer::Connect), [], "stopped");
        assert_eq!(s.connection_lost(None, now()), []);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(75)));
    }

    #[test]
    fn the_reconnect_wait_stays_within_its_bounds() {
        for (attempts, grown) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (30, 1000),
        ] {
            for random in [0.0, 0.25, 0.5, 0.999_999] {
                let wait = backoff(ms(100), ms(1000), attempts, random);
                assert!(
                    wait >= ms(grown / 2) && wait < ms(grown),
                    "{attempts} {wait:?}"
                );
            }
        }
        // And as the session draws them, over many failed attempts.
        let mut s = Session::new(config(), backing_off(), Xorshift::new(42));
        s.connect(now());
        let mut waits = Vec::new();
        for attempt in 0..40u32 {
            s.connect_failed(refused(), now());
            if let Some(wait) = left(&s, Timer::Reconnect) {
                let grown = ms(100 << attempt.min(4)).min(ms(1000));
                assert!(wait >= grown / 2 && wait < grown, "{attempt}: {wait:?}");
                waits.push(wait);
            }
            fire(&mut s, Timer::Reconnect);
        }
        assert_eq!(waits.len(), 40);
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 30, "jitter varies the waits");
    }

    #[test]
    fn without_a_larger_maximum_the_delay_is_fixed() {
        assert_eq!(backoff(ms(1000), ms(1000), 0, 0.7), ms(1000));
        assert_eq!(backoff(ms(1000), ms(0), 9, 0.7), ms(1000));
        let mut s = session(config());
        s.connect(now());
        for _ in 0..5 {
            s.connect_failed(refused(), now());
            assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
            fire(&mut s, Timer::Reconnect);
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_half_of_it_random() {
        let delays: Vec<_> = (0..6)
            .map(|n| {
                (
                    backoff(ms(40), ms(400), n, 0.0),
                    backoff(ms(40), ms(400), n, 0.999),
                )
            })
            .collect();
        assert_eq!(delays[0], (ms(20), ms(40) - Duration::from_micros(20)));
        assert_eq!(delays[1].0, ms(40));
        assert_eq!(delays[3].0, ms(160));
        assert_eq!(delays[4].0, ms(200), "capped at 400, half fixed");
        assert_eq!(delays[5].0, ms(200));
        assert!(delays[5].1 < ms(400) && delays[5].1 > ms(399));
        assert_eq!(backoff(ms(40), ms(400), u32::MAX, 0.0), ms(200));
    }

    #[test]
    fn xorshift_draws_stay_in_their_interval_and_vary() {
        let mut random = Xorshift::new(0x9e37_79b9_7f4a_7c15);
        let draws: Vec<f64> = (0..1000).map(|_| random.draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
        let mut zero = Xorshift::new(0);
        assert_ne!(zero.draw(), zero.draw(), "a zero seed still moves");
    }

    #[test]
    fn connect_timeouts_use_up_the_attempts_and_the_last_one_is_the_error() {
        let mut s = Session::new(
            SessionConfig {
                max_reconnect_attempts: 1,
                ..config()
            },
            Timing {
                max_reconnect_delay: ms(100),
                ..backing_off()
            },
            draws(&[]),
        );
        s.connect(now());
        assert_eq!(
            fire(&mut s, Timer::Connect),
            [
                Output::CloseSocket,
                emit(Notice::Recovered(no_welcome(300)))
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(100)));
        fire(&mut s, Timer::Reconnect);
        s.connected();
        assert_eq!(
            fire(&mut s, Timer::Connect),
            [Output::CloseSocket, emit(Notice::Error(no_welcome(300)))],
            "ETIMEDOUT, as any last error"
        );
        assert_eq!(s.phase(), Phase::Idle);
        assert!(
            Timer::ALL.iter().all(|&t| !s.armed(t)),
            "nothing keeps it alive"
        );
        for timer in Timer::ALL {
            assert_eq!(fire(&mut s, timer), []);
        }
        // Without autoReconnect the first timeout is the error.
        let mut s = Session::new(
            SessionConfig {
                auto_reconnect: false,
                ..config()
            },
            backing_off(),
            draws(&[]),
        );
        s.connect(now());
        assert_eq!(
            fire(&mut s, Timer::Connect),
            [Output::CloseSocket, emit(Notice::Error(no_welcome(300)))]
        );
    }

    #[test]
    fn the_ack_timeout_runs_while_events_are_in_flight() {
        let timing = Timing {
            ack_timeout: Some(ms(500)),
            ..timing()
        };
        let in_flight = SessionConfig {
            max_in_flight: 2,
            ..config()
        };
        let mut s = Session::new(in_flight.clone(), timing.clone(), draws(&[]));
        s.connect(now());
        s.connected();
        s.receive(Message::Welcome, now());
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain)],
            "nothing in flight"
        );
        let set = Some(ms(500));
        assert_eq!(s.send(event(1), now()), [write(1)]);
        assert_eq!(left(&s, Timer::Ack), set);
        // The clock moves on: a restarted timer runs from the new time.
        CLOCK.with(|c| c.set(Some(now() + ms(100))));
        assert_eq!(s.send(event(2), now()), [write(2)]);
        assert_eq!(left(&s, Timer::Ack), Some(ms(400)), "already running");
        assert_eq!(s.send(event(3), now()), [], "queued, not in flight");
        assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(3)],);
        assert_eq!(
            left(&s, Timer::Ack),
            set,
            "each acknowledgement starts it afresh"
        );
        assert_eq!(s.receive(ack(2), now()), [acked(2), done(2)]);
        assert_eq!(left(&s, Timer::Ack), set);
        assert_eq!(s.receive(ack(3), now()), [acked(3), done(3)]);
        assert_eq!(left(&s, Timer::Ack), None);
        assert_eq!(fire(&mut s, Timer::Ack), [], "stopped");
        s.send(event(4), now());
        assert_eq!(
            fire(&mut s, Timer::Ack),
            [
                Output::CloseSocket,
                recovered(
                    ErrorCode::TimedOut,
                    "No acknowledgement from the gateway within 500 ms."
                )
            ]
        );
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
        s.connected();
        s.receive(Message::Welcome, now());
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(4)],
        );
        assert_eq!(left(&s, Timer::Ack), set, "re-sent, and watched again");
        // A dropped connection stops it; so does an unexpected acknowledgement.
        assert_eq!(s.connection_lost(None, now()), []);
        assert_eq!(left(&s, Timer::Ack), None);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        fire(&mut s, Timer::Reconnect);
        s.connected();
        s.receive(Message::Welcome, now());
        s.receive(Message::Drained, now());
        assert_eq!(
            s.receive(ack(9), now()),
            [proto(DIFFERENT_EVENT), Output::CloseSocket]
        );
        assert_eq!(left(&s, Timer::Ack), None);
        assert_eq!(left(&s, Timer::Reconnect), Some(ms(1000)));
        // Without autoReconnect the timeout is the error that ends the cycle.
        let mut s = Session::new(
            SessionConfig {
                auto_reconnect: false,
                ..in_flight
            },
            timing,
            draws(&[]),
        );
        s.connect(now());
        s.connected();
        s.receive(Message::Welcome, now());
        s.receive(Message::Drained, now());
        s.send(event(1), now());
        assert_eq!(
            fire(&mut s, Timer::Ack),
            [
                Output::CloseSocket,
                emit(Notice::Error(SessionError::new(
                    ErrorCode::TimedOut,
                    "No acknowledgement from the gateway within 500 ms."
                ))),
                emit(Notice::Disconnect),
            ]
        );
    }

    #[test]
    fn close_stops_every_timer_that_runs() {
        let timing = Timing {
            ack_timeout: Some(ms(500)),
            ..backing_off()
        };
        let mut s = Session::new(config(), timing.clone(), draws(&[]));
        s.connect(now());
        assert_eq!(s.close(false), [Output::CloseSocket]);
        assert_eq!(left(&s, Timer::Connect), None);
        assert_eq!(
            fire(&mut s, Timer::Connect),
            [],
            "a late report does nothing"
        );

        let mut s = Session::new(config(), timing.clone(), draws(&[]));
        s.connect(now());
        s.connected();
        s.receive(Message::Welcome, now());
        s.receive(Message::Drained, now());
        s.send(event(1), now());
        assert_eq!(
            s.close(false),
            [Output::CloseSocket, emit(Notice::Disconnect), closed(1)]
        );
        assert_eq!(left(&s, Timer::Ack), None);
        assert_eq!(fire(&mut s, Timer::Ack), []);

        let mut s = Session::new(config(), timing, draws(&[1.0 / 64.0]));
        s.connect(now());
        s.connect_failed(refused(), now());
        assert!(s.armed(Timer::Reconnect));
        assert_eq!(s.close(true), []);
        assert_eq!(left(&s, Timer::Reconnect), None);
        assert_eq!(fire(&mut s, Timer::Reconnect), []);
        assert_eq!(s.phase(), Phase::Idle);
    }

    #[test]
    fn stats_count_events_actions_and_reconnects() {
        let mut s = session(SessionConfig {
            max_queue_size: 3,
            ..config()
        });
        assert_eq!(s.stats(), SessionStats::default());
        s.send(event(1), now());
        assert_eq!((s.stats().queued, s.stats().in_flight), (1, 0));
        s.connect(now());
        s.connected();
        assert!(!s.stats().connected, "not welcomed yet");
        s.receive(Message::Welcome, now());
        assert!(s.stats().connected && !s.stats().drained);
        let action = Message::Action {
            id: Value::Number(1.0),
            kind: "a".into(),
            parameters: Value::Nil,
        };
        s.receive(action, now());
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(1)]
        );
        let stats = s.stats();
        assert_eq!((stats.queued, stats.in_flight, stats.drained), (0, 1, true));
        assert_eq!((stats.actions_received, stats.events_written), (1, 1));
        assert_eq!(
            s.event_writes(),
            (1, 0),
            "written once, nothing acknowledged"
        );
        assert_eq!(s.ack_action(Value::Number(1.0), None).len(), 1);
        assert_eq!(s.ack_action(Value::Number(1.0), None), [], "acked already");
        assert_eq!(s.stats().actions_acked, 1);
        s.send(event(2), now());
        s.send(event(3), now());
        assert_eq!(s.stats().queued, 2);
        s.send(event(4), now());
        assert_eq!(s.stats().failed_queue_full, 1);
        assert_eq!(s.receive(ack(1), now()), [acked(1), done(1), write(2)]);
        assert_eq!(s.event_writes(), (2, 1));
        let rejected = Message::Acknowledgement {
            correlid: text("e2"),
            status: 1,
            error: None,
        };
        s.receive(rejected, now());
        assert_eq!(s.event_writes(), (3, 2), "event 3 written as the third");
        assert_eq!((s.stats().acknowledged, s.stats().rejected), (1, 1));
        // The connection drops with event 3 in flight: it is written again, counted as re-sent.
        s.connection_lost(None, now());
        let stats = s.stats();
        assert_eq!((stats.queued, stats.in_flight), (1, 0));
        assert!(!stats.connected && !stats.drained);
        fire(&mut s, Timer::Reconnect);
        s.connected();
        s.receive(Message::Welcome, now());
        assert_eq!(
            s.receive(Message::Drained, now()),
            [emit(Notice::Drain), write(3)]
        );
        assert_eq!(s.event_writes(), (4, 2));
        s.send(event(5), now());
        s.send(event(6), now());
        s.close(false);
        assert_eq!(
            s.stats(),
            SessionStats {
                queued: 0,
                in_flight: 0,
                acknowledged: 1,
                rejected: 1,
                resent: 1,
                failed_closed: 3,
                failed_queue_full: 1,
                actions_received: 1,
                actions_acked: 1,
                reconnects: 1,
                connected: false,
                drained: false,
                events_written: 4,
                last_acked_write: 2,
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Input {
        Connect,
        Connected,
        ConnectFailed,
        Receive(Message),
        ProtocolError,
        ConnectionLost(bool),
        /// The clock jumps to the earliest deadline, which fires (nothing when none is armed).
        Fire,
        /// The driver calls `handle_timeout` now, due or not: before any deadline it does nothing.
        Early,
        Send,
        AckAction(u8, bool),
        Close(bool),
        /// The server acknowledges one of the events in flight (random ids rarely hit one).
        AckInFlight(prop::sample::Index, bool),
        /// Whatever a well-behaved peer and driver would do next, so that runs get far.
        Progress,
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            3 => Just(Message::Welcome),
            3 => Just(Message::Drained),
            1 => Just(Message::Bye { error: None }),
            1 => Just(Message::Bye {
                error: Some(ErrorBody { code: None, message: "bye".into() })
            }),
            1 => Just(Message::hello("server")),
            1 => Just(Message::Event { id: Value::Nil, kind: "t".into(), bundle: Value::Nil }),
            2 => (0u8..4).prop_map(|id| Message::Action {
                id: Value::Number(f64::from(id)),
                kind: "a".into(),
                parameters: Value::Nil,
            }),
            8 => (0u64..12, 0i64..2).prop_map(|(seq, status)| Message::Acknowledgement {
                correlid: text(&format!("e{seq}")),
                status,
                error: (status != 0).then(|| ErrorBody { code: None, message: "no".into() }),
            }),
        ]
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            2 => Just(Input::Connect),
            3 => Just(Input::Connected),
            1 => Just(Input::ConnectFailed),
            4 => arb_message().prop_map(Input::Receive),
            1 => Just(Input::ProtocolError),
            2 => any::<bool>().prop_map(Input::ConnectionLost),
            5 => Just(Input::Fire),
            1 => Just(Input::Early),
            4 => Just(Input::Send),
            1 => (0u8..4, any::<bool>()).prop_map(|(id, e)| Input::AckAction(id, e)),
            1 => any::<bool>().prop_map(Input::Close),
            20 => Just(Input::Progress),
            6 => (any::<prop::sample::Index>(), any::<bool>())
                .prop_map(|(i, ok)| Input::AckInFlight(i, ok)),
        ]
    }

    /// Checks what holds after every step: callbacks at most once and in send order,
    /// `connect` and `disconnect` alternating, timers stopped only while they run and each
    /// reconnect wait within its bounds.
    #[derive(Default)]
    struct Observer {
        done: HashMap<u64, usize>,
        last_done: Option<u64>,
        connected: bool,
        /// The reconnect deadline last seen.
        reconnect: Option<Instant>,
        /// (reconnect_delay, max_reconnect_delay)
        delays: (Duration, Duration),
    }

    impl Observer {
        fn see(&mut self, outputs: &[Output]) -> Result<(), TestCaseError> {
            for output in outputs {
                match output {
                    Output::Emit(Notice::EventDone { seq, .. }) => {
                        let n = self.done.entry(*seq).or_default();
                        *n += 1;
                        prop_assert_eq!(*n, 1, "seq {} done twice", seq);
                        prop_assert!(self.last_done < Some(*seq), "out of order: {}", seq);
                        self.last_done = Some(*seq);
                    }
                    Output::Emit(Notice::Connect) => {
                        prop_assert!(!self.connected, "connect twice");
                        self.connected = true;
                    }
                    Output::Emit(Notice::Disconnect) => {
                        prop_assert!(self.connected, "disconnect without connect");
                        self.connected = false;
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    /// The timers the driver runs are the ones the session's state needs: the reconnect wait
    /// exactly while waiting, `connectTimeout` exactly during an attempt, `ackTimeout` exactly
    /// while events are in flight, and none when idle (so the host may let its process exit).
    /// Each reconnect wait is within its bounds, too.
    fn check_timers(
        s: &Session,
        seen: &mut Observer,
        timing: &Timing,
    ) -> Result<(), TestCaseError> {
        let phase = s.phase();
        prop_assert_eq!(
            s.armed(Timer::Reconnect),
            phase == Phase::WaitingToReconnect
        );
        prop_assert_eq!(
            s.armed(Timer::Connect),
            timing.connect_timeout.is_some()
                && matches!(phase, Phase::Connecting | Phase::AwaitingWelcome)
        );
        prop_assert_eq!(
            s.armed(Timer::Ack),
            timing.ack_timeout.is_some() && s.in_flight() > 0
        );
        if phase == Phase::Idle {
            prop_assert_eq!(s.poll_timeout(), None);
        }
        prop_assert_eq!(
            s.poll_timeout(),
            Timer::ALL.into_iter().filter_map(|t| s.deadline(t)).min()
        );
        let reconnect = s.deadline(Timer::Reconnect);
        if let Some(at) = reconnect.filter(|_| reconnect != seen.reconnect) {
            let after = at - now();
            let (base, max) = seen.delays;
            let (low, high) = if max > base {
                (base / 2, max)
            } else {
                (base, base)
            };
            prop_assert!(
                low <= after && after <= high,
                "reconnect wait {:?} outside {:?}..={:?}",
                after,
                low,
                high
            );
        }
        seen.reconnect = reconnect;
        Ok(())
    }

    proptest! {
        #[test]
        fn any_input_sequence_is_safe(
            auto_reconnect in any::<bool>(),
            max_reconnect_attempts in 0u32..3,
            max_in_flight in 0usize..5,
            reconnect_delay in 0u64..2000,
            max_reconnect_delay in 0u64..20_000,
            connect_timeout in proptest::option::of(1u64..60_000),
            ack_timeout in proptest::option::of(1u64..60_000),
            seed in any::<u64>(),
            inputs in proptest::collection::vec(arb_input(), 0..80),
        ) {
            let timing = Timing {
                reconnect_delay: ms(reconnect_delay),
                max_reconnect_delay: ms(max_reconnect_delay),
                connect_timeout: connect_timeout.map(ms),
                ack_timeout: ack_timeout.map(ms),
            };
            let mut s = Session::new(
                SessionConfig {
                    device_name: "dev".into(),
                    auto_reconnect,
                    max_reconnect_attempts,
                    max_in_flight,
                    max_queue_size: 0,
                },
                timing.clone(),
                Xorshift::new(seed),
            );
            let mut seen = Observer {
                delays: (timing.reconnect_delay, timing.max_reconnect_delay),
                ..Observer::default()
            };
            let mut next_seq = 0u64;
            // The notices the stats count, counted from the outputs instead.
            let mut tally = SessionStats::default();
            let count = |tally: &mut SessionStats, out: &[Output]| {
                for output in out {
                    match output {
                        Output::Emit(Notice::Reconnect) => tally.reconnects += 1,
                        Output::Emit(Notice::Acknowledgement { status: 0, .. }) => {
                            tally.acknowledged += 1
                        }
                        Output::Emit(Notice::Acknowledgement { .. }) => tally.rejected += 1,
                        Output::Emit(Notice::EventDone { result: Err(err), .. })
                            if err.code == ErrorCode::Closed =>
                        {
                            tally.failed_closed += 1
                        }
                        _ => {}
                    }
                }
            };
            for input in inputs {
                let out = match input {
                    Input::Connect => s.connect(now()),
                    Input::Connected => s.connected(),
                    Input::ConnectFailed => s.connect_failed(refused(), now()),
                    Input::Receive(message) => s.receive(message, now()),
                    Input::ProtocolError => s.protocol_error(SessionError::new(ErrorCode::Proto, "bad"), now()),
                    Input::ConnectionLost(clean) => {
                        s.connection_lost((!clean).then(refused), now())
                    }
                    // The clock jumps to the earliest deadline, as a driver's sleep ends.
                    Input::Fire => match s.poll_timeout() {
                        Some(at) => {
                            let at = at.max(now());
                            CLOCK.with(|c| c.set(Some(at)));
                            s.handle_timeout(at)
                        }
                        None => Vec::new(),
                    },
                    // A call before any deadline (a driver woken early) does nothing.
                    Input::Early => {
                        let early = s.poll_timeout().is_none_or(|at| at > now());
                        let out = s.handle_timeout(now());
                        if early {
                            prop_assert_eq!(&out, &Vec::new(), "a timeout before any deadline");
                        }
                        out
                    }
                    Input::Send => {
                        next_seq += 1;
                        s.send(event(next_seq), now())
                    }
                    Input::AckAction(id, failed) => s.ack_action(
                        Value::Number(f64::from(id)),
                        failed.then(|| ErrorBody { code: None, message: "x".into() }),
                    ),
                    Input::Close(keep_queue) => s.close(keep_queue),
                    Input::Progress => match s.phase() {
                        Phase::Idle => s.connect(now()),
                        Phase::Connecting => s.connected(),
                        Phase::AwaitingWelcome => s.receive(Message::Welcome, now()),
                        Phase::Receiving => s.receive(Message::Drained, now()),
                        Phase::WaitingToReconnect => fire(&mut s, Timer::Reconnect),
                        Phase::Drained => {
                            next_seq += 1;
                            s.send(event(next_seq), now())
                        }
                    },
                    Input::AckInFlight(index, ok) => {
                        let sent: Vec<Value> = s
                            .pending
                            .iter()
                            .filter(|p| matches!(p.stage, Stage::Sent))
                            .map(|p| p.event.id.clone())
                            .collect();
                        match sent.get(index.index(sent.len().max(1))) {
                            Some(id) => {
                                s.receive(Message::Acknowledgement {
                                    correlid: id.clone(),
                                    status: if ok { 0 } else { 1 },
                                    error: (!ok).then(|| ErrorBody {
                                        code: Some("E".into()),
                                        message: "no".into(),
                                    }),
                                }, now())
                            }
                            None => Vec::new(),
                        }
                    }
                };
                seen.see(&out)?;
                count(&mut tally, &out);
                let stats = s.stats();
                prop_assert_eq!(stats.in_flight, s.in_flight() as u64);
                prop_assert_eq!(stats.queued, s.queued() as u64);
                prop_assert!(s.in_flight() <= max_in_flight.max(1));
                check_timers(&s, &mut seen, &timing)?;
            }
            let out = s.close(false);
            seen.see(&out)?;
            count(&mut tally, &out);
            let stats = s.stats();
            prop_assert_eq!(
                (stats.reconnects, stats.acknowledged, stats.rejected, stats.failed_closed),
                (tally.reconnects, tally.acknowledged, tally.rejected, tally.failed_closed)
            );
            prop_assert_eq!((stats.queued, stats.in_flight), (0, 0));
            prop_assert_eq!(s.poll_timeout(), None, "a timer armed after close");
            for seq in 1..=next_seq {
                prop_assert_eq!(seen.done.get(&seq).copied(), Some(1), "seq {}", seq);
            }
            prop_assert!(!seen.connected, "closed without disconnect");
            prop_assert_eq!(s.pending(), 0);
        }
    }
}
