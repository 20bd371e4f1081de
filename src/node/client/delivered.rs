//! The `delivered` handle of an action notice, which `ack` takes back to name the action's
//! id exactly as the server sent it.

use std::ffi::c_void;
use std::ptr;

use napi::{sys, Result, Status};

use crate::node::value::{to_value, EncodeError};
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
pub(super) unsafe fn delivered_handle(
    env: sys::napi_env,
    id: &Value,
    key: ActionKey,
) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if matches!(
        id,
        Value::Nil | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Text(_)
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
pub(super) unsafe fn action_key(
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
