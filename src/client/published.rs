//! The client's counters as the host reads them ([`ClientStats`]), published by the driver
//! from any thread's point of view (`Published`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Traffic;
use crate::session::SessionStats;

/// What a client has done, as `client.stats()` shows it (README, `client.stats()`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientStats {
    /// The protocol's counters.
    pub session: SessionStats,
    /// Bytes written to the socket, TLS records and handshakes included.
    pub bytes_sent: u64,
    /// Bytes read from the socket, TLS records and handshakes included.
    pub bytes_received: u64,
    /// Between the write of the frame of the event acknowledged last and the read of its
    /// acknowledgement; `None` before the first acknowledgement.
    pub rtt: Option<Duration>,
    /// When the oldest event not yet done (queued or in flight) was queued; `None` when none
    /// waits. `client.health()`'s `oldestQueuedAge`.
    pub oldest_queued: Option<Instant>,
}

/// The instant `Published::oldest` counts from: the first time any client needed it.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The counters as the host reads them while the task runs, maybe on another thread: relaxed
/// atomics, stored by the driver once per turn (the session's) and added to by the socket
/// ([`Traffic`]). A reader may see one turn's values beside the previous turn's, never a torn
/// number.
#[derive(Debug, Default)]
pub(super) struct Published {
    queued: AtomicU64,
    in_flight: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    resent: AtomicU64,
    failed_closed: AtomicU64,
    failed_queue_full: AtomicU64,
    actions_received: AtomicU64,
    actions_acked: AtomicU64,
    reconnects: AtomicU64,
    events_written: AtomicU64,
    last_acked_write: AtomicU64,
    connected: AtomicBool,
    drained: AtomicBool,
    /// Nanoseconds plus one; 0 before the first round trip.
    pub(super) rtt: AtomicU64,
    /// [`ClientStats::oldest_queued`] as nanoseconds after [`base`] plus one; 0 for none.
    oldest: AtomicU64,
    pub(super) traffic: Arc<Traffic>,
    /// The answered events' durations not yet taken by the host (metrics only, see
    /// `SessionConfig::time_events`): added once per turn, taken in bulk.
    durations: Mutex<Vec<f64>>,
}

impl Published {
    pub(super) fn store(&self, s: &SessionStats) {
        let relaxed = Ordering::Relaxed;
        self.queued.store(s.queued, relaxed);
        self.in_flight.store(s.in_flight, relaxed);
        self.acknowledged.store(s.acknowledged, relaxed);
        self.rejected.store(s.rejected, relaxed);
        self.resent.store(s.resent, relaxed);
        self.failed_closed.store(s.failed_closed, relaxed);
        self.failed_queue_full.store(s.failed_queue_full, relaxed);
        self.actions_received.store(s.actions_received, relaxed);
        self.actions_acked.store(s.actions_acked, relaxed);
        self.reconnects.store(s.reconnects, relaxed);
        self.events_written.store(s.events_written, relaxed);
        self.last_acked_write.store(s.last_acked_write, relaxed);
        self.connected.store(s.connected, relaxed);
        self.drained.store(s.drained, relaxed);
    }

    /// Stores [`ClientStats::oldest_queued`].
    pub(super) fn store_oldest(&self, oldest: Option<Instant>) {
        let nanos = oldest.map_or(0, |at| {
            let nanos = at.saturating_duration_since(base()).as_nanos();
            u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
        });
        self.oldest.store(nanos, Ordering::Relaxed);
    }

    /// Adds a turn's durations (see [`Published::take_durations`]).
    pub(super) fn add_durations(&self, mut durations: Vec<f64>) {
        let mut kept = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_empty() {
            std::mem::swap(&mut *kept, &mut durations);
        } else {
            kept.append(&mut durations);
        }
    }

    /// The durations added since the last call, oldest first.
    pub(super) fn take_durations(&self) -> Vec<f64> {
        std::mem::take(&mut *self.durations.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn read(&self) -> ClientStats {
        let relaxed = Ordering::Relaxed;
        let rtt = self.rtt.load(relaxed);
        let oldest = self.oldest.load(relaxed);
        ClientStats {
            session: SessionStats {
                queued: self.queued.load(relaxed),
                in_flight: self.in_flight.load(relaxed),
                acknowledged: self.acknowledged.load(relaxed),
                rejected: self.rejected.load(relaxed),
                resent: self.resent.load(relaxed),
                failed_closed: self.failed_closed.load(relaxed),
                failed_queue_full: self.failed_queue_full.load(relaxed),
                actions_received: self.actions_received.load(relaxed),
                actions_acked: self.actions_acked.load(relaxed),
                reconnects: self.reconnects.load(relaxed),
                connected: self.connected.load(relaxed),
                drained: self.drained.load(relaxed),
                events_written: self.events_written.load(relaxed),
                last_acked_write: self.last_acked_write.load(relaxed),
            },
            bytes_sent: self.traffic.sent.load(relaxed),
            bytes_received: self.traffic.received.load(relaxed),
            rtt: rtt.checked_sub(1).map(Duration::from_nanos),
            oldest_queued: oldest
                .checked_sub(1)
                .map(|nanos| base() + Duration::from_nanos(nanos)),
        }
    }
}
