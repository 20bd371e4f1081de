//! See `fuzz/src/frames.rs` for what this target checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = imt_gateway_fuzz::frames::run(data) {
        panic!("{broken}");
    }
});
