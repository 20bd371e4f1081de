//! The option defaults of [`crate::defaults`] as JavaScript reads them: `lib/client.js` and
//! `lib/server.js` fill in what the caller left out from this table, so no default is written
//! twice, and `__test__/defaults.test.js` holds `index.d.ts`'s `@default`s to it.

use napi_derive::napi;

use crate::defaults;

/// The defaults of `new Client(options)`; durations in milliseconds, 0 for none.
/// `maxReconnectDelay` has none of its own: it is `reconnectDelay`, so no backoff.
#[napi(object)]
pub struct ClientDefaults {
    pub host: String,
    pub port: u32,
    pub auto_reconnect: bool,
    pub max_reconnect_attempts: u32,
    pub max_in_flight: u32,
    pub max_queue_size: u32,
    pub reconnect_delay: u32,
    pub connect_timeout: u32,
    pub ack_timeout: u32,
    pub keep_alive: u32,
    pub certificate_warning: u32,
}

/// The defaults of `new Server(options)`.
#[napi(object)]
pub struct ServerDefaults {
    pub port: u32,
    pub echo: bool,
    pub hello_timeout: u32,
    pub idle_timeout: u32,
}

/// The defaults of `new Client({ outbox })`.
#[napi(object)]
pub struct OutboxDefaults {
    pub sync: String,
    pub sync_interval: u32,
    pub max_bytes: f64,
}

#[napi(object)]
pub struct OptionDefaults {
    pub client: ClientDefaults,
    pub server: ServerDefaults,
    pub outbox: OutboxDefaults,
}

/// Every option's default, from the one table in [`crate::defaults`].
// napi registers exports only outside `cfg(test)`, so a test build sees no caller.
#[cfg_attr(test, allow(dead_code))]
#[napi(catch_unwind)]
pub fn option_defaults() -> OptionDefaults {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    OptionDefaults {
        client: ClientDefaults {
            host: defaults::HOST.to_owned(),
            port: u32::from(defaults::PORT),
            auto_reconnect: defaults::AUTO_RECONNECT,
            max_reconnect_attempts: defaults::MAX_RECONNECT_ATTEMPTS,
            max_in_flight: count(defaults::MAX_IN_FLIGHT),
            max_queue_size: count(defaults::MAX_QUEUE_SIZE),
            reconnect_delay: defaults::millis(Some(defaults::RECONNECT_DELAY)),
            connect_timeout: defaults::millis(defaults::CONNECT_TIMEOUT),
            ack_timeout: defaults::millis(defaults::ACK_TIMEOUT),
            keep_alive: defaults::millis(defaults::KEEP_ALIVE),
            certificate_warning: defaults::millis(Some(defaults::CERTIFICATE_WARNING)),
        },
        server: ServerDefaults {
            port: u32::from(defaults::PORT),
            echo: defaults::ECHO,
            hello_timeout: defaults::millis(defaults::HELLO_TIMEOUT),
            idle_timeout: defaults::millis(defaults::IDLE_TIMEOUT),
        },
        outbox: OutboxDefaults {
            sync: defaults::OUTBOX_SYNC.to_owned(),
            sync_interval: defaults::millis(Some(defaults::OUTBOX_SYNC_INTERVAL)),
            max_bytes: defaults::OUTBOX_MAX_BYTES as f64,
        },
    }
}
