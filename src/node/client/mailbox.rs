//! How batches reach the JavaScript callback: the [`Mailbox`] where a client's batches wait
//! (and join), the threadsafe function that wakes the JS thread, and [`DirectCall`], which calls
//! the callback on the JS thread, directly at the end of a loop callback or through [`pull`].

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use napi::bindgen_prelude::{ToNapiValue, TypeName};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{sys, Env, Result, Status, ValueType};

use super::calls::function;
use super::notices::write_batch;
use crate::client::{Backlog, Batch};
use crate::node::notice::Flat;
use crate::shapes::Shapes;

pub(super) type BatchSink = ThreadsafeFunction<MailboxCall, (), MailboxCall, Status, false>;

/// Notices on their way to JavaScript. At most one call is outstanding per client: while it
/// waits for the JS thread, and while JavaScript dispatches what it took, later batches join
/// the one in this mailbox, so a busy JS thread is woken once for many acknowledgements
/// instead of once for each. Taking the batch tells the driver's [`Backlog`], which stops
/// reading while JavaScript is far behind.
#[derive(Default)]
pub(super) struct Mailbox {
    waiting: Mutex<Waiting>,
    pub(super) backlog: Arc<Backlog>,
    /// Whether JavaScript listens for `acknowledgement` (see `NativeClient::acknowledgements`):
    /// when not, a batch leaves out the acknowledgement notices, which would each cost a
    /// string and an object that nobody reads. Read when a batch is handed over, on the JS
    /// thread, so it is what JavaScript had set by then.
    pub(super) acknowledgements: AtomicBool,
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
    pub(super) fn post(&self, batch: Batch) -> bool {
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
        // SAFETY: napi-rs calls this with the current `env`, on its JavaScript thread, in the
        // handle scope of the call it makes; the out-pointer is a local.
        napi::check_status!(unsafe { sys::napi_get_undefined(env, &mut value) })?;
        Ok(value)
    }
}

/// Empties `mailbox` into the values the JavaScript callback receives (see [`crate::node::notice`]).
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, where the values
/// made here live.
unsafe fn batch_values(
    env: sys::napi_env,
    mailbox: &Mailbox,
    pulled: bool,
    shapes: Option<&mut Shapes>,
) -> Result<Flat> {
    let batch = mailbox.take(pulled);
    // SAFETY: the caller's `env`, on its thread, in the handle scope it opened.
    let mut out = unsafe { Flat::new(env, batch.notices.len() * 4 + 3) };
    write_batch(
        &mut out,
        batch,
        mailbox.acknowledgements.load(Ordering::Relaxed),
        shapes,
    )?;
    out.finish()
}

/// Batches up to this many values go to the callback as its arguments, larger ones as one
/// array: arguments cost nothing to build, while filling an array costs a Node-API call per
/// element.
pub(super) const MAX_ARGUMENTS: usize = 1024;

/// The batch callback's caller, on the JS thread. Two ways in:
/// - directly, at the end of the loop callback that made the batch (libuv driver, see
///   [`crate::node::uv::call_after_callback`]): [`LoopCall::run`](crate::node::uv::LoopCall::run);
/// - through [`pull`], a native function that the client's threadsafe function calls (a batch
///   made on another thread, or outside a loop callback), and that schedules itself with
///   `setImmediate` while batches keep coming: JavaScript dispatches one batch per turn of the
///   loop, so timers and I/O run between the batches of a flood. Node's threadsafe-function
///   dispatch, if every batch were a call of its own, runs up to 1000 queued calls in one
///   turn.
pub(super) struct DirectCall {
    env: sys::napi_env,
    callback: sys::napi_ref,
    context: sys::napi_async_context,
    mailbox: Arc<Mailbox>,
    /// The [`pull`] function, which schedules itself (null until made, and after `release`).
    pull: Cell<sys::napi_ref>,
    /// Cleared when the `NativeClient` goes (and the references with it).
    live: Cell<bool>,
    /// The action shapes told to this client's JavaScript (see [`Shapes`]).
    shapes: RefCell<Shapes>,
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
    pub(super) fn new(
        env: &Env,
        callback: sys::napi_value,
        mailbox: Arc<Mailbox>,
    ) -> Result<DirectCall> {
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
            shapes: RefCell::new(Shapes::default()),
            thread: std::thread::current().id(),
        })
    }

    /// The [`pull`] function of `this`, made once, in the constructor call's scope.
    pub(super) fn pull_function(this: &Arc<DirectCall>) -> Result<sys::napi_value> {
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

    /// The mailbox whose batches this hands over.
    pub(super) fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// On the JS thread, when the `NativeClient` is finalized.
    pub(super) fn release(&self) {
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
        // opened first and closed last. JavaScript runs in `napi_make_callback` and when the
        // callback scope opened after a throw closes (the microtasks left); meanwhile this
        // holds pointers to its own memory only, never into a JavaScript object: `args`, a
        // Rust list of handles that outlives the call reading it, the out-pointers (locals),
        // and the `shapes` borrow, which JavaScript cannot reach (a nested hand-over takes
        // none, `try_borrow_mut`). No other program can write to this process's memory. The
        // callback scope is closed at once, inside the handle scope, with the async context
        // `live` vouches for.
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
            // A batch call runs JavaScript, which may call into this client again (`ack()`,
            // `send()`), whose batches are handed over after it returns
            // (`call_after_callback`, `pull`). Only a loop run inside the callback (a module
            // that spins the event loop) could hand one over meanwhile: that batch goes
            // without shapes.
            let mut shapes = self.shapes.try_borrow_mut().ok();
            let batch = if ready {
                batch_values(env, &self.mailbox, pulled, shapes.as_deref_mut()).ok()
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
                // The batch reached JavaScript, which read its shapes, unless the call failed
                // before any JavaScript ran.
                let reached = matches!(
                    status,
                    sys::Status::napi_ok | sys::Status::napi_pending_exception
                );
                if let Some(shapes) = shapes.as_mut() {
                    shapes.settle(reached);
                }
                if status == sys::Status::napi_pending_exception {
                    let mut error = ptr::null_mut();
                    sys::napi_get_and_clear_last_exception(env, &mut error);
                    sys::napi_fatal_exception(env, error);
                    // Node runs the microtasks and `process.nextTick` callbacks when a callback
                    // returns, not when it throws: they wait for the next callback scope to
                    // close. Close one now, so that they run before a batch handed over next in
                    // this turn (one that a read after a write found), as they would before a
                    // batch of a later turn.
                    let mut after = ptr::null_mut();
                    if sys::napi_open_callback_scope(env, global, self.context, &mut after)
                        == sys::Status::napi_ok
                    {
                        sys::napi_close_callback_scope(env, after);
                    }
                }
                Flat::recycle(args);
            } else if let Some(shapes) = shapes.as_mut() {
                shapes.settle(false);
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

impl crate::node::uv::LoopCall for DirectCall {
    fn run(&self) {
        self.hand_over(false);
    }
}

/// What the client's threadsafe function calls, and what `setImmediate` calls again while
/// batches keep coming: dispatches the batch waiting in the mailbox, then, if another came
/// meanwhile, schedules itself for the loop's next turn instead of letting it be called at
/// once (see [`DirectCall`]). `data` is its `DirectCall`.
///
/// # Safety
///
/// Called by Node as the function [`DirectCall::pull_function`] made, with the `env` and
/// `info` of that call: its data is a `DirectCall` count, which the function holds.
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
        // which cannot run during a call of the function, so the batch's JavaScript (run
        // below through it) cannot free it; it is Rust memory, not a JavaScript object's, and
        // no other program can reach this process's heap.
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
