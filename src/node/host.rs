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
    // SAFETY: the caller's guarantee, passed on (see `# Safety`).
    *NODE.get_or_init(|| unsafe { find_node(env) }.unwrap_or(false))
}

/// # Safety
///
/// As [`is_node`].
unsafe fn find_node(env: sys::napi_env) -> Option<bool> {
    let mut global = std::ptr::null_mut();
    // SAFETY: `env` is current on this, its JavaScript thread, inside a handle scope (the
    // caller's guarantee); the out-pointer is a local.
    if unsafe { sys::napi_get_global(env, &mut global) } != sys::Status::napi_ok {
        return None;
    }
    for runtime in [c"Bun", c"Deno"] {
        // SAFETY: as above; `global` is a handle of the caller's scope, and the value read
        // lives there too. A getter this runs (on `globalThis`) holds no pointer of ours.
        let found = unsafe { kind(env, property(env, global, runtime)?) }?;
        if found != sys::ValueType::napi_undefined {
            return Some(false);
        }
    }
    // SAFETY: as above, for `process` and `process.versions`.
    let versions = unsafe { property(env, property(env, global, c"process")?, c"versions") }?;
    for runtime in [c"bun", c"deno"] {
        // SAFETY: as above, for `versions`.
        let found = unsafe { kind(env, property(env, versions, runtime)?) }?;
        if found != sys::ValueType::napi_undefined {
            return Some(false);
        }
    }
    Some(true)
}

/// `object[name]`, or `None` if Node-API fails to read it. May run JavaScript (a getter or a
/// Proxy trap).
///
/// # Safety
///
/// As [`is_node`]; `object` is a value of the current handle scope.
pub(super) unsafe fn property(
    env: sys::napi_env,
    object: sys::napi_value,
    name: &CStr,
) -> Option<sys::napi_value> {
    let mut value = std::ptr::null_mut();
    // SAFETY: `env` is current on its JavaScript thread and `object` live in the current
    // handle scope (the caller's guarantee); `name` is NUL-terminated and the out-pointer a
    // local. The JavaScript it may run holds no pointer of ours.
    (unsafe { sys::napi_get_named_property(env, object, name.as_ptr(), &mut value) }
        == sys::Status::napi_ok)
        .then_some(value)
}

/// The `typeof` of `value`; runs no JavaScript.
///
/// # Safety
///
/// As [`property`], for `value`.
unsafe fn kind(env: sys::napi_env, value: sys::napi_value) -> Option<i32> {
    let mut kind = 0;
    // SAFETY: `env` is current on its JavaScript thread and `value` live in the current
    // handle scope (the caller's guarantee); the out-pointer is a local.
    (unsafe { sys::napi_typeof(env, value, &mut kind) } == sys::Status::napi_ok).then_some(kind)
}
