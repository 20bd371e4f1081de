//! Panics are caught before they reach Node (and become `EINTERNAL` errors), but Rust's
//! default hook would still print each one to stderr. This package prints nothing unless the
//! `DEBUG` environment variable enables it, so the hook of this addon (its own, not the
//! host's or another addon's) reports only when index.js, which reads DEBUG for every
//! namespace, found `imt:gateway:native` enabled.

use std::sync::atomic::{AtomicBool, Ordering};

use napi_derive::napi;

const NAMESPACE: &str = "imt:gateway:native";

static REPORT: AtomicBool = AtomicBool::new(false);

/// Whether a caught panic is reported on stderr.
// napi registers exports only outside `cfg(test)`, so a test build sees no caller.
#[cfg_attr(test, allow(dead_code))]
#[napi(catch_unwind)]
pub fn set_panic_reports(on: bool) {
    REPORT.store(on, Ordering::Relaxed);
}

#[napi_derive::module_init]
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if REPORT.load(Ordering::Relaxed) {
            eprintln!("{NAMESPACE} {info}");
        }
    }));
}
