//! Panics are caught before they reach Node (and become `EINTERNAL` errors), but Rust's
//! default hook would still print each one to stderr. This package prints nothing unless the
//! application enabled its logging, which it may do at any time through the `debug` package,
//! so the hook of this addon keeps the last few reports instead of printing them, and the
//! JavaScript side logs them under `imt:gateway:native` when it hears of the failure.

use std::collections::VecDeque;
use std::sync::Mutex;

use napi_derive::napi;

/// Reports kept until JavaScript takes them: a few, since each panic stops a client.
const KEPT: usize = 16;

static REPORTS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The reports of the panics caught since the last call, oldest first.
// napi registers exports only outside `cfg(test)`, so a test build sees no caller.
#[cfg_attr(test, allow(dead_code))]
#[napi(catch_unwind)]
pub fn take_panic_reports() -> Vec<String> {
    let mut reports = REPORTS.lock().unwrap_or_else(|p| p.into_inner());
    reports.drain(..).collect()
}

#[napi_derive::module_init]
fn install_panic_hook() {
    // Read while the addon loads, as its documentation says.
    super::test_hooks();
    std::panic::set_hook(Box::new(|info| {
        // try_lock: a panic while the list is held (never expected) is not worth a deadlock.
        if let Ok(mut reports) = REPORTS.try_lock() {
            if reports.len() == KEPT {
                reports.pop_front();
            }
            reports.push_back(info.to_string());
        }
    }));
}
