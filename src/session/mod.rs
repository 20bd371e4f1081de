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

mod actions;
mod config;
mod event;
mod output;
mod random;
mod stats;
#[cfg(test)]
mod tests;

pub use actions::ActionKey;
use actions::Delivered;
pub use config::{SessionConfig, Timer, Timing};
pub use event::{new_event_id, OutgoingEvent};
pub use output::{ConnectionState, ErrorDetail, Notice, Output, SessionError};
pub use random::{backoff, Random, Xorshift};
pub use stats::SessionStats;

use crate::errors::ErrorCode;
use crate::protocol::{ErrorBody, Frame, FrameError, Message, MessageError, Value};
use crate::spare;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

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
    /// The verdict; a refusal boxed, so that every queued event's entry stays small (a queue
    /// may hold many thousands: 144 bytes each, not 192).
    Acked(Result<(), Box<SessionError>>),
}

#[derive(Debug)]
struct Pending {
    event: OutgoingEvent,
    stage: Stage,
    /// The number of the event's last write ([`SessionStats::events_written`]); 0 if it was
    /// never written.
    write: u64,
    /// When it was queued (given to [`Session::send`] or restored): `client.health()`'s
    /// `oldestQueuedAge`.
    queued_at: Instant,
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
    /// The actions delivered on the current connection and not yet acknowledged.
    actions: Delivered,
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
    /// What [`Session::take_durations`] hands over; `None` unless
    /// [`SessionConfig::time_events`] (boxed: every client's task holds a session, and a
    /// pointer is a third of a `Vec`).
    #[allow(clippy::box_collection)]
    durations: Option<Box<Vec<f64>>>,
    /// The totals of [`Session::stats`], and `queued` and `in_flight`, counted as events are
    /// queued, written, acknowledged and forgotten; `connected` and `drained` are filled in
    /// when it is read.
    counts: SessionStats,
}

thread_local! {
    /// The list of outputs a host gave back on this thread ([`Session::recycle`]): the inputs
    /// of every message (`receive`, `send`, `ack_action`) hand their outputs over in it (see
    /// `crate::spare`).
    static SPARE_OUTPUTS: std::cell::Cell<Vec<Output>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A list for an input's outputs: this thread's spare one if there is one.
fn outputs() -> Vec<Output> {
    spare::take(&SPARE_OUTPUTS)
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
            actions: Delivered::default(),
            welcomed: false,
            attempts: 0,
            timing,
            random: Box::new(random),
            armed: [None; 3],
            now: None,
            counts: SessionStats::default(),
            durations: None,
        }
    }

    /// The durations (seconds, from send to acknowledgement) of the events answered since the
    /// last call, in the order of their acknowledgements; empty unless
    /// [`SessionConfig::time_events`].
    pub fn take_durations(&mut self) -> Vec<f64> {
        self.durations
            .as_deref_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// What the session has done and where it is, in O(1).
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            connected: matches!(self.phase, Phase::Receiving | Phase::Drained),
            drained: self.phase == Phase::Drained,
            ..self.counts
        }
    }

    /// Where the connection is, in O(1).
    pub fn state(&self) -> ConnectionState {
        match self.phase {
            Phase::Idle => ConnectionState::Closed,
            Phase::Connecting | Phase::AwaitingWelcome => ConnectionState::Connecting,
            Phase::Receiving => ConnectionState::Connected,
            Phase::Drained => ConnectionState::Drained,
            Phase::WaitingToReconnect => ConnectionState::Backoff,
        }
    }

    /// When the oldest event whose callback has not run yet was queued; `None` when none
    /// waits. O(1): events are done in send order.
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.pending.front().map(|pending| pending.queued_at)
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
        let acknowledgement = matches!(message, Message::Acknowledgement { .. });
        self.receiving(now, acknowledgement, |session, out| {
            session.dispatch(message, out, now)
        })
    }

    /// What every frame received goes through, decoded or not: its outputs, none when no
    /// connection is open; then the acknowledgement timer, restarted by an `acknowledgement`.
    fn receiving(
        &mut self,
        now: Instant,
        acknowledgement: bool,
        handle: impl FnOnce(&mut Self, &mut Vec<Output>),
    ) -> Vec<Output> {
        self.now = Some(now);
        let mut out = outputs();
        if self.phase.socket_open() {
            handle(self, &mut out);
            self.watch_acknowledgements(acknowledgement);
        }
        out
    }

    /// A decoded frame, while a connection is open.
    fn dispatch(&mut self, message: Message, out: &mut Vec<Output>, now: Instant) {
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
            Message::Welcome => ignore(out, "Received welcome twice."),
            Message::Drained if self.phase == Phase::AwaitingWelcome => {
                ignore(out, "Received drained before welcome.")
            }
            Message::Drained => {
                self.phase = Phase::Drained;
                out.push(Output::Emit(Notice::Drain));
                self.flush(out);
            }
            Message::Action {
                id,
                kind,
                parameters,
            } => {
                self.counts.actions_received += 1;
                let key = ActionKey::from(&id);
                self.actions.deliver(key.clone());
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
            } => self.acknowledged(out, correlid, status, error, now),
            Message::Bye { error: Some(error) } => {
                out.push(Output::Emit(Notice::Error(SessionError {
                    code: error.code.map_or(ErrorCode::Bye, ErrorCode::Gateway),
                    message: error.message,
                    detail: None,
                })));
                out.push(Output::CloseSocket);
                self.connection_gone(out, Ending::Reported);
            }
            Message::Bye { error: None } => {
                out.push(Output::CloseSocket);
                self.connection_gone(out, Ending::Clean);
            }
            Message::Hello { .. } => ignore(out, "Received hello, which only a client sends."),
            Message::Event { .. } => ignore(out, "Received event, which only a client sends."),
        }
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
        if let Some(index) = frame
            .as_ref()
            .ok()
            .and_then(|f| self.plain_acknowledgement(f))
        {
            return self.receiving(now, true, |session, out| {
                let id = session.pending[index].event.id.clone();
                session.answered(out, index, id, 0, None, now);
            });
        }
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
        let mut out = outputs();
        let limit = self.config.max_queue_size;
        if limit != 0 && self.pending.len() >= limit {
            self.counts.failed_queue_full += 1;
            if let Some(stored) = event.stored {
                out.push(Output::Forget(stored));
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
            queued_at: self.now.unwrap_or_else(Instant::now),
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
        if !self.actions.acknowledge(&key) {
            return Vec::new();
        }
        self.counts.actions_acked += 1;
        let status = if error.is_some() { 1 } else { 0 };
        let mut out = outputs();
        out.push(Output::Write(Message::acknowledgement_bytes(
            key.bytes(),
            status,
            error.as_ref(),
        )));
        out
    }

    /// Gives back a list of outputs the host has carried out, for the next input's outputs
    /// on this thread (see `SPARE_OUTPUTS`).
    pub fn recycle(outputs: Vec<Output>) {
        spare::keep(&SPARE_OUTPUTS, outputs, 16);
    }

    /// The host asked for a new connection now (new TLS material): the connection or attempt
    /// in hand is closed and a new attempt starts at once, announced by `reconnect`; events in
    /// flight are queued again and re-sent, as after any drop. Waiting to reconnect, the wait
    /// is cut short; idle, nothing happens.
    pub fn reconnect_now(&mut self, now: Instant) -> Vec<Output> {
        self.now = Some(now);
        let mut out = Vec::new();
        if self.phase == Phase::Idle {
            return out;
        }
        if self.phase.socket_open() || self.phase == Phase::Connecting {
            out.push(Output::CloseSocket);
        }
        self.forget_connection();
        for timer in Timer::ALL {
            self.stop_timer(timer);
        }
        self.counts.reconnects += 1;
        out.push(Output::Emit(Notice::Reconnect));
        self.start_attempt(&mut out);
        out
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
                    Stage::Acked(result) => result.map_err(|e| *e),
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

    /// The index of the first event sent and not yet answered whose id `is_id` accepts; `Err`
    /// with whether any event was sent and not yet answered when none is.
    fn sent_event(&self, is_id: impl Fn(&Value) -> bool) -> Result<usize, bool> {
        let written = self.written.min(self.pending.len());
        let mut any_sent = false;
        for (index, pending) in self.pending.range(..written).enumerate() {
            if let Stage::Sent = pending.stage {
                any_sent = true;
                if is_id(&pending.event.id) {
                    return Ok(index);
                }
            }
        }
        Err(any_sent)
    }

    /// The index of the sent event that `frame` answers, when it is an acknowledgement of
    /// success for a string id as the gateway writes one (see
    /// [`Message::plain_acknowledgement`]): answered then as [`Session::receive`] answers its
    /// decoded message, without decoding it (the notice carries the event's own id, the same
    /// string). `None` for any other frame, or one that answers no event, which the decoder
    /// then reads as usual.
    fn plain_acknowledgement(&self, frame: &Frame) -> Option<usize> {
        let correlid = Message::plain_acknowledgement(frame)?;
        self.sent_event(|id| matches!(id, Value::String(text) if text.as_bytes() == correlid))
            .ok()
    }

    fn acknowledged(
        &mut self,
        out: &mut Vec<Output>,
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
        now: Instant,
    ) {
        match self.sent_event(|id| *id == correlid) {
            Ok(index) => self.answered(out, index, correlid, status, error, now),
            Err(any_sent) => {
                let message = if any_sent {
                    DIFFERENT_EVENT
                } else {
                    NO_EVENT_IN_QUEUE
                };
                self.violation(out, ErrorCode::Proto, message)
            }
        }
    }

    /// The event at `index` in the queue, sent, is answered by the acknowledgement
    /// `{correlid, status, error}`.
    fn answered(
        &mut self,
        out: &mut Vec<Output>,
        index: usize,
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
        now: Instant,
    ) {
        let result = match (status, &error) {
            (0, _) => Ok(()),
            (_, Some(error)) => Err(SessionError {
                code: error
                    .code
                    .clone()
                    .map_or(ErrorCode::Ack, ErrorCode::Gateway),
                message: error.message.clone(),
                detail: None,
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
            if self.config.time_events {
                let taken = now.saturating_duration_since(pending.queued_at);
                let durations = self.durations.get_or_insert_with(Box::default);
                durations.push(taken.as_secs_f64());
            }
            pending.stage = Stage::Acked(result.map_err(Box::new));
            if let Some(stored) = pending.event.stored {
                out.push(Output::Forget(stored));
            }
        }
        self.finish_answered(out);
        self.flush(out);
    }

    /// Runs the callbacks of the acknowledged events at the head of the queue.
    fn finish_answered(&mut self, out: &mut Vec<Output>) {
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
                    result: result.map_err(|e| *e),
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
        self.actions = Delivered::default();
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
