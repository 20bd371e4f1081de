//! `NativeServer`: the gateway [`Server`] as index.js's `Server` sees it. Everything the server
//! does reaches JavaScript in batches through one threadsafe function, which exists only while
//! the server listens, so a closed server never keeps Node alive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, ToNapiValue, TypeName, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Env, Result, Status, ValueType};
use napi_derive::napi;
use tokio::sync::mpsc;

use super::notice::{Flat, ServerKind};
use super::thrown;
use super::value::to_value;
use crate::errors::{io_code, ErrorCode};
use crate::protocol::{ErrorBody, Value};
use crate::server::{ConnectionInfo, OutboundAction, Server, ServerEvent, ServerOptions, Verdict};

type EventSink = ThreadsafeFunction<ServerBatch, (), ServerBatch, Status, false>;
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

/// Server events on their way to JavaScript, as one flat array in the format of
/// [`ServerKind`] (see [`super::notice`]).
pub struct ServerBatch(Vec<ServerEvent>);

impl TypeName for ServerBatch {
    fn type_name() -> &'static str {
        "Array<unknown>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for ServerBatch {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        // SAFETY: napi-rs calls this on `env`'s thread, in the handle scope of the call it
        // makes with the value.
        let mut out = unsafe { Flat::new(env, val.0.len() * 4) };
        for event in val.0 {
            write_event(&mut out, event)?;
        }
        out.finish()?.into_array()
    }
}

/// The connection field: an object, or null.
fn write_connection(out: &mut Flat, info: Option<&ConnectionInfo>) -> Result<()> {
    match info {
        Some(info) => out.object(connection(info)),
        None => out.null(),
    }
}

/// Writes `event` in the format of [`ServerKind`].
fn write_event(out: &mut Flat, event: ServerEvent) -> Result<()> {
    match event {
        ServerEvent::Connection(info) => {
            out.kind(ServerKind::Connection)?;
            write_connection(out, Some(&info))
        }
        ServerEvent::Hello(info) => {
            out.kind(ServerKind::Hello)?;
            write_connection(out, Some(&info))
        }
        ServerEvent::Event {
            conn,
            id,
            kind,
            bundle,
            decision,
        } => {
            out.kind(ServerKind::Event)?;
            write_connection(out, Some(&conn))?;
            out.value(id)?;
            out.string(&kind)?;
            // Copied: the echo still reads its bytes.
            out.value_copy(bundle)?;
            out.optional_number(decision.map(|d| d as f64))
        }
        ServerEvent::Acknowledgement {
            conn,
            ticket,
            correlid,
            status,
            error,
        } => {
            out.kind(ServerKind::Acknowledgement)?;
            write_connection(out, Some(&conn))?;
            out.value(correlid)?;
            out.optional_number(ticket.map(|t| t as f64))?;
            out.number(status as f64)?;
            let error = error.as_ref();
            out.optional_string(error.and_then(|e| e.code.as_deref()))?;
            out.optional_string(error.map(|e| e.message.as_str()))
        }
        ServerEvent::ActionDiscarded { ticket } => {
            out.kind(ServerKind::Discarded)?;
            out.number(ticket as f64)
        }
        ServerEvent::ClientError {
            conn,
            code,
            message,
        } => {
            out.kind(ServerKind::ClientError)?;
            write_connection(out, conn.as_deref())?;
            out.string(&code)?;
            out.string(&message)
        }
        ServerEvent::Disconnect(info) => {
            out.kind(ServerKind::Disconnect)?;
            write_connection(out, Some(&info))
        }
        ServerEvent::Closed => out.kind(ServerKind::Close),
    }
}

/// A batch with a notice of every kind (see `node::notice::notice_samples`).
pub(super) fn write_samples(out: &mut Flat) -> Result<()> {
    let conn = Arc::new(ConnectionInfo {
        id: 3,
        remote: SocketAddr::from(([127, 0, 0, 1], 4567)),
        device_name: Some("device".to_owned()),
        subject: None,
    });
    let events = vec![
        ServerEvent::Connection(conn.clone()),
        ServerEvent::Hello(conn.clone()),
        ServerEvent::Event {
            conn: conn.clone(),
            id: Value::String("e1".into()),
            kind: "sample".to_owned(),
            bundle: Value::Map(vec![("n".to_owned(), Value::Number(1.0))]),
            decision: Some(5),
        },
        ServerEvent::Event {
            conn: conn.clone(),
            id: Value::String("e2".into()),
            kind: "sample".to_owned(),
            bundle: Value::Nil,
            decision: None,
        },
        ServerEvent::Acknowledgement {
            conn: conn.clone(),
            ticket: Some(9),
            correlid: Value::String("a1".into()),
            status: 1,
            error: Some(ErrorBody {
                code: Some("C1".to_owned()),
                message: "failed".to_owned(),
            }),
        },
        ServerEvent::Acknowledgement {
            conn: conn.clone(),
            ticket: None,
            correlid: Value::String("a2".into()),
            status: 0,
            error: None,
        },
        ServerEvent::ActionDiscarded { ticket: 10 },
        ServerEvent::ClientError {
            conn: None,
            code: "EPROTO".to_owned(),
            message: "sample".to_owned(),
        },
        ServerEvent::Disconnect(conn),
        ServerEvent::Closed,
    ];
    for event in events {
        write_event(out, event)?;
    }
    Ok(())
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
        let deliver = |batch: Vec<ServerEvent>, weight: usize| {
            let taken = server.clone();
            let status = sink.call_with_return_value(
                ServerBatch(batch),
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
                batch.push(event);
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

    /// Replaces the TLS material (see `Server::set_tls`), checked first: refused material
    /// throws with its code and the old stays in force.
    #[napi(catch_unwind)]
    pub fn set_tls(
        &self,
        key: Buffer,
        cert: Buffer,
        ca: Option<Vec<Buffer>>,
    ) -> Result<(), ErrorCode> {
        let ca: Option<Vec<Vec<u8>>> = ca.map(|list| list.iter().map(|b| b.to_vec()).collect());
        let config = crate::tls::server_config(&key, &cert, ca.as_deref())?;
        if !self.server.set_tls(config) {
            return Err(thrown(
                ErrorCode::TlsConfig,
                "setCredentials() needs a server made with key and cert (TLS).",
            ));
        }
        Ok(())
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
