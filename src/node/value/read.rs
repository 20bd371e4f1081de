//! JavaScript strings read into Rust memory as UTF-8 (Node writes valid UTF-8: lone surrogates
//! become U+FFFD). A string is a primitive: `napi_get_value_string_utf8`, the one call made
//! here, runs no JavaScript, and Node writes into Rust memory only.

use std::ffi::c_char;
use std::ptr;

use bytes::{BufMut, BytesMut};
use napi::{check_status, sys};

use super::{EncodeError, Walk};

/// Strings this long or shorter are read with one Node-API call instead of two.
pub(crate) const SHORT_STRING: usize = 256;

/// Reads the string `value` into `buffer` with one call: `Some(len)` when `buffer[..len]` is the
/// whole string (valid UTF-8 as Node writes it: lone surrogates become U+FFFD), `None` when the
/// string is longer.
///
/// # Safety
///
/// As [`read_string`].
pub(super) unsafe fn read_short(
    env: sys::napi_env,
    value: sys::napi_value,
    buffer: &mut [u8; SHORT_STRING],
) -> Walk<Option<usize>> {
    let mut written = 0;
    // SAFETY: `env` is current and `value` a live handle (the caller's guarantee); Node
    // writes at most `buffer.len()` bytes into `buffer`, Rust memory, and the count into a
    // local. A string is a primitive: reading it runs no JavaScript.
    check_status!(unsafe {
        sys::napi_get_value_string_utf8(
            env,
            value,
            buffer.as_mut_ptr().cast::<c_char>(),
            buffer.len(),
            &mut written,
        )
    })?;
    // Node stops before a character that does not fit whole, so a result more than 4 bytes
    // short of the room (one byte of it is the terminating NUL) is the whole string.
    Ok((written + 4 < buffer.len() - 1).then_some(written))
}

/// Appends the UTF-8 of the string `value` to `out`, after what `before(len, out)` writes
/// once its length is known, unless `out` would then hold more than `limit` bytes. A short
/// string (ids, types, keys: nearly all) is read with one call into a buffer on the stack, a
/// long one straight into `out`. Node writes valid UTF-8 (lone surrogates become U+FFFD).
///
/// # Safety
///
/// As [`read_string`].
pub(super) unsafe fn put_utf8(
    env: sys::napi_env,
    value: sys::napi_value,
    out: &mut BytesMut,
    limit: usize,
    before: impl FnOnce(usize, &mut BytesMut),
) -> Walk<()> {
    let mut short = [0u8; SHORT_STRING];
    // SAFETY: the caller's guarantee, passed on.
    if let Some(written) = unsafe { read_short(env, value, &mut short) }? {
        if out.len() + written + 5 > limit {
            return Err(EncodeError::OverBudget);
        }
        before(written, out);
        out.put_slice(&short[..written]);
        return Ok(());
    }
    let (mut len, mut written) = (0, 0);
    // SAFETY: as in `read_short`; with no buffer, Node writes only the length, into a local.
    check_status!(unsafe {
        sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &mut len)
    })?;
    if out.len().saturating_add(len).saturating_add(5) > limit {
        return Err(EncodeError::OverBudget);
    }
    before(len, out);
    out.reserve(len + 1);
    let room = out.spare_capacity_mut();
    // SAFETY: as in `read_short`; `room` has at least `len + 1` bytes (reserved just above),
    // which is all Node writes: the string and its NUL.
    check_status!(unsafe {
        sys::napi_get_value_string_utf8(
            env,
            value,
            room.as_mut_ptr().cast::<c_char>(),
            len + 1,
            &mut written,
        )
    })?;
    if written != len {
        return Err(EncodeError::Refused(
            "A string changed while being read.".to_owned(),
        ));
    }
    // SAFETY: Node initialised these `len` bytes, inside the capacity reserved above (Rust
    // memory: reading a string primitive runs no JavaScript).
    unsafe { out.set_len(out.len() + len) };
    Ok(())
}

/// The JavaScript string `value` as UTF-8 in `buffer` when it fits there whole (event types,
/// nearly always), so that reading it allocates nothing; `None` when it does not (then use
/// [`read_string`]).
///
/// # Safety
///
/// As [`read_string`].
pub(crate) unsafe fn short_string(
    env: sys::napi_env,
    value: sys::napi_value,
    buffer: &mut [u8; SHORT_STRING],
) -> Walk<Option<&str>> {
    // SAFETY: the caller's guarantee, passed on.
    let len = unsafe { read_short(env, value, buffer) }?;
    Ok(len.and_then(|len| std::str::from_utf8(&buffer[..len]).ok()))
}

/// The JavaScript string `value` as UTF-8.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, and `value` is a handle of the current
/// handle scope.
pub(crate) unsafe fn read_string(env: sys::napi_env, value: sys::napi_value) -> Walk<String> {
    let mut bytes = BytesMut::new();
    // SAFETY: the caller's guarantee, passed on.
    unsafe { put_utf8(env, value, &mut bytes, usize::MAX, |_, _| {}) }?;
    // Valid UTF-8, and a BytesMut of its own: no copy either way.
    Ok(String::from_utf8(Vec::from(bytes))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}
