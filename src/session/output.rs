//! What the session hands back: what the driver must do ([`Output`]), what the application
//! hears ([`Notice`]) and its errors ([`SessionError`]).

use super::ActionKey;
#[cfg(doc)]
use super::{OutgoingEvent, Session};
use crate::errors::ErrorCode;
use crate::protocol::{ErrorBody, Value};
use bytes::Bytes;
use std::fmt;

/// An error as the JavaScript layer shows it: `new Error(message)` with `err.code = code`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionError {
    pub code: ErrorCode,
    pub message: String,
    /// What a proxy answered when it refused the tunnel (`EPROXY`), as JavaScript sees it on
    /// the `Error`: `proxyStatus` or `socksReply`.
    pub detail: Option<ErrorDetail>,
}

/// A proxy's answer, carried on its `EPROXY` [`SessionError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDetail {
    /// The HTTP status a proxy answered `CONNECT` with (407: authentication required).
    ProxyStatus(u16),
    /// The SOCKS5 reply code (RFC 1928 section 6; 2: connection not allowed by ruleset).
    SocksReply(u8),
}

impl SessionError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> SessionError {
        SessionError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The error with `detail` added.
    pub fn with_detail(mut self, detail: Option<ErrorDetail>) -> SessionError {
        self.detail = detail;
        self
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
    Forget(u64),
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
    /// The connection's state changed (`client.health()`, metrics and the `logger` option).
    /// Never output by the session itself: the client's driver compares
    /// [`Session::state`] around each input and puts this before that input's notices.
    State {
        state: ConnectionState,
        /// The reconnect delay, when `state` is [`ConnectionState::Backoff`].
        delay: Option<std::time::Duration>,
        /// An attempt ended before the gateway welcomed the client (not by `close()`).
        failed: bool,
    },
}

/// Where the client's connection is, as `client.health().state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Never connected, closed by the user, or given up.
    Closed,
    /// An attempt is under way, up to the gateway's WELCOME.
    Connecting,
    /// Welcomed; the gateway is still delivering the actions it held.
    Connected,
    /// The gateway said DRAINED: events flow.
    Drained,
    /// The connection is gone and the reconnect delay is running.
    Backoff,
}

impl ConnectionState {
    /// The name JavaScript sees.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Closed => "closed",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Drained => "drained",
            ConnectionState::Backoff => "backoff",
        }
    }
}
