//! The wire → JS conversion: a wire [`Value`] made into a JavaScript value, with the
//! extension types msgpack-lite 0.1.26 knows made into the same classes again, as its
//! `decode` does (typed arrays, DataView, ArrayBuffer, Buffer, boxed primitives, RegExp and
//! the Error classes; any other as `{type, buffer}`). Large strings go to `external.rs`.
//!
//! JavaScript this may run: `napi_get_named_property` on `globalThis` (a getter there, for the
//! classes), `napi_new_instance` and `napi_call_function` (those classes, which a program may
//! have replaced), and `napi_set_property`, `napi_set_named_property` and `napi_set_element`
//! on the objects made here (a setter defined on `Object.prototype`, `Array.prototype` or an
//! Error class's prototype). No pointer into a JavaScript object is held across any of them:
//! the only one taken, an ArrayBuffer's memory just made, is filled before the next call.

use std::ffi::{c_char, c_void};
use std::ptr;

use bytes::Bytes;
use napi::bindgen_prelude::{ToNapiValue, TypeName};
use napi::{check_status, sys, Result, ValueType};

use super::external::shared_string;
use super::{
    element_size, global, ERROR_COLUMNS, EXT_ARRAY_BUFFER, EXT_BUFFER, EXT_DATA_VIEW, EXT_REGEXP,
};
use crate::protocol::text::{units, Units};
use crate::protocol::value::MAX_DEPTH;
use crate::protocol::{decode, Value};

/// A [`Value`] on its way to JavaScript.
pub struct JsValue(pub Value);

/// Both value types are any JavaScript value to napi's type checks.
macro_rules! any_js_type {
    ($($ty:ty),*) => {$(
        impl TypeName for $ty {
            fn type_name() -> &'static str {
                "unknown"
            }
            fn value_type() -> ValueType {
                ValueType::Unknown
            }
        }
    )*};
}
any_js_type!(JsValue, JsValueCopy);

impl ToNapiValue for JsValue {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        // SAFETY: napi-rs calls this with the current `env`, on its JavaScript thread, inside
        // the handle scope of the call that returns the value.
        unsafe { write(env, &val.0) }
    }
}

/// A [`Value`] that goes to JavaScript with every binary copied: for values whose bytes Rust
/// still reads after handing them over (the bundled Server echoes an event's bundle), since
/// JavaScript may write into a Buffer it is given.
pub struct JsValueCopy(pub Value);

impl ToNapiValue for JsValueCopy {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let borrowing = BORROW.with(|b| b.replace(false));
        // SAFETY: as for `JsValue`.
        let made = unsafe { write(env, &val.0) };
        BORROW.with(|b| b.set(borrowing));
        made
    }
}

thread_local! {
    /// Large binaries may go to JavaScript as Buffers over the received bytes (see
    /// [`write_buffer`]); cleared while a [`JsValueCopy`] is written.
    pub(super) static BORROW: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// `value` as a JavaScript value, with the extension types msgpack-lite knows made into the
/// same classes again.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, in which the
/// values made here live.
pub(super) unsafe fn write(env: sys::napi_env, value: &Value) -> Result<sys::napi_value> {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { write_at(env, value, 0) }
}

/// [`write()`] of a value `depth` containers and extensions deep: an extension's data is a
/// value of its own, so nesting them is bounded here, where decoding does not see it.
///
/// # Safety
///
/// As [`write()`].
unsafe fn write_at(env: sys::napi_env, value: &Value, depth: usize) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    // In every block below, `env` is current on its JavaScript thread, inside the handle scope
    // where the values made here live (the caller's guarantee), and the out-pointers are
    // locals. Only the setters may run JavaScript (one a program defined on
    // `Array.prototype` or `Object.prototype`); no pointer into a JavaScript object is held.
    match value {
        // SAFETY: see above; making a primitive runs no JavaScript.
        Value::Nil => check_status!(unsafe { sys::napi_get_null(env, &mut out) })?,
        // SAFETY: as above.
        Value::Bool(b) => check_status!(unsafe { sys::napi_get_boolean(env, *b, &mut out) })?,
        // SAFETY: as above.
        Value::Number(n) => check_status!(unsafe { sys::napi_create_double(env, *n, &mut out) })?,
        // SAFETY: as above; `shared_string` copies a short text and hands a long one to V8.
        Value::String(text) => out = unsafe { shared_string(env, text) }?,
        // SAFETY: as above.
        Value::Binary(bytes) => out = unsafe { write_buffer(env, bytes) }?,
        // SAFETY: as above.
        Value::Date(ms) => check_status!(unsafe { sys::napi_create_date(env, *ms, &mut out) })?,
        Value::Array(items) => {
            // SAFETY: as above.
            check_status!(unsafe {
                sys::napi_create_array_with_length(env, items.len(), &mut out)
            })?;
            for (i, item) in items.iter().enumerate() {
                // SAFETY: as above; `out` is the array just made, a handle of this scope.
                unsafe {
                    let element = write_at(env, item, depth + 1)?;
                    check_status!(sys::napi_set_element(env, out, i as u32, element))?;
                }
            }
        }
        Value::Map(entries) => {
            // SAFETY: as above.
            check_status!(unsafe { sys::napi_create_object(env, &mut out) })?;
            for (key, item) in entries {
                // SAFETY: as above; `out` is the object just made, a handle of this scope.
                unsafe {
                    let k = string(env, key)?;
                    let v = write_at(env, item, depth + 1)?;
                    check_status!(sys::napi_set_property(env, out, k, v))?;
                }
            }
        }
        Value::Ext(kind, bytes) => {
            // SAFETY: as above.
            out = match unsafe { known_ext(env, *kind, bytes, depth) }? {
                Some(made) => made,
                // SAFETY: as above.
                None => unsafe { unknown_ext(env, *kind, bytes) }?,
            }
        }
    }
    Ok(out)
}

/// Non-ASCII strings this long (in UTF-8 bytes) or longer are transcoded here; shorter
/// ones are left to V8's UTF-8 decoder, which costs more per byte outside ASCII than this
/// (docs/performance.md) but needs no buffer of its own.
const TRANSCODE_FROM: usize = 256;

/// The JavaScript string of `s`. ASCII, nearly every string, is already Latin-1: V8 copies it
/// into a one-byte string without decoding it (its UTF-8 path would decode every byte). A
/// long string with other characters is transcoded here, to Latin-1 when every character fits
/// one (a one-byte string again) or else to UTF-16.
///
/// # Safety
///
/// As [`write()`].
pub(super) unsafe fn string(env: sys::napi_env, s: &str) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if s.is_ascii() {
        // SAFETY: `env` is current, in a handle scope (the caller's guarantee); V8 copies the
        // `s.len()` bytes at `s` (ASCII, so Latin-1), Rust memory; the out-pointer is a local.
        check_status!(unsafe {
            sys::napi_create_string_latin1(
                env,
                s.as_ptr().cast::<c_char>(),
                s.len() as isize,
                &mut out,
            )
        })?;
    } else if s.len() >= TRANSCODE_FROM {
        match units(s) {
            // SAFETY: as above, for the Latin-1 copy `bytes`.
            Units::Latin1(bytes) => check_status!(unsafe {
                sys::napi_create_string_latin1(
                    env,
                    bytes.as_ptr().cast::<c_char>(),
                    bytes.len() as isize,
                    &mut out,
                )
            })?,
            // SAFETY: as above, for the UTF-16 code units `units`.
            Units::Utf16(units) => check_status!(unsafe {
                sys::napi_create_string_utf16(env, units.as_ptr(), units.len() as isize, &mut out)
            })?,
        }
    } else {
        // SAFETY: as above: V8 decodes and copies the UTF-8 of `s`.
        check_status!(unsafe {
            sys::napi_create_string_utf8(
                env,
                s.as_ptr().cast::<c_char>(),
                s.len() as isize,
                &mut out,
            )
        })?;
    }
    Ok(out)
}

/// An extension type nobody here knows: `{type, buffer}`, as msgpack-lite's ExtBuffer.
///
/// # Safety
///
/// As [`write()`].
unsafe fn unknown_ext(env: sys::napi_env, kind: i8, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    let mut t = ptr::null_mut();
    // SAFETY: `env` is current, in a handle scope (the caller's guarantee), where `out`, `t`
    // and `b` are made; the out-pointers are locals. A setter of `type` or `buffer` that a
    // program put on `Object.prototype` may run; no pointer into a JavaScript object is held.
    unsafe {
        check_status!(sys::napi_create_object(env, &mut out))?;
        check_status!(sys::napi_create_int32(env, i32::from(kind), &mut t))?;
        check_status!(sys::napi_set_named_property(env, out, c"type".as_ptr(), t))?;
        let b = write_buffer(env, bytes)?;
        check_status!(sys::napi_set_named_property(
            env,
            out,
            c"buffer".as_ptr(),
            b
        ))?;
    }
    Ok(out)
}

/// A copy of `bytes` in a new ArrayBuffer.
///
/// # Safety
///
/// As [`write()`].
unsafe fn array_buffer(env: sys::napi_env, bytes: &[u8]) -> Result<sys::napi_value> {
    let mut data = ptr::null_mut();
    let mut out = ptr::null_mut();
    // SAFETY: `env` is current, in a handle scope (the caller's guarantee); the out-pointers
    // are locals. Runs no JavaScript.
    check_status!(unsafe { sys::napi_create_arraybuffer(env, bytes.len(), &mut data, &mut out) })?;
    if !bytes.is_empty() && !data.is_null() {
        // SAFETY: Node just allocated `bytes.len()` bytes at `data`, the memory of an
        // ArrayBuffer no JavaScript has seen yet (nothing runs between its making and this
        // copy), and `bytes` is Rust memory, so the two do not overlap.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), bytes.len()) };
    }
    Ok(out)
}

/// The class msgpack-lite's `decode` makes of extension `kind`, or `None` when the data does
/// not make one (the caller then gives `{type, buffer}`, and a JavaScript exception that
/// making it raised is cleared).
///
/// # Safety
///
/// As [`write()`].
unsafe fn known_ext(
    env: sys::napi_env,
    kind: i8,
    bytes: &Bytes,
    depth: usize,
) -> Result<Option<sys::napi_value>> {
    if depth >= MAX_DEPTH {
        return Ok(None);
    }
    // In every block below, `env` is current on its JavaScript thread, inside the handle scope
    // where the values made here live (the caller's guarantee); out-pointers are locals.
    let made = match kind {
        // SAFETY: see above.
        0x11..=0x19 => unsafe { typed_array(env, kind, bytes) },
        // SAFETY: as above.
        EXT_ARRAY_BUFFER => unsafe { array_buffer(env, bytes) }.map(Some),
        // SAFETY: as above; `buffer` is the ArrayBuffer just made, of `bytes.len()` bytes.
        EXT_DATA_VIEW => unsafe { array_buffer(env, bytes) }.and_then(|buffer| {
            let mut out = ptr::null_mut();
            // SAFETY: as above.
            check_status!(unsafe {
                sys::napi_create_dataview(env, bytes.len(), buffer, 0, &mut out)
            })?;
            Ok(Some(out))
        }),
        // SAFETY: as above.
        EXT_BUFFER => unsafe { write_buffer(env, bytes) }.map(Some),
        0x0B | 0x0C | 0x0F | EXT_REGEXP | 0x01..=0x06 | 0x0E => {
            let Ok(inner) = decode(bytes) else {
                return Ok(None);
            };
            // SAFETY: as above.
            unsafe { made_of(env, kind, &inner, depth) }
        }
        _ => Ok(None),
    };
    match made {
        Ok(made) => Ok(made),
        Err(err) => {
            let mut pending = false;
            // SAFETY: as above.
            unsafe { sys::napi_is_exception_pending(env, &mut pending) };
            if !pending {
                return Err(err);
            }
            let mut exception = ptr::null_mut();
            // SAFETY: as above; an exception is pending, and it is dropped.
            unsafe { sys::napi_get_and_clear_last_exception(env, &mut exception) };
            Ok(None)
        }
    }
}

/// # Safety
///
/// As [`write()`].
unsafe fn typed_array(
    env: sys::napi_env,
    kind: i8,
    bytes: &Bytes,
) -> Result<Option<sys::napi_value>> {
    use sys::TypedarrayType::*;
    let class = match kind {
        0x11 => int8_array,
        0x12 => uint8_array,
        0x13 => int16_array,
        0x14 => uint16_array,
        0x15 => int32_array,
        0x16 => uint32_array,
        0x17 => float32_array,
        0x18 => float64_array,
        _ => uint8_clamped_array,
    };
    let size = element_size(class);
    if !bytes.len().is_multiple_of(size) {
        // msgpack-lite throws here; the bytes still reach the application.
        return Ok(None);
    }
    let mut out = ptr::null_mut();
    // SAFETY: `env` is current, in a handle scope (the caller's guarantee); `buffer` is the
    // ArrayBuffer just made, of `bytes.len()` bytes, a whole number of `size`-byte elements;
    // the out-pointer is a local. Runs no JavaScript.
    unsafe {
        let buffer = array_buffer(env, bytes)?;
        check_status!(sys::napi_create_typedarray(
            env,
            class,
            bytes.len() / size,
            buffer,
            0,
            &mut out
        ))?;
    }
    Ok(Some(out))
}

/// The classes whose extension data is a MessagePack value: boxed primitives, RegExp and
/// the Error classes, made as msgpack-lite's unpackers make them.
///
/// # Safety
///
/// As [`write()`].
unsafe fn made_of(
    env: sys::napi_env,
    kind: i8,
    inner: &Value,
    depth: usize,
) -> Result<Option<sys::napi_value>> {
    let mut out = ptr::null_mut();
    // In every block below, `env` is current on its JavaScript thread, inside the handle scope
    // where the values made here live (the caller's guarantee); out-pointers are locals. The
    // classes are read from `globalThis`, where a program may have replaced them, so reading,
    // calling and setting may run JavaScript; no pointer into a JavaScript object is held.
    match kind {
        0x0B | 0x0C | 0x0F => {
            let name = match kind {
                0x0B => c"Boolean",
                0x0C => c"String",
                _ => c"Number",
            };
            // SAFETY: see above; `argument` outlives the call that reads it.
            unsafe {
                let class = global(env, name)?;
                let argument = write_at(env, inner, depth + 1)?;
                check_status!(sys::napi_new_instance(env, class, 1, &argument, &mut out))?;
            }
        }
        EXT_REGEXP => {
            // `RegExp.apply(null, [source, flags])`.
            let Value::Array(items) = inner else {
                return Ok(None);
            };
            // SAFETY: as above; `arguments` outlives the call that reads it.
            unsafe {
                let arguments = items
                    .iter()
                    .map(|item| write_at(env, item, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                let class = global(env, c"RegExp")?;
                let mut undefined = ptr::null_mut();
                check_status!(sys::napi_get_undefined(env, &mut undefined))?;
                check_status!(sys::napi_call_function(
                    env,
                    undefined,
                    class,
                    arguments.len(),
                    arguments.as_ptr(),
                    &mut out
                ))?;
            }
        }
        _ => {
            // `new Class()`, then each of the six columns set from the data (`undefined` from
            // data that is not a map; from nil, msgpack-lite throws).
            if let Value::Nil = inner {
                return Ok(None);
            }
            let name = match kind {
                0x01 => c"EvalError",
                0x02 => c"RangeError",
                0x03 => c"ReferenceError",
                0x04 => c"SyntaxError",
                0x05 => c"TypeError",
                0x06 => c"URIError",
                _ => c"Error",
            };
            // SAFETY: as above.
            unsafe {
                let class = global(env, name)?;
                check_status!(sys::napi_new_instance(env, class, 0, ptr::null(), &mut out))?;
            }
            for key in ERROR_COLUMNS {
                // SAFETY: as above; `out` is the instance just made, a handle of this scope,
                // and `key` is NUL-terminated.
                unsafe {
                    let item = match inner.get(&key.to_string_lossy()) {
                        Some(item) => write_at(env, item, depth + 1)?,
                        None => {
                            let mut undefined = ptr::null_mut();
                            check_status!(sys::napi_get_undefined(env, &mut undefined))?;
                            undefined
                        }
                    };
                    check_status!(sys::napi_set_named_property(env, out, key.as_ptr(), item))?;
                }
            }
        }
    }
    Ok(Some(out))
}

/// Below this a Buffer is copied; above it the JS Buffer borrows the received bytes, so a large
/// action reaches JavaScript without being copied again, unless Rust still reads them (see
/// [`JsValueCopy`]).
const BORROW_ABOVE: usize = 64 * 1024;

/// # Safety
///
/// As [`write()`].
unsafe fn write_buffer(env: sys::napi_env, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if bytes.len() > BORROW_ABOVE && BORROW.with(std::cell::Cell::get) {
        let owner = Box::into_raw(Box::new(bytes.clone()));
        // SAFETY: `env` is current, in a handle scope (the caller's guarantee); the Buffer
        // uses the `bytes.len()` bytes at `bytes.as_ptr()`, which `owner` (a count of the same
        // `Bytes`, never written through) keeps alive until `release_bytes` frees it; the
        // out-pointer is a local. Runs no JavaScript.
        let status = unsafe {
            sys::napi_create_external_buffer(
                env,
                bytes.len(),
                bytes.as_ptr() as *mut c_void,
                Some(release_bytes),
                owner.cast(),
                &mut out,
            )
        };
        if status == sys::Status::napi_ok {
            return Ok(out);
        }
        // Runtimes whose memory cage forbids external buffers: copy after all.
        // SAFETY: no Buffer was made, so no finalizer owns `owner`: freed here, once.
        drop(unsafe { Box::from_raw(owner) });
    }
    let mut data = ptr::null_mut();
    // SAFETY: as above; V8 copies the `bytes.len()` bytes at `bytes.as_ptr()`, Rust memory,
    // and the out-pointers are locals.
    check_status!(unsafe {
        sys::napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr().cast(), &mut data, &mut out)
    })?;
    Ok(out)
}

/// The garbage collector freed a borrowing Buffer: release the bytes it kept alive.
///
/// # Safety
///
/// Called by Node once, as the finalizer of a Buffer made by [`write_buffer`], with the
/// `hint` given there.
unsafe extern "C" fn release_bytes(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Bytes>` made in `write_buffer`, and this runs once (the
    // caller's guarantee), after which the Buffer no longer reads the bytes.
    drop(unsafe { Box::from_raw(hint.cast::<Bytes>()) });
}
