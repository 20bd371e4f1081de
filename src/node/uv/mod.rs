//! The JavaScript thread's own event loop as the clients' reactor and executor.
//!
//! A client driven from tokio costs every action two extra thread hops: a tokio worker reads
//! the frame and wakes the JS thread, whose acknowledgement then wakes a tokio worker again
//! to write it. On a machine where waking an idle core is slow, those hops cost more than
//! the rest of the exchange. So each client's task is polled on the thread that owns its
//! `Client` object, and its socket is watched by that thread's libuv loop (`uv_poll`), as
//! Node's own sockets are: a byte from the gateway wakes the JS thread directly, and an
//! `ack()` writes to the socket before it returns.
//!
//! Timers and name resolution stay on the shared tokio runtime (its context is entered while
//! tasks are polled); their wake-ups reach this loop through one `uv_async` handle per thread.
//! Wake-ups made on the loop's own thread (a `send()`) need no system call: a `uv_idle` handle
//! runs the tasks on the loop's next turn. And what a loop callback has for JavaScript is
//! called directly when its work is done ([`call_after_callback`]), as Node calls a socket's listeners.
//! libuv is found at run time in the host process (`dlsym` on unix, `GetProcAddress` on
//! Windows, where sockets are watched with `uv_poll_init_socket`), and used only where it is
//! really Node's: the `uv_*` functions must come from the image that provides
//! `napi_get_uv_event_loop` (or, on unix, from a shared libuv, as distributions build Node),
//! report the version
//! `process.versions.uv` names, and the host must not be Bun or Deno (Bun exports `uv_*`
//! functions that abort, Deno's loop is not libuv's). Any other host, or
//! `IMT_GATEWAY_IO=tokio` in the environment, keeps the clients on the tokio runtime; so does
//! a second Node-API environment on a thread that already has one (embedders, Electron
//! sub-frames), since one loop handle and cleanup hook serve one environment.

//!
//! The driver is split in three: [`table`] finds libuv's functions in the host process and
//! decides whether they are Node's, [`executor`] polls the clients' tasks on the loop's thread,
//! and [`socket`] watches their sockets with `uv_poll`. This module holds the per-thread state
//! they share and the surface the rest of the crate uses.

mod executor;
mod socket;
mod table;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::LocalKey;

use napi::Env;

use crate::client::Reactor;

pub use executor::run_after;

thread_local! {
    /// This thread's libuv loop (0 when it has none): whether a socket or a wake-up belongs
    /// to the loop of the thread at hand.
    static LOOP: Cell<usize> = const { Cell::new(0) };
    /// A callback of the loop itself (not a call from JavaScript) is running: what it has
    /// for JavaScript is called directly when its work is done (see [`call_after_callback`]).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// A `send()` has run at once since the loop last called in here (see [`send_now`]).
    static SENT: Cell<bool> = const { Cell::new(false) };
    /// Bumped by a large send (see [`send_now`]): a socket that last saw another value tries
    /// its calls again.
    static PROBE: Cell<u64> = const { Cell::new(0) };
    /// What waits to call into JavaScript at the end of the loop callback running here.
    static AFTER_CALLBACK: RefCell<VecDeque<Arc<dyn LoopCall>>> = const { RefCell::new(VecDeque::new()) };
}

/// Something that calls into JavaScript, on the loop's thread.
pub trait LoopCall {
    fn run(&self);
}

/// Has `target` run at the end of the loop callback now running (a socket became
/// readable, a timer's wake-up arrived), with nothing in between: no threadsafe-function
/// hop, no second turn of the loop. False when no loop callback is running here (a call from
/// JavaScript, or another thread): the caller must then go by a threadsafe function, so that
/// JavaScript is never re-entered from inside one of its own calls.
pub fn call_after_callback<T: LoopCall + 'static>(target: &Arc<T>) -> bool {
    if !IN_CALLBACK.with(Cell::get) {
        return false;
    }
    AFTER_CALLBACK.with(|d| d.borrow_mut().push_back(target.clone()));
    true
}

/// An event frame at least this large takes long enough to copy (in `send()`) that the
/// socket should not sit idle meanwhile.
const LARGE_SEND: usize = 256 * 1024;

/// Whether a `send()` of a `len`-byte frame, made now, should run at once (on a thread whose
/// clients the loop drives). The first since the loop last called in here does, so that an
/// event goes on the wire before `send()` returns; small ones after it in the same turn of
/// JavaScript wait for the loop's next turn, to go out together in one write. A large one
/// always does, and lets every socket of this thread try its calls once more without the
/// loop's report (see [`socket::Watch::poll_ready`]): a long turn that sends many large events, each
/// copied as it is sent, keeps the wire moving between its sends instead of leaving the
/// socket idle until the turn ends.
pub fn send_now(len: usize) -> bool {
    if LOOP.with(Cell::get) == 0 {
        return false;
    }
    let first = !SENT.with(|s| s.replace(true));
    if len >= LARGE_SEND {
        PROBE.with(|p| p.set(p.get().wrapping_add(1)));
        return true;
    }
    first
}

/// Runs `f` with `flag` set, and puts the flag back as it was afterwards, even on a panic.
fn with_flag<T>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> T) -> T {
    struct Restore(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(true)));
    f()
}

/// A libuv callback of ours (a wake-up, a socket's readiness): runs `work`, then makes the
/// calls it (and the JavaScript they run) queued, in order, until none is left.
fn loop_callback(work: impl FnOnce()) {
    SENT.with(|s| s.set(false));
    with_flag(&IN_CALLBACK, || {
        work();
        while let Some(call) = AFTER_CALLBACK.with(|d| d.borrow_mut().pop_front()) {
            let _ = catch_unwind(AssertUnwindSafe(|| call.run()));
        }
    });
}

fn on_loop(uv_loop: usize) -> bool {
    uv_loop != 0 && LOOP.with(Cell::get) == uv_loop
}

/// Which I/O driver clients made on this thread use: `"libuv"` (this thread's event loop)
/// or `"tokio"` (the shared runtime's threads). For diagnostics and tests.
// napi registers exports only outside `cfg(test)`, so a test build sees no caller.
#[cfg_attr(test, allow(dead_code))]
#[napi_derive::napi(catch_unwind)]
pub fn io_driver(env: Env) -> &'static str {
    if executor::executor(&env).is_some() {
        "libuv"
    } else {
        "tokio"
    }
}

/// The reactor for clients made on `env`'s thread, or `None` to use tokio's.
pub fn reactor(env: &Env) -> Option<Arc<dyn Reactor>> {
    let executor = executor::executor(env)?;
    Some(Arc::new(socket::LoopReactor {
        shared: executor.shared.clone(),
    }))
}
