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
//! * `session`: the client's protocol state as a sans-I/O state machine: inputs in, with the
//!   time (`handle_timeout` when its earliest deadline, `poll_timeout`, passed), outputs (bytes
//!   to write, notices for the application) out.
//! * `client`: the driver task that owns the sockets, TLS and the clock, sleeps until the
//!   session's earliest deadline and feeds the session.
//! * `server`: the bundled gateway server for tests, the demo and local development: the
//!   shared state (`mod.rs`, the `Hub` of `hub.rs` behind a mutex: held actions, the live
//!   connections, decisions), one driver task per connection (`connection.rs`: sockets, TLS,
//!   the timer) and, in `peer.rs`, the server's protocol for one connection as a sans-I/O
//!   state machine shaped like `session`.
//! * `tls`: rustls configurations built from PEM keys, certificates and CAs.
//! * `pki`: throwaway certificate authorities and certificates for tests.
//! * `errors`: `ErrorCode`, every code the package reports (socket and file errors named as
//!   Node names them: `ECONNREFUSED`, `ENOSPC`, ...).
//! * `defaults`: the default of every client and server option, the one table the core, the
//!   JavaScript layer and `index.d.ts` follow.
//! * `outbox`: the durable outbox (an append-only segment log on disk), which a client given
//!   the `outbox` option uses through `client::EventStore` (`client/store.rs`).
//! * `node` (feature `node`): the napi bindings, the only code that knows Node exists.
//! * `tests` (tests only): `tests/pair.rs`, a client `Session` and the server's `Peer`s and
//!   `Hub` wired together in memory with a virtual clock, and the property test that runs
//!   random interleavings of sends, actions, cuts, timers, verdicts, closes and bad frames
//!   through both ends: the project's main test of behaviour.

// Every unsafe block and `unsafe impl` states why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]
// Every unsafe operation in an `unsafe fn` sits in an unsafe block of its own, which states it.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod credentials;
pub mod defaults;
pub mod errors;
pub mod outbox;
pub mod percent;
pub mod pkcs11;
pub mod pki;
pub mod protocol;
pub mod server;
pub mod session;
// Used by the Node.js binding only; tested without it.
#[cfg_attr(not(feature = "node"), allow(dead_code))]
mod shapes;
mod spare;
pub mod tls;

#[cfg(test)]
mod tests;

#[cfg(feature = "node")]
mod node;
