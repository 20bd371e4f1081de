//! The server's half of the protocol for one connection (docs/PROTOCOL.md section 7, The server
//! side) as a sans-I/O state machine, the counterpart of the client's
//! [`crate::session::Session`]: it never touches a socket, a lock, a channel or the clock. The
//! driver in `connection.rs` feeds it what happened (the socket was accepted and secured, a
//! message arrived, the embedder decided an event, the server queued an action or kicked the
//! connection, the timer expired, the socket closed), with the time as an argument where it
//! matters, and carries out the [`Output`]s it gets back, in order.
//!
//! Server-wide state stays with the driver: the actions held per device, the connection table
//! and the decisions awaited from the embedder. The peer asks for held actions one at a time
//! ([`Output::NeedHeld`], answered by [`Peer::held`]), names each event it wants decided by a
//! number of its own ([`Notice::Event`], answered by [`Peer::verdict`]), and when the connection
//! ends hands back the actions it did not get acknowledged ([`Output::HandBack`]), so that they
//! are delivered again on the device's next connection.
//!
//! The server is strict where the client is lenient: anything the protocol does not allow is a
//! violation, answered with a [`Notice::ClientError`], `BYE {error}` and a lingering close.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{OutboundAction, Queued, Verdict};
use crate::errors::ErrorCode;
use crate::protocol::{ErrorBody, Frame, FrameError, Message, Value};

/// How long a goodbye (BYE, shutting the write side, the lingering read) may take before the
/// socket is dropped. Long enough for a slow peer to finish writing a 10 MiB frame: 2 s was
/// too short for a client under qemu-user.
pub(crate) const LINGER: Duration = Duration::from_secs(10);

const MAXIMUM_BUFFER: &str = "Maximum buffer size exceeded.";

/// Most echoes a peer may leave waiting behind the action in flight (it keeps sending events
/// but acknowledges no echo): beyond this, or [`MAX_ECHO_BYTES`], it is disconnected
/// (`EQUEUEFULL`). Generous: echoes go one at a time, so a client that pipelines its events
/// (`maxInFlight`) has about as many echoes waiting as it has sent events, up to its
/// `maxQueueSize` (100,000). Its reading cannot be paused instead: its acknowledgements come
/// behind its events.
pub(crate) const MAX_ECHOES: usize = 100_000;

/// Most bytes of echo parameters a peer may leave waiting (see [`MAX_ECHOES`]).
pub(crate) const MAX_ECHO_BYTES: usize = 64 * 1024 * 1024;

/// The server options that shape one connection's protocol.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerConfig {
    /// Echo every accepted event back as an action.
    pub echo: bool,
    /// Hold each event's acknowledgement until [`Peer::verdict`].
    pub decide_events: bool,
    /// Report events that need no decision (see [`Peer::set_event_notices`]).
    pub event_notices: bool,
    /// With TLS, how long the handshake may take; `None` for plain TCP.
    pub handshake_timeout: Option<Duration>,
    /// How long a connected peer may take to say HELLO; `None` for ever.
    pub hello_timeout: Option<Duration>,
    /// How long a welcomed peer may send nothing; `None` for ever.
    pub idle_timeout: Option<Duration>,
    /// Most echoes, and bytes of them, a peer may leave waiting ([`MAX_ECHOES`]).
    pub max_echoes: usize,
    pub max_echo_bytes: usize,
    /// How long a goodbye may take ([`LINGER`]).
    pub linger: Duration,
}

impl Default for PeerConfig {
    /// The bare protocol: no deadline but the goodbye's (the server's options add theirs).
    fn default() -> PeerConfig {
        PeerConfig {
            echo: true,
            decide_events: false,
            event_notices: true,
            handshake_timeout: None,
            hello_timeout: None,
            idle_timeout: None,
            max_echoes: MAX_ECHOES,
            max_echo_bytes: MAX_ECHO_BYTES,
            linger: LINGER,
        }
    }
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Write this message.
    Write(Message),
    /// Tell the server's embedder (the driver adds the connection's details).
    Emit(Notice),
    /// The connection may take the next action held for its device (it is before DRAINED and
    /// has nothing in flight): answer with [`Peer::held`], the action or `None` when none is
    /// left. `None` means DRAINED goes out, so from then on the driver gives this connection
    /// the device's new actions with [`Peer::queue`] instead of holding them.
    NeedHeld,
    /// Read nothing more: write what was output before (the last is BYE), shut the write side
    /// and, with `linger`, read and discard until the peer closes too (closing with unread
    /// input would reset the connection and could destroy the BYE before the peer reads it).
    /// All of it bounded by the timer. Then the driver calls [`Peer::closed`].
    Shutdown { linger: bool },
    /// Drop the socket now; anything not written yet is abandoned. Then the driver calls
    /// [`Peer::closed`].
    Drop,
    /// Actions this connection did not get acknowledged, oldest first: they go back to the
    /// front of the device's held queue, in this order (or, when the device has another
    /// connection past DRAINED, to it). Echoes are never handed back.
    HandBack(Vec<Queued>),
}

/// What the server's embedder hears about this connection: [`super::ServerEvent`] without the
/// connection's details, which the driver owns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Notice {
    /// The peer is connected (after the TLS handshake, if any).
    Connection,
    /// The peer said HELLO, with this `metadata.device_name`, and was welcomed.
    Hello { device_name: Option<String> },
    /// The peer sent an event. With `decide`, its acknowledgement waits for
    /// [`Peer::verdict`] with this `number`.
    Event {
        number: u64,
        id: Value,
        kind: String,
        bundle: Value,
        decide: bool,
    },
    /// The peer acknowledged the action in flight; `ticket` is the action's (None for echoes).
    Acknowledgement {
        ticket: Option<u64>,
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
    },
    /// The peer broke the protocol or failed the TLS handshake; the connection ends.
    ClientError { code: ErrorCode, message: String },
    /// The connection ended; only after [`Notice::Connection`].
    Disconnect,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; with TLS, the handshake is under way.
    Handshake,
    /// Connected: waiting for HELLO.
    AwaitHello,
    /// Welcomed: delivering the actions held for the device, one at a time.
    Holding,
    /// DRAINED was written: events are acknowledged, live actions and echoes delivered.
    Live,
    /// Saying goodbye, or dropping the socket: waiting for [`Peer::closed`].
    Closing,
    /// The socket is gone.
    Closed,
}

impl Phase {
    /// The protocol runs: messages, verdicts and actions are handled.
    fn open(self) -> bool {
        matches!(self, Phase::AwaitHello | Phase::Holding | Phase::Live)
    }
}

/// An event waiting for its acknowledgement, which goes out in arrival order.
#[derive(Debug)]
struct PendingEvent {
    number: u64,
    id: Value,
    /// Type and bundle for the echo, when the server echoes.
    echo: Option<(String, Value)>,
    /// `None` while the embedder decides.
    verdict: Option<Verdict>,
}

/// The state machine; see the module documentation.
#[derive(Debug)]
pub(crate) struct Peer {
    config: PeerConfig,
    phase: Phase,
    /// Echo ids are wall-clock milliseconds: `epoch_ms` was the time at `epoch`.
    epoch: Instant,
    epoch_ms: f64,
    /// [`Notice::Connection`] went out, so [`Notice::Disconnect`] is owed.
    announced: bool,
    /// Kicked during the TLS handshake: BYE goes out as soon as it completes.
    kicked: bool,
    device_name: Option<String>,
    /// [`Output::NeedHeld`] went out and [`Peer::held`] has not answered yet.
    asking: bool,
    /// The action sent and not yet acknowledged (one at a time).
    in_flight: Option<Queued>,
    /// Live actions and echoes waiting for `in_flight` to clear.
    outgoing: VecDeque<Queued>,
    /// How many of `outgoing` are echoes, and their parameters' weight (`super::weight`).
    echoes: usize,
    echo_bytes: usize,
    /// When the peer last sent something (a frame), for the idle limit.
    heard: Instant,
    /// Events waiting for their acknowledgement; the first one is always undecided.
    pending: VecDeque<PendingEvent>,
    /// The number of the last event.
    events: u64,
    deadline: Option<Instant>,
}

impl Peer {
    /// A connection accepted at `now`, when the wall clock said `unix_ms` (milliseconds since
    /// 1970, the base for echo ids). Nothing happens until [`Peer::accepted`].
    pub(crate) fn new(config: PeerConfig, now: Instant, unix_ms: f64) -> Peer {
        Peer {
            config,
            phase: Phase::Handshake,
            epoch: now,
            epoch_ms: unix_ms.trunc(),
            announced: false,
            kicked: false,
            device_name: None,
            asking: false,
            in_flight: None,
            outgoing: VecDeque::new(),
            echoes: 0,
            echo_bytes: 0,
            heard: now,
            pending: VecDeque::new(),
            events: 0,
            deadline: None,
        }
    }

    /// The socket is accepted: with TLS the handshake timer starts, else the connection is
    /// announced at once.
    pub(crate) fn accepted(&mut self, now: Instant) -> Vec<Output> {
        if self.phase != Phase::Handshake {
            return Vec::new();
        }
        match self.config.handshake_timeout {
            Some(limit) => {
                self.set_timer(now + limit);
                Vec::new()
            }
            None => self.secured(now),
        }
    }

    /// The TLS handshake completed: the connection is announced and HELLO awaited, within
    /// the HELLO deadline.
    pub(crate) fn secured(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase != Phase::Handshake {
            return out;
        }
        match self.config.hello_timeout {
            Some(limit) => self.set_timer(now + limit),
            None => self.stop_timer(),
        }
        self.heard = now;
        self.phase = Phase::AwaitHello;
        self.announced = true;
        out.push(Output::Emit(Notice::Connection));
        if self.kicked {
            self.goodbye(&mut out, None, false, now);
        }
        out
    }

    /// The TLS handshake failed (`reason` says how): reported, and the socket dropped.
    pub(crate) fn handshake_failed(&mut self, reason: &str) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase != Phase::Handshake {
            return out;
        }
        self.stop_timer();
        out.push(Output::Emit(Notice::ClientError {
            code: ErrorCode::Tls,
            message: format!("TLS handshake failed: {reason}"),
        }));
        self.drop_socket(&mut out);
        out
    }

    /// A message from the peer.
    pub(crate) fn receive(&mut self, message: Message, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.phase.open() {
            return out;
        }
        self.heard = now;
        match (message, self.phase) {
            (hello @ Message::Hello { .. }, Phase::AwaitHello) => {
                self.device_name = hello.device_name().map(str::to_owned);
                out.push(Output::Emit(Notice::Hello {
                    device_name: self.device_name.clone(),
                }));
                out.push(Output::Write(Message::Welcome));
                self.phase = Phase::Holding;
                // The HELLO deadline gives way to the idle limit.
                match self.config.idle_timeout {
                    Some(limit) => self.set_timer(now + limit),
                    None => self.stop_timer(),
                }
                self.send_next(&mut out);
            }
            (Message::Hello { .. }, _) => {
                self.violation(&mut out, ErrorCode::Proto, "Unexpected HELLO.", now)
            }
            (Message::Bye { .. }, _) => self.drop_socket(&mut out),
            (_, Phase::AwaitHello) => {
                self.violation(&mut out, ErrorCode::Proto, "HELLO expected.", now)
            }
            (Message::Event { .. }, Phase::Holding) => self.violation(
                &mut out,
                ErrorCode::Proto,
                "Event received before DRAINED.",
                now,
            ),
            (Message::Event { id, kind, bundle }, _) => {
                self.event(&mut out, id, kind, bundle);
                self.acknowledge(&mut out, now);
                self.send_next(&mut out);
            }
            (
                Message::Acknowledgement {
                    correlid,
                    status,
                    error,
                },
                _,
            ) => match self.in_flight.take() {
                None => self.violation(
                    &mut out,
                    ErrorCode::Proto,
                    "Received acknowledgement even if there is no action in flight.",
                    now,
                ),
                Some(queued) if queued.action.id != correlid => {
                    self.in_flight = Some(queued);
                    self.violation(
                        &mut out,
                        ErrorCode::Proto,
                        "Received acknowledgement for different action.",
                        now,
                    )
                }
                Some(queued) => {
                    out.push(Output::Emit(Notice::Acknowledgement {
                        ticket: queued.ticket,
                        correlid,
                        status,
                        error,
                    }));
                    self.send_next(&mut out);
                }
            },
            (other, _) => self.violation(
                &mut out,
                ErrorCode::Proto,
                format!("Unexpected {:?} from a client.", other.token()),
                now,
            ),
        }
        out
    }

    /// A frame from the peer as the reader framed it, or why it could not: every decision
    /// about bad input is made here, once. A message goes to [`Peer::receive`]; a frame that
    /// is no message (an unknown token, a body that does not decode or not to its token's
    /// message) is a violation `EPROTO`; a frame over 10 MiB is a violation `IM491`; a stream
    /// that ended inside a frame, or failed, drops the socket.
    pub(crate) fn handle_frame(
        &mut self,
        frame: Result<Frame, FrameError>,
        now: Instant,
    ) -> Vec<Output> {
        match frame {
            Ok(frame) => match Message::from_frame(&frame) {
                Ok(message) => self.receive(message, now),
                Err(e) => self.malformed(e.to_string(), now),
            },
            Err(FrameError::Oversize { .. }) => self.buffer_exceeded(now),
            Err(FrameError::Truncated { .. } | FrameError::Io(_)) => {
                let mut out = Vec::new();
                if self.phase != Phase::Closed {
                    self.drop_socket(&mut out);
                }
                out
            }
        }
    }

    /// A frame that is no message (an unknown token, an unreadable body): a violation with
    /// `reason`.
    fn malformed(&mut self, reason: impl Into<String>, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase.open() {
            self.heard = now;
            self.violation(&mut out, ErrorCode::Proto, reason, now);
        }
        out
    }

    /// The peer sent or announced a frame over 10 MiB: BYE IM491.
    fn buffer_exceeded(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase.open() {
            self.violation(&mut out, ErrorCode::BufferExceeded, MAXIMUM_BUFFER, now);
        }
        out
    }

    /// The embedder's verdict on the event numbered `number` ([`Notice::Event`]). Events are
    /// acknowledged in arrival order, so one decided before an earlier one waits for it. A
    /// number that waits for nothing (already decided, unknown) is ignored.
    pub(crate) fn verdict(&mut self, number: u64, verdict: Verdict, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.phase.open() {
            return out;
        }
        let waiting = self
            .pending
            .iter_mut()
            .find(|p| p.number == number && p.verdict.is_none());
        if let Some(event) = waiting {
            event.verdict = Some(verdict);
            self.acknowledge(&mut out, now);
            self.send_next(&mut out);
        }
        out
    }

    /// An action for this connection: a live one (the connection is past DRAINED) goes out
    /// when nothing is in flight, else after the actions before it. On a closed connection it
    /// is handed back at once.
    pub(crate) fn queue(&mut self, queued: Queued) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            if queued.ticket.is_some() {
                out.push(Output::HandBack(vec![queued]));
            }
            return out;
        }
        self.outgoing.push_back(queued);
        if self.phase.open() {
            self.send_next(&mut out);
        }
        out
    }

    /// The answer to [`Output::NeedHeld`]: the device's next held action, or `None` when
    /// none is left (then DRAINED). An action given when none was asked for is queued as by
    /// [`Peer::queue`].
    pub(crate) fn held(&mut self, next: Option<Queued>) -> Vec<Output> {
        if !(self.asking && self.phase == Phase::Holding) {
            return next.map(|q| self.queue(q)).unwrap_or_default();
        }
        self.asking = false;
        let mut out = Vec::new();
        match next {
            Some(queued) => self.send_action(&mut out, queued),
            None => {
                out.push(Output::Write(Message::Drained));
                self.phase = Phase::Live;
                self.send_next(&mut out);
            }
        }
        out
    }

    /// `kick()` and a graceful `close()`: BYE with no body, then close. During the TLS
    /// handshake the BYE waits for it to complete.
    pub(crate) fn kick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Handshake => self.kicked = true,
            phase if phase.open() => self.goodbye(&mut out, None, false, now),
            _ => {}
        }
        out
    }

    /// The timer expired (`now` is at least its deadline): the TLS handshake, the HELLO or the
    /// goodbye took too long, or the peer may have been idle too long (the idle timer is armed
    /// at HELLO and not moved by each message: when it expires it checks when the peer was
    /// last heard, and is armed again if that was recent). Early or stale calls do nothing.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match self.deadline {
            Some(deadline) if now >= deadline => self.deadline = None,
            _ => return out,
        }
        match self.phase {
            Phase::Handshake => {
                out.push(Output::Emit(Notice::ClientError {
                    code: ErrorCode::TimedOut,
                    message: "TLS handshake timed out.".into(),
                }));
                self.drop_socket(&mut out);
            }
            Phase::AwaitHello => {
                let limit = self.config.hello_timeout.unwrap_or_default();
                let message = format!("No HELLO within {} ms.", limit.as_millis());
                self.violation(&mut out, ErrorCode::TimedOut, message, now);
            }
            Phase::Holding | Phase::Live => {
                if let Some(limit) = self.config.idle_timeout {
                    let due = self.heard + limit;
                    if now >= due {
                        let message = format!("Idle for {} ms.", limit.as_millis());
                        self.violation(&mut out, ErrorCode::TimedOut, message, now);
                    } else {
                        self.set_timer(due);
                    }
                }
            }
            Phase::Closing => out.push(Output::Drop),
            Phase::Closed => {}
        }
        out
    }

    /// The socket is gone, whatever the reason (the peer left, a read or write failed, the
    /// goodbye finished or timed out, the server is being destroyed). Hands back the actions
    /// not acknowledged and reports the disconnect. Further inputs do nothing (actions given
    /// to [`Peer::queue`] are handed back).
    pub(crate) fn closed(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        self.stop_timer();
        self.phase = Phase::Closed;
        self.asking = false;
        self.pending.clear();
        (self.echoes, self.echo_bytes) = (0, 0);
        let unacked: Vec<Queued> = self
            .in_flight
            .take()
            .into_iter()
            .chain(self.outgoing.drain(..))
            .filter(|q| q.ticket.is_some())
            .collect();
        if !unacked.is_empty() {
            out.push(Output::HandBack(unacked));
        }
        if self.announced {
            out.push(Output::Emit(Notice::Disconnect));
        }
        out
    }

    /// The driver did not read from the socket until `now`, held back by the embedder (see
    /// `ServerOptions::event_backlog`): the peer may have sent meanwhile, so that time does
    /// not count towards the idle limit.
    pub(crate) fn unread_until(&mut self, now: Instant) {
        self.heard = self.heard.max(now);
    }

    /// Whether events that need no decision are reported; the server's embedder may change
    /// it at any time, so the driver sets it before feeding messages.
    pub(crate) fn set_event_notices(&mut self, on: bool) {
        self.config.event_notices = on;
    }
}

/// What the driver asks of the peer besides its inputs (the unit tests look at them too).
impl Peer {
    /// When the peer's one timer expires, if it is armed: the driver sleeps until then and calls
    /// [`Peer::handle_timeout`]. The answer changes only with an input, so the driver asks after
    /// each.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Events not acknowledged yet (waiting for their verdict or an earlier one's).
    pub(crate) fn awaiting_verdicts(&self) -> usize {
        self.pending.len()
    }
}

/// What an outside observer (the unit tests, an in-memory harness) may look at; the driver
/// needs none of it.
#[cfg_attr(not(test), allow(dead_code))]
impl Peer {
    /// `metadata.device_name` from the peer's HELLO.
    pub(crate) fn device_name(&self) -> Option<&str> {
        self.device_name.as_deref()
    }

    /// The action sent and awaiting its acknowledgement.
    pub(crate) fn in_flight(&self) -> Option<&Queued> {
        self.in_flight.as_ref()
    }

    /// Every action not acknowledged yet, in delivery order: the one in flight, then those
    /// waiting behind it (echoes included).
    pub(crate) fn unacked(&self) -> impl Iterator<Item = &Queued> {
        self.in_flight.iter().chain(self.outgoing.iter())
    }
}

impl Peer {
    fn event(&mut self, out: &mut Vec<Output>, id: Value, kind: String, bundle: Value) {
        self.events += 1;
        let number = self.events;
        let decide = self.config.decide_events;
        // The bundle is copied only when both the embedder and the echo want it.
        let (notice, echo) = match (decide || self.config.event_notices, self.config.echo) {
            (true, true) => (Some((kind.clone(), bundle.clone())), Some((kind, bundle))),
            (true, false) => (Some((kind, bundle)), None),
            (false, true) => (None, Some((kind, bundle))),
            (false, false) => (None, None),
        };
        // The id kept for the acknowledgement is a copy: the decoded one is a slice of the
        // frame (a binary's, a large string's), which it would keep alive, and the embedder's
        // JavaScript may get a Buffer over those very bytes and write into it.
        let kept = id.detached();
        if let Some((kind, bundle)) = notice {
            out.push(Output::Emit(Notice::Event {
                number,
                id,
                kind,
                bundle,
                decide,
            }));
        }
        self.pending.push_back(PendingEvent {
            number,
            id: kept,
            echo,
            verdict: (!decide).then_some(Verdict::Accept),
        });
    }

    /// Acknowledges every decided event at the head of the queue, in arrival order, and queues
    /// the echo of each accepted one. A peer that leaves more echoes waiting than the bounds
    /// allow (it acknowledges none) is disconnected: violation `EQUEUEFULL`.
    fn acknowledge(&mut self, out: &mut Vec<Output>, now: Instant) {
        while self.pending.front().is_some_and(|p| p.verdict.is_some()) {
            let Some(PendingEvent {
                id,
                echo,
                verdict: Some(verdict),
                ..
            }) = self.pending.pop_front()
            else {
                break;
            };
            match verdict {
                Verdict::Accept => {
                    out.push(Output::Write(Message::Acknowledgement {
                        correlid: id,
                        status: 0,
                        error: None,
                    }));
                    if let Some((kind, parameters)) = echo {
                        let id = self.echo_id(now);
                        self.echoes += 1;
                        self.echo_bytes += super::weight(&parameters);
                        self.outgoing.push_back(Queued {
                            action: OutboundAction {
                                id,
                                kind,
                                parameters,
                            },
                            ticket: None,
                        });
                    }
                }
                Verdict::Reject(error) => out.push(Output::Write(Message::Acknowledgement {
                    correlid: id,
                    status: 1,
                    error: Some(error),
                })),
            }
        }
        if self.echoes > self.config.max_echoes || self.echo_bytes > self.config.max_echo_bytes {
            let message = format!(
                "Too many unacknowledged echoes: more than {} or {} bytes of them.",
                self.config.max_echoes, self.config.max_echo_bytes
            );
            self.violation(out, ErrorCode::QueueFull, message, now);
        }
    }

    /// Sends the next action if none is in flight: before DRAINED asks for a held one, after
    /// it takes the next live action or echo.
    fn send_next(&mut self, out: &mut Vec<Output>) {
        if self.in_flight.is_some() {
            return;
        }
        match self.phase {
            Phase::Holding if !self.asking => {
                self.asking = true;
                out.push(Output::NeedHeld);
            }
            Phase::Live => {
                if let Some(queued) = self.outgoing.pop_front() {
                    if queued.ticket.is_none() {
                        self.echoes = self.echoes.saturating_sub(1);
                        let weight = super::weight(&queued.action.parameters);
                        self.echo_bytes = self.echo_bytes.saturating_sub(weight);
                    }
                    self.send_action(out, queued);
                }
            }
            _ => {}
        }
    }

    fn send_action(&mut self, out: &mut Vec<Output>, queued: Queued) {
        out.push(Output::Write(Message::Action {
            id: queued.action.id.clone(),
            kind: queued.action.kind.clone(),
            parameters: queued.action.parameters.clone(),
        }));
        self.in_flight = Some(queued);
    }

    /// `Date.now()` at `now`, as the original's server stamps its echoes.
    fn echo_id(&self, now: Instant) -> Value {
        let since = now.saturating_duration_since(self.epoch).as_millis() as f64;
        Value::Number(self.epoch_ms + since)
    }

    fn violation(
        &mut self,
        out: &mut Vec<Output>,
        code: ErrorCode,
        message: impl Into<String>,
        now: Instant,
    ) {
        let message = message.into();
        let error = ErrorBody {
            code: Some(code.code().to_owned()),
            message: message.clone(),
        };
        out.push(Output::Emit(Notice::ClientError { code, message }));
        self.goodbye(out, Some(error), true, now);
    }

    fn goodbye(
        &mut self,
        out: &mut Vec<Output>,
        error: Option<ErrorBody>,
        linger: bool,
        now: Instant,
    ) {
        out.push(Output::Write(Message::Bye { error }));
        out.push(Output::Shutdown { linger });
        self.phase = Phase::Closing;
        self.asking = false;
        self.set_timer(now + self.config.linger);
    }

    fn drop_socket(&mut self, out: &mut Vec<Output>) {
        self.stop_timer();
        out.push(Output::Drop);
        self.phase = Phase::Closing;
        self.asking = false;
    }

    fn set_timer(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    fn stop_timer(&mut self) {
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const EPOCH_MS: f64 = 1_800_000_000_000.0;

    fn action(id: &str, ticket: Option<u64>) -> Queued {
        Queued {
            action: OutboundAction {
                id: Value::String(id.into()),
                kind: "lamp".into(),
                parameters: Value::Nil,
            },
            ticket,
        }
    }

    fn written(q: &Queued) -> Output {
        Output::Write(Message::Action {
            id: q.action.id.clone(),
            kind: q.action.kind.clone(),
            parameters: q.action.parameters.clone(),
        })
    }

    fn id(s: &str) -> Value {
        Value::String(s.into())
    }

    fn event(s: &str) -> Message {
        Message::Event {
            id: id(s),
            kind: "ping".into(),
            bundle: Value::Map(vec![("n".into(), Value::String(s.into()))]),
        }
    }

    fn ack_of(correlid: Value) -> Message {
        Message::Acknowledgement {
            correlid,
            status: 0,
            error: None,
        }
    }

    fn acked(s: &str) -> Output {
        Output::Write(ack_of(id(s)))
    }

    fn bye(code: ErrorCode, message: &str) -> Message {
        Message::Bye {
            error: Some(ErrorBody {
                code: Some(code.code().into()),
                message: message.into(),
            }),
        }
    }

    fn writes(out: &[Output]) -> Vec<Message> {
        out.iter()
            .filter_map(|o| match o {
                Output::Write(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// A plain TCP peer, connected at `now`.
    fn connected(config: PeerConfig, now: Instant) -> Peer {
        let mut peer = Peer::new(config, now, EPOCH_MS);
        assert_eq!(peer.accepted(now), [Output::Emit(Notice::Connection)]);
        assert_eq!(peer.phase(), Phase::AwaitHello);
        peer
    }

    /// A peer past DRAINED, with no held actions.
    fn live(config: PeerConfig, now: Instant) -> Peer {
        let mut peer = connected(config, now);
        let out = peer.receive(Message::hello("pi"), now);
        assert_eq!(out.last(), Some(&Output::NeedHeld));
        assert_eq!(peer.held(None), [Output::Write(Message::Drained)]);
        assert_eq!(peer.phase(), Phase::Live);
        peer
    }

    /// The outputs of a violation (the goodbye's deadline, `now + LINGER`, is the peer's
    /// `poll_timeout`, checked where the peer is at hand).
    fn assert_violation(out: &[Output], code: ErrorCode, message: &str, _now: Instant) {
        assert_eq!(
            out,
            [
                Output::Emit(Notice::ClientError {
                    code: code.clone(),
                    message: message.into(),
                }),
                Output::Write(bye(code, message)),
                Output::Shutdown { linger: true },
            ]
        );
    }

    #[test]
    fn held_actions_go_one_at_a_time_before_drained() {
        let now = Instant::now();
        let mut peer = connected(PeerConfig::default(), now);
        let out = peer.receive(Message::hello("pi-1"), now);
        assert_eq!(
            out,
            [
                Output::Emit(Notice::Hello {
                    device_name: Some("pi-1".into())
                }),
                Output::Write(Message::Welcome),
                Output::NeedHeld,
            ]
        );
        assert_eq!(peer.device_name(), Some("pi-1"));
        let (a1, a2) = (action("a1", Some(1)), action("a2", Some(2)));
        assert_eq!(peer.held(Some(a1.clone())), [written(&a1)]);
        // Nothing more until a1 is acknowledged: an answer nobody asked for is no DRAINED.
        assert_eq!(peer.held(None), []);
        assert_eq!(peer.phase(), Phase::Holding);
        assert_eq!(peer.in_flight(), Some(&a1));
        let out = peer.receive(ack_of(id("a1")), now);
        assert_eq!(
            out,
            [
                Output::Emit(Notice::Acknowledgement {
                    ticket: Some(1),
                    correlid: id("a1"),
                    status: 0,
                    error: None,
                }),
                Output::NeedHeld,
            ]
        );
        assert_eq!(peer.held(Some(a2.clone())), [written(&a2)]);
        let broken = ErrorBody {
            code: None,
            message: "Lamp broken.".into(),
        };
        let out = peer.receive(
            Message::Acknowledgement {
                correlid: id("a2"),
                status: 1,
                error: Some(broken.clone()),
            },
            now,
        );
        assert_eq!(
            out,
            [
                Output::Emit(Notice::Acknowledgement {
                    ticket: Some(2),
                    correlid: id("a2"),
                    status: 1,
                    error: Some(broken),
                }),
                Output::NeedHeld,
            ]
        );
        assert_eq!(peer.held(None), [Output::Write(Message::Drained)]);
        assert_eq!(peer.phase(), Phase::Live);
        assert_eq!(peer.unacked().count(), 0);
    }

    #[test]
    fn unacknowledged_actions_are_handed_back_in_order_when_the_connection_ends() {
        let now = Instant::now();
        let mut peer = live(
            PeerConfig {
                echo: true,
                ..PeerConfig::default()
            },
            now,
        );
        let (a1, a2, a3) = (
            action("a1", Some(1)),
            action("a2", Some(2)),
            action("a3", Some(3)),
        );
        assert_eq!(peer.queue(a1.clone()), [written(&a1)]);
        assert_eq!(peer.queue(a2.clone()), []);
        // An echo waits in between; echoes are never handed back.
        assert_eq!(peer.receive(event("e1"), now).len(), 2);
        assert_eq!(peer.queue(a3.clone()), []);
        assert_eq!(peer.unacked().count(), 4);
        assert_eq!(
            peer.closed(),
            [
                Output::HandBack(vec![a1, a2, a3]),
                Output::Emit(Notice::Disconnect),
            ]
        );
        assert_eq!(peer.phase(), Phase::Closed);
        // An action that reaches a closed connection goes straight back.
        let late = action("late", Some(4));
        assert_eq!(peer.queue(late.clone()), [Output::HandBack(vec![late])]);
        assert_eq!(peer.closed(), []);
    }

    #[test]
    fn a_held_action_in_flight_is_handed_back_after_a_violation_and_goodbye() {
        let now = Instant::now();
        let mut peer = connected(PeerConfig::default(), now);
        peer.receive(Message::hello("pi-3"), now);
        let keep = action("keep", Some(7));
        assert_eq!(peer.held(Some(keep.clone())), [written(&keep)]);
        let out = peer.receive(ack_of(id("other")), now);
        assert_violation(
            &out,
            ErrorCode::Proto,
            "Received acknowledgement for different action.",
            now,
        );
        assert_eq!(peer.in_flight(), Some(&keep));
        // The goodbye ends; the timer is stopped and the action goes back.
        assert_eq!(
            peer.closed(),
            [
                Output::HandBack(vec![keep]),
                Output::Emit(Notice::Disconnect),
            ]
        );
        assert_eq!(peer.poll_timeout(), None);
    }

    #[test]
    fn acknowledgements_keep_arrival_order_when_verdicts_come_out_of_order() {
        let now = Instant::now();
        let config = PeerConfig {
            decide_events: true,
            echo: true,
            ..PeerConfig::default()
        };
        let mut peer = live(config, now);
        for (n, name) in ["e1", "e2", "e3"].into_iter().enumerate() {
            let Message::Event { id, kind, bundle } = event(name) else {
                unreachable!()
            };
            let expected = Output::Emit(Notice::Event {
                number: n as u64 + 1,
                id,
                kind,
                bundle,
                decide: true,
            });
            assert_eq!(peer.receive(event(name), now), [expected]);
        }
        let rejection = ErrorBody {
            code: Some("E42".into()),
            message: "No pings today.".into(),
        };
        // The third and second are decided first: they wait for the first.
        assert_eq!(peer.verdict(3, Verdict::Accept, now), []);
        assert_eq!(peer.verdict(2, Verdict::Reject(rejection.clone()), now), []);
        assert_eq!(peer.awaiting_verdicts(), 3);
        let later = now + Duration::from_millis(1500);
        let out = peer.verdict(1, Verdict::Accept, later);
        let echo = EPOCH_MS + 1500.0;
        assert_eq!(
            out,
            [
                acked("e1"),
                Output::Write(Message::Acknowledgement {
                    correlid: id("e2"),
                    status: 1,
                    error: Some(rejection),
                }),
                acked("e3"),
                // The accepted ones are echoed, one at a time; the rejected one is not.
                Output::Write(Message::Action {
                    id: Value::Number(echo),
                    kind: "ping".into(),
                    parameters: Value::Map(vec![("n".into(), id("e1"))]),
                }),
            ]
        );
        assert_eq!(peer.awaiting_verdicts(), 0);
        assert_eq!(peer.unacked().count(), 2);
        assert!(peer.unacked().all(|q| q.ticket.is_none()));
    }

    #[test]
    fn an_event_id_waiting_for_its_verdict_is_a_copy_not_a_slice_of_the_frame() {
        // A binary id is decoded as a slice of its frame, and the embedder's JavaScript gets a
        // Buffer over those bytes: the id kept for the acknowledgement must be a copy, so that
        // it keeps no 10 MiB frame alive and no write into that Buffer changes it.
        let now = Instant::now();
        let config = PeerConfig {
            decide_events: true,
            echo: false,
            ..PeerConfig::default()
        };
        let mut peer = live(config, now);
        let sent = vec![7u8; 100_000];
        let frame = Message::Event {
            id: Value::Binary(sent.clone().into()),
            kind: "ping".into(),
            bundle: Value::Binary(vec![1u8; 1_000_000].into()),
        }
        .to_frame();
        let body = frame.body.as_ptr_range();
        let out = peer.receive(Message::from_frame(&frame).unwrap(), now);
        drop(frame);
        let Some(Output::Emit(Notice::Event { number, .. })) = out.first() else {
            panic!("{out:?}")
        };
        let number = *number;
        drop(out);
        let Value::Binary(kept) = &peer.pending[0].id else {
            panic!("{:?}", peer.pending[0].id)
        };
        let kept = kept.as_ptr_range();
        assert!(
            kept.end <= body.start || body.end <= kept.start,
            "the id kept for the verdict is a slice of the frame"
        );
        let out = peer.verdict(number, Verdict::Accept, now);
        assert_eq!(writes(&out), [ack_of(Value::Binary(sent.into()))]);
    }

    #[test]
    fn verdicts_that_wait_for_nothing_are_ignored() {
        let now = Instant::now();
        let config = PeerConfig {
            decide_events: true,
            echo: false,
            ..PeerConfig::default()
        };
        let mut peer = live(config, now);
        peer.receive(event("e1"), now);
        assert_eq!(peer.verdict(9, Verdict::Accept, now), []);
        assert_eq!(peer.verdict(1, Verdict::Accept, now), [acked("e1")]);
        assert_eq!(peer.verdict(1, Verdict::Accept, now), []);
        let rejected = ErrorBody {
            code: None,
            message: "Event rejected.".into(),
        };
        assert_eq!(peer.verdict(1, Verdict::Reject(rejected), now), []);
    }

    #[test]
    fn echoes_go_out_one_at_a_time_each_after_the_previous_is_acknowledged() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let echo = |n: &str, id: f64| Message::Action {
            id: Value::Number(id),
            kind: "ping".into(),
            parameters: Value::Map(vec![("n".into(), Value::String(n.into()))]),
        };
        let out = peer.receive(event("e1"), now);
        assert!(matches!(
            out[0],
            Output::Emit(Notice::Event { decide: false, .. })
        ));
        assert_eq!(writes(&out), [ack_of(id("e1")), echo("e1", EPOCH_MS)]);
        let t2 = now + Duration::from_millis(20);
        assert_eq!(writes(&peer.receive(event("e2"), t2)), [ack_of(id("e2"))]);
        assert_eq!(peer.unacked().count(), 2);
        let out = peer.receive(ack_of(Value::Number(EPOCH_MS)), t2);
        assert_eq!(
            out,
            [
                Output::Emit(Notice::Acknowledgement {
                    ticket: None,
                    correlid: Value::Number(EPOCH_MS),
                    status: 0,
                    error: None,
                }),
                Output::Write(echo("e2", EPOCH_MS + 20.0)),
            ]
        );
        assert_eq!(
            writes(&peer.receive(ack_of(Value::Number(EPOCH_MS + 20.0)), t2)),
            []
        );
        assert_eq!(peer.unacked().count(), 0);
        // Echoes are dropped, not handed back, when the connection ends.
        peer.receive(event("e3"), t2);
        assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
    }

    #[test]
    fn unwatched_events_are_not_reported_but_still_acknowledged() {
        let now = Instant::now();
        let mut peer = live(
            PeerConfig {
                echo: false,
                event_notices: false,
                ..PeerConfig::default()
            },
            now,
        );
        assert_eq!(peer.receive(event("e1"), now), [acked("e1")]);
        peer.set_event_notices(true);
        let out = peer.receive(event("e2"), now);
        assert!(matches!(
            &out[..],
            [
                Output::Emit(Notice::Event { number: 2, .. }),
                Output::Write(_)
            ]
        ));
    }

    #[test]
    fn live_actions_wait_for_the_action_in_flight() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let (a1, a2) = (action("a1", Some(1)), action("a2", Some(2)));
        assert_eq!(peer.queue(a1.clone()), [written(&a1)]);
        assert_eq!(peer.queue(a2.clone()), []);
        let out = peer.receive(ack_of(id("a1")), now);
        assert_eq!(out.last(), Some(&written(&a2)));
        assert_eq!(peer.in_flight(), Some(&a2));
    }

    #[test]
    fn a_frame_over_10_mib_is_answered_with_bye_im491() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let oversize = || Err(FrameError::Oversize { frame_len: 1 << 30 });
        let out = peer.handle_frame(oversize(), now);
        assert_violation(
            &out,
            ErrorCode::BufferExceeded,
            "Maximum buffer size exceeded.",
            now,
        );
        assert_eq!(peer.phase(), Phase::Closing);
        // Nothing else is answered while saying goodbye.
        assert_eq!(peer.receive(event("e1"), now), []);
        assert_eq!(peer.handle_frame(oversize(), now), []);
        assert_eq!(peer.kick(now), []);
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_drops_the_socket_quietly() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let out = peer.handle_frame(Err(FrameError::Truncated { buffered: 3 }), now);
        assert_eq!(out, [Output::Drop]);
        assert_eq!(peer.poll_timeout(), None);
        assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
    }

    #[test]
    fn an_event_before_hello_is_answered_with_bye_eproto() {
        let now = Instant::now();
        let mut peer = connected(PeerConfig::default(), now);
        let out = peer.receive(event("e1"), now);
        assert_violation(&out, ErrorCode::Proto, "HELLO expected.", now);
        assert_eq!(peer.poll_timeout(), Some(now + LINGER));
        assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
        assert_eq!(peer.poll_timeout(), None);
    }

    #[test]
    fn an_event_before_drained_is_answered_with_bye_eproto() {
        let now = Instant::now();
        let mut peer = connected(PeerConfig::default(), now);
        peer.receive(Message::hello("pi"), now);
        let a1 = action("a1", Some(1));
        peer.held(Some(a1));
        let out = peer.receive(event("e1"), now);
        assert_violation(
            &out,
            ErrorCode::Proto,
            "Event received before DRAINED.",
            now,
        );
    }

    #[test]
    fn a_second_hello_is_answered_with_bye_eproto() {
        for holding in [true, false] {
            let now = Instant::now();
            let mut peer = if holding {
                let mut peer = connected(PeerConfig::default(), now);
                peer.receive(Message::hello("pi"), now);
                peer
            } else {
                live(PeerConfig::default(), now)
            };
            let out = peer.receive(Message::hello("pi"), now);
            assert_violation(&out, ErrorCode::Proto, "Unexpected HELLO.", now);
        }
    }

    #[test]
    fn messages_only_a_server_sends_are_answered_with_bye_eproto() {
        let now = Instant::now();
        let action = Message::Action {
            id: id("x"),
            kind: "t".into(),
            parameters: Value::Nil,
        };
        for (message, name) in [
            (Message::Welcome, "Welcome"),
            (Message::Drained, "Drained"),
            (action, "Action"),
        ] {
            let mut peer = live(PeerConfig::default(), now);
            let out = peer.receive(message.clone(), now);
            let expected = format!("Unexpected {name} from a client.");
            assert_violation(&out, ErrorCode::Proto, &expected, now);
            // Before HELLO, the same messages are a missing HELLO.
            let mut peer = connected(PeerConfig::default(), now);
            let out = peer.receive(message, now);
            assert_violation(&out, ErrorCode::Proto, "HELLO expected.", now);
        }
    }

    #[test]
    fn an_acknowledgement_for_no_action_or_another_is_answered_with_bye_eproto() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let out = peer.receive(ack_of(id("nothing")), now);
        let message = "Received acknowledgement even if there is no action in flight.";
        assert_violation(&out, ErrorCode::Proto, message, now);

        let mut peer = live(PeerConfig::default(), now);
        let a1 = action("a1", Some(1));
        peer.queue(a1.clone());
        let out = peer.receive(ack_of(id("a2")), now);
        let message = "Received acknowledgement for different action.";
        assert_violation(&out, ErrorCode::Proto, message, now);
        assert_eq!(peer.in_flight(), Some(&a1));
    }

    #[test]
    fn an_unreadable_frame_is_answered_with_bye_eproto_and_its_reason() {
        let now = Instant::now();
        let mut peer = connected(PeerConfig::default(), now);
        let frame = Frame {
            token: 0x99,
            body: Bytes::new(),
        };
        let out = peer.handle_frame(Ok(frame), now);
        assert_violation(&out, ErrorCode::Proto, "Unknown message token 0x99.", now);
        // An undecodable body, likewise.
        let mut peer = connected(PeerConfig::default(), now);
        let frame = Frame {
            token: 0x01,
            body: Bytes::from_static(&[0xc1]),
        };
        let out = peer.handle_frame(Ok(frame), now);
        assert!(
            matches!(
                &out[0],
                Output::Emit(Notice::ClientError { code: ErrorCode::Proto, message })
                    if message.starts_with("Failed to deserialize packet.")
            ),
            "{out:?}"
        );
    }

    #[test]
    fn kick_says_bye_without_a_body_and_the_goodbye_is_bounded() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let a1 = action("a1", Some(1));
        peer.queue(a1.clone());
        let out = peer.kick(now);
        assert_eq!(
            out,
            [
                Output::Write(Message::Bye { error: None }),
                Output::Shutdown { linger: false },
            ]
        );
        assert_eq!(peer.kick(now), []);
        assert_eq!(peer.poll_timeout(), Some(now + LINGER));
        // Early and late timer calls: only an expired deadline drops the socket.
        assert_eq!(peer.handle_timeout(now + Duration::from_secs(9)), []);
        assert_eq!(peer.handle_timeout(now + LINGER), [Output::Drop]);
        assert_eq!(peer.handle_timeout(now + LINGER * 2), []);
        assert_eq!(
            peer.closed(),
            [Output::HandBack(vec![a1]), Output::Emit(Notice::Disconnect)]
        );
    }

    #[test]
    fn bye_from_the_client_ends_the_connection_silently() {
        let now = Instant::now();
        let mut peer = live(PeerConfig::default(), now);
        let out = peer.receive(Message::Bye { error: None }, now);
        assert_eq!(out, [Output::Drop]);
        assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);
    }

    #[test]
    fn the_tls_handshake_is_timed_and_reported() {
        let now = Instant::now();
        let limit = Duration::from_secs(10);
        let config = PeerConfig {
            handshake_timeout: Some(limit),
            ..PeerConfig::default()
        };
        // Too slow: ETIMEDOUT, and no disconnect for a connection never announced.
        let mut peer = Peer::new(config.clone(), now, EPOCH_MS);
        assert_eq!(peer.accepted(now), []);
        assert_eq!(peer.poll_timeout(), Some(now + limit));
        assert_eq!(peer.receive(Message::hello("pi"), now), []);
        assert_eq!(peer.handle_timeout(now + limit / 2), []);
        let out = peer.handle_timeout(now + limit);
        assert_eq!(
            out,
            [
                Output::Emit(Notice::ClientError {
                    code: ErrorCode::TimedOut,
                    message: "TLS handshake timed out.".into(),
                }),
                Output::Drop,
            ]
        );
        assert_eq!(peer.closed(), []);

        // Failed: ETLS with the reason.
        let mut peer = Peer::new(config.clone(), now, EPOCH_MS);
        peer.accepted(now);
        let out = peer.handshake_failed("bad certificate");
        assert_eq!(
            out,
            [
                Output::Emit(Notice::ClientError {
                    code: ErrorCode::Tls,
                    message: "TLS handshake failed: bad certificate".into(),
                }),
                Output::Drop,
            ]
        );
        assert_eq!(peer.poll_timeout(), None);

        // Kicked during the handshake: announced, then BYE at once.
        let mut peer = Peer::new(config, now, EPOCH_MS);
        peer.accepted(now);
        assert_eq!(peer.kick(now), []);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            peer.secured(later),
            [
                Output::Emit(Notice::Connection),
                Output::Write(Message::Bye { error: None }),
                Output::Shutdown { linger: false },
            ]
        );
        assert_eq!(peer.poll_timeout(), Some(later + LINGER));
    }

    #[test]
    fn a_peer_that_says_no_hello_in_time_gets_bye_etimedout() {
        let now = Instant::now();
        let limit = Duration::from_millis(300);
        let config = PeerConfig {
            hello_timeout: Some(limit),
            ..PeerConfig::default()
        };
        let mut peer = Peer::new(config.clone(), now, EPOCH_MS);
        assert_eq!(peer.accepted(now), [Output::Emit(Notice::Connection)]);
        assert_eq!(peer.poll_timeout(), Some(now + limit));
        assert_eq!(peer.handle_timeout(now + limit / 2), []);
        let late = now + limit;
        assert_violation(
            &peer.handle_timeout(late),
            ErrorCode::TimedOut,
            "No HELLO within 300 ms.",
            late,
        );
        assert_eq!(peer.phase(), Phase::Closing);

        // HELLO in time stops the deadline (no idle limit here).
        let mut peer = Peer::new(config, now, EPOCH_MS);
        peer.accepted(now);
        peer.receive(Message::hello("pi"), now + limit / 2);
        assert_eq!(peer.poll_timeout(), None);
        assert_eq!(peer.handle_timeout(now + limit), []);
    }

    #[test]
    fn the_hello_deadline_starts_after_the_tls_handshake() {
        let now = Instant::now();
        let config = PeerConfig {
            handshake_timeout: Some(Duration::from_secs(10)),
            hello_timeout: Some(Duration::from_secs(1)),
            ..PeerConfig::default()
        };
        let mut peer = Peer::new(config, now, EPOCH_MS);
        peer.accepted(now);
        let secured = now + Duration::from_secs(5);
        assert_eq!(peer.secured(secured), [Output::Emit(Notice::Connection)]);
        assert_eq!(peer.poll_timeout(), Some(secured + Duration::from_secs(1)));
    }

    #[test]
    fn a_peer_idle_past_the_limit_gets_bye_etimedout_and_one_that_talks_does_not() {
        let now = Instant::now();
        let limit = Duration::from_secs(1);
        let config = PeerConfig {
            echo: false,
            idle_timeout: Some(limit),
            ..PeerConfig::default()
        };
        let mut peer = connected(config, now);
        peer.receive(Message::hello("pi"), now);
        assert_eq!(peer.poll_timeout(), Some(now + limit));
        peer.held(None);
        // Heard at +600 ms: the timer, due at +1 s, is armed again for +1.6 s.
        let t1 = now + Duration::from_millis(600);
        assert_eq!(
            peer.receive(event("e1"), t1),
            [
                Output::Emit(Notice::Event {
                    number: 1,
                    id: id("e1"),
                    kind: "ping".into(),
                    bundle: Value::Map(vec![("n".into(), id("e1"))]),
                    decide: false,
                }),
                acked("e1")
            ]
        );
        assert_eq!(peer.handle_timeout(now + limit), []);
        assert_eq!(peer.poll_timeout(), Some(t1 + limit));
        // Not read meanwhile (the embedder was behind): that time is not idleness.
        let t2 = t1 + Duration::from_millis(900);
        peer.unread_until(t2);
        assert_eq!(peer.handle_timeout(t1 + limit), []);
        assert_eq!(peer.poll_timeout(), Some(t2 + limit));
        assert_violation(
            &peer.handle_timeout(t2 + limit),
            ErrorCode::TimedOut,
            "Idle for 1000 ms.",
            t2 + limit,
        );
    }

    #[test]
    fn a_peer_that_leaves_too_many_echoes_unacknowledged_gets_bye_equeuefull() {
        let now = Instant::now();
        let config = PeerConfig {
            event_notices: false,
            max_echoes: 2,
            ..PeerConfig::default()
        };
        let message = "Too many unacknowledged echoes: more than 2 or 67108864 bytes of them.";
        let mut peer = live(config.clone(), now);
        // e1's echo goes out; e2's and e3's wait behind it: the bound, not over it.
        assert_eq!(writes(&peer.receive(event("e1"), now)).len(), 2);
        assert_eq!(peer.receive(event("e2"), now), [acked("e2")]);
        assert_eq!(peer.receive(event("e3"), now), [acked("e3")]);
        let out = peer.receive(event("e4"), now);
        assert_eq!(out[0], acked("e4"));
        assert_violation(&out[1..], ErrorCode::QueueFull, message, now);
        assert_eq!(peer.closed(), [Output::Emit(Notice::Disconnect)]);

        // A peer that acknowledges its echoes keeps the queue short and stays.
        let mut peer = live(config, now);
        for n in 0..10 {
            let name = format!("e{n}");
            let out = peer.receive(event(&name), now);
            let echo = peer.in_flight().unwrap().action.id.clone();
            assert_eq!(writes(&out).len(), 2, "{out:?}");
            peer.receive(ack_of(echo), now);
        }
        assert_eq!(peer.phase(), Phase::Live);

        // The bytes are bounded too.
        let mut peer = live(
            PeerConfig {
                event_notices: false,
                max_echo_bytes: 1000,
                ..PeerConfig::default()
            },
            now,
        );
        let big = |n: &str| Message::Event {
            id: id(n),
            kind: "blob".into(),
            bundle: Value::Binary(bytes::Bytes::from(vec![0u8; 600])),
        };
        peer.receive(big("b1"), now);
        assert_eq!(peer.receive(big("b2"), now), [acked("b2")]);
        let out = peer.receive(big("b3"), now);
        assert!(matches!(
            &out[1],
            Output::Emit(Notice::ClientError {
                code: ErrorCode::QueueFull,
                ..
            })
        ));
    }
}
