//! Replays the fuzzers' seed corpora (`fuzz/corpus/<target>/`) through the very code the
//! cargo-fuzz targets run (`fuzz/src/`, included here), so that the inputs they start from,
//! and any finding saved among them, stay fixed on every `cargo test`. The `decode` corpus
//! is replayed by src/protocol/mod.rs.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8]) -> Result<(), String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(broken) = run(&data) {
            panic!("{}: {broken}", path.display());
        }
        count += 1;
    }
    assert!(count >= 3, "only {count} seeds in {}", dir.display());
}

#[test]
fn frames_corpus_replays_cleanly() {
    replay("frames", harness::frames::run);
}

#[test]
fn roundtrip_corpus_replays_cleanly() {
    replay("roundtrip", harness::roundtrip::run);
}

#[test]
fn outbox_corpus_replays_cleanly() {
    replay("outbox", harness::outbox::run);
}

#[test]
fn session_corpus_replays_cleanly() {
    replay("session", harness::session::run);
}
