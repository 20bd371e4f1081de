//! The `outbox` option as the core takes it, and what opening the outbox found (the
//! `restored` event), as JavaScript gets it.

use napi_derive::napi;

use super::millis;
use crate::client::{EventStore, Restored};
use crate::errors::ErrorCode;
use crate::node::value::JsValue;
use crate::node::{thrown, Thrown};
use crate::outbox::{DamageKind, OutboxError, OutboxOptions, SyncMode};

/// `options.outbox` (see index.d.ts, `OutboxOptions`).
#[napi(object)]
pub struct NativeOutboxOptions {
    pub path: String,
    /// `'always'`, `'interval'` or `'none'`.
    pub sync: String,
    /// Milliseconds, for `'interval'`.
    pub sync_interval: u32,
    pub max_bytes: f64,
    /// Segment file size (not documented: for tests).
    pub segment_bytes: Option<f64>,
}

/// A torn or corrupt place the outbox found when it was opened.
#[napi(object, object_from_js = false)]
pub struct NativeDamage {
    pub segment: String,
    pub offset: f64,
    pub bytes: f64,
    /// `'torn'`, `'checksum'`, `'invalid'` or `'header'`.
    pub kind: String,
    /// Cut off (the newest segment's tail), rather than left in an older segment.
    pub truncated: bool,
}

/// What opening the outbox found, as the `restored` event reports it.
#[napi(object, object_from_js = false)]
pub struct NativeRestored {
    /// The outbox's directory.
    pub path: String,
    /// Events an earlier client left, queued to be sent first.
    pub events: u32,
    /// Their ids, in the order they will be sent.
    pub ids: Vec<JsValue>,
    pub damage: Vec<NativeDamage>,
    /// Bytes cut off torn tails.
    pub truncated_bytes: f64,
}

pub(super) fn outbox_options(
    options: &NativeOutboxOptions,
    max_queue_size: u32,
) -> std::result::Result<OutboxOptions, Thrown> {
    let sync = match options.sync.as_str() {
        "always" => SyncMode::Always,
        "interval" => SyncMode::Interval(millis(options.sync_interval.max(1))),
        "none" => SyncMode::None,
        other => {
            return Err(thrown(
                ErrorCode::InvalidValue,
                format!("Unknown outbox sync mode {other:?}."),
            ))
        }
    };
    let defaults = OutboxOptions::default();
    let bytes = |n: f64| (n.is_finite() && n >= 1.0).then_some(n as u64);
    Ok(OutboxOptions {
        sync,
        max_bytes: bytes(options.max_bytes).unwrap_or(defaults.max_bytes),
        max_records: if max_queue_size == 0 {
            usize::MAX
        } else {
            max_queue_size as usize
        },
        segment_bytes: options
            .segment_bytes
            .and_then(bytes)
            .unwrap_or(defaults.segment_bytes),
    })
}

pub(super) fn outbox_error(err: OutboxError) -> Thrown {
    thrown(err.code().clone(), err.to_string())
}

pub(super) fn restored_info(store: &EventStore, restored: &Restored) -> NativeRestored {
    NativeRestored {
        path: store.dir().display().to_string(),
        events: restored.events.len() as u32,
        ids: restored
            .events
            .iter()
            .map(|e| JsValue(e.id.clone()))
            .collect(),
        damage: restored
            .damage
            .iter()
            .map(|d| NativeDamage {
                segment: d.segment.display().to_string(),
                offset: d.offset as f64,
                bytes: d.bytes as f64,
                kind: match d.kind {
                    DamageKind::Torn => "torn",
                    DamageKind::Checksum => "checksum",
                    DamageKind::Invalid => "invalid",
                    DamageKind::BadHeader => "header",
                }
                .to_owned(),
                truncated: d.truncated,
            })
            .collect(),
        truncated_bytes: restored.truncated as f64,
    }
}
