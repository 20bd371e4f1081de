//! `NativeServer`: the gateway [`Server`] as index.js's `Server` sees it. Everything the server
//! does reaches JavaScript in batches through one threadsafe function, which exists only while
//! the server listens, so a closed server never keeps Node alive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Result, Status};
use napi_derive::napi;
use tokio::sync::mpsc;

use super::thrown;
use super::value::{to_value, JsValue, JsValueCopy};
use crate::errors::{io_code, ErrorCode};
use crate::protocol::ErrorBody;
use crate::server::{ConnectionInfo, OutboundAction, Server, ServerEvent, ServerOptions, Verdict};

type EventSink = ThreadsafeFunction<Vec<ServerNotice>, (), Vec<ServerNotice>, Status, false>;
/// The server's events, held here between one listen() and the next: the pump of a listening
/// server owns them, and gives them back when the server has closed.
struct InboxSlot {
    events: Mutex<Option<mpsc::UnboundedReceiver<ServerEvent>>>,
    returned: tokio::sync::Notify,
}

type Inbox = Arc<InboxSlot>;

impl InboxSlot {
    fn put(&self, rx: mpsc::UnboundedReceiver<ServerEvent>) {
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        self.returned.notify_one();
    }

    fn take(&self) -> Option<mpsc::UnboundedReceiver<ServerEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[napi(object)]
pub struct NativeServerOptions {
    pub key: Option<Buffer>,
    pub cert: Option<Buffer>,
    pub ca: Option<Vec<Buffer>>,
    pub echo: Option<bool>,
    pub decide_events: Option<bool>,
    /// Milliseconds; 0 for none.
    pub hello_timeout: Option<u32>,
    pub idle_timeout: Option<u32>,
}

/// Milliseconds from JavaScript, 0 for none; left out, the table's default.
fn duration(ms: Option<u32>, default: Option<Duration>) -> Option<Duration> {
    match ms {
        None => default,
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(u64::from(ms))),
    }
}

/// A code and message for index.js to turn into an `Error`.
#[napi(object)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

#[napi(object)]
pub struct Address {
    pub address: String,
    pub family: String,
    pub port: u32,
}

/// `listen()`'s outcome: an address, or why not.
#[napi(object)]
pub struct Listened {
    pub address: Option<Address>,
    pub error: Option<Failure>,
}

/// A `listen()` that failed with `code`.
fn failed(code: ErrorCode, message: impl Into<String>) -> Listened {
    Listened {
        address: None,
        error: Some(Failure {
            code: code.code().into(),
            message: message.into(),
        }),
    }
}

#[napi(object)]
pub struct Connection {
    pub id: f64,
    pub remote_address: String,
    pub remote_port: u32,
    pub device_name: Option<String>,
    pub subject: Option<String>,
}

/// One thing that happened, flattened for JavaScript: `kind` says which fields are set.
#[napi(object, object_from_js = false)]
pub struct ServerNotice {
    pub kind: String,
    pub connection: Option<Connection>,
    pub id: Option<JsValue>,
    #[napi(js_name = "type")]
    pub event_type: Option<String>,
    /// An event's bundle: copied, since the echo still reads its bytes.
    pub payload: Option<JsValueCopy>,
    pub decision: Option<f64>,
    pub ticket: Option<f64>,
    pub status: Option<f64>,
    pub code: Option<String>,
    pub message: Option<String>,
}

fn address(addr: SocketAddr) -> Address {
    Address {
        address: addr.ip().to_string(),
        family: if addr.is_ipv6() { "IPv6" } else { "IPv4" }.into(),
        port: u32::from(addr.port()),
    }
}

fn connection(info: &ConnectionInfo) -> Connection {
    Connection {
        id: info.id as f64,
        remote_address: info.remote.ip().to_string(),
        remote_port: u32::from(info.remote.port()),
        device_name: info.device_name.clone(),
        subject: info.subject.clone(),
    }
}

fn notice(kind: &str) -> ServerNotice {
    ServerNotice {
        kind: kind.into(),
        connection: None,
        id: None,
        event_type: None,
        payload: None,
        decision: None,
        ticket: None,
        status: None,
        code: None,
        message: None,
    }
}

fn to_notice(event: ServerEvent) -> ServerNotice {
    match event {
        ServerEvent::Connection(info) => ServerNotice {
            connection: Some(connection(&info)),
            ..notice("connection")
        },
        ServerEvent::Hello(info) => ServerNotice {
            connection: Some(connection(&info)),
            ..notice("hello")
        },
        ServerEvent::Event {
            conn,
            id,
            kind,
            bundle,
            decision,
        } => ServerNotice {
            connection: Some(connection(&conn)),
            id: Some(JsValue(id)),
            event_type: Some(kind),
            payload: Some(JsValueCopy(bundle)),
            decision: decision.map(|d| d as f64),
            ..notice("event")
        },
        ServerEvent::Acknowledgement {
            conn,
            ticket,
            correlid,
            status,
            error,
        } => ServerNotice {
            connection: Some(connection(&conn)),
            id: Some(JsValue(correlid)),
            ticket: ticket.map(|t| t as f64),
            status: Some(status as f64),
            code: error.as_ref().and_then(|e| e.code.clone()),
            message: error.map(|e| e.message),
            ..notice("acknowledgement")
        },
        ServerEvent::ActionDiscarded { ticket } => ServerNotice {
            ticket: Some(ticket as f64),
            ..notice("discarded")
        },
        ServerEvent::ClientError {
            conn,
            code,
            message,
        } => ServerNotice {
            connection: conn.as_deref().map(connection),
            code: Some(code),
            message: Some(message),
            ..notice("clientError")
        },
        ServerEvent::Disconnect(info) => ServerNotice {
            connection: Some(connection(&info)),
            ..notice("disconnect")
        },
        ServerEvent::Closed => notice("close"),
    }
}

/// Forwards server events to JavaScript in batches until the server reports `Closed`, then
/// puts the receiver back for the next `listen()` and drops the threadsafe function. Each
/// batch counts as delivered (`Server::delivered`) once JavaScript has returned from it: until
/// then it is part of the server's event backlog, which holds the peers back when it grows.
fn spawn_pump(
    server: Arc<Server>,
    inbox: Inbox,
    mut rx: mpsc::UnboundedReceiver<ServerEvent>,
    sink: EventSink,
) {
    napi::bindgen_prelude::spawn(async move {
        let deliver = |batch: Vec<ServerNotice>, weight: usize| {
            let taken = server.clone();
            let status = sink.call_with_return_value(
                batch,
                ThreadsafeFunctionCallMode::NonBlocking,
                move |returned, _env| {
                    taken.delivered(weight);
                    // A throw in a listener stays an uncaught exception, as without this.
                    returned
                },
            );
            if status != Status::Ok {
                // Never to reach JavaScript (it is going away): not owed either.
                server.delivered(weight);
            }
        };
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::new();
            let mut weight = 0;
            let mut next = Some(first);
            let mut closed = false;
            while let Some(event) = next {
                closed = event == ServerEvent::Closed;
                weight += event.weight();
                batch.push(to_notice(event));
                if closed {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if closed {
                // Given back before JavaScript hears of the close, so that a listen() made
                // from the close callback finds the server's events ready for it.
                inbox.put(rx);
                deliver(batch, weight);
                return;
            }
            deliver(batch, weight);
        }
        inbox.put(rx);
    });
}

/// How long a listen() right after a close waits for the closed server's events to come back.
const INBOX_RETURN: Duration = Duration::from_secs(5);

#[napi]
pub struct NativeServer {
    server: Arc<Server>,
    inbox: Inbox,
}

impl NativeServer {
    /// The server's events for a new listen(): none while it is listening. Closed but with the
    /// events still on their way back from the last pump (JavaScript may listen again as soon
    /// as close() has resolved), they are waited for.
    async fn take_inbox(&self) -> Option<mpsc::UnboundedReceiver<ServerEvent>> {
        let deadline = tokio::time::Instant::now() + INBOX_RETURN;
        loop {
            if let Some(rx) = self.inbox.take() {
                return Some(rx);
            }
            if self.server.local_addr().is_some() {
                return None;
            }
            let returned = self.inbox.returned.notified();
            if tokio::time::timeout_at(deadline, returned).await.is_err() {
                return self.inbox.take();
            }
        }
    }
}

#[napi]
impl NativeServer {
    #[napi(constructor, catch_unwind)]
    pub fn new(options: NativeServerOptions) -> Result<Self, ErrorCode> {
        let tls = match (&options.key, &options.cert) {
            (Some(key), Some(cert)) => {
                let ca: Option<Vec<Vec<u8>>> = options
                    .ca
                    .as_ref()
                    .map(|list| list.iter().map(|b| b.to_vec()).collect());
                Some(crate::tls::server_config(key, cert, ca.as_deref())?)
            }
            (None, None) => None,
            _ => {
                return Err(thrown(
                    ErrorCode::InvalidKey,
                    "key and cert must be given together.",
                ))
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let server = Server::new(
            ServerOptions {
                tls,
                echo: options.echo.unwrap_or(crate::defaults::ECHO),
                decide_events: options.decide_events.unwrap_or(false),
                hello_timeout: duration(options.hello_timeout, crate::defaults::HELLO_TIMEOUT),
                idle_timeout: duration(options.idle_timeout, crate::defaults::IDLE_TIMEOUT),
                event_backlog: Some(crate::server::EVENT_BACKLOG),
                ..ServerOptions::default()
            },
            tx,
        );
        Ok(NativeServer {
            server: Arc::new(server),
            inbox: Arc::new(InboxSlot {
                events: Mutex::new(Some(rx)),
                returned: tokio::sync::Notify::new(),
            }),
        })
    }

    #[napi]
    pub async fn listen(
        &self,
        port: u32,
        host: Option<String>,
        on_events: EventSink,
    ) -> Result<Listened> {
        let Ok(port) = u16::try_from(port) else {
            return Ok(failed(
                ErrorCode::BadPort,
                "Port should be >= 0 and < 65536.",
            ));
        };
        let Some(rx) = self.take_inbox().await else {
            return Ok(failed(
                ErrorCode::AlreadyListening,
                "Listen method has been called more than once without closing.",
            ));
        };
        match self.server.listen(host.as_deref(), port).await {
            Ok(addr) => {
                spawn_pump(self.server.clone(), self.inbox.clone(), rx, on_events);
                Ok(Listened {
                    address: Some(address(addr)),
                    error: None,
                })
            }
            Err(e) => {
                self.inbox.put(rx);
                Ok(failed(io_code(&e), e.to_string()))
            }
        }
    }

    #[napi(catch_unwind)]
    pub fn address(&self) -> Option<Address> {
        self.server.local_addr().map(address)
    }

    /// Report events to JavaScript only while something listens for them.
    #[napi(catch_unwind)]
    pub fn set_event_notices(&self, on: bool) {
        self.server.set_event_notices(on);
    }

    #[napi(catch_unwind)]
    pub fn kick(&self) {
        self.server.kick();
    }

    /// Drops every connection now, without BYE: `destroy()` during a `close()`.
    #[napi(catch_unwind)]
    pub fn drop_connections(&self) {
        self.server.drop_connections();
    }

    /// Stops listening and ends every connection: with BYE when `graceful`, at once otherwise.
    /// True when it was listening, and so a `close` notice follows (or came already: it
    /// travels apart from this call's result).
    #[napi]
    pub async fn close(&self, graceful: bool) -> bool {
        self.server.close(graceful).await
    }

    /// Holds an action for `device_name`; its ticket names it in later notices. The id and
    /// the parameters are encoded as an event's bundle is, within the same budget.
    #[napi(catch_unwind)]
    pub fn queue_action(
        &self,
        env: Env,
        device_name: String,
        #[napi(ts_arg_type = "unknown")] id: Unknown<'_>,
        action_type: String,
        #[napi(ts_arg_type = "unknown")] parameters: Unknown<'_>,
    ) -> Result<f64, ErrorCode> {
        // SAFETY: `env` is this call's environment, on its thread and in its handle scope, and
        // both values are arguments of the call.
        let (id, parameters) = unsafe {
            (
                to_value(env.raw(), napi::JsValue::raw(&id))?,
                to_value(env.raw(), napi::JsValue::raw(&parameters))?,
            )
        };
        Ok(self.server.queue_action(
            &device_name,
            OutboundAction {
                id,
                kind: action_type,
                parameters,
            },
        ) as f64)
    }

    /// Accepts the event (no `message`) or rejects it with `{code, message}`.
    #[napi(catch_unwind)]
    pub fn decide(&self, decision: f64, code: Option<String>, message: Option<String>) -> bool {
        let verdict = match message {
            None => Verdict::Accept,
            Some(message) => Verdict::Reject(ErrorBody { code, message }),
        };
        self.server.decide(decision as u64, verdict)
    }

    #[napi(catch_unwind)]
    pub fn connections(&self) -> Vec<Connection> {
        self.server
            .connections()
            .iter()
            .map(|c| connection(c))
            .collect()
    }
}
