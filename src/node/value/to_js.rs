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
        write(env, &val.0)
    }
}

/// A [`Value`] that goes to JavaScript with every binary copied: for values whose bytes Rust
/// still reads after handing them over (the bundled Server echoes an event's bundle), since
/// JavaScript may write into a Buffer it is given.
pub struct JsValueCopy(pub Value);

impl ToNapiValue for JsValueCopy {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let borrowing = BORROW.with(|b| b.replace(false));
        let made = write(env, &val.0);
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
/// `env` is live and this runs on its JavaScript thread inside a handle scope, in which the
/// values made here live.
pub(super) unsafe fn write(env: sys::napi_env, value: &Value) -> Result<sys::napi_value> {
    write_at(env, value, 0)
}

/// [`write`] of a value `depth` containers and extensions deep: an extension's data is a
/// value of its own, so nesting them is bounded here, where decoding does not see it.
unsafe fn write_at(env: sys::napi_env, value: &Value, depth: usize) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    match value {
        Value::Nil => check_status!(sys::napi_get_null(env, &mut out))?,
        Value::Bool(b) => check_status!(sys::napi_get_boolean(env, *b, &mut out))?,
        Value::Number(n) => check_status!(sys::napi_create_double(env, *n, &mut out))?,
        Value::String(s) => out = string(env, s)?,
        Value::Text(text) => out = shared_string(env, text)?,
        Value::Binary(bytes) => out = write_buffer(env, bytes)?,
        Value::Date(ms) => check_status!(sys::napi_create_date(env, *ms, &mut out))?,
        Value::Array(items) => {
            check_status!(sys::napi_create_array_with_length(
                env,
                items.len(),
                &mut out
            ))?;
            for (i, item) in items.iter().enumerate() {
                let element = write_at(env, item, depth + 1)?;
                check_status!(sys::napi_set_element(env, out, i as u32, element))?;
            }
        }
        Value::Map(entries) => {
            check_status!(sys::napi_create_object(env, &mut out))?;
            for (key, item) in entries {
                let k = string(env, key)?;
                let v = write_at(env, item, depth + 1)?;
                check_status!(sys::napi_set_property(env, out, k, v))?;
            }
        }
        Value::Ext(kind, bytes) => {
            out = match known_ext(env, *kind, bytes, depth)? {
                Some(made) => made,
                None => unknown_ext(env, *kind, bytes)?,
            }
        }
    }
    Ok(out)
}

/// Non-ASCII strings this long (in UTF-8 bytes) or longer are transcoded here; shorter
/// ones are left to V8's UTF-8 decoder, which costs more per byte (it is a few times slower
/// than this outside ASCII) but needs no buffer of its own.
const TRANSCODE_FROM: usize = 256;

/// The JavaScript string of `s`. ASCII, nearly every string, is already Latin-1: V8 copies it
/// into a one-byte string without decoding it (several times faster than its UTF-8 path for a
/// large string). A long string with other characters is transcoded here, to Latin-1 when
/// every character fits one (a one-byte string again) or else to UTF-16.
pub(super) unsafe fn string(env: sys::napi_env, s: &str) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if s.is_ascii() {
        check_status!(sys::napi_create_string_latin1(
            env,
            s.as_ptr().cast::<c_char>(),
            s.len() as isize,
            &mut out
        ))?;
    } else if s.len() >= TRANSCODE_FROM {
        match units(s) {
            Units::Latin1(bytes) => check_status!(sys::napi_create_string_latin1(
                env,
                bytes.as_ptr().cast::<c_char>(),
                bytes.len() as isize,
                &mut out
            ))?,
            Units::Utf16(units) => check_status!(sys::napi_create_string_utf16(
                env,
                units.as_ptr(),
                units.len() as isize,
                &mut out
            ))?,
        }
    } else {
        check_status!(sys::napi_create_string_utf8(
            env,
            s.as_ptr().cast::<c_char>(),
            s.len() as isize,
            &mut out
        ))?;
    }
    Ok(out)
}

/// An extension type nobody here knows: `{type, buffer}`, as msgpack-lite's ExtBuffer.
unsafe fn unknown_ext(env: sys::napi_env, kind: i8, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    check_status!(sys::napi_create_object(env, &mut out))?;
    let mut t = ptr::null_mut();
    check_status!(sys::napi_create_int32(env, i32::from(kind), &mut t))?;
    check_status!(sys::napi_set_named_property(env, out, c"type".as_ptr(), t))?;
    let b = write_buffer(env, bytes)?;
    check_status!(sys::napi_set_named_property(
        env,
        out,
        c"buffer".as_ptr(),
        b
    ))?;
    Ok(out)
}

/// A copy of `bytes` in a new ArrayBuffer.
unsafe fn array_buffer(env: sys::napi_env, bytes: &[u8]) -> Result<sys::napi_value> {
    let mut data = ptr::null_mut();
    let mut out = ptr::null_mut();
    check_status!(sys::napi_create_arraybuffer(
        env,
        bytes.len(),
        &mut data,
        &mut out
    ))?;
    if !bytes.is_empty() && !data.is_null() {
        // SAFETY: Node just allocated `bytes.len()` bytes at `data`, the memory of an
        // ArrayBuffer no JavaScript has seen yet (nothing runs between its making and this
        // copy), and `bytes` is Rust memory, so the two do not overlap.
        ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), bytes.len());
    }
    Ok(out)
}

/// The class msgpack-lite's `decode` makes of extension `kind`, or `None` when the data does
/// not make one (the caller then gives `{type, buffer}`, and a JavaScript exception that
/// making it raised is cleared).
unsafe fn known_ext(
    env: sys::napi_env,
    kind: i8,
    bytes: &Bytes,
    depth: usize,
) -> Result<Option<sys::napi_value>> {
    if depth >= MAX_DEPTH {
        return Ok(None);
    }
    let made = match kind {
        0x11..=0x19 => typed_array(env, kind, bytes),
        EXT_ARRAY_BUFFER => array_buffer(env, bytes).map(Some),
        EXT_DATA_VIEW => array_buffer(env, bytes).and_then(|buffer| {
            let mut out = ptr::null_mut();
            check_status!(sys::napi_create_dataview(
                env,
                bytes.len(),
                buffer,
                0,
                &mut out
            ))?;
            Ok(Some(out))
        }),
        EXT_BUFFER => write_buffer(env, bytes).map(Some),
        0x0B | 0x0C | 0x0F | EXT_REGEXP | 0x01..=0x06 | 0x0E => {
            let Ok(inner) = decode(bytes) else {
                return Ok(None);
            };
            made_of(env, kind, &inner, depth)
        }
        _ => Ok(None),
    };
    match made {
        Ok(made) => Ok(made),
        Err(err) => {
            let mut pending = false;
            sys::napi_is_exception_pending(env, &mut pending);
            if !pending {
                return Err(err);
            }
            let mut exception = ptr::null_mut();
            sys::napi_get_and_clear_last_exception(env, &mut exception);
            Ok(None)
        }
    }
}

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
    let buffer = array_buffer(env, bytes)?;
    let mut out = ptr::null_mut();
    check_status!(sys::napi_create_typedarray(
        env,
        class,
        bytes.len() / size,
        buffer,
        0,
        &mut out
    ))?;
    Ok(Some(out))
}

/// The classes whose extension data is a MessagePack value: boxed primitives, RegExp and
/// the Error classes, made as msgpack-lite's unpackers make them.
unsafe fn made_of(
    env: sys::napi_env,
    kind: i8,
    inner: &Value,
    depth: usize,
) -> Result<Option<sys::napi_value>> {
    let mut out = ptr::null_mut();
    match kind {
        0x0B | 0x0C | 0x0F => {
            let class = global(
                env,
                match kind {
                    0x0B => c"Boolean",
                    0x0C => c"String",
                    _ => c"Number",
                },
            )?;
            let argument = write_at(env, inner, depth + 1)?;
            check_status!(sys::napi_new_instance(env, class, 1, &argument, &mut out))?;
        }
        EXT_REGEXP => {
            // `RegExp.apply(null, [source, flags])`.
            let Value::Array(items) = inner else {
                return Ok(None);
            };
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
        _ => {
            // `new Class()`, then each of the six columns set from the data (`undefined` from
            // data that is not a map; from nil, msgpack-lite throws).
            if let Value::Nil = inner {
                return Ok(None);
            }
            let class = global(
                env,
                match kind {
                    0x01 => c"EvalError",
                    0x02 => c"RangeError",
                    0x03 => c"ReferenceError",
                    0x04 => c"SyntaxError",
                    0x05 => c"TypeError",
                    0x06 => c"URIError",
                    _ => c"Error",
                },
            )?;
            check_status!(sys::napi_new_instance(env, class, 0, ptr::null(), &mut out))?;
            for key in ERROR_COLUMNS {
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
    Ok(Some(out))
}

/// Below this a Buffer is copied; above it the JS Buffer borrows the received bytes, so a large
/// action reaches JavaScript without being copied again, unless Rust still reads them (see
/// [`JsValueCopy`]).
const BORROW_ABOVE: usize = 64 * 1024;

unsafe fn write_buffer(env: sys::napi_env, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if bytes.len() > BORROW_ABOVE && BORROW.with(std::cell::Cell::get) {
        let owner = Box::into_raw(Box::new(bytes.clone()));
        let status = sys::napi_create_external_buffer(
            env,
            bytes.len(),
            bytes.as_ptr() as *mut c_void,
            Some(release_bytes),
            owner.cast(),
            &mut out,
        );
        if status == sys::Status::napi_ok {
            return Ok(out);
        }
        // Runtimes whose memory cage forbids external buffers: copy after all.
        drop(Box::from_raw(owner));
    }
    let mut data = ptr::null_mut();
    check_status!(sys::napi_create_buffer_copy(
        env,
        bytes.len(),
        bytes.as_ptr().cast(),
        &mut data,
        &mut out
    ))?;
    Ok(out)
}

/// The garbage collector freed a borrowing Buffer: release the bytes it kept alive.
unsafe extern "C" fn release_bytes(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    drop(Box::from_raw(hint.cast::<Bytes>()));
}
