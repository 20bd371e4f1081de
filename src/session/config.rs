//! The session's options: what shapes the protocol ([`SessionConfig`]), how long its timers run
//! ([`Timing`]) and which timers there are ([`Timer`]).

#[cfg(doc)]
use super::backoff;
#[cfg(doc)]
use super::Session;
use crate::defaults;
use std::time::Duration;

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
    /// Time each answered event, from its send to its acknowledgement, for the duration
    /// histogram of the metrics (see [`super::Session::take_durations`]). Off unless the host
    /// records metrics: then nothing is timed or kept.
    pub time_events: bool,
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
            time_events: false,
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
