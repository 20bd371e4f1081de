//! Which runtime loaded the addon. Bun and Deno run Node-API addons too, but their libuv
//! exports abort or drive no loop of theirs (`uv/table.rs`) and they implement the newer
//! Node-API calls their own way (external strings, `value/external.rs`): what only Node.js does is
//! used only in Node.js.

use std::ffi::CStr;
use std::sync::OnceLock;

use napi::sys;

/// Whether the runtime that runs `env` is Node.js: neither `Bun` nor `Deno` is a global, and
/// `process.versions` names neither. Asked once per process.
///
/// # Safety
///
/// `env` is live and this runs on its JavaScript thread inside a handle scope (a call from
/// JavaScript).
pub(super) unsafe fn is_node(env: sys::napi_env) -> bool {
    static NODE: OnceLock<bool> = OnceLock::new();
    *NODE.get_or_init(|| find_node(env).unwrap_or(false))
}

unsafe fn find_node(env: sys::napi_env) -> Option<bool> {
    let mut global = std::ptr::null_mut();
    if sys::napi_get_global(env, &mut global) != sys::Status::napi_ok {
        return None;
    }
    for runtime in [c"Bun", c"Deno"] {
        if kind(env, property(env, global, runtime)?)? != sys::ValueType::napi_undefined {
            return Some(false);
        }
    }
    let versions = property(env, property(env, global, c"process")?, c"versions")?;
    for runtime in [c"bun", c"deno"] {
        if kind(env, property(env, versions, runtime)?)? != sys::ValueType::napi_undefined {
            return Some(false);
        }
    }
    Some(true)
}

/// `object[name]`, or `None` if Node-API fails to read it.
///
/// # Safety
///
/// As [`is_node`]; `object` is a value of `env`'s.
pub(super) unsafe fn property(
    env: sys::napi_env,
    object: sys::napi_value,
    name: &CStr,
) -> Option<sys::napi_value> {
    let mut value = std::ptr::null_mut();
    (sys::napi_get_named_property(env, object, name.as_ptr(), &mut value) == sys::Status::napi_ok)
        .then_some(value)
}

unsafe fn kind(env: sys::napi_env, value: sys::napi_value) -> Option<i32> {
    let mut kind = 0;
    (sys::napi_typeof(env, value, &mut kind) == sys::Status::napi_ok).then_some(kind)
}
