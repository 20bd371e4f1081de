//! The napi bindings: the only code that knows Node exists. It converts between JavaScript
//! values and the core's types and forwards calls; protocol logic stays in the core.

mod client;
mod pki;
mod quiet;
mod server;
mod uv;
mod value;

/// Whether the test hooks (`NativeClient.__crash`) are on: `IMT_GATEWAY_TEST_HOOKS=1` in the
/// environment when the addon loaded.
pub(crate) fn test_hooks() -> bool {
    static HOOKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HOOKS.get_or_init(|| std::env::var("IMT_GATEWAY_TEST_HOOKS").is_ok_and(|v| v == "1"))
}
