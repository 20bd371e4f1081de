//! Tests across modules, compiled for tests only. `pair`: the client's `Session` and the
//! server's `Peer`s and `Hub` wired together in memory, the project's main test of behaviour.

mod pair;
