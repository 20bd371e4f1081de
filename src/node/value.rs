//! JavaScript values and the wire, following PROTOCOL.md section 5: a JS value is written
//! straight into MessagePack ([`encode`]), and a wire [`Value`] becomes a JS value ([`write`]).
//! Raw Node-API calls, so a bundle is walked once with no intermediate JSON, serde or
//! [`Value`] layer.

use std::ffi::{c_char, c_void};
use std::ptr;

use bytes::{BufMut, Bytes, BytesMut};
use napi::bindgen_prelude::{FromNapiValue, ToNapiValue, TypeName, ValidateNapiValue};
use napi::{check_status, sys, Error, Result, Status, ValueType};

use crate::protocol::value::{
    write_array_header, write_binary, write_bool, write_date, write_map_header, write_nil,
    write_number, write_str_header, MAX_DEPTH,
};
use crate::protocol::{decode, DecodeError, Value};

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
        to_value(env, value).map(JsValue)
    }
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

/// How many maps enclose every JavaScript value the protocol carries: each is a field of a
/// message's map (an id, a bundle, an action's parameters).
pub const FIELD_DEPTH: usize = 1;

/// `value` as a [`Value`]: encoded by [`encode`] and decoded again, so it is exactly what
/// the wire will carry and there is one walk of JavaScript values, not two to keep alike.
pub unsafe fn to_value(env: sys::napi_env, value: sys::napi_value) -> Result<Value> {
    let mut body = BytesMut::with_capacity(64);
    encode(env, value, FIELD_DEPTH, &mut body)?;
    Ok(decode(&body.freeze())?)
}

/// What cannot be decoded was refused: an argument's fault, as when it nests too deeply.
impl From<DecodeError> for Error {
    fn from(err: DecodeError) -> Error {
        Error::new(Status::InvalidArg, err.0)
    }
}

/// Writes `value` into `out` as MessagePack, as PROTOCOL.md section 5 maps JavaScript values:
/// straight from the caller's strings and Buffers, with no tree of [`Value`]s in between.
/// `depth` is how many arrays and maps already enclose it: a walk never opens more than
/// MessagePack decoding accepts (so a cyclic object ends in an error). After an error, `out`
/// holds a partial value.
pub unsafe fn encode(
    env: sys::napi_env,
    value: sys::napi_value,
    depth: usize,
    out: &mut BytesMut,
) -> Result<()> {
    let mut kind = 0;
    check_status!(sys::napi_typeof(env, value, &mut kind))?;
    match kind {
        sys::ValueType::napi_boolean => {
            let mut b = false;
            check_status!(sys::napi_get_value_bool(env, value, &mut b))?;
            write_bool(b, out);
        }
        sys::ValueType::napi_number => {
            let mut n = 0.0;
            check_status!(sys::napi_get_value_double(env, value, &mut n))?;
            write_number(n, out);
        }
        sys::ValueType::napi_string => put_utf8(env, value, out, write_str_header)?,
        sys::ValueType::napi_object => encode_object(env, value, depth, out)?,
        // undefined, null, functions, symbols: nil, as the original writes them.
        _ => write_nil(out),
    }
    Ok(())
}

/// Strings this long or shorter are read with one Node-API call instead of two.
const SHORT_STRING: usize = 256;

/// Appends the UTF-8 of the string `value` to `out`, after what `before(len, out)` writes
/// once its length is known. A short string (ids, types, keys: nearly all) is read with one
/// call into a buffer on the stack, a long one straight into `out`. Node writes valid UTF-8
/// (lone surrogates become U+FFFD).
unsafe fn put_utf8(
    env: sys::napi_env,
    value: sys::napi_value,
    out: &mut BytesMut,
    before: impl FnOnce(usize, &mut BytesMut),
) -> Result<()> {
    let mut short = [0u8; SHORT_STRING];
    let mut written = 0;
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        short.as_mut_ptr().cast::<c_char>(),
        short.len(),
        &mut written
    ))?;
    // Node stops before a character that does not fit whole, so a result more than 4 bytes
    // short of the room (one byte of it is the terminating NUL) is the whole string.
    if written + 4 < short.len() - 1 {
        before(written, out);
        out.put_slice(&short[..written]);
        return Ok(());
    }
    let mut len = 0;
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        ptr::null_mut(),
        0,
        &mut len
    ))?;
    before(len, out);
    out.reserve(len + 1);
    let room = out.spare_capacity_mut();
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        room.as_mut_ptr().cast::<c_char>(),
        len + 1,
        &mut written
    ))?;
    if written != len {
        return Err(Error::new(
            Status::GenericFailure,
            "A string changed while being read.",
        ));
    }
    // SAFETY: Node initialised these `len` bytes, inside the capacity reserved above.
    out.set_len(out.len() + len);
    Ok(())
}

pub(super) unsafe fn read_string(env: sys::napi_env, value: sys::napi_value) -> Result<String> {
    let mut bytes = BytesMut::new();
    put_utf8(env, value, &mut bytes, |_, _| {})?;
    // Valid UTF-8, and a BytesMut of its own: no copy either way.
    Ok(String::from_utf8(Vec::from(bytes))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Above this a Buffer's bytes get room for a little more after them, so that the fields
/// that follow a large Buffer do not make the frame grow, and copy it, again.
const LARGE_BUFFER: usize = 64 * 1024;
const AFTER_LARGE_BUFFER: usize = 4096;

unsafe fn encode_object(
    env: sys::napi_env,
    value: sys::napi_value,
    depth: usize,
    out: &mut BytesMut,
) -> Result<()> {
    let mut flag = false;
    check_status!(sys::napi_is_buffer(env, value, &mut flag))?;
    if flag {
        let mut data = ptr::null_mut();
        let mut len = 0;
        check_status!(sys::napi_get_buffer_info(env, value, &mut data, &mut len))?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        };
        if len > LARGE_BUFFER {
            out.reserve(len + AFTER_LARGE_BUFFER);
        }
        write_binary(bytes, out);
        return Ok(());
    }
    check_status!(sys::napi_is_date(env, value, &mut flag))?;
    if flag {
        let mut ms = 0.0;
        check_status!(sys::napi_get_date_value(env, value, &mut ms))?;
        write_date(ms, out);
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(Error::new(
            Status::InvalidArg,
            "Value is nested too deeply (or is circular).",
        ));
    }
    check_status!(sys::napi_is_array(env, value, &mut flag))?;
    if flag {
        let mut len = 0u32;
        check_status!(sys::napi_get_array_length(env, value, &mut len))?;
        write_array_header(len as usize, out);
        for i in 0..len {
            let mut item = ptr::null_mut();
            check_status!(sys::napi_get_element(env, value, i, &mut item))?;
            encode(env, item, depth + 1, out)?;
        }
        return Ok(());
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
    write_map_header(len as usize, out);
    for i in 0..len {
        let mut key = ptr::null_mut();
        check_status!(sys::napi_get_element(env, keys, i, &mut key))?;
        let mut item = ptr::null_mut();
        check_status!(sys::napi_get_property(env, value, key, &mut item))?;
        put_utf8(env, key, out, write_str_header)?;
        encode(env, item, depth + 1, out)?;
    }
    Ok(())
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
