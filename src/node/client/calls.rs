//! `send` and `ack`, the calls made once per event and per action, as plain Node-API
//! functions (see [`Calls`]), and how they report what they refuse: the `Error` with its code
//! that `send` returns ([`refusal`]) or that `ack` throws.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use napi::bindgen_prelude::{ToNapiValue, TypeName};
use napi::{sys, Result, ValueType};

use super::delivered::action_key;
use super::run_command;
use crate::client::{ActionAck, ClientHandle, Command, EventStore};
use crate::errors::ErrorCode;
use crate::node::value::{
    encode, encode_resumed, read_string, short_string, EncodeError, Resumed, FIELD_DEPTH,
    SHORT_STRING,
};
use crate::node::{thrown, Thrown};
use crate::protocol::ErrorBody;
use crate::session::{new_event_id, OutgoingEvent};

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
pub(super) struct Calls {
    pub(super) handle: ClientHandle,
    /// The durable outbox, appended to before `send` returns.
    pub(super) store: Option<Arc<EventStore>>,
}

pub(super) type CallFn =
    unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// A JavaScript function named `name` that runs `call` with `data` (a `Calls` or the
/// `DirectCall`) as its data: the function holds one count of `data`, which its finalizer
/// releases, so `call` finds it alive whenever the function runs.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope (where the function
/// made lives); `call` reads its data, if at all, as a `*const T` it does not release.
pub(super) unsafe fn function<T>(
    env: sys::napi_env,
    name: &std::ffi::CStr,
    call: CallFn,
    data: Arc<T>,
) -> Result<sys::napi_value> {
    /// # Safety
    ///
    /// Called by Node once, as the finalizer of a function made by `function::<T>`: `data`
    /// is the count of an `Arc<T>` that function held.
    unsafe extern "C" fn release<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
        // SAFETY: `data` came from `Arc::into_raw` of an `Arc<T>` in `function`, and this
        // finalizer runs once (the caller's guarantee), so the count is released once.
        drop(unsafe { Arc::from_raw(data.cast::<T>()) });
    }
    let data = Arc::into_raw(data).cast_mut().cast::<c_void>();
    let mut function = ptr::null_mut();
    // SAFETY: `env` is current on its JavaScript thread, in a handle scope (the caller's
    // guarantee); `name` is NUL-terminated with the length given, `call` reads `data` as a `T`
    // (the caller's guarantee), and the out-pointer is a local. The finalizer is attached to
    // the function just made, so `release` runs once, when it is collected. Neither call runs
    // JavaScript.
    let made = unsafe {
        sys::napi_create_function(
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
            ) == sys::Status::napi_ok
    };
    if !made {
        // SAFETY: no finalizer owns the count (attaching it failed, or no function was made),
        // so it is released here, once; it came from `Arc::into_raw` above.
        drop(unsafe { Arc::from_raw(data.cast::<T>()) });
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

/// Runs a call's body with its arguments (those not given undefined), how many were given, and
/// `Calls`, and returns what the body returned
/// (a null `napi_value` is undefined): an error becomes a JavaScript `Error` with its code,
/// thrown or returned as `failure` says, unless an exception is pending already, as when a
/// getter of the bundle threw, which is then thrown as it is. A panic, which must not unwind
/// into Node, becomes `EINTERNAL`.
///
/// # Safety
///
/// Called from a function made by [`function`] with a `Calls` as its data, with the `env`
/// and `info` Node gave that call (on the JavaScript thread, inside the call's handle scope).
unsafe fn run_call<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    failure: Failure,
    body: impl FnOnce(
        &Calls,
        [sys::napi_value; N],
        usize,
    ) -> std::result::Result<sys::napi_value, EncodeError>,
) -> sys::napi_value {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    let mut data = ptr::null_mut();
    // SAFETY: `env` and `info` are this call's (the caller's guarantee); `argv` has room for
    // `argc` values, and the other out-pointers are locals.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    };
    let result: std::result::Result<sys::napi_value, EncodeError> =
        if status != sys::Status::napi_ok || data.is_null() {
            Err(EncodeError::Napi(napi::Error::from_reason(
                "napi_get_cb_info failed",
            )))
        } else {
            if argc < N {
                // Missing arguments are undefined, as in JavaScript.
                let mut undefined = ptr::null_mut();
                // SAFETY: `env` is current, in this call's scope; the out-pointer is a local.
                unsafe { sys::napi_get_undefined(env, &mut undefined) };
                argv[argc..].fill(undefined);
            }
            // SAFETY: `data` is the `Calls` count the function holds (the caller's guarantee),
            // released only by its finalizer, which cannot run during a call of it. It is Rust
            // memory, not a JavaScript object's: JavaScript that `body` runs cannot move or free
            // it, and no other program can reach this process's heap.
            let calls = unsafe { &*data.cast::<Calls>() };
            let given = argc.min(N);
            let call = std::panic::AssertUnwindSafe(|| body(calls, argv, given));
            match std::panic::catch_unwind(call) {
                Ok(done) => done,
                Err(_) => Err(EncodeError::Napi(napi::Error::from_reason(
                    "internal error (panic)",
                ))),
            }
        };
    let err = match result {
        Ok(value) => return value,
        Err(err) => err,
    };
    let mut pending = false;
    // SAFETY: `env` is current, in this call's scope; the out-pointer is a local.
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    match failure {
        Failure::Return if !pending => {
            let (code, message) = refusal(err);
            let mut code_value = ptr::null_mut();
            let mut message_value = ptr::null_mut();
            let mut error = ptr::null_mut();
            // SAFETY: `env` is current, in this call's scope, where the values made live
            // until the call returns `error`; the strings are Rust memory of the lengths
            // given, and the out-pointers locals.
            let made = unsafe {
                sys::napi_create_string_utf8(
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
                        == sys::Status::napi_ok
            };
            if made {
                return error;
            }
            // SAFETY: `env` is current, in this call's scope.
            unsafe { napi::JsError::from(thrown(ErrorCode::Internal, message)).throw_into(env) };
        }
        _ => {
            let err = match err {
                EncodeError::Napi(err) if !pending => thrown(ErrorCode::Internal, err.reason),
                err => Thrown::from(err),
            };
            // SAFETY: `env` is current, in this call's scope.
            unsafe { napi::JsError::from(err).throw_into(env) };
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

/// `send(seq, id, type, bundle, scratch, length, keys, at, first, read)`: queues an event;
/// `seq` names its callback in the `done` notice. With `id` undefined, the event's id is made
/// here ([`new_event_id`]) and returned, as a string; with an id given, returns undefined. A
/// refused event is not queued: it returns the `Error` (with its code, see [`refusal`]) that
/// refused it. Throws only what JavaScript threw (a getter of the bundle). The bundle is
/// encoded here, straight from the caller's Buffers into the frame, and not kept, from where
/// `lib/encode.js` handed it over (the last six arguments, see [`resumed`]).
///
/// # Safety
///
/// Called by Node as a function made by [`function`] with a `Calls` as its data.
pub(super) unsafe extern "C" fn call_send(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: `env` and `info` are this call's, of a function made by `function` with a
    // `Calls` (the caller's guarantee). In the body, `env` is current on its JavaScript thread
    // and the arguments are handles of this call's scope, as every block below relies on.
    unsafe {
        run_call(
            env,
            info,
            Failure::Return,
            |calls,
             [seq, id, kind, bundle, scratch, length, keys, at, first, read]: [sys::napi_value;
                 10],
             _| {
                let resumed = resumed(env, scratch, length, keys, at, first, read)?;
                send(env, calls, seq, id, kind, bundle, resumed)
            },
        )
    }
}

/// The body of [`call_send`]: undefined, or the id made (see there).
///
/// # Safety
///
/// `env` is current on its JavaScript thread, and the values are handles of the current
/// handle scope.
unsafe fn send(
    env: sys::napi_env,
    calls: &Calls,
    seq: sys::napi_value,
    id: sys::napi_value,
    kind: sys::napi_value,
    bundle: sys::napi_value,
    resumed: Option<Resumed>,
) -> std::result::Result<sys::napi_value, EncodeError> {
    let mut number = 0.0;
    let mut id_type = 0;
    // SAFETY: `env` is current and `seq` and `id` live handles (the caller's guarantee); the
    // out-pointers are locals. Reading a value or its type runs no JavaScript.
    unsafe {
        napi::check_status!(sys::napi_get_value_double(env, seq, &mut number))?;
        napi::check_status!(sys::napi_typeof(env, id, &mut id_type))?;
    }
    let made =
        if id_type == sys::ValueType::napi_undefined {
            Some(new_event_id().ok_or_else(|| {
                EncodeError::Refused("no random bytes for the event id".to_owned())
            })?)
        } else {
            None
        };
    let mut short = [0u8; SHORT_STRING];
    let long;
    // SAFETY: as above, for `kind`; the string is read into Rust memory (`short`, or
    // `long`), so no JavaScript object is pointed into while the walks below run.
    let kind = match unsafe { short_string(env, kind, &mut short) }? {
        Some(kind) => kind,
        None => {
            // SAFETY: as above.
            long = unsafe { read_string(env, kind) }?;
            long.as_str()
        }
    };
    // The id made, for JavaScript: made before the event is queued, so that a failure here
    // refuses the event rather than leaving it queued.
    let mut made_id = ptr::null_mut();
    if let Some(made) = &made {
        // SAFETY: `env` is current (the caller's guarantee), and the out-pointer a local. V8
        // copies the `made.len()` bytes at `made.as_ptr()` (hex digits: ASCII, so Latin-1)
        // during the call. They are an array on this function's stack: no JavaScript runs
        // during the call, no other thread can reach the array, and no other program can
        // write to this process's memory.
        napi::check_status!(unsafe {
            sys::napi_create_string_latin1(
                env,
                made.as_ptr().cast(),
                made.len() as isize,
                &mut made_id,
            )
        })?;
    }
    // The id and the bundle go straight from the caller's values and Buffers into the frame.
    // The closures hold no pointer themselves: `encode` and `encode_resumed` say, for each
    // pointer they hold, why no JavaScript runs and nothing else writes the memory meanwhile.
    // SAFETY: `env` is current and `bundle` and the values of `resumed` live handles (the
    // caller's guarantee).
    let write_bundle = |out: &mut _| unsafe {
        match resumed {
            None => encode(env, bundle, FIELD_DEPTH, out),
            Some(resumed) => encode_resumed(env, bundle, resumed, FIELD_DEPTH, out),
        }
    };
    let mut event = match &made {
        Some(made) => {
            let made = std::str::from_utf8(made)
                .map_err(|_| EncodeError::Refused("the event id made is not hex".to_owned()))?;
            OutgoingEvent::encode_with_id(number as u64, made, kind, write_bundle)?
        }
        None => OutgoingEvent::encode(
            number as u64,
            // SAFETY: `env` is current and `id` a live handle (the caller's guarantee).
            |out| unsafe { encode(env, id, FIELD_DEPTH, out) },
            kind,
            write_bundle,
        )?,
    };
    // On disk (or refused, and then not queued at all) before `send` returns, whichever
    // driver runs the client (docs/ARCHITECTURE.md section 6).
    if let Some(store) = &calls.store {
        store
            .append(&mut event)
            .map_err(|err| EncodeError::Stored(err.code().clone(), err.to_string()))?;
    }
    // Now, or with the other sends of this turn on the loop's next (see uv::send_now).
    let now = crate::node::uv::send_now(event.frame.len());
    let event = Command::Send(Box::new(event));
    if now {
        run_command(&calls.handle, event);
    } else {
        calls.handle.command(event);
    }
    Ok(made_id)
}

/// How far `lib/encode.js` got with the bundle (see [`Resumed`]): `length` is -1 when it
/// did not start (the bundle is walked here whole); otherwise the bundle's first `length`
/// bytes are in the Uint8Array `scratch`, and `at` says what they are: -1 the whole bundle,
/// -2 none of it, whose `constructor`, not `Object`, is `first`; from 0, the entries before
/// key `at` of `keys` (the bundle's `Object.keys`), with `first` the value of key `at` when
/// `read` is true.
///
/// # Safety
///
/// `env` is current on its JavaScript thread, and the values are handles of the current
/// handle scope.
unsafe fn resumed(
    env: sys::napi_env,
    scratch: sys::napi_value,
    length: sys::napi_value,
    keys: sys::napi_value,
    at: sys::napi_value,
    first: sys::napi_value,
    read: sys::napi_value,
) -> std::result::Result<Option<Resumed>, EncodeError> {
    let (mut len, mut start) = (-1.0, 0.0);
    // SAFETY: `env` is current and the values live handles (the caller's guarantee); the
    // out-pointers are locals. Reading a value runs no JavaScript.
    unsafe {
        if sys::napi_get_value_double(env, length, &mut len) != sys::Status::napi_ok || len < 0.0 {
            return Ok(None);
        }
        napi::check_status!(sys::napi_get_value_double(env, at, &mut start))?;
    }
    let len = len as usize;
    if start == -1.0 {
        return Ok(Some(Resumed::Whole { scratch, len }));
    }
    if start == -2.0 {
        return Ok(Some(Resumed::Class(first)));
    }
    let (mut count, mut was_read) = (0u32, false);
    // SAFETY: as above; `keys` is `Object.keys`'s array, whose length is data.
    unsafe {
        napi::check_status!(sys::napi_get_array_length(env, keys, &mut count))?;
        napi::check_status!(sys::napi_get_value_bool(env, read, &mut was_read))?;
    }
    if !(0.0..f64::from(count)).contains(&start) || start.fract() != 0.0 {
        return Err(EncodeError::Napi(napi::Error::from_reason(
            "the bundle was handed over past its keys",
        )));
    }
    Ok(Some(Resumed::Entries {
        keys,
        len: count,
        scratch,
        written: len,
        start: start as u32,
        first: was_read.then_some(first),
    }))
}

/// `ack(id, code?, message?)`: acknowledges an action; with `message`, as failed. `id` is
/// the action's id, or the `delivered` handle of its notice ([`ClientKind::Action`](crate::node::notice::ClientKind::Action)).
///
/// # Safety
///
/// Called by Node as a function made by [`function`] with a `Calls` as its data.
pub(super) unsafe extern "C" fn call_ack(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: `env` and `info` are this call's, of a function made by `function` with a
    // `Calls` (the caller's guarantee). In the body, `env` is current on its JavaScript thread
    // and the arguments are handles of this call's scope; `action_key` may run JavaScript
    // (the id's getters), and every string is read into Rust memory.
    unsafe {
        run_call(
            env,
            info,
            Failure::Throw,
            |calls, [id, code, message]: [sys::napi_value; 3], given| {
                let id = action_key(env, id)?;
                // `ack()`, the usual call, passes the id alone: nothing else to read.
                let error = if given > 1 {
                    let code = optional_string(env, code)?;
                    optional_string(env, message)?.map(|message| ErrorBody { code, message })
                } else {
                    None
                };
                run_command(
                    &calls.handle,
                    Command::Ack(Box::new(ActionAck { id, error })),
                );
                Ok(ptr::null_mut())
            },
        )
    }
}

/// A string argument that may be left out (undefined or null).
///
/// # Safety
///
/// `env` is current on its JavaScript thread, and `value` is a handle of the current handle
/// scope.
unsafe fn optional_string(
    env: sys::napi_env,
    value: sys::napi_value,
) -> std::result::Result<Option<String>, EncodeError> {
    let mut kind = 0;
    // SAFETY: `env` is current and `value` a live handle (the caller's guarantee); the
    // out-pointer is a local.
    napi::check_status!(unsafe { sys::napi_typeof(env, value, &mut kind) })?;
    match kind {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(None),
        // SAFETY: as above; read into Rust memory.
        _ => unsafe { read_string(env, value) }.map(Some),
    }
}
