//! What the host and the client's task say to each other: [`Command`]s in, [`Batch`]es of
//! notices out.

use std::cell::Cell;

use crate::protocol::ErrorBody;
#[cfg(doc)]
use crate::session::Session;
use crate::session::{ActionKey, Notice, OutgoingEvent, SessionError};
use crate::spare;

/// What the host asks of the client.
// `Crash` is a test hook of the Node binding, not a non-exhaustive marker: without the
// binding nothing constructs it, which is what the lint takes it for.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug)]
pub enum Command {
    /// The user's `connect()`; `cycle` is echoed back in [`Batch::idle`] so the host can tell
    /// an idle report that predates its latest `connect()` from a current one.
    Connect {
        cycle: u64,
    },
    /// Boxed, as is [`Command::Ack`]'s body: the command channel keeps a block of 32 commands
    /// per client from the start, so the size of a command is paid 32 times by every client.
    Send(Box<OutgoingEvent>),
    /// Events found in the durable outbox, queued ahead of anything sent after them
    /// ([`Session::restore`]).
    Restore(Vec<OutgoingEvent>),
    Ack(Box<ActionAck>),
    Close {
        keep_queue: bool,
    },
    /// New TLS material is in force: replace the connection (or attempt) in hand by a new
    /// one at once ([`Session::reconnect_now`]).
    Reconnect,
    /// Panics inside the client's task, to prove that a panic is caught and reported.
    #[doc(hidden)]
    Crash,
}

/// An action's acknowledgement, as the host gives it ([`Command::Ack`]).
#[derive(Debug)]
pub struct ActionAck {
    /// The action's id as delivered ([`crate::session::Notice::Action`]'s `key`).
    pub id: ActionKey,
    /// Set when the action failed.
    pub error: Option<ErrorBody>,
}

/// Notices for the host, gathered over one burst of input.
#[derive(Debug, Default)]
pub struct Batch {
    pub notices: Vec<Notice>,
    /// Set when the client has nothing left to do (no socket, no attempt, no timer) after a
    /// `connect()` with this cycle number: the host may stop keeping its process alive for it.
    pub idle: Option<u64>,
    /// The client stopped for good (a bug in this package, caught): the host must fail every
    /// callback it still holds with this error. Never set otherwise.
    pub fatal: Option<SessionError>,
}

thread_local! {
    /// The list of a batch whose notices were taken on this thread ([`Batch::recycle`]).
    static SPARE_NOTICES: Cell<Vec<Notice>> = const { Cell::new(Vec::new()) };
}

impl Batch {
    /// An empty list for a batch's notices: the one last given back on this thread
    /// ([`Batch::recycle`]), if any. Where the host takes a batch's notices on the thread that
    /// makes the batches (the Node binding's libuv driver), a turn's notices then cost no
    /// allocation of their own. Taken when a turn has its first notice, so that a client
    /// waiting between turns keeps none.
    pub fn spare_list() -> Vec<Notice> {
        spare::take(&SPARE_NOTICES)
    }

    /// Gives back the list of a batch whose notices the host has taken, for
    /// [`Batch::spare_list`] on this thread.
    pub fn recycle(notices: Vec<Notice>) {
        spare::keep(&SPARE_NOTICES, notices, 64);
    }

    /// Appends a later batch: its notices after these, its idle and fatal reports over these.
    pub fn absorb(&mut self, later: Batch) {
        self.notices.extend(later.notices);
        if later.idle.is_some() {
            self.idle = later.idle;
        }
        if later.fatal.is_some() {
            self.fatal = later.fatal;
        }
    }
}
