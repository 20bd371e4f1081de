//! JavaScript values <-> [`Value`], following PROTOCOL.md section 5: what a JS value becomes on
//! the wire and what a wire value becomes in JS. Raw Node-API calls, so a bundle is walked once
//! with no intermediate JSON or serde layer.

use std::ffi::{c_char, c_void};
use std::ptr;

use bytes::Bytes;
use napi::bindgen_prelude::{FromNapiValue, ToNapiValue, TypeName, ValidateNapiValue};
use napi::{check_status, sys, Error, Result, Status, ValueType};

use crate::protocol::Value;

/// Deeper than this is refused: a cyclic object would otherwise never end.
const MAX_DEPTH: usize = 512;

/// A [`Value`] crossing the napi boundary.
pub struct JsValue(pub Value);

impl TypeName for JsValue {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ValidateNapiValue for JsValue {}

impl FromNapiValue for JsValue {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        read(env, value, 0, Buffers::Copy).map(JsValue)
    }
}

/// `value` as a [`Value`] whose binaries still point into the caller's JavaScript Buffers:
/// no copy of a large bundle on its way to the socket.
///
/// # Safety
/// The result must be consumed (encoded) before the native call that received `value`
/// returns, while those Buffers are certainly alive; it must not be kept.
pub unsafe fn read_borrowed(env: sys::napi_env, value: sys::napi_value) -> Result<Value> {
    read(env, value, 0, Buffers::Borrow)
}

/// How Buffers become [`Value::Binary`].
#[derive(Clone, Copy)]
enum Buffers {
    Copy,
    Borrow,
}

impl ToNapiValue for JsValue {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        write(env, &val.0)
    }
}

impl ToNapiValue for &Value {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        write(env, val)
    }
}

unsafe fn read(
    env: sys::napi_env,
    value: sys::napi_value,
    depth: usize,
    buffers: Buffers,
) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            Status::InvalidArg,
            "Value is nested too deeply (or is circular).",
        ));
    }
    let mut kind = 0;
    check_status!(sys::napi_typeof(env, value, &mut kind))?;
    match kind {
        sys::ValueType::napi_boolean => {
            let mut b = false;
            check_status!(sys::napi_get_value_bool(env, value, &mut b))?;
            Ok(Value::Bool(b))
        }
        sys::ValueType::napi_number => {
            let mut n = 0.0;
            check_status!(sys::napi_get_value_double(env, value, &mut n))?;
            Ok(Value::Number(n))
        }
        sys::ValueType::napi_string => Ok(Value::String(read_string(env, value)?)),
        sys::ValueType::napi_object => read_object(env, value, depth, buffers),
        // undefined, null, functions, symbols: nil, as the original writes them.
        _ => Ok(Value::Nil),
    }
}

/// Strings this long or shorter are read with one Node-API call instead of two.
const SHORT_STRING: usize = 256;

pub(super) unsafe fn read_string(env: sys::napi_env, value: sys::napi_value) -> Result<String> {
    // One call into a buffer on the stack: enough for ids, types and keys, nearly always.
    // Node stops before a character that does not fit whole, so a result more than 4 bytes
    // short of the buffer's room is the whole string.
    let mut short = [0u8; SHORT_STRING];
    let mut written = 0;
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        short.as_mut_ptr().cast::<c_char>(),
        short.len(),
        &mut written
    ))?;
    let bytes = if written + 4 < short.len() - 1 {
        short[..written].to_vec()
    } else {
        let mut len = 0;
        check_status!(sys::napi_get_value_string_utf8(
            env,
            value,
            ptr::null_mut(),
            0,
            &mut len
        ))?;
        let mut buf = vec![0u8; len + 1];
        check_status!(sys::napi_get_value_string_utf8(
            env,
            value,
            buf.as_mut_ptr().cast::<c_char>(),
            buf.len(),
            &mut written
        ))?;
        buf.truncate(written);
        buf
    };
    // Node writes valid UTF-8 (lone surrogates become U+FFFD), so this does not copy again.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

unsafe fn read_object(
    env: sys::napi_env,
    value: sys::napi_value,
    depth: usize,
    buffers: Buffers,
) -> Result<Value> {
    let mut flag = false;
    check_status!(sys::napi_is_buffer(env, value, &mut flag))?;
    if flag {
        let mut data = ptr::null_mut();
        let mut len = 0;
        check_status!(sys::napi_get_buffer_info(env, value, &mut data, &mut len))?;
        let bytes = if len == 0 {
            Bytes::new()
        } else {
            let slice: &'static [u8] = std::slice::from_raw_parts(data.cast::<u8>(), len);
            match buffers {
                Buffers::Copy => Bytes::copy_from_slice(slice),
                // Not really 'static: see read_borrowed, the only way to get here.
                Buffers::Borrow => Bytes::from_static(slice),
            }
        };
        return Ok(Value::Binary(bytes));
    }
    check_status!(sys::napi_is_date(env, value, &mut flag))?;
    if flag {
        let mut ms = 0.0;
        check_status!(sys::napi_get_date_value(env, value, &mut ms))?;
        return Ok(Value::Date(ms));
    }
    check_status!(sys::napi_is_array(env, value, &mut flag))?;
    if flag {
        let mut len = 0u32;
        check_status!(sys::napi_get_array_length(env, value, &mut len))?;
        let mut items = Vec::with_capacity(len as usize);
        for i in 0..len {
            let mut item = ptr::null_mut();
            check_status!(sys::napi_get_element(env, value, i, &mut item))?;
            items.push(read(env, item, depth + 1, buffers)?);
        }
        return Ok(Value::Array(items));
    }
    // A plain object: its own enumerable string keys, in property order (Object.keys).
    let mut keys = ptr::null_mut();
    check_status!(sys::napi_get_all_property_names(
        env,
        value,
        sys::KeyCollectionMode::own_only,
        sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
        sys::KeyConversion::numbers_to_strings,
        &mut keys
    ))?;
    let mut len = 0u32;
    check_status!(sys::napi_get_array_length(env, keys, &mut len))?;
    let mut entries = Vec::with_capacity(len as usize);
    for i in 0..len {
        let mut key = ptr::null_mut();
        check_status!(sys::napi_get_element(env, keys, i, &mut key))?;
        let mut item = ptr::null_mut();
        check_status!(sys::napi_get_property(env, value, key, &mut item))?;
        entries.push((read_string(env, key)?, read(env, item, depth + 1, buffers)?));
    }
    Ok(Value::Map(entries))
}

unsafe fn write(env: sys::napi_env, value: &Value) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    match value {
        Value::Nil => check_status!(sys::napi_get_null(env, &mut out))?,
        Value::Bool(b) => check_status!(sys::napi_get_boolean(env, *b, &mut out))?,
        Value::Number(n) => check_status!(sys::napi_create_double(env, *n, &mut out))?,
        Value::String(s) => check_status!(sys::napi_create_string_utf8(
            env,
            s.as_ptr().cast::<c_char>(),
            s.len() as isize,
            &mut out
        ))?,
        Value::Binary(bytes) => out = write_buffer(env, bytes)?,
        Value::Date(ms) => check_status!(sys::napi_create_date(env, *ms, &mut out))?,
        Value::Array(items) => {
            check_status!(sys::napi_create_array_with_length(
                env,
                items.len(),
                &mut out
            ))?;
            for (i, item) in items.iter().enumerate() {
                let element = write(env, item)?;
                check_status!(sys::napi_set_element(env, out, i as u32, element))?;
            }
        }
        Value::Map(entries) => {
            check_status!(sys::napi_create_object(env, &mut out))?;
            for (key, item) in entries {
                let mut k = ptr::null_mut();
                check_status!(sys::napi_create_string_utf8(
                    env,
                    key.as_ptr().cast::<c_char>(),
                    key.len() as isize,
                    &mut k
                ))?;
                let v = write(env, item)?;
                check_status!(sys::napi_set_property(env, out, k, v))?;
            }
        }
        Value::Ext(kind, bytes) => {
            check_status!(sys::napi_create_object(env, &mut out))?;
            let mut t = ptr::null_mut();
            check_status!(sys::napi_create_int32(env, i32::from(*kind), &mut t))?;
            check_status!(sys::napi_set_named_property(env, out, c"type".as_ptr(), t))?;
            let b = write_buffer(env, bytes)?;
            check_status!(sys::napi_set_named_property(
                env,
                out,
                c"buffer".as_ptr(),
                b
            ))?;
        }
    }
    Ok(out)
}

/// Below this a Buffer is copied; above it the JS Buffer borrows the received bytes, so a large
/// action reaches JavaScript without being copied again.
const BORROW_ABOVE: usize = 64 * 1024;

unsafe fn write_buffer(env: sys::napi_env, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if bytes.len() > BORROW_ABOVE {
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
