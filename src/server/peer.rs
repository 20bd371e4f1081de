//! The server's half of the protocol for one connection (docs/PROTOCOL.md section 7, The server
//! side) as a sans-I/O state machine, the counterpart of the client's
//! [`crate::session::Session`]: it never touches a socket, a lock, a channel or the clock. The
//! driver in `connection.rs` feeds it what happened (the socket was accepted and secured, a
//! message arrived, the embedder decided an event, the server queued an action or kicked the
//! connection, the timer expired, the socket closed), with the time as an argument where it
//! matters, and carries out the [`Output`]s it gets back, in order.
//!
//! Server-wide state is the `Hub`'s (`hub.rs`), which the driver consults: the actions held per
//! device, the connection table and the decisions awaited from the embedder. The peer asks for
//! held actions one at a time ([`Output::NeedHeld`], answered by [`Peer::held`]), names each
//! event it wants decided by a number of its own ([`Notice::Event`], answered by
//! [`Peer::verdict`]), and when the connection ends hands back the actions it did not get
//! acknowledged ([`Output::HandBack`]), so that they are delivered again on the device's next
//! connection.
//!
//! The server is strict where the client is lenient: anything the protocol does not allow is a
//! violation, answered with a [`Notice::ClientError`], `BYE {error}` and a lingering close.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{OutboundAction, Queued, Verdict};
use crate::errors::ErrorCode;
use crate::protocol::{ErrorBody, Frame, FrameError, Message, Value};

/// How long a goodbye (BYE, shutting the write side, the lingering read) may take before the
/// socket is dropped. Long enough for a slow peer, such as a client emulated under qemu-user,
/// to finish writing a 10 MiB frame.
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
mod tests;
