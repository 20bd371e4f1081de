//! JavaScript values and the wire, following docs/PROTOCOL.md section 5 (MessagePack mapping):
//! a JS value is written straight into MessagePack ([`encode()`]), and a wire [`Value`](crate::protocol::Value) becomes a
//! JS value ([`JsValue`]). Raw Node-API calls, so a bundle is walked once with no intermediate
//! JSON, serde or `Value` layer.
//!
//! The authority is msgpack-lite 0.1.26, which the original client used and the gateway
//! decodes with: its `encode` for the walk, its `decode` for the way back.
//!
//! * `encode.rs`: the JS → MessagePack walk ([`to_value`], [`encode()`]): JavaScript values
//!   written as msgpack-lite writes them, within the 10 MiB budget; a view's bytes are read
//!   by `Encoder::with_bytes` only after the last JavaScript the walk runs for it.
//! * `known.rs`: what the walk compares every object with (the key `constructor`, `Object`,
//!   `Buffer`, `Date`), kept by reference per environment.
//! * `read.rs`: JavaScript strings read into Rust memory as UTF-8.
//! * `to_js.rs`: the wire → JS conversion ([`JsValue`], [`JsValueCopy`]): values, strings,
//!   Buffers, and the extension types made into the classes msgpack-lite's `decode` makes.
//! * `external.rs`: strings of 256 KiB or more as V8 external strings over the frame's
//!   bytes (`shared_string`: the runtime's makers found by `dlsym`, their memory reported
//!   with `napi_adjust_external_memory`).
//!
//! Each file's documentation names the Node-API calls it makes that can run JavaScript (a
//! getter, a setter, a `Proxy` trap, a constructor replaced on `globalThis`); every
//! `unsafe` block says why no JavaScript runs while it holds a pointer into a JavaScript
//! object. The calls that only inspect a value (`napi_typeof`, `napi_is_*`,
//! `napi_strict_equals`, `napi_get_*_info`, `napi_get_value_*`, `napi_get_date_value`) or make
//! a new one (`napi_create_*`, `napi_get_null` and the like) run no JavaScript.

mod encode;
mod external;
mod known;
mod read;
mod to_js;

use std::ffi::CStr;
use std::ptr;

use napi::{check_status, sys, Error, Result};

use crate::errors::ErrorCode;
use crate::protocol::DecodeError;

pub use encode::{encode, encode_resumed, to_value, Resumed, FIELD_DEPTH};
pub(crate) use read::{read_string, short_string, SHORT_STRING};
pub use to_js::{JsValue, JsValueCopy};

/// Why a JavaScript value was not encoded. The calls made from JavaScript throw it as an
/// `Error` whose `code` is [`EncodeError::code`] (see `node::client::calls::run_call`).
#[derive(Debug)]
pub enum EncodeError {
    /// The frame would pass the 10 MiB cap: `IM491`, `Maximum buffer size exceeded.`
    OverBudget,
    /// Not a value the wire can carry: nested too deeply (or circular), a `BigInt`.
    Refused(String),
    /// A Node-API call failed, or JavaScript run by the walk (a getter, a Proxy trap) threw,
    /// and that exception is pending: it is what JavaScript gets.
    Napi(Error),
    /// The durable outbox refused the event: `EQUEUEFULL`, `ENOSPC`, ... (not a value's fault).
    Stored(ErrorCode, String),
}

impl EncodeError {
    /// The `code` of the `Error` JavaScript gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            EncodeError::OverBudget => ErrorCode::BufferExceeded,
            EncodeError::Refused(_) => ErrorCode::InvalidValue,
            EncodeError::Napi(_) => ErrorCode::Internal,
            EncodeError::Stored(code, _) => code.clone(),
        }
    }
}

impl From<Error> for EncodeError {
    fn from(err: Error) -> EncodeError {
        EncodeError::Napi(err)
    }
}

/// What cannot be decoded was refused: an argument's fault, as when it nests too deeply.
impl From<DecodeError> for EncodeError {
    fn from(err: DecodeError) -> EncodeError {
        EncodeError::Refused(err.0)
    }
}

/// The `Error` JavaScript gets: the code, and the message alone.
impl From<EncodeError> for Error<ErrorCode> {
    fn from(err: EncodeError) -> Error<ErrorCode> {
        let code = err.code();
        let message = match err {
            EncodeError::OverBudget => "Maximum buffer size exceeded.".to_owned(),
            EncodeError::Refused(message) => message,
            EncodeError::Napi(err) => err.reason,
            EncodeError::Stored(_, message) => message,
        };
        Error::new(code, message)
    }
}

type Walk<T> = std::result::Result<T, EncodeError>;

const EXT_REGEXP: i8 = 0x0A;
const EXT_ARRAY_BUFFER: i8 = 0x1A;
const EXT_BUFFER: i8 = 0x1B;
const EXT_DATA_VIEW: i8 = 0x1D;

/// The properties msgpack-lite writes (and reads back) for an Error, in its order.
const ERROR_COLUMNS: [&CStr; 6] = [
    c"name",
    c"message",
    c"stack",
    c"columnNumber",
    c"fileName",
    c"lineNumber",
];

fn element_size(kind: sys::napi_typedarray_type) -> usize {
    use sys::TypedarrayType as T;
    if kind == T::int16_array || kind == T::uint16_array {
        2
    } else if kind == T::int32_array || kind == T::uint32_array || kind == T::float32_array {
        4
    } else if kind == T::float64_array || kind == T::bigint64_array || kind == T::biguint64_array {
        8
    } else {
        1
    }
}

/// A global constructor or function by name. May run JavaScript (a getter or a Proxy trap on
/// `globalThis`).
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, where the value
/// read lives.
unsafe fn global(env: sys::napi_env, name: &CStr) -> Result<sys::napi_value> {
    let mut global = ptr::null_mut();
    // SAFETY: `env` is current, in a handle scope (the caller's guarantee); the out-pointer
    // is a local.
    check_status!(unsafe { sys::napi_get_global(env, &mut global) })?;
    // SAFETY: as above; `global` was just read into this scope.
    unsafe { property(env, global, name) }
}

/// `object[name]`. May run JavaScript (a getter or a Proxy trap).
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, and `object` is a
/// handle of that scope; the value read lives there too.
unsafe fn property(
    env: sys::napi_env,
    object: sys::napi_value,
    name: &CStr,
) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    // SAFETY: `env` is current and `object` a live handle (the caller's guarantee); `name` is
    // NUL-terminated and the out-pointer a local. The JavaScript this may run finds no pointer
    // of ours into a JavaScript object.
    check_status!(unsafe { sys::napi_get_named_property(env, object, name.as_ptr(), &mut value) })?;
    Ok(value)
}
