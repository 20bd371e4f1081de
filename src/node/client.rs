//! `NativeClient`: the client driver as index.js's `Client` sees it. Commands go in as plain
//! method calls; everything the client has to say comes back in batches to one callback,
//! written in the format of [`super::notice`]. On the JS thread's event loop, a batch made by
//! a loop callback (bytes arrived) is handed to that callback directly when the loop
//! callback's work is done; any other goes through one threadsafe function per client, which
//! calls [`pull`] (one batch per turn of the loop during a flood). That threadsafe function
//! also keeps Node alive only while the client has work (a socket, an attempt or a reconnect
//! wait), like a `net.Socket`: index.js refs it on `connect()` and unrefs it when the driver
//! reports the client idle.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, FromNapiValue, Function, ToNapiValue, TypeName, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Env, Result, Status, ValueType};
use napi_derive::napi;

use super::notice::{ClientKind, Flat};
use super::value::{
    encode, read_string, short_string, to_value, EncodeError, JsValue, FIELD_DEPTH, SHORT_STRING,
};
use super::{internal, thrown, Thrown};
use crate::client::{
    client, ActionAck, Backlog, Batch, ClientHandle, ClientOptions, Command, Tokio,
};
use crate::client::{EventStore, Restored};
use crate::errors::ErrorCode;
use crate::outbox::{DamageKind, OutboxError, OutboxOptions, SyncMode};
use crate::protocol::{ErrorBody, Value};
use crate::session::{ActionKey, Notice, OutgoingEvent, SessionConfig, SessionError};

type BatchSink = ThreadsafeFunction<MailboxCall, (), MailboxCall, Status, false>;

/// Notices on their way to JavaScript. At most one call is outstanding per client: while it
/// waits for the JS thread, and while JavaScript dispatches what it took, later batches join
/// the one in this mailbox, so a busy JS thread is woken once for many acknowledgements
/// instead of once for each. Taking the batch tells the driver's [`Backlog`], which stops
/// reading while JavaScript is far behind.
#[derive(Default)]
struct Mailbox {
    waiting: Mutex<Waiting>,
    backlog: Arc<Backlog>,
}

#[derive(Default)]
struct Waiting {
    batch: Option<Batch>,
    /// A call is on its way, or JavaScript is dispatching a pulled batch ([`pull`]): a batch
    /// posted now waits for it.
    called: bool,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `batch`; true when no call is outstanding, so one must be made.
    fn post(&self, batch: Batch) -> bool {
        let mut waiting = self.lock();
        match waiting.batch.as_mut() {
            Some(earlier) => earlier.absorb(batch),
            None => waiting.batch = Some(batch),
        }
        !std::mem::replace(&mut waiting.called, true)
    }

    /// Takes what waits. `pulled`: the call stays outstanding until [`Mailbox::settle`], so
    /// that batches posted while JavaScript dispatches this one wait for the loop's next turn.
    fn take(&self, pulled: bool) -> Batch {
        let batch = {
            let mut waiting = self.lock();
            waiting.called = pulled;
            waiting.batch.take().unwrap_or_default()
        };
        self.backlog.taken();
        batch
    }

    /// A pulled batch was dispatched: true when another waits (and is to be pulled on the
    /// loop's next turn); otherwise the next post makes a call again.
    fn settle(&self) -> bool {
        let mut waiting = self.lock();
        waiting.called = waiting.batch.is_some();
        waiting.called
    }
}

/// What the threadsafe call carries: nothing, since the function it calls is [`pull`], which
/// empties the mailbox on the JS thread at the moment it runs, so it hands over everything
/// gathered until then.
pub struct MailboxCall;

impl TypeName for MailboxCall {
    fn type_name() -> &'static str {
        "undefined"
    }
    fn value_type() -> ValueType {
        ValueType::Undefined
    }
}

impl ToNapiValue for MailboxCall {
    unsafe fn to_napi_value(env: sys::napi_env, _val: Self) -> Result<sys::napi_value> {
        let mut value = ptr::null_mut();
        napi::check_status!(sys::napi_get_undefined(env, &mut value))?;
        Ok(value)
    }
}

/// Empties `mailbox` into the values the JavaScript callback receives (see [`super::notice`]).
unsafe fn batch_values(env: sys::napi_env, mailbox: &Mailbox, pulled: bool) -> Result<Flat> {
    let batch = mailbox.take(pulled);
    // SAFETY: the caller's `env`, on its thread, in the handle scope it opened.
    let mut out = unsafe { Flat::new(env, batch.notices.len() * 4 + 3) };
    write_batch(&mut out, batch)?;
    out.finish()
}

/// Writes `batch`'s notices, then its fatal error and its idle report.
fn write_batch(out: &mut Flat, batch: Batch) -> Result<()> {
    for notice in batch.notices {
        write_notice(out, notice)?;
    }
    if let Some(err) = batch.fatal {
        out.kind(ClientKind::Fatal)?;
        out.error(err)?;
    }
    if let Some(cycle) = batch.idle {
        out.kind(ClientKind::Idle)?;
        out.number(cycle as f64)?;
    }
    Ok(())
}

/// Batches up to this many values go to the callback as its arguments, larger ones as one
/// array: arguments cost nothing to build, while filling an array costs about a microsecond
/// per element through Node-API.
const MAX_ARGUMENTS: usize = 1024;

/// Writes `notice` in the format of [`ClientKind`].
fn write_notice(out: &mut Flat, notice: Notice) -> Result<()> {
    match notice {
        Notice::Connect => out.kind(ClientKind::Connect),
        Notice::Drain => out.kind(ClientKind::Drain),
        Notice::Action {
            id,
            key,
            kind,
            parameters,
        } => {
            out.kind(ClientKind::Action)?;
            // SAFETY: `out`'s environment, on its thread, in its open handle scope.
            let delivered = unsafe { delivered_handle(out.env(), &id, key) }?;
            out.value(id)?;
            out.string(&kind)?;
            out.value(parameters)?;
            out.raw(delivered)
        }
        Notice::Acknowledgement {
            correlid,
            status,
            error,
        } => {
            out.kind(ClientKind::Acknowledgement)?;
            out.value(correlid)?;
            out.number(status as f64)?;
            let error = error.as_ref();
            out.optional_string(error.and_then(|e| e.code.as_deref()))?;
            out.optional_string(error.map(|e| e.message.as_str()))
        }
        Notice::EventDone {
            seq,
            result: Ok(()),
        } => {
            out.kind(ClientKind::Done)?;
            out.number(seq as f64)
        }
        Notice::EventDone {
            seq,
            result: Err(err),
        } => {
            out.kind(ClientKind::Failed)?;
            out.number(seq as f64)?;
            out.error(err)
        }
        Notice::Reconnect => out.kind(ClientKind::Reconnect),
        Notice::Disconnect => out.kind(ClientKind::Disconnect),
        Notice::Error(err) => {
            out.kind(ClientKind::Error)?;
            out.error(err)
        }
        Notice::Recovered(err) => {
            out.kind(ClientKind::Recovered)?;
            out.error(err)
        }
    }
}

/// A batch with a notice of every kind, for `__test__/notices.test.js` (see
/// `node::notice::notice_samples`).
pub(super) fn write_samples(out: &mut Flat) -> Result<()> {
    let err = |code: ErrorCode| SessionError::new(code, "sample");
    let action = |id: Value| Notice::Action {
        key: ActionKey::from(id.clone()),
        id,
        kind: "sample".to_owned(),
        parameters: Value::Nil,
    };
    let notices = vec![
        Notice::Connect,
        Notice::Drain,
        action(Value::String("a1".into())),
        action(Value::Array(vec![Value::Number(1.0)])),
        Notice::Acknowledgement {
            correlid: Value::String("e1".into()),
            status: 1,
            error: Some(ErrorBody {
                code: Some("C1".to_owned()),
                message: "rejected".to_owned(),
            }),
        },
        Notice::Acknowledgement {
            correlid: Value::String("e2".into()),
            status: 0,
            error: None,
        },
        Notice::EventDone {
            seq: 1,
            result: Ok(()),
        },
        Notice::EventDone {
            seq: 2,
            result: Err(err(ErrorCode::Closed)),
        },
        Notice::Reconnect,
        Notice::Disconnect,
        Notice::Error(err(ErrorCode::ConnectionReset)),
        Notice::Recovered(err(ErrorCode::Closed)),
    ];
    write_batch(
        out,
        Batch {
            notices,
            fatal: Some(err(ErrorCode::Internal)),
            idle: Some(7),
        },
    )
}

#[napi(object)]
pub struct NativeClientOptions {
    pub host: String,
    pub port: u32,
    /// Speak TLS; `key` and `cert` are then required.
    pub tls: bool,
    pub key: Option<Buffer>,
    pub cert: Option<Buffer>,
    pub ca: Option<Vec<Buffer>>,
    pub device_name: String,
    pub auto_reconnect: bool,
    pub max_reconnect_attempts: u32,
    pub max_in_flight: u32,
    pub max_queue_size: u32,
    /// Milliseconds, as all durations here; 0 disables the timeouts and keepalive.
    pub reconnect_delay: u32,
    pub max_reconnect_delay: u32,
    pub connect_timeout: u32,
    pub ack_timeout: u32,
    pub keep_alive: u32,
    /// The durable outbox, validated by lib/client.js.
    pub outbox: Option<NativeOutboxOptions>,
}

/// `options.outbox` (see index.d.ts, `OutboxOptions`).
#[napi(object)]
pub struct NativeOutboxOptions {
    pub path: String,
    /// `'always'`, `'interval'` or `'none'`.
    pub sync: String,
    /// Milliseconds, for `'interval'`.
    pub sync_interval: u32,
    pub max_bytes: f64,
    /// Segment file size (not documented: for tests).
    pub segment_bytes: Option<f64>,
}

/// A torn or corrupt place the outbox found when it was opened.
#[napi(object, object_from_js = false)]
pub struct NativeDamage {
    pub segment: String,
    pub offset: f64,
    pub bytes: f64,
    /// `'torn'`, `'checksum'`, `'invalid'` or `'header'`.
    pub kind: String,
    /// Cut off (the newest segment's tail), rather than left in an older segment.
    pub truncated: bool,
}

/// What opening the outbox found, as the `restored` event reports it.
#[napi(object, object_from_js = false)]
pub struct NativeRestored {
    /// The outbox's directory.
    pub path: String,
    /// Events an earlier client left, queued to be sent first.
    pub events: u32,
    /// Their ids, in the order they will be sent.
    pub ids: Vec<JsValue>,
    pub damage: Vec<NativeDamage>,
    /// Bytes cut off torn tails.
    pub truncated_bytes: f64,
}

/// The outbox's counters, which `client.stats()` adds when the client has one.
#[napi(object, object_from_js = false)]
pub struct NativeOutboxStats {
    pub outbox_pending: f64,
    pub outbox_bytes: f64,
    pub outbox_restored: f64,
    pub outbox_damage: f64,
    pub outbox_truncated: f64,
    pub outbox_syncs: f64,
    pub outbox_refused: f64,
}

fn outbox_options(
    options: &NativeOutboxOptions,
    max_queue_size: u32,
) -> std::result::Result<OutboxOptions, Thrown> {
    let sync = match options.sync.as_str() {
        "always" => SyncMode::Always,
        "interval" => SyncMode::Interval(millis(options.sync_interval.max(1))),
        "none" => SyncMode::None,
        other => {
            return Err(thrown(
                ErrorCode::InvalidValue,
                format!("Unknown outbox sync mode {other:?}."),
            ))
        }
    };
    let defaults = OutboxOptions::default();
    let bytes = |n: f64| (n.is_finite() && n >= 1.0).then_some(n as u64);
    Ok(OutboxOptions {
        sync,
        max_bytes: bytes(options.max_bytes).unwrap_or(defaults.max_bytes),
        max_records: if max_queue_size == 0 {
            usize::MAX
        } else {
            max_queue_size as usize
        },
        segment_bytes: options
            .segment_bytes
            .and_then(bytes)
            .unwrap_or(defaults.segment_bytes),
    })
}

fn outbox_error(err: OutboxError) -> Thrown {
    thrown(err.code().clone(), err.to_string())
}

fn restored_info(store: &EventStore, restored: &Restored) -> NativeRestored {
    NativeRestored {
        path: store.dir().display().to_string(),
        events: restored.events.len() as u32,
        ids: restored
            .events
            .iter()
            .map(|e| JsValue(e.id.clone()))
            .collect(),
        damage: restored
            .damage
            .iter()
            .map(|d| NativeDamage {
                segment: d.segment.display().to_string(),
                offset: d.offset as f64,
                bytes: d.bytes as f64,
                kind: match d.kind {
                    DamageKind::Torn => "torn",
                    DamageKind::Checksum => "checksum",
                    DamageKind::Invalid => "invalid",
                    DamageKind::BadHeader => "header",
                }
                .to_owned(),
                truncated: d.truncated,
            })
            .collect(),
        truncated_bytes: restored.truncated as f64,
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

fn optional_millis(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| millis(ms))
}

/// The batch callback's caller, on the JS thread. Two ways in:
/// - directly, at the end of the loop callback that made the batch (libuv driver, see
///   [`super::uv::call_after_callback`]): [`LoopCall::run`](super::uv::LoopCall::run);
/// - through [`pull`], a native function that the client's threadsafe function calls (a batch
///   made on another thread, or outside a loop callback), and that schedules itself with
///   `setImmediate` while batches keep coming: JavaScript dispatches one batch per turn of the
///   loop, so timers and I/O run between the batches of a flood. Node's threadsafe-function
///   dispatch, if every batch were a call of its own, runs up to 1000 queued calls in one
///   turn.
struct DirectCall {
    env: sys::napi_env,
    callback: sys::napi_ref,
    context: sys::napi_async_context,
    mailbox: Arc<Mailbox>,
    /// The [`pull`] function, which schedules itself (null until made, and after `release`).
    pull: Cell<sys::napi_ref>,
    /// Cleared when the `NativeClient` goes (and the references with it).
    live: Cell<bool>,
    /// The JS thread, the only one that may touch `env`, `callback`, `pull` and `live`.
    thread: std::thread::ThreadId,
}

// SAFETY: made and used on the JS thread only: the sink hands it to `uv::call_after_callback`, which
// accepts work only from a callback of this thread's loop, [`pull`] is a JavaScript function
// (called on this thread), and the `NativeClient` that clears it is finalized on that thread.
// `on_thread` checks it before every use.
unsafe impl Send for DirectCall {}
// SAFETY: shared references touch `env`, `callback`, `context`, `pull` and `live` (`Cell`s) only
// after `on_thread` (`release`, `hand_over`, `pull`), so on one thread; `mailbox` is a `Mutex`.
unsafe impl Sync for DirectCall {}

impl DirectCall {
    fn new(env: &Env, callback: sys::napi_value, mailbox: Arc<Mailbox>) -> Result<DirectCall> {
        let env = env.raw();
        let mut reference = ptr::null_mut();
        let mut context = ptr::null_mut();
        // SAFETY: `env` is the environment of the constructor call running on this, its
        // JavaScript thread, inside that call's handle scope; `callback` is a value of it; the
        // out-pointers are locals. On failure the reference made first is deleted again.
        unsafe {
            napi::check_status!(sys::napi_create_reference(env, callback, 1, &mut reference))?;
            let mut resource = ptr::null_mut();
            let mut name = ptr::null_mut();
            let made = sys::napi_create_object(env, &mut resource) == sys::Status::napi_ok
                && sys::napi_create_string_utf8(env, c"imt-gateway:client".as_ptr(), 18, &mut name)
                    == sys::Status::napi_ok
                && sys::napi_async_init(env, resource, name, &mut context) == sys::Status::napi_ok;
            if !made {
                sys::napi_delete_reference(env, reference);
                return Err(napi::Error::from_reason("napi_async_init failed"));
            }
        }
        Ok(DirectCall {
            env,
            callback: reference,
            context,
            mailbox,
            pull: Cell::new(ptr::null_mut()),
            live: Cell::new(true),
            thread: std::thread::current().id(),
        })
    }

    /// The [`pull`] function of `this`, made once, in the constructor call's scope.
    fn pull_function(this: &Arc<DirectCall>) -> Result<sys::napi_value> {
        let env = this.env;
        // SAFETY: called from the constructor, on `env`'s JavaScript thread and in its handle
        // scope. The function holds one count of `this`, released by its finalizer; the
        // reference kept of it is deleted by `release`, which breaks the cycle.
        unsafe {
            let function = function(env, c"pull", pull, this.clone())?;
            let mut reference = ptr::null_mut();
            napi::check_status!(sys::napi_create_reference(env, function, 1, &mut reference))?;
            this.pull.set(reference);
            Ok(function)
        }
    }

    /// Whether this runs on the JS thread that made it; a use from any other is a bug,
    /// refused rather than allowed to touch the environment.
    fn on_thread(&self) -> bool {
        let here = std::thread::current().id() == self.thread;
        debug_assert!(here, "DirectCall used off its JS thread");
        here
    }

    /// On the JS thread, when the `NativeClient` is finalized.
    fn release(&self) {
        if self.on_thread() && self.live.replace(false) {
            // SAFETY: on the JavaScript thread of `env`, from the `NativeClient`'s finalizer,
            // while the environment still lives; `live` guarantees the references and the
            // async context, made in `new` and `pull_function`, are released once.
            unsafe {
                sys::napi_delete_reference(self.env, self.callback);
                sys::napi_async_destroy(self.env, self.context);
                let pull = self.pull.replace(ptr::null_mut());
                if !pull.is_null() {
                    sys::napi_delete_reference(self.env, pull);
                }
            }
        }
    }

    /// Calls the batch callback with the mailbox's batch, as Node calls an I/O callback: in
    /// its own handle scope, with microtasks and `process.nextTick` run afterwards. An
    /// exception thrown by it is reported as uncaught, as a throwing listener of a socket is.
    /// `pulled`: see [`Mailbox::take`]. False when the mailbox could not be taken.
    fn hand_over(&self, pulled: bool) -> bool {
        if !self.on_thread() || !self.live.get() {
            return false;
        }
        let env = self.env;
        // SAFETY: `on_thread` and `live` hold: this is `env`'s JavaScript thread, and the
        // reference and async context made in `new` still exist (the `NativeClient`'s
        // finalizer clears `live` when it releases them). `env` lives: this runs from a
        // callback of its loop (`uv::call_after_callback`, whose `teardown` drops pending
        // calls when the environment goes) or from [`pull`], a JavaScript function of `env`;
        // either may call into JavaScript. Every value made here lives in the handle scope
        // opened first and closed last, and `args` outlives the call that reads it.
        unsafe {
            let mut scope = ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return false;
            }
            let mut callback = ptr::null_mut();
            let mut global = ptr::null_mut();
            let ready = sys::napi_get_reference_value(env, self.callback, &mut callback)
                == sys::Status::napi_ok
                && !callback.is_null()
                && sys::napi_get_global(env, &mut global) == sys::Status::napi_ok;
            let batch = if ready {
                batch_values(env, &self.mailbox, pulled).ok()
            } else {
                None
            };
            let args = match batch {
                Some(batch) if batch.values.len() <= MAX_ARGUMENTS => Some(batch.values),
                Some(batch) => batch.into_array().ok().map(|array| vec![array]),
                None => None,
            };
            if let Some(args) = args {
                let mut result = ptr::null_mut();
                let status = sys::napi_make_callback(
                    env,
                    self.context,
                    global,
                    callback,
                    args.len(),
                    args.as_ptr(),
                    &mut result,
                );
                if status == sys::Status::napi_pending_exception {
                    let mut error = ptr::null_mut();
                    sys::napi_get_and_clear_last_exception(env, &mut error);
                    sys::napi_fatal_exception(env, error);
                }
            }
            sys::napi_close_handle_scope(env, scope);
            ready
        }
    }

    /// Has [`pull`] run on the loop's next turn (`setImmediate`, or `setTimeout(pull, 0)`
    /// where there is none). If that cannot be done (the environment is going away), the
    /// next batch posted makes a call again.
    fn schedule(&self) {
        let env = self.env;
        // SAFETY: called by `pull` on `env`'s JavaScript thread (`on_thread` held there) while
        // `live`, so the `pull` reference exists; values live in the handle scope opened here.
        let scheduled = unsafe {
            let mut scope = ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return;
            }
            let mut global = ptr::null_mut();
            let mut function = ptr::null_mut();
            let mut ok = sys::napi_get_global(env, &mut global) == sys::Status::napi_ok
                && sys::napi_get_reference_value(env, self.pull.get(), &mut function)
                    == sys::Status::napi_ok
                && !function.is_null();
            if ok {
                ok = false;
                for name in [c"setImmediate", c"setTimeout"] {
                    let mut timer = ptr::null_mut();
                    let mut kind = 0;
                    if sys::napi_get_named_property(env, global, name.as_ptr(), &mut timer)
                        == sys::Status::napi_ok
                        && sys::napi_typeof(env, timer, &mut kind) == sys::Status::napi_ok
                        && kind == sys::ValueType::napi_function
                    {
                        let mut result = ptr::null_mut();
                        ok = sys::napi_call_function(env, global, timer, 1, &function, &mut result)
                            == sys::Status::napi_ok;
                        break;
                    }
                }
            }
            sys::napi_close_handle_scope(env, scope);
            ok
        };
        if !scheduled {
            self.mailbox.lock().called = false;
        }
    }
}

impl super::uv::LoopCall for DirectCall {
    fn run(&self) {
        self.hand_over(false);
    }
}

/// What the client's threadsafe function calls, and what `setImmediate` calls again while
/// batches keep coming: dispatches the batch waiting in the mailbox, then, if another came
/// meanwhile, schedules itself for the loop's next turn instead of letting it be called at
/// once (see [`DirectCall`]). `data` is its `DirectCall`.
unsafe extern "C" fn pull(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let mut data = ptr::null_mut();
    let mut argc = 0;
    // SAFETY: `env` and `info` are this call's, from Node; no argument is read.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            ptr::null_mut(),
            ptr::null_mut(),
            &mut data,
        )
    };
    if status == sys::Status::napi_ok && !data.is_null() {
        // SAFETY: `data` is the `DirectCall` count this function holds until its finalizer,
        // which cannot run during a call of the function.
        let direct = unsafe { &*data.cast::<DirectCall>() };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !direct.on_thread() || !direct.live.get() {
                return;
            }
            if !direct.hand_over(true) {
                // Nothing could be taken: let the next batch make a call again rather than
                // scheduling this one forever.
                direct.mailbox.lock().called = false;
            } else if direct.mailbox.settle() {
                direct.schedule();
            }
        }));
    }
    ptr::null_mut()
}

/// `client.stats()` as JavaScript gets it: a plain object, counts as numbers (exact up to
/// 2^53), `rtt` in milliseconds or null. Each field is documented in index.d.ts
/// (`ClientStats`).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct NativeStats {
    pub queued: f64,
    pub in_flight: f64,
    pub acknowledged: f64,
    pub rejected: f64,
    pub resent: f64,
    pub failed_closed: f64,
    pub failed_queue_full: f64,
    pub actions_received: f64,
    pub actions_acked: f64,
    pub reconnects: f64,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub connected: bool,
    pub drained: bool,
    pub rtt: Option<f64>,
}

#[napi]
pub struct NativeClient {
    handle: ClientHandle,
    sink: Arc<BatchSink>,
    direct: Arc<DirectCall>,
    store: Option<Arc<EventStore>>,
    /// What the latest opening of the outbox found, until JavaScript takes it.
    restored: Mutex<Option<NativeRestored>>,
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.direct.release();
    }
}

#[napi]
impl NativeClient {
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        options: NativeClientOptions,
        on_batch: Function<'_, Unknown<'_>, ()>,
    ) -> Result<Self, ErrorCode> {
        let port = u16::try_from(options.port)
            .map_err(|_| thrown(ErrorCode::BadPort, "Port should be >= 0 and < 65536."))?;
        let tls = if options.tls {
            let (Some(key), Some(cert)) = (&options.key, &options.cert) else {
                return Err(thrown(ErrorCode::InvalidKey, "Invalid private key."));
            };
            let ca: Option<Vec<Vec<u8>>> = options
                .ca
                .as_ref()
                .map(|list| list.iter().map(|b| b.to_vec()).collect());
            Some(crate::tls::client_config(key, cert, ca.as_deref())?)
        } else {
            None
        };
        let mut session = SessionConfig::new(options.device_name);
        session.auto_reconnect = options.auto_reconnect;
        session.max_reconnect_attempts = options.max_reconnect_attempts;
        session.max_in_flight = options.max_in_flight.max(1) as usize;
        session.max_queue_size = options.max_queue_size as usize;
        // Opened before anything else, so a locked outbox fails the constructor at once.
        let opened = match &options.outbox {
            Some(outbox) => {
                let store = outbox_options(outbox, options.max_queue_size)?;
                Some(EventStore::open(&outbox.path, store).map_err(outbox_error)?)
            }
            None => None,
        };
        let callback = napi::JsValue::raw(&on_batch);
        let mailbox: Arc<Mailbox> = Arc::default();
        let reactor = super::uv::reactor(&env);
        let direct = Arc::new(DirectCall::new(&env, callback, mailbox.clone()).map_err(internal)?);
        let pull = DirectCall::pull_function(&direct).map_err(internal)?;
        // SAFETY: `env` is this constructor call's environment, on its thread, and `pull` a
        // function made in it just above.
        let sink =
            Arc::new(unsafe { BatchSink::from_napi_value(env.raw(), pull) }.map_err(internal)?);
        let threadsafe = sink.clone();
        let direct_call = reactor.is_some().then(|| direct.clone());
        let (handle, task) = client(
            ClientOptions {
                host: options.host,
                port,
                tls,
                session,
                reconnect_delay: millis(options.reconnect_delay),
                max_reconnect_delay: millis(options.max_reconnect_delay),
                connect_timeout: optional_millis(options.connect_timeout),
                ack_timeout: optional_millis(options.ack_timeout),
                keep_alive: optional_millis(options.keep_alive),
                reactor: reactor.clone().unwrap_or_else(|| Arc::new(Tokio)),
                store: opened.as_ref().map(|(store, _)| store.clone()),
                backlog: mailbox.backlog.clone(),
            },
            move |batch: Batch| {
                // A batch joining one already on its way needs no call of its own; else it
                // goes directly when a loop callback made it, by the threadsafe function if not.
                if mailbox.post(batch)
                    && !direct_call
                        .as_ref()
                        .is_some_and(super::uv::call_after_callback)
                {
                    threadsafe.call(MailboxCall, ThreadsafeFunctionCallMode::NonBlocking);
                }
            },
        );
        match reactor {
            Some(reactor) => reactor.spawn(Box::pin(task)),
            None => {
                napi::bindgen_prelude::spawn(task);
            }
        }
        let mut restored = None;
        let store = match opened {
            Some((store, found)) => {
                napi::bindgen_prelude::spawn(EventStore::syncer(&store));
                restored = Some(restored_info(&store, &found));
                // The first command: ahead of every send.
                if !found.events.is_empty() {
                    handle.command(Command::Restore(found.events));
                }
                Some(store)
            }
            None => None,
        };
        let client = NativeClient {
            handle,
            sink,
            direct,
            store,
            restored: Mutex::new(restored),
        };
        // Idle until the first connect().
        client.unref(env).map_err(internal)?;
        Ok(client)
    }

    /// Starts a connection cycle and keeps Node alive for it.
    #[napi(catch_unwind)]
    pub fn connect(&self, env: Env, cycle: u32) -> Result<()> {
        self.refer(env)?;
        run_command(
            &self.handle,
            Command::Connect {
                cycle: u64::from(cycle),
            },
        );
        Ok(())
    }

    /// `send` and `ack` as plain functions, made once per client (see [`Calls`]).
    #[napi(
        catch_unwind,
        ts_return_type = "{ send(seq: number, id: unknown, type: string, bundle: unknown): (Error & { code: string }) | undefined, ack(id: unknown, code?: string, message?: string): void }"
    )]
    pub fn calls(&self, env: Env) -> Result<RawValue> {
        let calls = Arc::new(Calls {
            handle: self.handle.clone(),
            store: self.store.clone(),
        });
        let env = env.raw();
        // SAFETY: `env` is this method call's environment, on its thread and in its handle
        // scope; `function` hands one count of `calls` to each JavaScript function, released
        // by that function's finalizer.
        unsafe {
            let mut object = ptr::null_mut();
            napi::check_status!(sys::napi_create_object(env, &mut object))?;
            for (name, call) in [(c"send", call_send as CallFn), (c"ack", call_ack as CallFn)] {
                let function = function(env, name, call, calls.clone())?;
                napi::check_status!(sys::napi_set_named_property(
                    env,
                    object,
                    name.as_ptr(),
                    function
                ))?;
            }
            Ok(RawValue(object))
        }
    }

    /// Closes the client; unless `keep_queue`, closes its outbox too (after the session has
    /// let go of its events), so that another client may open it.
    #[napi(catch_unwind)]
    pub fn close(&self, keep_queue: bool) -> Result<(), ErrorCode> {
        run_command(&self.handle, Command::Close { keep_queue });
        match &self.store {
            Some(store) if !keep_queue => store.close().map_err(outbox_error),
            _ => Ok(()),
        }
    }

    /// Opens the outbox again after `close()` (at `connect()`, or at a `send()` before it):
    /// the events found are queued ahead of anything sent after. True when it was opened now
    /// (`takeRestored()` then has what it found), false when it was open or there is none.
    #[napi(catch_unwind)]
    pub fn reopen_outbox(&self) -> Result<bool, ErrorCode> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let Some(found) = store.reopen().map_err(outbox_error)? else {
            return Ok(false);
        };
        *self.restored.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(restored_info(store, &found));
        if !found.events.is_empty() {
            run_command(&self.handle, Command::Restore(found.events));
        }
        Ok(true)
    }

    /// What the latest opening of the outbox found, once; null without an outbox or after it
    /// was taken.
    #[napi(catch_unwind)]
    pub fn take_restored(&self) -> Option<NativeRestored> {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The outbox's counters; null without an outbox.
    #[napi(catch_unwind)]
    pub fn outbox_stats(&self) -> Option<NativeOutboxStats> {
        let s = self.store.as_ref()?.stats();
        Some(NativeOutboxStats {
            outbox_pending: s.pending as f64,
            outbox_bytes: s.bytes as f64,
            outbox_restored: s.restored as f64,
            outbox_damage: s.damage as f64,
            outbox_truncated: s.truncated as f64,
            outbox_syncs: s.syncs as f64,
            outbox_refused: s.refused as f64,
        })
    }

    /// The client's counters, read without waiting for its task (see `ClientHandle::stats`).
    #[napi(catch_unwind)]
    pub fn stats(&self) -> NativeStats {
        let stats = self.handle.stats();
        let s = stats.session;
        NativeStats {
            queued: s.queued as f64,
            in_flight: s.in_flight as f64,
            acknowledged: s.acknowledged as f64,
            rejected: s.rejected as f64,
            resent: s.resent as f64,
            failed_closed: s.failed_closed as f64,
            failed_queue_full: s.failed_queue_full as f64,
            actions_received: s.actions_received as f64,
            actions_acked: s.actions_acked as f64,
            reconnects: s.reconnects as f64,
            bytes_sent: stats.bytes_sent as f64,
            bytes_received: stats.bytes_received as f64,
            connected: s.connected,
            drained: s.drained,
            rtt: stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
        }
    }

    /// Makes the client's task panic: the test suite's proof that a panic in the core reaches
    /// JavaScript as an `error`, not as an abort. Refused unless `IMT_GATEWAY_TEST_HOOKS=1`
    /// was in the environment when the addon loaded (the tests that need it set it), so the
    /// binary that ships, and is tested, cannot be crashed by it in production.
    #[napi(js_name = "__crash", catch_unwind)]
    pub fn crash(&self) -> Result<()> {
        if !super::test_hooks() {
            return Err(napi::Error::from_reason(
                "__crash is a test hook (IMT_GATEWAY_TEST_HOOKS=1 when the addon loads)",
            ));
        }
        run_command(&self.handle, Command::Crash);
        Ok(())
    }

    /// Keeps the Node process alive while the client has work.
    #[napi(js_name = "ref", catch_unwind)]
    pub fn refer(&self, env: Env) -> Result<()> {
        self.keep_alive(env, true)
    }

    /// Lets the Node process exit even though the client has work.
    #[napi(catch_unwind)]
    pub fn unref(&self, env: Env) -> Result<()> {
        self.keep_alive(env, false)
    }
}

/// Hands `command` to the client and, when the client runs on this thread's loop, lets it
/// act now: an acknowledgement or an event is on the wire before the call returns.
fn run_command(handle: &ClientHandle, command: Command) {
    super::uv::run_after(|| {
        handle.command(command);
    });
}

impl NativeClient {
    fn keep_alive(&self, env: Env, on: bool) -> Result<()> {
        if self.sink.aborted() {
            return Ok(());
        }
        let (env, sink) = (env.raw(), self.sink.raw());
        // SAFETY: `env` is this method call's environment, on its thread, and `sink` is the
        // client's threadsafe function, not yet released (`aborted()` was false just above,
        // on this thread, which is where it is released).
        napi::check_status!(unsafe {
            if on {
                sys::napi_ref_threadsafe_function(env, sink)
            } else {
                sys::napi_unref_threadsafe_function(env, sink)
            }
        })
    }
}

/// A value made with raw Node-API calls, returned as it is.
pub struct RawValue(pub sys::napi_value);

impl ToNapiValue for RawValue {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.0)
    }
}

impl TypeName for RawValue {
    fn type_name() -> &'static str {
        "object"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

/// What `send` and `ack` need: the client's handle. They are the calls made once per event
/// and per action, so they are plain Node-API functions over this rather than methods of
/// `NativeClient`: a generated method first finds its object, checks its type tag and
/// registers the borrow of it in a process-wide table, which costs more than the call's own
/// work. Each function holds the `Calls` until it is garbage-collected.
struct Calls {
    handle: ClientHandle,
    /// The durable outbox, appended to before `send` returns.
    store: Option<Arc<EventStore>>,
}

type CallFn = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// A JavaScript function named `name` that runs `call` with `data` (a `Calls` or the
/// `DirectCall`) as its data: the function holds one count of `data`, which its finalizer
/// releases, so `call` finds it alive whenever the function runs.
unsafe fn function<T>(
    env: sys::napi_env,
    name: &std::ffi::CStr,
    call: CallFn,
    data: Arc<T>,
) -> Result<sys::napi_value> {
    unsafe extern "C" fn release<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
        drop(Arc::from_raw(data.cast::<T>()));
    }
    let data = Arc::into_raw(data).cast_mut().cast::<c_void>();
    let mut function = ptr::null_mut();
    let made = sys::napi_create_function(
        env,
        name.as_ptr(),
        name.count_bytes() as isize,
        Some(call),
        data,
        &mut function,
    ) == sys::Status::napi_ok
        && sys::napi_add_finalizer(
            env,
            function,
            data,
            Some(release::<T>),
            ptr::null_mut(),
            ptr::null_mut(),
        ) == sys::Status::napi_ok;
    if !made {
        drop(Arc::from_raw(data.cast::<T>()));
        return Err(napi::Error::from_reason("napi_create_function failed"));
    }
    Ok(function)
}

/// How a call reports what its body refused.
#[derive(Clone, Copy)]
enum Failure {
    /// Thrown: an `Error` with its code (`IM491` for a value over the frame cap; see
    /// [`EncodeError::code`]).
    Throw,
    /// Returned, as an `Error` with its code (see [`refusal`]); the call returns undefined
    /// when it did its work.
    Return,
}

/// Runs a call's body with its arguments and `Calls`: an error becomes a JavaScript `Error`
/// with its code, thrown or returned as `failure` says, unless an exception is pending
/// already, as when a getter of the bundle threw, which is then thrown as it is. A panic,
/// which must not unwind into Node, becomes `EINTERNAL`.
unsafe fn run_call<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    failure: Failure,
    body: impl FnOnce(&Calls, [sys::napi_value; N]) -> std::result::Result<(), EncodeError>,
) -> sys::napi_value {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    let mut data = ptr::null_mut();
    let status = sys::napi_get_cb_info(
        env,
        info,
        &mut argc,
        argv.as_mut_ptr(),
        ptr::null_mut(),
        &mut data,
    );
    let result: std::result::Result<(), EncodeError> =
        if status != sys::Status::napi_ok || data.is_null() {
            Err(EncodeError::Napi(napi::Error::from_reason(
                "napi_get_cb_info failed",
            )))
        } else {
            if argc < N {
                // Missing arguments are undefined, as in JavaScript.
                let mut undefined = ptr::null_mut();
                sys::napi_get_undefined(env, &mut undefined);
                argv[argc..].fill(undefined);
            }
            let calls = &*data.cast::<Calls>();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(calls, argv))) {
                Ok(done) => done,
                Err(_) => Err(EncodeError::Napi(napi::Error::from_reason(
                    "internal error (panic)",
                ))),
            }
        };
    let Err(err) = result else {
        return ptr::null_mut();
    };
    let mut pending = false;
    sys::napi_is_exception_pending(env, &mut pending);
    match failure {
        Failure::Return if !pending => {
            let (code, message) = refusal(err);
            let mut code_value = ptr::null_mut();
            let mut message_value = ptr::null_mut();
            let mut error = ptr::null_mut();
            let made = sys::napi_create_string_utf8(
                env,
                code.as_ptr().cast(),
                code.len() as isize,
                &mut code_value,
            ) == sys::Status::napi_ok
                && sys::napi_create_string_utf8(
                    env,
                    message.as_ptr().cast(),
                    message.len() as isize,
                    &mut message_value,
                ) == sys::Status::napi_ok
                && sys::napi_create_error(env, code_value, message_value, &mut error)
                    == sys::Status::napi_ok;
            if made {
                return error;
            }
            napi::JsError::from(thrown(ErrorCode::Internal, message)).throw_into(env);
        }
        _ => {
            let err = match err {
                EncodeError::Napi(err) if !pending => thrown(ErrorCode::Internal, err.reason),
                err => Thrown::from(err),
            };
            napi::JsError::from(err).throw_into(env);
        }
    }
    ptr::null_mut()
}

/// The code and message of the `Error` a refused `send` returns: `IM491` over the frame cap,
/// the outbox's code when it refused the event (`EQUEUEFULL`, `ENOSPC`, ...), otherwise
/// `EINVALIDBUNDLE`: the id or bundle could not be encoded.
fn refusal(err: EncodeError) -> (String, String) {
    match err {
        EncodeError::OverBudget | EncodeError::Stored(..) => {
            let err = Thrown::from(err);
            (err.status.code().to_owned(), err.reason)
        }
        EncodeError::Refused(message) => (
            "EINVALIDBUNDLE".to_owned(),
            format!("Invalid event bundle: {message}"),
        ),
        EncodeError::Napi(err) => (
            "EINVALIDBUNDLE".to_owned(),
            format!("Invalid event bundle: {}", err.reason),
        ),
    }
}

/// `send(seq, id, type, bundle)`: queues an event; `seq` names its callback in the `done`
/// notice. Returns undefined, or the `Error` (with its code, see [`refusal`]) that refused the
/// event, which is then not queued; throws only what JavaScript threw (a getter of the bundle). The bundle is encoded here, straight from the caller's Buffers into the frame,
/// and not kept.
unsafe extern "C" fn call_send(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    run_call(
        env,
        info,
        Failure::Return,
        |calls, [seq, id, kind, bundle]: [sys::napi_value; 4]| {
            let mut number = 0.0;
            napi::check_status!(sys::napi_get_value_double(env, seq, &mut number))?;
            let mut short = [0u8; SHORT_STRING];
            let long;
            let kind = match short_string(env, kind, &mut short)? {
                Some(kind) => kind,
                None => {
                    long = read_string(env, kind)?;
                    long.as_str()
                }
            };
            // The id and the bundle go straight from the caller's values and Buffers into
            // the frame.
            let mut event = OutgoingEvent::encode(
                number as u64,
                |out| encode(env, id, FIELD_DEPTH, out),
                kind,
                |out| encode(env, bundle, FIELD_DEPTH, out),
            )?;
            // On disk (or refused, and then not queued at all) before `send` returns, whichever
            // driver runs the client (docs/ARCHITECTURE.md section 6).
            if let Some(store) = &calls.store {
                store
                    .append(&mut event)
                    .map_err(|err| EncodeError::Stored(err.code().clone(), err.to_string()))?;
            }
            // Now, or with the other sends of this turn on the loop's next (see uv::send_now).
            let now = super::uv::send_now(event.frame.len());
            let event = Command::Send(Box::new(event));
            if now {
                run_command(&calls.handle, event);
            } else {
                calls.handle.command(event);
            }
            Ok(())
        },
    )
}

/// Marks the externals made by [`delivered_handle`], so that `ack` never takes another
/// module's external (or a forged one) for one of them.
static DELIVERED_TAG: sys::napi_type_tag = sys::napi_type_tag {
    lower: 0x8f3c_51d2_6a0e_47b9,
    upper: 0x2d71_e6c4_b915_03fa,
};

/// What `ack` passes back to name an action's id as the server sent it: null when the id is a
/// string, number, boolean or null, which JavaScript cannot change (`ack` then passes the id
/// itself); otherwise an external holding the session's copy of the id ([`ActionKey`]). A
/// Buffer, array, object or Date may be changed by the application before it acknowledges
/// (a large Buffer even shares the received frame's bytes, see `node::value`), and the
/// acknowledgement must still name the action delivered. Null too where externals cannot be
/// tagged.
unsafe fn delivered_handle(
    env: sys::napi_env,
    id: &Value,
    key: ActionKey,
) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if matches!(
        id,
        Value::Nil | Value::Bool(_) | Value::Number(_) | Value::String(_)
    ) {
        napi::check_status!(sys::napi_get_null(env, &mut out))?;
        return Ok(out);
    }
    let size = key.bytes().len() as i64;
    let owner = Box::into_raw(Box::new(key));
    let status = sys::napi_create_external(
        env,
        owner.cast(),
        Some(release_delivered),
        ptr::null_mut(),
        &mut out,
    );
    if status != sys::Status::napi_ok {
        drop(Box::from_raw(owner));
        return Err(napi::Error::new(
            Status::from(status),
            "napi_create_external",
        ));
    }
    // The key's memory lives as long as the external: V8 is told, so that the collector
    // frees a large one in time.
    let mut total = 0;
    sys::napi_adjust_external_memory(env, size, &mut total);
    if sys::napi_type_tag_object(env, out, &DELIVERED_TAG) != sys::Status::napi_ok {
        // The external is dropped by the collector, which runs its finalizer.
        napi::check_status!(sys::napi_get_null(env, &mut out))?;
    }
    Ok(out)
}

/// The finalizer of a [`delivered_handle`] external: `data` is its boxed key.
unsafe extern "C" fn release_delivered(env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    let key = Box::from_raw(data.cast::<ActionKey>());
    let mut total = 0;
    sys::napi_adjust_external_memory(env, -(key.bytes().len() as i64), &mut total);
}

/// The id `ack` was given: the key inside a [`delivered_handle`] external, or the id itself.
unsafe fn action_key(
    env: sys::napi_env,
    id: sys::napi_value,
) -> std::result::Result<ActionKey, EncodeError> {
    let mut kind = 0;
    napi::check_status!(sys::napi_typeof(env, id, &mut kind))?;
    if kind == sys::ValueType::napi_external {
        let mut tagged = false;
        napi::check_status!(sys::napi_check_object_type_tag(
            env,
            id,
            &DELIVERED_TAG,
            &mut tagged
        ))?;
        if tagged {
            let mut data = ptr::null_mut();
            napi::check_status!(sys::napi_get_value_external(env, id, &mut data))?;
            // Sound: only `delivered_handle` tags externals with `DELIVERED_TAG`, and their
            // data is a boxed `ActionKey` (Rust memory, not a JavaScript object's) that lives
            // until the finalizer, which cannot run while `id`, a handle of this call's
            // scope, keeps the external alive; the key is cloned (a reference count) at once.
            return Ok((*data.cast::<ActionKey>()).clone());
        }
    }
    Ok(ActionKey::from(to_value(env, id)?))
}

/// `ack(id, code?, message?)`: acknowledges an action; with `message`, as failed. `id` is
/// the action's id, or the `delivered` handle of its notice ([`ClientKind::Action`]).
unsafe extern "C" fn call_ack(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    run_call(
        env,
        info,
        Failure::Throw,
        |calls, [id, code, message]: [sys::napi_value; 3]| {
            let id = action_key(env, id)?;
            let code = optional_string(env, code)?;
            let error = optional_string(env, message)?.map(|message| ErrorBody { code, message });
            run_command(
                &calls.handle,
                Command::Ack(Box::new(ActionAck { id, error })),
            );
            Ok(())
        },
    )
}

/// A string argument that may be left out (undefined or null).
unsafe fn optional_string(
    env: sys::napi_env,
    value: sys::napi_value,
) -> std::result::Result<Option<String>, EncodeError> {
    let mut kind = 0;
    napi::check_status!(sys::napi_typeof(env, value, &mut kind))?;
    match kind {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(None),
        _ => read_string(env, value).map(Some),
    }
}
