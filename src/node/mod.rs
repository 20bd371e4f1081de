//! The napi bindings: the only code that knows Node exists. It converts between JavaScript
//! values and the core's types and forwards calls; protocol logic stays in the core.

mod client;
mod pki;
mod quiet;
mod server;
mod uv;
mod value;
