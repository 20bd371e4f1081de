//! The default of every option, in one table: the Rust core builds its options from these
//! ([`crate::client::ClientOptions::new`], [`crate::session::SessionConfig::new`],
//! [`crate::server::ServerOptions::default`]), the Node binding hands them to JavaScript
//! (`optionDefaults()`, read by `lib/client.js` and `lib/server.js`), and `index.d.ts` states
//! them as `@default`, which `__test__/defaults.test.js` checks against this table.
//!
//! The original's defaults, unless said otherwise.

use std::time::Duration;

/// The gateway's host (`host`).
pub const HOST: &str = "gateway.integromat.com";

/// The gateway's port (`port`), and the port the bundled server listens on (`Server`'s `port`).
pub const PORT: u16 = 7777;

/// Reconnect after a dropped connection (`autoReconnect`).
pub const AUTO_RECONNECT: bool = true;

/// Automatic reconnects without a WELCOME before giving up (`maxReconnectAttempts`); 0 is
/// unlimited.
pub const MAX_RECONNECT_ATTEMPTS: u32 = 0;

/// Events awaiting their acknowledgement at once (`maxInFlight`): the protocol's stop-and-wait.
pub const MAX_IN_FLIGHT: usize = 1;

/// Events waiting for their callback (`maxQueueSize`); 0 is unlimited. Not in the original:
/// generous, so a device offline for a while keeps this many events, then refuses more.
pub const MAX_QUEUE_SIZE: usize = 100_000;

/// The wait between a dropped connection and the next attempt (`reconnectDelay`). The longest
/// wait (`maxReconnectDelay`) defaults to this, which means no backoff.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(1000);

/// Bound on TCP + TLS + WELCOME (`connectTimeout`); `None` (0 in JavaScript) is none.
pub const CONNECT_TIMEOUT: Option<Duration> = Some(Duration::from_millis(30_000));

/// Bound on waiting for an event's acknowledgement (`ackTimeout`): none, as the original.
pub const ACK_TIMEOUT: Option<Duration> = None;

/// TCP keepalive idle time (`keepAlive`); `None` (0 in JavaScript) leaves the OS defaults.
pub const KEEP_ALIVE: Option<Duration> = Some(Duration::from_millis(15_000));

/// How long before the device certificate's end `certificateExpiring` is emitted
/// (`certificateWarning`): 30 days. Not in the original.
pub const CERTIFICATE_WARNING: Duration = Duration::from_millis(30 * 24 * 60 * 60 * 1000);

/// The bundled server echoes every accepted event back as an action (`Server`'s `echo`).
pub const ECHO: bool = true;

/// How long the bundled server waits for a connected peer's HELLO (`Server`'s `helloTimeout`);
/// `None` (0 in JavaScript) is for ever. Not in the original, whose server waited for ever.
pub const HELLO_TIMEOUT: Option<Duration> = Some(Duration::from_millis(10_000));

/// How long the bundled server lets a welcomed peer send nothing (`Server`'s `idleTimeout`):
/// for ever, since the protocol has no heartbeat and a quiet device sends nothing at all.
pub const IDLE_TIMEOUT: Option<Duration> = None;

/// When the durable outbox syncs its writes (`outbox.sync`): group commit every
/// [`OUTBOX_SYNC_INTERVAL`]. Not in the original (which has no outbox).
pub const OUTBOX_SYNC: &str = "interval";

/// The group commit's interval (`outbox.syncInterval`).
pub const OUTBOX_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Most bytes of events the outbox keeps (`outbox.maxBytes`); events beyond it are refused with
/// `EQUEUEFULL`.
pub const OUTBOX_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Size of an outbox segment file: a typical SD card erase block.
pub const OUTBOX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Milliseconds as JavaScript options give them: 0 for none.
pub fn millis(duration: Option<Duration>) -> u32 {
    duration.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_milliseconds_that_javascript_can_take() {
        assert_eq!(millis(Some(RECONNECT_DELAY)), 1000);
        assert_eq!(millis(CONNECT_TIMEOUT), 30_000);
        assert_eq!(millis(ACK_TIMEOUT), 0);
        assert_eq!(millis(KEEP_ALIVE), 15_000);
        assert_eq!(millis(HELLO_TIMEOUT), 10_000);
        assert_eq!(millis(IDLE_TIMEOUT), 0);
        assert_eq!(millis(Some(CERTIFICATE_WARNING)), 2_592_000_000);
        for d in [
            Some(RECONNECT_DELAY),
            CONNECT_TIMEOUT,
            KEEP_ALIVE,
            HELLO_TIMEOUT,
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(d.subsec_nanos() % 1_000_000, 0);
            assert_ne!(d, Duration::ZERO, "0 means none in JavaScript");
        }
    }
}
