//! The napi bindings: the only code that knows Node exists. It converts between JavaScript
//! values and the core's types and forwards calls; protocol logic stays in the core.

mod client;
mod defaults;
mod host;
mod notice;
mod pki;
mod quiet;
mod server;
mod uv;
mod value;

use crate::errors::ErrorCode;

/// What the bindings throw: napi-rs makes a `napi::Error<ErrorCode>` into a JavaScript `Error`
/// whose `code` is the [`ErrorCode`]'s and whose message is the reason alone, so each error's
/// code is set where the error is made and nothing reads it back out of a message.
pub(crate) type Thrown = napi::Error<ErrorCode>;

/// An error with `code` and `message`, as JavaScript will see it.
pub(crate) fn thrown(code: ErrorCode, message: impl Into<String>) -> Thrown {
    napi::Error::new(code, message.into())
}

/// A failed Node-API call (napi's own `Error`, a status) as an `EINTERNAL` error: the bindings
/// misused Node-API, or the environment is going away. An exception already pending in
/// JavaScript is still the one thrown (napi-rs throws the pending one instead).
pub(crate) fn internal(err: napi::Error) -> Thrown {
    thrown(ErrorCode::Internal, err.reason)
}

/// Whether the test hooks (`NativeClient.__crash`) are on: `IMT_GATEWAY_TEST_HOOKS=1` in the
/// environment when the addon loaded.
pub(crate) fn test_hooks() -> bool {
    static HOOKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HOOKS.get_or_init(|| std::env::var("IMT_GATEWAY_TEST_HOOKS").is_ok_and(|v| v == "1"))
}

/// Refused TLS material, with its code (`EINVALIDKEY`, `EKEYMISMATCH`, ...).
impl From<crate::tls::TlsError> for Thrown {
    fn from(err: crate::tls::TlsError) -> Thrown {
        thrown(err.code(), err.to_string())
    }
}
