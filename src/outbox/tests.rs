use std::fs::{self, OpenOptions};
use std::io;

use super::dir::{parse_segment_name, LOCK_FILE};
use super::format::HEADER_LEN;
use super::*;
use proptest::prelude::*;
use tempfile::TempDir;

fn opts(sync: SyncMode) -> OutboxOptions {
    OutboxOptions {
        sync,
        ..OutboxOptions::default()
    }
}

fn small(segment_bytes: u64) -> OutboxOptions {
    OutboxOptions {
        sync: SyncMode::None,
        segment_bytes,
        ..OutboxOptions::default()
    }
}

fn id(i: u64) -> Vec<u8> {
    format!("event-{i}").into_bytes()
}

fn frame(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn ids(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.id.clone()).collect()
}

#[test]
fn append_ack_reopen_keeps_order_ids_and_frames() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, recovery) = Outbox::open(dir.path(), opts(SyncMode::Always)).unwrap();
    assert!(recovery.pending.is_empty() && recovery.is_clean());
    let seqs: Vec<Seq> = (0..10)
        .map(|i| outbox.append(&id(i), &frame(i, 50)).unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(outbox.ack(seqs[0]));
    assert!(outbox.ack(seqs[5]));
    assert!(!outbox.ack(seqs[5]), "a second ack finds nothing");
    assert!(!outbox.ack(9999));
    assert_eq!(outbox.len(), 8);
    assert_eq!(
        outbox.stats().syncs,
        10,
        "one sync per append, none per ack"
    );
    let live = outbox.pending().unwrap();
    drop(outbox);

    let (outbox, recovery) = Outbox::open(dir.path(), opts(SyncMode::Always)).unwrap();
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
    assert_eq!(recovery.pending, live);
    let expected: Vec<u64> = vec![1, 2, 3, 4, 6, 7, 8, 9];
    assert_eq!(
        ids(&recovery.pending),
        expected.iter().map(|&i| id(i)).collect::<Vec<_>>()
    );
    for (record, &i) in recovery.pending.iter().zip(&expected) {
        assert_eq!(record.frame, frame(i, 50));
        assert_eq!(record.seq, seqs[i as usize]);
    }
    assert_eq!((recovery.events, recovery.acks), (10, 2));
    assert_eq!(outbox.next_seq(), seqs[9] + 1);
    assert_eq!(outbox.read(seqs[3]).unwrap().unwrap().id, id(3));
    assert_eq!(outbox.read(seqs[0]).unwrap(), None);
}

#[test]
fn tombstones_are_written_with_the_next_append_or_a_flush_in_one_write() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    let seqs: Vec<Seq> = (0..6)
        .map(|i| outbox.append(&id(i), &frame(i, 20)).unwrap())
        .collect();
    let written = outbox.stats().bytes_written;
    for &seq in &seqs[..2] {
        assert!(outbox.ack(seq));
    }
    assert_eq!(
        outbox.stats().bytes_written,
        written,
        "buffered, not written"
    );
    assert!(outbox.has_unwritten_acks());
    outbox.kill();
    // Killed before they were written: both acknowledged events come back, nothing is lost.
    let (mut outbox, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs
    );

    for &seq in &seqs[..2] {
        outbox.ack(seq);
    }
    let next = outbox.append(b"next", b"frame").unwrap();
    assert!(!outbox.has_unwritten_acks(), "written with the append");
    assert!(outbox.read(next).unwrap().is_some());
    outbox.ack(seqs[2]);
    outbox.ack(seqs[3]);
    let before = outbox.stats().bytes_written;
    outbox.flush().unwrap();
    assert_eq!(
        outbox.stats().bytes_written - before,
        2 * format::ACK_LEN as u64
    );
    outbox.ack(seqs[4]);
    outbox.kill();
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    let found: Vec<Seq> = recovery.pending.iter().map(|r| r.seq).collect();
    assert_eq!(
        found,
        vec![seqs[4], seqs[5], next],
        "only the unwritten one is back"
    );
    assert_eq!(recovery.acks, 4);
}

#[test]
fn a_sync_job_runs_without_the_outbox_and_is_redone_after_a_failure() {
    let dir = TempDir::new().unwrap();
    let interval = Duration::from_millis(100);
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::Interval(interval))).unwrap();
    let t0 = Instant::now();
    outbox.append(b"a", b"1").unwrap();
    let Some(job) = outbox.sync_job(t0).unwrap() else {
        panic!("a sync is due")
    };
    // Appends go on while the job runs; they wait for the next one.
    outbox.append(b"b", b"2").unwrap();
    job.run().unwrap();
    outbox.sync_done(true);
    assert!(outbox.needs_sync());
    assert!(outbox.sync_job(t0).unwrap().is_none());
    assert_eq!(outbox.poll_timeout(), Some(t0 + interval));
    let Some(_) = outbox.sync_job(t0 + interval).unwrap() else {
        panic!("a sync is due")
    };
    assert!(!outbox.needs_sync());
    assert_eq!(outbox.poll_timeout(), None, "nothing waits");
    outbox.sync_done(false);
    assert!(
        outbox.needs_sync(),
        "a failed job leaves its writes to sync"
    );
    assert_eq!(
        outbox.poll_timeout(),
        Some(t0 + 2 * interval),
        "tried again an interval after the failed one"
    );
    assert_eq!(outbox.stats().syncs, 2);
}

#[test]
fn sequence_numbers_are_never_reused_even_when_everything_was_acknowledged() {
    let dir = TempDir::new().unwrap();
    let options = small(256);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    let mut last = 0;
    for i in 0..40 {
        last = outbox.append(&id(i), &frame(i, 30)).unwrap();
        outbox.ack(last);
    }
    assert!(outbox.stats().segments_deleted > 0);
    drop(outbox);
    let (mut outbox, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert!(recovery.pending.is_empty());
    assert!(outbox.append(b"x", b"y").unwrap() > last);
}

#[test]
fn empty_ids_and_frames_round_trip() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    outbox.append(b"", b"").unwrap();
    outbox.append(&[0xff; 65_535], b"f").unwrap();
    let err = outbox.append(&vec![1; 65_536], b"f").unwrap_err();
    assert_eq!(err.code().code(), "EOUTBOX");
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(recovery.pending.len(), 2);
    assert_eq!(recovery.pending[1].id.len(), 65_535);
}

/// Cuts the newest segment at every byte offset of its last record, as a power cut mid-write
/// would: every record before it is kept, the partial one is cut off and reported.
#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    for i in 0..5 {
        outbox.append(&id(i), &frame(i, 40)).unwrap();
    }
    let before_last = outbox.disk_bytes();
    outbox.append(&id(5), &frame(5, 40)).unwrap();
    drop(outbox);
    let file = seg_files(dir.path()).pop().unwrap();
    let full = fs::read(&file).unwrap();
    assert_eq!(
        full.len() as u64,
        before_last + (EVENT_OVERHEAD + 7 + 40) as u64
    );
    for cut in before_last as usize..full.len() {
        fs::write(&file, &full[..cut]).unwrap();
        let (outbox, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
        assert_eq!(
            ids(&recovery.pending),
            (0..5).map(id).collect::<Vec<_>>(),
            "cut {cut}"
        );
        if cut == before_last as usize {
            assert!(recovery.is_clean());
        } else {
            assert_eq!(recovery.damage.len(), 1, "cut {cut}");
            let damage = &recovery.damage[0];
            assert_eq!(damage.offset, before_last);
            assert_eq!(damage.bytes, (cut as u64) - before_last);
            assert_eq!(damage.kind, DamageKind::Torn);
            assert!(damage.truncated);
            assert_eq!(recovery.truncated_bytes(), damage.bytes);
        }
        drop(outbox);
        assert_eq!(
            fs::metadata(&file).unwrap().len(),
            before_last,
            "truncated back"
        );
    }
    // And appending after a cut goes on cleanly.
    fs::write(&file, &full[..full.len() - 3]).unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    let seq = outbox.append(b"after", b"cut").unwrap();
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(recovery.pending.len(), 6);
    assert_eq!(recovery.pending[5].seq, seq);
    assert_eq!(recovery.pending[5].id, b"after");
}

#[test]
fn zeros_after_the_last_record_are_the_end_of_the_log_not_damage() {
    // A preallocated segment left by a killed process ends in zeros, and some file systems
    // extend a file with zeros when a power cut interrupts a write.
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    outbox.append(b"a", b"1").unwrap();
    drop(outbox);
    let file = seg_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let good = bytes.len() as u64;
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&file, &bytes).unwrap();
    let (mut outbox, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(recovery.pending.len(), 1);
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
    let seq = outbox.append(b"b", b"2").unwrap();
    assert_eq!(
        outbox.index[&seq].offset, good,
        "appending goes on at the end of the log"
    );
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(ids(&recovery.pending), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        good + (EVENT_OVERHEAD + 2) as u64,
        "closed: cut back to its records"
    );
}

#[test]
fn a_killed_process_leaves_a_preallocated_segment_that_reads_back_whole() {
    let dir = TempDir::new().unwrap();
    let options = small(64 * 1024);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    let seqs: Vec<Seq> = (0..200)
        .map(|i| outbox.append(&id(i), &frame(i, 100)).unwrap())
        .collect();
    #[cfg(target_os = "linux")]
    let mapped = outbox.is_mapped();
    outbox.kill();
    let files = seg_files(dir.path());
    #[cfg(target_os = "linux")]
    if mapped {
        // The last segment is still at its preallocated size; the others were cut back.
        let last = fs::metadata(files.last().unwrap()).unwrap().len();
        assert_eq!(last, options.segment_bytes);
    }
    let (mut outbox, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs
    );
    assert_eq!(recovery.pending[199].frame, frame(199, 100));
    let next = outbox.append(b"next", b"x").unwrap();
    assert!(next > seqs[199]);
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(recovery.pending.len(), 201);
}

#[test]
fn corrupt_checksum_in_the_newest_segment_cuts_from_there() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    let mut ends = vec![outbox.disk_bytes()];
    for i in 0..6 {
        outbox.append(&id(i), &frame(i, 20)).unwrap();
        ends.push(outbox.disk_bytes());
    }
    drop(outbox);
    let file = seg_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[ends[3] as usize + 25] ^= 0x40; // inside record 3's frame
    fs::write(&file, &bytes).unwrap();
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(ids(&recovery.pending), (0..3).map(id).collect::<Vec<_>>());
    assert_eq!(recovery.damage.len(), 1);
    assert_eq!(recovery.damage[0].kind, DamageKind::Checksum);
    assert_eq!(recovery.damage[0].offset, ends[3]);
    assert_eq!(recovery.damage[0].bytes, ends[6] - ends[3]);
    assert_eq!(fs::metadata(&file).unwrap().len(), ends[3]);
}

#[test]
fn corrupt_record_in_an_older_segment_loses_only_the_rest_of_that_segment() {
    let dir = TempDir::new().unwrap();
    let options = small(400);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    let mut places = Vec::new();
    for i in 0..20 {
        let seq = outbox.append(&id(i), &frame(i, 40)).unwrap();
        places.push(outbox.index[&seq]);
    }
    drop(outbox);
    let files = seg_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // Damage the second record of the first segment.
    let victim = places.iter().position(|l| l.segment == 1).unwrap() + 1;
    assert_eq!(places[victim].segment, 1);
    let mut bytes = fs::read(&files[0]).unwrap();
    let first_len = bytes.len();
    bytes[places[victim].offset as usize + 20] ^= 1;
    fs::write(&files[0], &bytes).unwrap();

    let (mut outbox, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
    let lost: Vec<usize> = (0..20)
        .filter(|&i| places[i].segment == 1 && i >= victim)
        .collect();
    let kept: Vec<Vec<u8>> = (0..20u64)
        .filter(|i| !lost.contains(&(*i as usize)))
        .map(id)
        .collect();
    assert_eq!(ids(&recovery.pending), kept);
    assert_eq!(recovery.damage.len(), 1);
    let damage = &recovery.damage[0];
    assert_eq!(
        (damage.kind, damage.truncated),
        (DamageKind::Checksum, false)
    );
    assert_eq!(damage.offset, places[victim].offset);
    assert_eq!(damage.bytes, first_len as u64 - places[victim].offset);
    assert_eq!(
        fs::metadata(&files[0]).unwrap().len(),
        first_len as u64,
        "left as it is"
    );
    // It is reported again until compaction removes the segment.
    let first = recovery.pending[0].seq;
    outbox.ack(first);
    assert!(
        !files[0].exists(),
        "the damaged segment went with its last pending event"
    );
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(recovery.pending.len(), kept.len() - 1);
}

#[test]
fn newest_segment_with_a_torn_header_is_dropped() {
    let dir = TempDir::new().unwrap();
    let options = small(300);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    for i in 0..5 {
        outbox.append(&id(i), &frame(i, 40)).unwrap();
    }
    drop(outbox);
    let files = seg_files(dir.path());
    let last = files.last().unwrap();
    let number = parse_segment_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
    let torn = dir.path().join(segment_name(number + 1));
    fs::write(&torn, &format::encode_header(number + 1, 99)[..10]).unwrap();
    let (mut outbox, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
    assert_eq!(recovery.pending.len(), 5);
    assert_eq!(recovery.damage.len(), 1);
    assert_eq!(recovery.damage[0].kind, DamageKind::Torn);
    assert_eq!(recovery.damage[0].bytes, 10);
    outbox.append(b"new", b"x").unwrap();
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(recovery.pending.len(), 6);
}

#[test]
fn appending_never_resumes_after_damage_left_in_place() {
    // An older segment with damage in it becomes the last one when the newest, whose header
    // was torn, is dropped: new records go to a new segment, not after the damage.
    let dir = TempDir::new().unwrap();
    let options = small(400);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    for i in 0..8 {
        outbox.append(&id(i), &frame(i, 40)).unwrap();
    }
    drop(outbox);
    let files = seg_files(dir.path());
    assert_eq!(files.len(), 2);
    let mut bytes = fs::read(&files[0]).unwrap();
    let len = bytes.len();
    bytes[len - 5] ^= 1; // the last record of the first segment
    fs::write(&files[0], &bytes).unwrap();
    fs::write(&files[1], &fs::read(&files[1]).unwrap()[..10]).unwrap();
    let (mut outbox, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
    assert_eq!(recovery.damage.len(), 2);
    let kept = recovery.pending.len();
    let seq = outbox.append(b"new", b"x").unwrap();
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert_eq!(recovery.damage.len(), 1, "{:?}", recovery.damage);
    assert!(!recovery.damage[0].truncated);
    assert_eq!(recovery.pending.len(), kept + 1);
    assert_eq!(recovery.pending.last().unwrap().seq, seq);
    assert_eq!(
        fs::read(&files[0]).unwrap(),
        bytes,
        "the damaged segment is untouched"
    );
}

#[test]
fn a_newest_segment_with_a_bad_header_but_data_is_left_in_place() {
    let dir = TempDir::new().unwrap();
    let options = small(300);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    for i in 0..5 {
        outbox.append(&id(i), &frame(i, 40)).unwrap();
    }
    drop(outbox);
    let last = seg_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&last, &bytes).unwrap();
    let (mut outbox, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
    assert_eq!(recovery.damage.len(), 1);
    let damage = &recovery.damage[0];
    assert_eq!(
        (damage.kind, damage.truncated),
        (DamageKind::BadHeader, false)
    );
    assert_eq!(fs::read(&last).unwrap(), bytes, "left as it is");
    let kept = recovery.pending.len();
    outbox.append(b"new", b"x").unwrap();
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert_eq!(recovery.pending.len(), kept + 1);
}

/// A child process forked by another thread holds a copy of the lock's descriptor until it
/// executes its program: an outbox closed and opened again meanwhile must not be refused as
/// "open elsewhere". Here the child holds the copy for 100 ms and never executes anything.
#[cfg(unix)]
#[test]
fn a_lock_held_only_by_a_forked_child_for_a_moment_does_not_refuse_the_next_opener() {
    let dir = TempDir::new().unwrap();
    let (outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    // SAFETY: the child only sleeps (nanosleep) and leaves with `_exit`, both async-signal-safe,
    // so it touches no lock or allocator state the fork may have copied mid-use.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: as above; `pause` is a valid timespec on this stack, which nothing else
        // touches: the child runs no JavaScript and no other thread (fork copies only this
        // one), and no other program can reach its memory.
        unsafe {
            libc::nanosleep(&pause, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork failed");
    drop(outbox);
    let reopened = Outbox::open(dir.path(), opts(SyncMode::None));
    let mut status = 0;
    // SAFETY: waits for the child made above; `status` is a local.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(reopened.is_ok(), "{:?}", reopened.err());
}

#[test]
fn a_second_opener_in_the_same_process_is_refused_until_the_first_closes() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    outbox.append(b"a", b"b").unwrap();
    let err = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap_err();
    assert_eq!(err.code(), &ErrorCode::OutboxLocked);
    assert_eq!(err.code().code(), "EOUTBOXLOCKED");
    assert!(err.to_string().contains("open elsewhere"), "{err}");
    outbox.close().unwrap();
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(recovery.pending.len(), 1);
}

#[test]
fn bounds_refuse_with_equeuefull_and_lose_nothing() {
    let dir = TempDir::new().unwrap();
    let options = OutboxOptions {
        sync: SyncMode::None,
        max_records: 3,
        max_bytes: 1000,
        segment_bytes: 4096,
    };
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    let a = outbox.append(b"a", &[1; 10]).unwrap();
    outbox.append(b"b", &[2; 10]).unwrap();
    outbox.append(b"c", &[3; 10]).unwrap();
    let err = outbox.append(b"d", &[4; 10]).unwrap_err();
    assert_eq!(err.code(), &ErrorCode::QueueFull);
    assert_eq!(err.code().code(), "EQUEUEFULL");
    outbox.ack(a);
    outbox.append(b"d", &[4; 10]).unwrap();
    assert_eq!(outbox.len(), 3);
    // Bytes: 3 records of 30 bytes pending; a 950-byte frame would pass 1000.
    assert_eq!(outbox.bytes(), 3 * (EVENT_OVERHEAD as u64 + 11));
    let oldest = outbox.pending_seqs().next().unwrap();
    outbox.ack(oldest);
    let err = outbox.append(b"e", &[5; 950]).unwrap_err();
    assert_eq!(err.code().code(), "EQUEUEFULL");
    assert_eq!(outbox.stats().refused, 2);
    outbox.append(b"e", &[5; 900]).unwrap();
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert_eq!(
        ids(&recovery.pending),
        vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]
    );
    assert_eq!(recovery.pending[2].frame, vec![5; 900]);
}

#[test]
fn interval_mode_syncs_at_its_poll_timeout_once_per_interval() {
    let dir = TempDir::new().unwrap();
    let interval = Duration::from_millis(100);
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::Interval(interval))).unwrap();
    let t0 = Instant::now();
    assert_eq!(outbox.poll_timeout(), None, "nothing written");
    outbox.handle_timeout(t0).unwrap();
    assert_eq!(outbox.stats().syncs, 0);
    outbox.append(b"a", b"1").unwrap();
    assert!(outbox.needs_sync());
    assert_eq!(outbox.stats().syncs, 0, "append does not sync");
    let due = outbox.poll_timeout().expect("a sync waits");
    assert!(due <= t0, "the first write since the opening: due at once");
    outbox.handle_timeout(t0).unwrap();
    assert_eq!(outbox.stats().syncs, 1);
    assert!(!outbox.needs_sync());
    assert_eq!(outbox.poll_timeout(), None);
    outbox.append(b"b", b"2").unwrap();
    outbox.append(b"c", b"3").unwrap();
    assert_eq!(outbox.poll_timeout(), Some(t0 + interval));
    outbox
        .handle_timeout(t0 + Duration::from_millis(10))
        .unwrap();
    assert_eq!(outbox.stats().syncs, 1, "early: not yet");
    assert_eq!(outbox.poll_timeout(), Some(t0 + interval));
    outbox.handle_timeout(t0 + interval).unwrap();
    assert_eq!(outbox.stats().syncs, 2, "one sync for both appends");
    assert_eq!(outbox.poll_timeout(), None);
    outbox.handle_timeout(t0 + 3 * interval).unwrap();
    assert_eq!(outbox.stats().syncs, 2, "clean: nothing to do");
    outbox.append(b"e", b"5").unwrap();
    assert_eq!(
        outbox.poll_timeout(),
        Some(t0 + 2 * interval),
        "the first write after a quiet interval: due at once"
    );
    outbox.handle_timeout(t0 + 3 * interval).unwrap();
    assert_eq!(outbox.stats().syncs, 3);
    outbox.append(b"d", b"4").unwrap();
    outbox.sync().unwrap();
    assert_eq!(outbox.stats().syncs, 4);
}

#[test]
fn none_mode_never_syncs_appends() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    for i in 0..100 {
        outbox.append(&id(i), b"x").unwrap();
    }
    assert_eq!(outbox.poll_timeout(), None);
    outbox.handle_timeout(Instant::now()).unwrap();
    assert_eq!(outbox.stats().syncs, 0);
}

/// One event in ten is never acknowledged: the old segments are compacted, disk use stays
/// bounded, order and ids survive a reopen, and copying stays a fraction of what was appended.
#[test]
fn compaction_keeps_order_and_bounds_disk_use() {
    let dir = TempDir::new().unwrap();
    let options = small(4096);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    let mut kept = Vec::new();
    let mut max_disk = 0;
    for i in 0..3000u64 {
        let seq = outbox.append(&id(i), &frame(i, 60)).unwrap();
        if i % 10 == 0 {
            kept.push(i);
        } else {
            outbox.ack(seq);
        }
        max_disk = max_disk.max(outbox.disk_bytes());
        let bound = 2 * outbox.bytes() + 3 * options.segment_bytes;
        assert!(
            outbox.disk_bytes() <= bound,
            "at {i}: {} > {bound}",
            outbox.disk_bytes()
        );
    }
    let stats = outbox.stats().clone();
    assert!(
        stats.copied_records > 0 && stats.segments_deleted > 10,
        "{stats:?}"
    );
    assert!(
        stats.bytes_written < 3 * 3000 * (EVENT_OVERHEAD as u64 + 70),
        "write amplification {stats:?}"
    );
    outbox.flush().unwrap();
    let disk_bytes = outbox.disk_bytes();
    let pending = outbox.pending().unwrap();
    drop(outbox);
    // (Closed: the active segment is cut back from its preallocated size to its records.)
    let on_disk: u64 = seg_files(dir.path())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(on_disk, disk_bytes);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert!(recovery.is_clean());
    assert_eq!(recovery.pending, pending);
    assert_eq!(
        ids(&recovery.pending),
        kept.iter().map(|&i| id(i)).collect::<Vec<_>>()
    );
    for (r, &i) in recovery.pending.iter().zip(&kept) {
        assert_eq!(r.frame, frame(i, 60));
    }
}

/// A third of every segment stays pending (never "sparse"): the disk bound alone triggers
/// compaction.
#[test]
fn compaction_bounds_disk_use_when_no_segment_is_sparse() {
    let dir = TempDir::new().unwrap();
    let options = small(2048);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    for i in 0..4000u64 {
        let seq = outbox.append(&id(i), &frame(i, 40)).unwrap();
        if i % 3 != 0 {
            outbox.ack(seq);
        }
        let bound = 2 * outbox.bytes() + 3 * options.segment_bytes;
        assert!(
            outbox.disk_bytes() <= bound,
            "at {i}: {} > {bound}",
            outbox.disk_bytes()
        );
    }
    let expected: Vec<Vec<u8>> = (0..4000u64).filter(|i| i % 3 == 0).map(id).collect();
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert_eq!(ids(&recovery.pending), expected);
}

#[test]
fn an_interrupted_compaction_leaves_duplicates_that_count_once() {
    let dir = TempDir::new().unwrap();
    let options = small(1024);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    for i in 0..30 {
        outbox.append(&id(i), &frame(i, 40)).unwrap();
    }
    let first = seg_files(dir.path()).remove(0);
    let saved = fs::read(&first).unwrap();
    // Acknowledge all but one of the first segment's events, then rotate: it is copied forward.
    let in_first: Vec<Seq> = outbox
        .index
        .iter()
        .filter(|(_, l)| l.segment == 1)
        .map(|(&s, _)| s)
        .collect();
    for &seq in &in_first[1..] {
        outbox.ack(seq);
    }
    outbox.compact().unwrap();
    assert!(!first.exists());
    assert_eq!(outbox.stats().copied_records, 1);
    let pending = outbox.pending().unwrap();
    drop(outbox);
    // As if the process died after the copy was synced but before the original was deleted.
    fs::write(&first, &saved).unwrap();
    let (outbox, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert_eq!(recovery.duplicates, 1);
    assert_eq!(recovery.pending, pending);
    assert_eq!(outbox.len(), pending.len());
}

#[test]
fn a_too_small_segment_size_is_refused() {
    let dir = TempDir::new().unwrap();
    let err = Outbox::open(dir.path(), small(20)).unwrap_err();
    assert_eq!(err.code().code(), "EOUTBOX");
}

#[test]
fn io_errors_carry_the_os_code_name() {
    let err = OutboxError::io("x", io::Error::from(io::ErrorKind::StorageFull));
    assert_eq!(err.code().code(), "ENOSPC");
    let err = OutboxError::io("x", io::Error::from(io::ErrorKind::FileTooLarge));
    assert_eq!(err.code().code(), "EFBIG");
    let err = OutboxError::io("x", io::Error::from(io::ErrorKind::PermissionDenied));
    assert_eq!(err.code().code(), "EACCES");
    #[cfg(unix)]
    {
        let err = OutboxError::io("x", io::Error::from_raw_os_error(5));
        assert_eq!(err.code().code(), "EIO");
        let err = OutboxError::io("x", io::Error::from_raw_os_error(28));
        assert_eq!(err.code().code(), "ENOSPC");
    }
    // A file where the directory should be.
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"").unwrap();
    let err = Outbox::open(file.join("sub"), opts(SyncMode::None)).unwrap_err();
    assert_eq!(err.code().code(), "ENOTDIR", "{err}");
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Ack(usize),
    Flush,
    Reopen,
    Kill,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(Op::Append),
        4 => (0usize..1000).prop_map(Op::Ack),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Kill),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any mix of appends, acknowledgements, flushes, compactions, reopens and kills matches a
    /// plain ordered map. A kill loses no pending event; it may only bring back acknowledged
    /// ones whose tombstones were still buffered.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = TempDir::new().unwrap();
        let options = small(700);
        let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
        let mut model: BTreeMap<Seq, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        // Acknowledged since the tombstones were last written.
        let mut unwritten: BTreeMap<Seq, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            // (A reopen starts new counters, and does not compact.)
            let started = outbox.stats().segments_created;
            let reopen = matches!(op, Op::Reopen | Op::Kill);
            match op {
                Op::Append(len) => {
                    let (i, f) = (id(n as u64), frame(n as u64, len));
                    let seq = outbox.append(&i, &f).unwrap();
                    prop_assert!(model.keys().all(|&k| k < seq));
                    model.insert(seq, (i, f));
                    unwritten.clear();
                }
                Op::Ack(pick) => {
                    let seq = model.keys().nth(pick % model.len().max(1)).copied().unwrap_or(0);
                    let acked = model.remove(&seq);
                    prop_assert_eq!(outbox.ack(seq), acked.is_some());
                    prop_assert_eq!(outbox.has_unwritten_acks(), acked.is_some() || !unwritten.is_empty());
                    unwritten.extend(acked.map(|a| (seq, a)));
                }
                Op::Flush => {
                    outbox.flush().unwrap();
                    prop_assert!(!outbox.has_unwritten_acks());
                    unwritten.clear();
                }
                Op::Reopen => {
                    drop(outbox);
                    let (reopened, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
                    prop_assert!(recovery.is_clean(), "{:?}", recovery.damage);
                    outbox = reopened;
                    unwritten.clear();
                }
                Op::Kill => {
                    outbox.kill();
                    let (reopened, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
                    prop_assert!(recovery.is_clean(), "{:?}", recovery.damage);
                    outbox = reopened;
                    let found: BTreeMap<Seq, (Vec<u8>, Vec<u8>)> = recovery
                        .pending
                        .into_iter()
                        .map(|r| (r.seq, (r.id, r.frame)))
                        .collect();
                    for (seq, record) in &model {
                        prop_assert_eq!(found.get(seq), Some(record), "pending {} lost", seq);
                    }
                    for (seq, record) in &found {
                        if !model.contains_key(seq) {
                            prop_assert_eq!(unwritten.get(seq), Some(record), "{} came back", seq);
                        }
                    }
                    model = found;
                    unwritten.clear();
                }
                Op::Compact => outbox.compact().unwrap(),
            }
            if !reopen && outbox.stats().segments_created > started {
                // Compaction runs when a segment is started: the bound holds right after.
                let bound = 2 * outbox.bytes() + 3 * options.segment_bytes;
                prop_assert!(outbox.disk_bytes() <= bound, "{} > {}", outbox.disk_bytes(), bound);
            }
        }
        let expected: Vec<Record> = model
            .into_iter()
            .map(|(seq, (id, frame))| Record { seq, id, frame })
            .collect();
        prop_assert_eq!(&outbox.pending().unwrap(), &expected);
        drop(outbox);
        let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
        prop_assert_eq!(recovery.pending, expected);
    }

    /// A log of several segments cut at a random byte (a power cut while appending, the later
    /// segments never created) yields exactly the records that were complete before the cut.
    #[test]
    fn cut_anywhere_in_a_multi_segment_log(
        sizes in proptest::collection::vec(0usize..200, 5..60),
        at in 0.0f64..1.0,
    ) {
        let dir = TempDir::new().unwrap();
        let options = small(600);
        let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
        // (segment, end offset) after each append.
        let mut ends = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let seq = outbox.append(&id(i as u64), &frame(i as u64, len)).unwrap();
            let loc = outbox.index[&seq];
            ends.push((loc.segment, loc.offset + loc.len));
        }
        drop(outbox);
        let files = seg_files(dir.path());
        let lens: Vec<u64> = files.iter().map(|f| fs::metadata(f).unwrap().len()).collect();
        let total: u64 = lens.iter().sum();
        let mut cut = (at * total as f64) as u64;
        // Find the file the cut falls in; drop every later one.
        let mut which = 0;
        while cut > lens[which] {
            cut -= lens[which];
            which += 1;
        }
        let cut_file = &files[which];
        let bytes = fs::read(cut_file).unwrap();
        fs::write(cut_file, &bytes[..cut as usize]).unwrap();
        for later in &files[which + 1..] {
            fs::remove_file(later).unwrap();
        }
        let number = which as u64 + 1;
        let survivors: Vec<Vec<u8>> = ends
            .iter()
            .enumerate()
            .filter(|(_, &(seg, end))| seg < number || (seg == number && end <= cut))
            .map(|(i, _)| id(i as u64))
            .collect();
        let (mut outbox, recovery) = Outbox::open(dir.path(), options.clone()).unwrap();
        prop_assert_eq!(ids(&recovery.pending), survivors.clone());
        prop_assert!(recovery.damage.len() <= 1);
        prop_assert!(recovery.damage.iter().all(|d| d.truncated));
        // The log goes on from there.
        outbox.append(b"next", b"x").unwrap();
        drop(outbox);
        let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
        prop_assert!(recovery.is_clean());
        prop_assert_eq!(recovery.pending.len(), survivors.len() + 1);
    }
}

/// Another program shortens the active segment (`logrotate copytruncate`, `truncate -s`): the
/// next append must not die of `SIGBUS` through the mapping, and nothing written since the
/// file was last found whole is lost (it is written again, to a new segment).
fn shorten_active(dir: &Path, to: impl Fn(u64) -> u64) {
    let newest = seg_files(dir).pop().unwrap();
    let file = OpenOptions::new().write(true).open(&newest).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(to(len)).unwrap();
}

#[test]
fn a_segment_truncated_to_zero_by_another_program_faults_no_signal_and_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    let before: Vec<Seq> = (0..10)
        .map(|i| outbox.append(&id(i), &frame(i, 100)).unwrap())
        .collect();
    let mapped = outbox.is_mapped();
    shorten_active(dir.path(), |_| 0);
    // Through the mapping this write faults (SIGBUS, caught): the file is looked at, its
    // records come back from memory into a new segment, and the write goes there.
    let after = outbox.append(&id(10), &frame(10, 100)).unwrap();
    let stats = outbox.stats().clone();
    if mapped {
        assert_eq!(stats.faults, 1, "{stats:?}");
    }
    // Without a mapping the write landed after a hole: the next look finds it.
    outbox.verify().unwrap();
    let stats = outbox.stats().clone();
    assert_eq!((stats.shortened, stats.lost), (1, 0), "{stats:?}");
    assert_eq!(outbox.len(), 11);
    let pending: Vec<Seq> = outbox.pending().unwrap().iter().map(|r| r.seq).collect();
    let mut all = before.clone();
    all.push(after);
    assert_eq!(pending, all);
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        all
    );
    assert_eq!(recovery.pending[10].frame, frame(10, 100));
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
}

#[test]
fn a_newest_segment_emptied_behind_an_older_one_is_rescued_and_leaves_no_damage() {
    let dir = TempDir::new().unwrap();
    let options = small(1024);
    let (mut outbox, _) = Outbox::open(dir.path(), options.clone()).unwrap();
    let mut seqs: Vec<Seq> = (0..12)
        .map(|i| outbox.append(&id(i), &frame(i, 100)).unwrap())
        .collect();
    assert!(outbox.segment_count() >= 2);
    shorten_active(dir.path(), |_| 0);
    seqs.push(outbox.append(&id(12), &frame(12, 100)).unwrap());
    outbox.verify().unwrap();
    assert_eq!(outbox.stats().shortened, 1);
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), options).unwrap();
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs
    );
}

#[test]
fn a_segment_cut_after_the_outbox_looked_loses_only_the_records_cut_off_and_says_so() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    let seqs: Vec<Seq> = (0..10)
        .map(|i| outbox.append(&id(i), &frame(i, 100)).unwrap())
        .collect();
    // Found whole: nothing is kept in memory any more.
    outbox.verify().unwrap();
    let end = outbox.segments.back().unwrap().len;
    // Cut in the middle of the sixth record, inside the same page as the end of the log (no
    // fault: the page stays mapped, but what is written past the cut is not in the file).
    let record = (end - HEADER_LEN) / 10;
    shorten_active(dir.path(), |_| HEADER_LEN + record * 5 + 7);
    let late = outbox.append(&id(10), &frame(10, 100)).unwrap();
    // The next look (a group commit, a new segment, close, or here by hand) finds the cut.
    outbox.verify().unwrap();
    let stats = outbox.stats().clone();
    assert_eq!((stats.shortened, stats.lost), (1, 5), "{stats:?}");
    assert_eq!(stats.lost_bytes, 5 * record);
    let mut kept: Vec<Seq> = seqs[..5].to_vec();
    kept.push(late);
    let pending: Vec<Seq> = outbox.pending_seqs().collect();
    assert_eq!(
        pending, kept,
        "the records before the cut, and the one written after it"
    );
    outbox.close().unwrap();
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        kept
    );
    assert!(recovery.is_clean(), "{:?}", recovery.damage);
}

#[test]
fn a_segment_removed_by_another_program_is_written_again_from_the_open_file() {
    let dir = TempDir::new().unwrap();
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::Always)).unwrap();
    let mut seqs: Vec<Seq> = (0..5)
        .map(|i| outbox.append(&id(i), &frame(i, 100)).unwrap())
        .collect();
    outbox.verify().unwrap();
    fs::remove_file(seg_files(dir.path()).pop().unwrap()).unwrap();
    // A removed file keeps its size: the next full look (here `sync`; also a group commit, a
    // new segment, every 64 KiB, close) notices it, and the records still read back through
    // the open handle.
    seqs.push(outbox.append(&id(5), &frame(5, 100)).unwrap());
    outbox.sync().unwrap();
    let stats = outbox.stats().clone();
    assert_eq!((stats.shortened, stats.lost), (1, 0), "{stats:?}");
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::Always)).unwrap();
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs
    );
}

#[test]
fn interval_mode_finds_a_cut_file_at_the_next_group_commit() {
    let dir = TempDir::new().unwrap();
    let interval = Duration::from_millis(10);
    let (mut outbox, _) = Outbox::open(dir.path(), opts(SyncMode::Interval(interval))).unwrap();
    let seqs: Vec<Seq> = (0..4)
        .map(|i| outbox.append(&id(i), &frame(i, 50)).unwrap())
        .collect();
    shorten_active(dir.path(), |_| HEADER_LEN);
    outbox
        .handle_timeout(Instant::now() + interval * 2)
        .unwrap();
    assert_eq!(outbox.stats().shortened, 1);
    drop(outbox);
    let (_, recovery) = Outbox::open(dir.path(), opts(SyncMode::None)).unwrap();
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs
    );
}

#[cfg(unix)]
mod permissions {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_outbox_is_private_to_its_user() {
        let base = TempDir::new().unwrap();
        let dir = base.path().join("a").join("outbox");
        let (mut outbox, _) = Outbox::open(&dir, opts(SyncMode::None)).unwrap();
        outbox.append(b"x", b"y").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        for segment in seg_files(&dir) {
            assert_eq!(mode(&segment), 0o600, "{}", segment.display());
        }
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        for bits in [0o777, 0o770, 0o702] {
            let base = TempDir::new().unwrap();
            let dir = base.path().join("outbox");
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(bits)).unwrap();
            let err = Outbox::open(&dir, opts(SyncMode::None)).unwrap_err();
            assert_eq!(err.code().code(), "EOUTBOXPERM", "{bits:o}: {err}");
            assert!(
                fs::read_dir(&dir).unwrap().next().is_none(),
                "nothing created"
            );
        }
        // Readable by others but writable by no one else: the user's choice, accepted; the
        // files are private anyway, and those an earlier version left 0644 become 0600.
        let base = TempDir::new().unwrap();
        let dir = base.path().join("outbox");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        drop(Outbox::open(&dir, opts(SyncMode::None)).unwrap());
        for file in fs::read_dir(&dir).unwrap() {
            fs::set_permissions(file.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
        }
        drop(Outbox::open(&dir, opts(SyncMode::None)).unwrap());
        assert_eq!(mode(&dir), 0o755);
        for file in fs::read_dir(&dir).unwrap() {
            assert_eq!(mode(&file.unwrap().path()), 0o600);
        }
    }

    #[test]
    fn a_directory_or_file_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED a_directory_or_file_of_another_user_is_refused: needs root (chown)");
            return;
        }
        let base = TempDir::new().unwrap();
        let dir = base.path().join("outbox");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = Outbox::open(&dir, opts(SyncMode::None)).unwrap_err();
        assert_eq!(err.code().code(), "EOUTBOXPERM", "{err}");
        // The directory is ours, but a segment in it is not (planted, or left by another user).
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        drop(Outbox::open(&dir, opts(SyncMode::None)).unwrap());
        let segment = seg_files(&dir).pop().unwrap();
        std::os::unix::fs::chown(&segment, Some(65534), Some(65534)).unwrap();
        let err = Outbox::open(&dir, opts(SyncMode::None)).unwrap_err();
        assert_eq!(err.code().code(), "EOUTBOXPERM", "{err}");
        std::os::unix::fs::chown(&segment, Some(0), Some(0)).unwrap();
        std::os::unix::fs::chown(dir.join(LOCK_FILE), Some(65534), Some(65534)).unwrap();
        let err = Outbox::open(&dir, opts(SyncMode::None)).unwrap_err();
        assert_eq!(err.code().code(), "EOUTBOXPERM", "{err}");
    }
}
