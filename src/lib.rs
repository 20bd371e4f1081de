//! Rust core of `imt-gateway`: the gateway wire protocol, the local gateway server, and
//! (with the `node` feature) the napi bindings that make them a Node.js package.

pub mod client;
pub mod errors;
pub mod pki;
pub mod protocol;
pub mod server;
pub mod session;
pub mod tls;

#[cfg(feature = "node")]
mod node;
