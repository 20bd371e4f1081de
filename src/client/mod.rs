//! The client driver: one tokio task per client that owns everything with a clock or a socket
//! (name resolution, TCP, TLS, the clock) and feeds what happens to the protocol [`Session`],
//! with the time. It carries out the session's [`Output`]s, sleeps until the session's
//! earliest deadline ([`Session::poll_timeout`], one sleep) and hands its notices to a sink in
//! batches, one
//! batch per burst of input, so a JavaScript host is woken once per burst and never per frame.
//! The next queued event is written the moment the previous one is acknowledged, inside this
//! task, without a round trip through the host.
//!
//! The task needs a tokio runtime context for its timers and name resolution. By default it
//! runs on that runtime and its sockets use tokio's reactor; a host with an event loop of its
//! own supplies a [`Reactor`] and polls the task there (the Node binding does, on the
//! JavaScript thread's libuv loop). Dropping the [`ClientHandle`] ends the task and its
//! connection.

mod backlog;
mod command;
mod connection;
mod driver;
mod eyeballs;
mod gate;
mod options;
pub mod proxy;
mod published;
mod store;
mod timer;
mod transport;
mod write_times;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;

use crate::errors::ErrorCode;
use crate::session::SessionError;
#[cfg(doc)]
use crate::session::{Output, Session};
use driver::Driver;
use published::Published;

pub use backlog::Backlog;
pub use command::{ActionAck, Batch, Command};
/// The gate's hint to a socket polled through a host's loop: read once now (see `gate.rs`).
#[cfg_attr(not(feature = "node"), allow(unused_imports))]
pub(crate) use gate::READ_AHEAD;
pub use options::ClientOptions;
pub use published::ClientStats;
pub use store::{EventStore, Restored, StoreStats};
pub use transport::{
    open, prepare_socket, Connecting as TcpConnecting, ProxyChoice, Reactor, Resolve, Resolving,
    Route, Stream, SystemResolver, Task, Tokio, Traffic,
};

/// The host's side of a running client. Dropping it ends the client's task.
#[derive(Clone)]
pub struct ClientHandle {
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Published>,
}

impl ClientHandle {
    /// Queues a command; false when the task has already ended.
    pub fn command(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// The client's counters, read from any thread without waiting for its task: the
    /// session's as of the end of the task's latest turn, the bytes as of the latest read or
    /// write of the socket.
    pub fn stats(&self) -> ClientStats {
        self.stats.read()
    }

    /// The durations (seconds) of the events answered since the last call, when the session
    /// times them ([`crate::session::SessionConfig::time_events`]), in the order they were
    /// answered; read without waiting for the task.
    pub fn take_durations(&self) -> Vec<f64> {
        self.stats.take_durations()
    }
}

/// Creates a client: the handle, and the task to spawn on a tokio runtime. `sink` receives
/// every batch, in order, from that task. A panic inside the task is caught there and
/// reported as a last, fatal batch: it never unwinds into the host.
pub fn client<S>(options: ClientOptions, sink: S) -> (ClientHandle, impl Future<Output = ()>)
where
    S: Fn(Batch) + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Arc::new(sink);
    let stats = Arc::new(Published::default());
    let driver = Driver::new(options, sink.clone(), stats.clone());
    // Combinators rather than an `async` block: a block would keep the driver it captures
    // beside the running driver's future, twice its size in every client's task.
    let task = AssertUnwindSafe(driver.run(rx))
        .catch_unwind()
        .map(move |outcome| {
            if let Err(panic) = outcome {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                sink(Batch {
                    notices: Vec::new(),
                    idle: None,
                    fatal: Some(SessionError::new(
                        ErrorCode::Internal,
                        format!("imt-gateway internal error, the client stopped: {reason}"),
                    )),
                });
            }
        });
    (
        ClientHandle {
            commands: tx,
            stats,
        },
        task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_and_an_idle_clients_task_stay_small() {
        // The command channel holds 32 commands per client from the start.
        assert!(
            std::mem::size_of::<Command>() <= 32,
            "{}",
            std::mem::size_of::<Command>()
        );
        let (_handle, task) = client(ClientOptions::new("localhost", 1, "device"), |_| {});
        let size = std::mem::size_of_val(&task);
        // Every client's task is this size, idle or not: what it keeps across a wait counts,
        // as the write slices did, and as the driver kept twice by an `async` block around it
        // did (docs/ARCHITECTURE.md section 7 gives the sizes).
        assert!(size < 5 * 512, "the task is {size} bytes");
    }
}
