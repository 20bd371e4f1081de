//! Target `outbox`: a directory of segment files written by a real [`Outbox`] (events with
//! known ids and frames, some acknowledged), then damaged as the input says (truncated,
//! bytes flipped or overwritten, files removed, copied, or added with any contents, valid
//! headers and records among them), then recovered by [`Outbox::open`], which must not
//! panic, and must yield only events that were written: each one either appended by the
//! first outbox (same sequence, id and frame) or present, record for record with a matching
//! CRC-32, in one of the damaged files. The recovered outbox must then go on working: an
//! event appended after recovery is found, after the recovered ones, by the next open.
//!
//! The record format is written here again from `src/outbox/format.rs`'s description, as
//! an independent check of what a valid record is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use imt_gateway::outbox::{Outbox, OutboxOptions, Record, SyncMode};

use super::input::Input;

const MAGIC: &[u8; 8] = b"IMTOBX01";
const KIND_EVENT: u8 = 1;
const KIND_ACK: u8 = 2;

fn header(segment: u64, first_seq: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    let sum = crc32fast::hash(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn record(kind: u8, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; 4];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    let sum = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&sum.to_le_bytes());
    out
}

fn event_record(seq: u64, id: &[u8], frame: &[u8]) -> Vec<u8> {
    let mut body = (id.len() as u16).to_le_bytes().to_vec();
    body.extend_from_slice(id);
    body.extend_from_slice(frame);
    record(KIND_EVENT, seq, &body)
}

/// A fresh directory of this process's own (tmpfs when there is one: syncs cost nothing).
fn scratch() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    base.join(format!("imt-fuzz-outbox-{}-{n}", std::process::id()))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.seg"))
}

/// What [`damage`] did beyond what a disk does to files: records made up, and records copied
/// whole where no writer puts them.
#[derive(Default)]
struct MadeUp {
    /// Two valid records of one number with different contents (a compaction's copy is the
    /// same record): which one wins may change when a compaction moves one.
    seqs: BTreeSet<u64>,
    /// A copy of an event after its tombstone (a compaction only copies pending events, so
    /// its copies come before their tombstones) brings the event back once the tombstone's
    /// segment is compacted away.
    copied: bool,
}

/// Damages the directory as the input says.
fn damage(dir: &Path, input: &mut Input, written: &BTreeMap<u64, (Vec<u8>, Vec<u8>)>) -> MadeUp {
    let mut made_up = MadeUp::default();
    let ops = input.byte() % 8;
    for _ in 0..ops {
        let files = segments(dir);
        let pick = |input: &mut Input| files.get(input.below(files.len())).cloned();
        match input.byte() % 9 {
            0 => {
                if let Some(path) = pick(input) {
                    let mut bytes = fs::read(&path).unwrap_or_default();
                    bytes.truncate(input.below(bytes.len() + 1));
                    let _ = fs::write(&path, bytes);
                }
            }
            1 => {
                if let Some(path) = pick(input) {
                    let mut bytes = fs::read(&path).unwrap_or_default();
                    if !bytes.is_empty() {
                        let at = input.below(bytes.len());
                        bytes[at] ^= input.byte() | 1;
                        let _ = fs::write(&path, bytes);
                    }
                }
            }
            2 => {
                if let Some(path) = pick(input) {
                    let mut bytes = fs::read(&path).unwrap_or_default();
                    let at = input.below(bytes.len() + 1);
                    let n = input.below(32);
                    let new = input.bytes(n);
                    let end = (at + new.len()).min(bytes.len());
                    bytes.splice(at..end, new.iter().copied());
                    let _ = fs::write(&path, bytes);
                }
            }
            3 => {
                if let Some(path) = pick(input) {
                    let _ = fs::remove_file(path);
                }
            }
            4 => {
                // Bytes of one file (a record, say) appended to another: a copy, as an
                // interrupted compaction leaves, or a write gone to the wrong place.
                if let (Some(from), Some(to)) = (pick(input), pick(input)) {
                    made_up.copied = true;
                    let bytes = fs::read(&from).unwrap_or_default();
                    let start = input.below(bytes.len() + 1);
                    let end = start + input.below(bytes.len() - start + 1);
                    let mut target = fs::read(&to).unwrap_or_default();
                    target.extend_from_slice(&bytes[start..end]);
                    let _ = fs::write(&to, target);
                }
            }
            5 => {
                // Any bytes, under a segment's name.
                let number = u64::from(input.byte() % 16);
                let n = input.below(120);
                let _ = fs::write(segment_path(dir, number), input.bytes(n));
            }
            6 => {
                // A well-made segment nobody wrote: valid header and records, any numbers.
                let number = match input.byte() % 4 {
                    0 => input.u64(),
                    _ => u64::from(input.byte() % 16),
                };
                let mut bytes = header(number, input.u64() % 64);
                for _ in 0..input.below(4) {
                    let seq = match input.byte() % 4 {
                        0 => input.u64(),
                        _ => u64::from(input.byte() % 40),
                    };
                    made_up.seqs.insert(seq);
                    if input.bool() {
                        bytes.extend(record(KIND_ACK, seq, &[]));
                    } else {
                        let n = input.below(16);
                        let id = input.bytes(n).to_vec();
                        let n = input.below(16);
                        bytes.extend(event_record(seq, &id, input.bytes(n)));
                    }
                }
                let _ = fs::write(segment_path(dir, number), bytes);
            }
            7 => {
                // A record of a written event again, with its sequence number changed.
                if let (Some(path), Some((seq, (id, frame)))) =
                    (pick(input), written.iter().nth(input.below(written.len())))
                {
                    let seq = seq.wrapping_add(u64::from(input.byte()));
                    made_up.seqs.insert(seq);
                    made_up.copied = true;
                    let mut bytes = fs::read(&path).unwrap_or_default();
                    bytes.extend(event_record(seq, id, frame));
                    let _ = fs::write(&path, bytes);
                }
            }
            _ => {
                // Zeros at the end (a preallocated or extended file).
                if let Some(path) = pick(input) {
                    let mut bytes = fs::read(&path).unwrap_or_default();
                    bytes.resize(bytes.len() + input.below(64), 0);
                    let _ = fs::write(&path, bytes);
                }
            }
        }
    }
    made_up
}

fn show(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let id = String::from_utf8_lossy(&r.id);
            format!("{} {id:?} ({} bytes)", r.seq, r.frame.len())
        })
        .collect()
}

pub fn run(data: &[u8]) -> Result<(), String> {
    let mut input = Input::new(data);
    let dir = Scratch(scratch());
    let _ = fs::remove_dir_all(&dir.0);
    let options = OutboxOptions {
        sync: SyncMode::None,
        max_bytes: 1 << 20,
        max_records: 1000,
        segment_bytes: 64 + input.below(512) as u64,
    };

    // What a working outbox leaves.
    let (mut outbox, _) =
        Outbox::open(&dir.0, options.clone()).map_err(|e| format!("first open: {e}"))?;
    let mut written = BTreeMap::new();
    for i in 0..input.below(24) {
        let id = format!("event-{i}").into_bytes();
        let frame = vec![i as u8; input.below(200)];
        let seq = outbox
            .append(&id, &frame)
            .map_err(|e| format!("append: {e}"))?;
        written.insert(seq, (id, frame));
        if input.byte().is_multiple_of(3) {
            let seqs: Vec<u64> = outbox.pending_seqs().collect();
            if let Some(&seq) = seqs.get(input.below(seqs.len())) {
                outbox.ack(seq);
            }
        }
    }
    if input.bool() {
        outbox.compact().map_err(|e| format!("compact: {e}"))?;
    }
    outbox.close().map_err(|e| format!("close: {e}"))?;

    let made_up = damage(&dir.0, &mut input, &written);
    let files: Vec<Vec<u8>> = segments(&dir.0)
        .iter()
        .map(|p| fs::read(p).unwrap_or_default())
        .collect();

    // Recovery.
    let Ok((mut outbox, recovery)) = Outbox::open(&dir.0, options.clone()) else {
        // Refusing the directory with an error is allowed (no panic, nothing made up).
        return Ok(());
    };
    let mut last = None;
    for record in &recovery.pending {
        if last.is_some_and(|last| last >= record.seq) {
            return Err(format!("pending out of order at seq {}", record.seq));
        }
        last = Some(record.seq);
        let known = written
            .get(&record.seq)
            .is_some_and(|(id, frame)| *id == record.id && *frame == record.frame);
        if !known {
            let bytes = event_record(record.seq, &record.id, &record.frame);
            let found = files
                .iter()
                .any(|file| file.windows(bytes.len()).any(|w| w == bytes));
            if !found {
                return Err(format!(
                    "recovered seq {} (id {:?}, {} frame bytes), which was never written",
                    record.seq,
                    String::from_utf8_lossy(&record.id),
                    record.frame.len()
                ));
            }
        }
    }
    if outbox.len() != recovery.pending.len() {
        return Err(format!(
            "{} pending, {} recovered",
            outbox.len(),
            recovery.pending.len()
        ));
    }
    if last.is_some_and(|last| outbox.next_seq() <= last) {
        return Err(format!(
            "next seq {} reuses a recovered one",
            outbox.next_seq()
        ));
    }

    // And it goes on: an event appended now is found next time, after the recovered ones.
    let seq = outbox
        .append(b"after", b"recovery")
        .map_err(|e| format!("append after recovery: {e}"))?;
    outbox
        .close()
        .map_err(|e| format!("close after recovery: {e}"))?;
    let (outbox, again) = Outbox::open(&dir.0, options).map_err(|e| format!("reopen: {e}"))?;
    // Every event recovered is still there, the same (but for a made-up number), and the
    // new one last; others only where records were made up (a tombstone made up in a segment
    // that compaction removed) or copied after their tombstones.
    let mut want = recovery.pending.clone();
    want.push(Record {
        seq,
        id: b"after".to_vec(),
        frame: b"recovery".to_vec(),
    });
    let mut found = again.pending.iter().peekable();
    for record in &want {
        while let Some(extra) = found.next_if(|r| r.seq < record.seq) {
            let known = written
                .get(&extra.seq)
                .is_some_and(|(id, frame)| *id == extra.id && *frame == extra.frame);
            if !(made_up.seqs.contains(&extra.seq) || (made_up.copied && known)) {
                return Err(format!(
                    "after recovery and one append, reopening finds {:?} too: {:?}, not {:?}",
                    show(std::slice::from_ref(extra)),
                    show(&again.pending),
                    show(&want)
                ));
            }
        }
        let same = found.next().is_some_and(|r| {
            r.seq == record.seq
                && (made_up.seqs.contains(&r.seq) || (r.id == record.id && r.frame == record.frame))
        });
        if !same {
            return Err(format!(
                "after recovery and one append, reopening lost or changed {:?}: {:?}, not {:?}",
                show(std::slice::from_ref(record)),
                show(&again.pending),
                show(&want)
            ));
        }
    }
    if found.next().is_some() {
        return Err(format!(
            "after recovery and one append, reopening finds {:?}, after the new event",
            show(&again.pending)
        ));
    }
    drop(outbox);
    Ok(())
}
