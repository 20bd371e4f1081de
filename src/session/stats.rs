//! The session's counters, as `client.stats()` shows them ([`SessionStats`]).

/// What the session has done so far, as `client.stats()` shows it: plain counters, updated in
/// place on the paths that already run. The totals count from the session's creation; `queued`,
/// `in_flight`, `connected` and `drained` are the state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Events waiting to be written (not yet, or again after a reconnect), now.
    pub queued: u64,
    /// Events written on the current connection and awaiting their acknowledgement, now.
    pub in_flight: u64,
    /// Events the gateway acknowledged with status 0 (accepted).
    pub acknowledged: u64,
    /// Events the gateway acknowledged with an error (rejected).
    pub rejected: u64,
    /// Event frames written again on a later connection, because the one that carried them
    /// ended before their acknowledgement.
    pub resent: u64,
    /// Events whose callback got `ECLOSED` from `close()`.
    pub failed_closed: u64,
    /// Events refused with `EQUEUEFULL` (`max_queue_size`).
    pub failed_queue_full: u64,
    /// ACTIONs received.
    pub actions_received: u64,
    /// Actions whose ACKNOWLEDGEMENT was written (done or failed), on the connection that
    /// delivered them.
    pub actions_acked: u64,
    /// Automatic reconnect attempts started (each `reconnect` notice).
    pub reconnects: u64,
    /// Welcomed, on a connection that is open now.
    pub connected: bool,
    /// The gateway said DRAINED on the current connection: events flow.
    pub drained: bool,
    /// Event frames written, re-sent ones included; the n-th write is write number n. The
    /// driver times writes by these numbers (the session has no clock).
    pub events_written: u64,
    /// The number of the write of the event acknowledged last (accepted or rejected); 0 before
    /// the first acknowledgement.
    pub last_acked_write: u64,
}
