//! Rust core of `imt-gateway`: the gateway wire protocol, the local gateway server, and
//! (with the `node` feature) the napi bindings that make them a Node.js package.
//!
//! # Layout
//!
//! The wire protocol is described in `docs/PROTOCOL.md`, the layers and the way data flows
//! through them in `docs/ARCHITECTURE.md`. The modules, from the wire up:
//!
//! * `protocol`: frames (6-byte header, 10 MiB cap), the seven typed messages, and the
//!   MessagePack value model written as msgpack-lite 0.1.26 writes it. Pure code, no I/O.
//! * `session`: the client's protocol state as a sans-I/O state machine: inputs in, outputs
//!   (bytes to write, notices for the application) out.
//! * `client`: the driver task that owns the sockets, TLS and timers and feeds the session.
//! * `server`: the bundled gateway server for tests, the demo and local development.
//! * `tls`: rustls configurations built from PEM keys, certificates and CAs.
//! * `pki`: throwaway certificate authorities and certificates for tests.
//! * `errors`: Node-style codes (`ECONNREFUSED`, ...) for socket and file errors.
//! * `outbox`: the durable outbox (an append-only segment log on disk; not yet used by the
//!   client).
//! * `node` (feature `node`): the napi bindings, the only code that knows Node exists.

// Every unsafe block and `unsafe impl` states why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod errors;
pub mod outbox;
pub mod pki;
pub mod protocol;
pub mod server;
pub mod session;
pub mod tls;

#[cfg(feature = "node")]
mod node;
