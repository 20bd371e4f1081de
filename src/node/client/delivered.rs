//! The `delivered` handle of an action notice, which `ack` takes back to name the action's
//! id exactly as the server sent it.

use std::ffi::c_void;
use std::ptr;

use napi::{sys, Result, Status};

use crate::node::value::{short_string, to_value, EncodeError, SHORT_STRING};
use crate::protocol::Value;
use crate::session::ActionKey;

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
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, where the handle
/// made lives.
pub(super) unsafe fn delivered_handle(
    env: sys::napi_env,
    id: &Value,
    key: ActionKey,
) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if matches!(
        id,
        Value::Nil | Value::Bool(_) | Value::Number(_) | Value::String(_)
    ) {
        // SAFETY: `env` is current, in a handle scope (the caller's guarantee); the
        // out-pointer is a local.
        napi::check_status!(unsafe { sys::napi_get_null(env, &mut out) })?;
        return Ok(out);
    }
    let size = key.bytes().len() as i64;
    let owner = Box::into_raw(Box::new(key));
    // SAFETY: as above; `owner` is a boxed `ActionKey`, which `release_delivered` takes back
    // when the external is collected.
    let status = unsafe {
        sys::napi_create_external(
            env,
            owner.cast(),
            Some(release_delivered),
            ptr::null_mut(),
            &mut out,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: no external was made, so no finalizer owns `owner`: it is freed here, once.
        drop(unsafe { Box::from_raw(owner) });
        return Err(napi::Error::new(
            Status::from(status),
            "napi_create_external",
        ));
    }
    // The key's memory lives as long as the external: V8 is told, so that the collector
    // frees a large one in time.
    let mut total = 0;
    // SAFETY: `env` is current (as above); the finalizer reports the same size back. Runs no
    // JavaScript.
    unsafe { sys::napi_adjust_external_memory(env, size, &mut total) };
    // SAFETY: `env` is current, and `out` is the external just made, a handle of this scope;
    // the tag is a static.
    if unsafe { sys::napi_type_tag_object(env, out, &DELIVERED_TAG) } != sys::Status::napi_ok {
        // The external is dropped by the collector, which runs its finalizer.
        // SAFETY: as above; the out-pointer is a local.
        napi::check_status!(unsafe { sys::napi_get_null(env, &mut out) })?;
    }
    Ok(out)
}

/// The finalizer of a [`delivered_handle`] external: `data` is its boxed key.
///
/// # Safety
///
/// Called by Node once, as the finalizer of an external made by [`delivered_handle`].
unsafe extern "C" fn release_delivered(env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the `Box<ActionKey>` given to `napi_create_external`, and this
    // finalizer runs once (the caller's guarantee).
    let key = unsafe { Box::from_raw(data.cast::<ActionKey>()) };
    let mut total = 0;
    // SAFETY: a finalizer gets its environment's `env`, on its JavaScript thread; the size is
    // the one `delivered_handle` reported.
    unsafe { sys::napi_adjust_external_memory(env, -(key.bytes().len() as i64), &mut total) };
}

/// The id `ack` was given: the key inside a [`delivered_handle`] external, or the id itself.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, and `id` is a handle of the current
/// handle scope.
pub(super) unsafe fn action_key(
    env: sys::napi_env,
    id: sys::napi_value,
) -> std::result::Result<ActionKey, EncodeError> {
    let mut kind = 0;
    // SAFETY: `env` is current and `id` a live handle (the caller's guarantee); the
    // out-pointer is a local.
    napi::check_status!(unsafe { sys::napi_typeof(env, id, &mut kind) })?;
    if kind == sys::ValueType::napi_external {
        let mut tagged = false;
        // SAFETY: as above; the tag is a static. Runs no JavaScript.
        napi::check_status!(unsafe {
            sys::napi_check_object_type_tag(env, id, &DELIVERED_TAG, &mut tagged)
        })?;
        if tagged {
            let mut data = ptr::null_mut();
            // SAFETY: as above; `id` is an external.
            napi::check_status!(unsafe { sys::napi_get_value_external(env, id, &mut data) })?;
            // SAFETY: only `delivered_handle` tags externals with `DELIVERED_TAG`, and their
            // data is a boxed `ActionKey` (Rust memory, not a JavaScript object's) that lives
            // until the finalizer, which cannot run while `id`, a handle of this call's
            // scope, keeps the external alive; the key is cloned (a reference count) at once,
            // before any JavaScript can run. No other program can reach this process's heap.
            return Ok(unsafe { &*data.cast::<ActionKey>() }.clone());
        }
    }
    if kind == sys::ValueType::napi_string {
        let mut short = [0u8; SHORT_STRING];
        // SAFETY: as above; `id` is a string. Node copies its characters into `short`, an
        // array on this function's stack, and keeps no pointer to it; the `&str` returned
        // borrows `short`, not the string's memory. Reading a string primitive runs no
        // JavaScript, no other thread can reach `short`, and no other program can write to
        // this process's memory, so the characters stay as read until the key is made.
        if let Some(id) = unsafe { short_string(env, id, &mut short) }? {
            return Ok(ActionKey::string(id));
        }
    }
    // SAFETY: as above; the walk may run JavaScript (the id's getters) and holds no pointer
    // into a JavaScript object across it.
    Ok(ActionKey::from(unsafe { to_value(env, id) }?))
}
