//! See `fuzz/src/roundtrip.rs` for what this target checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = imt_gateway_fuzz::roundtrip::run(data) {
        panic!("{broken}");
    }
});
