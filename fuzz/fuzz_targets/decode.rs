//! Untrusted bytes from a peer through every decoder of the wire protocol: as a stream of
//! frames, each frame as a message, and the whole input as one MessagePack body. The work is
//! `imt_gateway::protocol::fuzz_decode`, shared with the seed-corpus replay in `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = imt_gateway::protocol::fuzz_decode(data) {
        panic!("{broken}");
    }
});
