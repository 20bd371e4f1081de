//! `client.stats()` and `client.outboxStats()` as JavaScript gets them.

use napi_derive::napi;

use crate::client::{ClientStats, StoreStats};

/// The outbox's counters, which `client.stats()` adds when the client has one.
#[napi(object, object_from_js = false)]
pub struct NativeOutboxStats {
    pub outbox_pending: f64,
    pub outbox_bytes: f64,
    pub outbox_restored: f64,
    pub outbox_damage: f64,
    pub outbox_truncated: f64,
    pub outbox_syncs: f64,
    pub outbox_refused: f64,
}

/// `client.stats()` as JavaScript gets it: a plain object, counts as numbers (exact up to
/// 2^53), `rtt` in milliseconds or null. Each field is documented in index.d.ts
/// (`ClientStats`).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct NativeStats {
    pub queued: f64,
    pub in_flight: f64,
    pub acknowledged: f64,
    pub rejected: f64,
    pub resent: f64,
    pub failed_closed: f64,
    pub failed_queue_full: f64,
    pub actions_received: f64,
    pub actions_acked: f64,
    pub reconnects: f64,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub connected: bool,
    pub drained: bool,
    pub rtt: Option<f64>,
}

impl NativeStats {
    /// The client's counters (see `ClientHandle::stats`).
    pub(super) fn of(stats: &ClientStats) -> NativeStats {
        let s = &stats.session;
        NativeStats {
            queued: s.queued as f64,
            in_flight: s.in_flight as f64,
            acknowledged: s.acknowledged as f64,
            rejected: s.rejected as f64,
            resent: s.resent as f64,
            failed_closed: s.failed_closed as f64,
            failed_queue_full: s.failed_queue_full as f64,
            actions_received: s.actions_received as f64,
            actions_acked: s.actions_acked as f64,
            reconnects: s.reconnects as f64,
            bytes_sent: stats.bytes_sent as f64,
            bytes_received: stats.bytes_received as f64,
            connected: s.connected,
            drained: s.drained,
            rtt: stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
        }
    }
}

impl NativeOutboxStats {
    /// The outbox's counters (see `EventStore::stats`).
    pub(super) fn of(s: &StoreStats) -> NativeOutboxStats {
        NativeOutboxStats {
            outbox_pending: s.pending as f64,
            outbox_bytes: s.bytes as f64,
            outbox_restored: s.restored as f64,
            outbox_damage: s.damage as f64,
            outbox_truncated: s.truncated as f64,
            outbox_syncs: s.syncs as f64,
            outbox_refused: s.refused as f64,
        }
    }
}

/// `client.health()`'s numbers, in one call: what JavaScript cannot know itself.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct NativeHealth {
    pub queued: f64,
    pub in_flight: f64,
    pub reconnects: f64,
    /// Ms since the oldest event not yet done was queued; 0 when none waits.
    pub oldest_queued_age: f64,
    /// The outbox's events and bytes; null without an outbox.
    pub outbox_events: Option<f64>,
    pub outbox_bytes: Option<f64>,
    /// The end of the device certificate's validity, ms since the epoch; null without TLS.
    pub certificate_expires_at: Option<f64>,
}

impl NativeHealth {
    pub(super) fn of(
        stats: &ClientStats,
        outbox: Option<&StoreStats>,
        certificate_expires_at: Option<f64>,
    ) -> NativeHealth {
        let s = &stats.session;
        NativeHealth {
            queued: s.queued as f64,
            in_flight: s.in_flight as f64,
            reconnects: s.reconnects as f64,
            oldest_queued_age: stats
                .oldest_queued
                .map_or(0.0, |at| at.elapsed().as_secs_f64() * 1000.0),
            outbox_events: outbox.map(|o| o.pending as f64),
            outbox_bytes: outbox.map(|o| o.bytes as f64),
            certificate_expires_at,
        }
    }
}
