//! A durable outbox: events written to disk before `send()` returns, removed once the gateway
//! acknowledges them, and found again, in their original order and with their original ids, by
//! the next process that opens the same directory.
//!
//! # Storage
//!
//! The directory holds a `LOCK` file and numbered segment files (`0000000000000001.seg`, ...),
//! each a header and a run of records (`format.rs` gives the bytes). Writes only ever append to
//! the newest segment, the *active* one:
//!
//! * `append` writes an event record: its sequence number, the event id and the encoded EVENT
//!   frame, under a CRC-32.
//! * `ack` writes an acknowledgement record (a tombstone naming the sequence number).
//! * When the active segment would pass [`OutboxOptions::segment_bytes`] a new one is started.
//! * The oldest segment is deleted as soon as every event in it is acknowledged. When it is
//!   mostly acknowledged (at most a quarter of its bytes still pending), or when the directory
//!   holds more than twice the pending bytes plus two segments, its pending records are copied
//!   verbatim to the active segment, synced, and then it is deleted. This is checked when a
//!   segment is started (or on [`Outbox::compact`]): a sparse oldest segment is copied, one per
//!   segment started; when the directory is over its bound every old segment is cleaned at once
//!   (rare, and then the call waits for copying up to all pending bytes). Copying stays a
//!   fraction of what was appended (see `docs/ARCHITECTURE.md`).
//!
//! Opening reads every segment, oldest first: the pending events are those with no tombstone,
//! ordered by sequence number (a copy left by an interrupted compaction is a duplicate of the same
//! sequence and is counted once).
//!
//! # Damage
//!
//! Reading a segment stops at the first record that is incomplete or fails its checksum, since
//! its length cannot be trusted. In the newest segment that is a torn tail (a write cut by a power
//! loss): the file is truncated there and appending goes on after the last good record. In an
//! older segment the rest of that segment cannot be read: its good records before the damage are
//! kept, the later segments are read as usual, the file is left as it is (compaction removes it
//! in due course), and the damage is reported in [`Recovery::damage`] either way.
//!
//! While the outbox is open, another program may still shorten or remove the newest segment
//! (`logrotate copytruncate`, a cleanup job). Writing through its mapping then faults: the fault
//! is caught (`tail.rs`), and [`Outbox::verify`], which also runs at group commits, every 64 KiB
//! and at close, moves what the file still holds, and what was written since it was last found
//! whole, to a new segment ([`OutboxStats::lost`] counts the pending records cut off before).
//!
//! # Permissions
//!
//! On Unix the directory is created 0700 and its files 0600; an existing directory that another
//! user owns, or that group or others may write, is refused with `EOUTBOXPERM`, and so is a
//! `LOCK` or segment file of another user.
//!
//! # Durability and time
//!
//! There is no thread inside, and the clock is the owner's: the outbox has the one core interface
//! of `Session` and `Peer` (quinn-proto's shape). [`Outbox::poll_timeout`] says when it wants
//! [`Outbox::handle_timeout`] called with the current time; with [`SyncMode::Interval`] that is
//! when what was written is due for its group commit (the opening reads the clock once, as the
//! earliest such time). [`Outbox::sync`] syncs at any time. See [`SyncMode`] for what each mode
//! guarantees and costs.
//!
//! # Files
//!
//! `open.rs` opens the directory and recovers what it holds ([`Outbox::open`], [`Recovery`]);
//! `dir.rs` is the directory itself (segment names, the `LOCK` file, permissions, creating a
//! segment); `write.rs` appends to the active segment; `read.rs` reads pending events back;
//! `sync.rs` is syncing and the group commit; `compact.rs` deletes and compacts old segments;
//! `rescue.rs` handles another program's changes to the active segment; `format.rs` gives the
//! bytes of a segment, and `tail.rs` the active segment's mapping. This file holds the outbox's
//! types and what it does when an event is appended or acknowledged.

mod compact;
mod dir;
mod error;
mod format;
mod open;
mod read;
mod rescue;
mod sync;
mod tail;
#[cfg(test)]
mod tests;
mod write;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::errors::ErrorCode;
use dir::segment_name;
use format::EVENT_OVERHEAD;
use tail::Tail;

pub use error::OutboxError;
pub use open::{Damage, DamageKind, Recovery};
pub use sync::SyncJob;

/// The number an [`Outbox`] gives an appended event: increasing in append order, kept across
/// restarts, never reused by the same directory.
pub type Seq = u64;

/// When appended records are forced to stable storage (`fsync`, `fdatasync` on Linux,
/// `F_FULLFSYNC` on macOS, `FlushFileBuffers` on Windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every `append` syncs the segment before it returns: an event whose `append` returned
    /// survives a power loss. Costs one device flush per event (on an SD card or eMMC typically
    /// milliseconds; see `examples/outbox_bench.rs`).
    Always,
    /// `append` only hands the record to the OS; [`Outbox::handle_timeout`] syncs everything
    /// written since the last sync once the interval has passed (group commit; the first write
    /// after a quiet interval is synced at once), at the time [`Outbox::poll_timeout`] names. A
    /// killed process loses nothing (the OS page cache has the data); a power loss loses at
    /// most the events appended in the last interval, plus the time the owner was late calling
    /// `handle_timeout`. One flush per interval.
    Interval(Duration),
    /// Never syncs on its own: a killed process loses nothing, a power loss loses whatever the
    /// OS had not written back yet (seconds on Linux). No flush cost. [`Outbox::sync`] still
    /// syncs when called, and compaction still syncs its copies before deleting the originals.
    None,
}

/// How an [`Outbox`] stores and bounds its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxOptions {
    pub sync: SyncMode,
    /// Most bytes of pending records (id + frame + 19 bytes each) before `append` fails with
    /// `EQUEUEFULL`. Right after a segment is started the directory holds at most twice the
    /// pending bytes plus three segments, so never much more than twice this plus three segments.
    pub max_bytes: u64,
    /// Most pending events before `append` fails with `EQUEUEFULL`.
    pub max_records: usize,
    /// Size at which a new segment is started (a record larger than this gets one of its own).
    pub segment_bytes: u64,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            sync: SyncMode::Interval(crate::defaults::OUTBOX_SYNC_INTERVAL),
            max_bytes: crate::defaults::OUTBOX_MAX_BYTES,
            max_records: crate::defaults::MAX_QUEUE_SIZE,
            segment_bytes: crate::defaults::OUTBOX_SEGMENT_BYTES,
        }
    }
}

/// A pending event as it was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: Seq,
    pub id: Vec<u8>,
    pub frame: Vec<u8>,
}

/// Counters since [`Outbox::open`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events appended.
    pub appended: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Appends refused with `EQUEUEFULL`.
    pub refused: u64,
    /// Syncs of a segment file.
    pub syncs: u64,
    /// Bytes written to segment files (records, headers and compaction copies).
    pub bytes_written: u64,
    /// Records and bytes copied by compaction.
    pub copied_records: u64,
    pub copied_bytes: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    /// Compactions or deletions that failed (they are retried later; nothing is lost).
    pub maintenance_errors: u64,
    /// Acknowledgements taken in memory whose tombstone could not be written.
    pub ack_write_errors: u64,
    /// Writes through the active segment's mapping that faulted (`SIGBUS` caught; see
    /// `tail.rs`) and were done again with a system call.
    pub faults: u64,
    /// Times the active segment was found shortened or removed by another program (its
    /// readable records were then moved to a new segment).
    pub shortened: u64,
    /// Pending events whose records another program destroyed that way: no longer on disk
    /// (the client still holds them in memory and sends them), and their bytes.
    pub lost: u64,
    pub lost_bytes: u64,
}

/// Where a pending record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u64,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    /// Bytes in the file that belong to the log (header included).
    len: u64,
    live_bytes: u64,
    live_count: u64,
}

impl Segment {
    /// Segment `number`, `len` bytes long, with no pending event counted in it yet.
    fn new(number: u64, len: u64) -> Segment {
        Segment {
            number,
            len,
            live_bytes: 0,
            live_count: 0,
        }
    }
}

/// The durable outbox of one directory. See the module documentation.
pub struct Outbox {
    dir: PathBuf,
    options: OutboxOptions,
    /// Held (locked) for as long as the outbox is open.
    _lock: File,
    /// Oldest first; the last one is the active segment.
    segments: VecDeque<Segment>,
    active: Tail,
    index: BTreeMap<Seq, Loc>,
    next_seq: Seq,
    live_bytes: u64,
    disk_bytes: u64,
    /// Written since the last sync.
    dirty: bool,
    /// A failed write may have left bytes after the active segment's end.
    tail_dirty: bool,
    /// The active segment's mapping faulted, or a rescue did not finish: look at its file
    /// ([`Outbox::verify`]) before writing to it again.
    suspect: bool,
    /// A copy of what was written to the active segment since its file was last found whole
    /// ([`Outbox::verify`]), from offset `mirror_from`: what [`Outbox::rescue`] writes again
    /// if another program cut it off. At most about [`MIRROR_CAP`] bytes.
    mirror: Vec<u8>,
    mirror_from: u64,
    /// When what is written is next due for an interval sync ([`Outbox::poll_timeout`]): the
    /// opening, then each sync plus the interval. `None`: never by time (an interval so long
    /// that the instant overflows).
    next_sync: Option<Instant>,
    stats: OutboxStats,
    scratch: Vec<u8>,
    /// Tombstones of acknowledged events not written yet: they go out with the next append, or
    /// at [`Outbox::flush`] (the client calls it once per turn of its driver), sync or close.
    acks: Vec<u8>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.dir)
            .field("pending", &self.index.len())
            .field("bytes", &self.live_bytes)
            .field("segments", &self.segments.len())
            .finish()
    }
}

/// Bytes written to the active segment after which its file is looked at again (one `fstat`),
/// so that at most this much is kept in memory for a rescue.
const MIRROR_CAP: usize = 64 * 1024;

impl Outbox {
    /// Stores an event and returns its sequence number. With [`SyncMode::Always`] the record is
    /// on stable storage when this returns. Fails with `EQUEUEFULL` when `max_records` or
    /// `max_bytes` would be passed, `EOUTBOX` for an id over 65,535 bytes or a record over the
    /// frame cap, or the OS's code (`ENOSPC`, ...); after a failure nothing was stored and
    /// everything stored before is intact.
    pub fn append(&mut self, id: &[u8], frame: &[u8]) -> Result<Seq, OutboxError> {
        if id.len() > u16::MAX as usize {
            return Err(OutboxError::new(
                ErrorCode::Outbox,
                format!("an event id of {} bytes is over 65535", id.len()),
            ));
        }
        let len = (EVENT_OVERHEAD + id.len() + frame.len()) as u64;
        if len - format::RECORD_HEAD as u64 > format::MAX_BODY as u64 {
            return Err(OutboxError::new(
                ErrorCode::Outbox,
                format!("a record of {len} bytes is over the limit"),
            ));
        }
        if self.index.len() >= self.options.max_records
            || self.live_bytes + len > self.options.max_bytes
        {
            self.stats.refused += 1;
            return Err(OutboxError::new(
                ErrorCode::QueueFull,
                format!(
                    "the outbox is full ({} events, {} bytes pending)",
                    self.index.len(),
                    self.live_bytes
                ),
            ));
        }
        if self.options.sync == SyncMode::Always {
            // What this append returns for must be on the disk, in a file that was whole just
            // before: a look at its size (a seek: an `fstat` here makes the flush that follows
            // measurably slower on ext4), and the full look when it is short.
            self.look()?;
        }
        let seq = self.next_seq;
        let mut buf = std::mem::take(&mut self.scratch);
        format::encode_event(&mut buf, seq, id, frame);
        let written = self.write_with_acks(&buf);
        self.scratch = buf;
        let (segment, offset, rotated) = written?;
        if self.options.sync == SyncMode::Always {
            if let Err(e) = self.sync_active() {
                // The OS may have dropped what it could not write: take the record back out so
                // that a failed append is never found again after a restart.
                self.truncate_active(offset);
                return Err(e);
            }
        }
        self.next_seq += 1;
        self.index.insert(
            seq,
            Loc {
                segment,
                offset,
                len,
            },
        );
        let active = self.segments.back_mut().expect("an active segment");
        active.live_bytes += len;
        active.live_count += 1;
        self.live_bytes += len;
        self.stats.appended += 1;
        if rotated {
            self.maintain(true);
        }
        Ok(seq)
    }

    /// Removes an acknowledged event: `true` if it was pending, `false` if not (already
    /// acknowledged, or never appended). Its tombstone is only buffered: it is written with the
    /// next `append`, or by [`Outbox::flush`], `sync`, `handle_timeout` or `close`, so that a burst of
    /// acknowledgements costs one write. Never syncs: a tombstone lost to a crash or a power cut
    /// only means the event is sent again.
    pub fn ack(&mut self, seq: Seq) -> bool {
        let Some(loc) = self.index.remove(&seq) else {
            return false;
        };
        if let Some(segment) = self.segment_mut(loc.segment) {
            segment.live_bytes -= loc.len;
            segment.live_count -= 1;
        }
        self.live_bytes -= loc.len;
        self.stats.acked += 1;
        format::push_ack(&mut self.acks, seq);
        self.maintain(false);
        true
    }

    /// Writes the buffered tombstones (one write). On failure (a full disk) they are dropped and
    /// counted in [`OutboxStats::ack_write_errors`]: the events are no longer pending in this
    /// process, but a later one may send them again.
    pub fn flush(&mut self) -> Result<(), OutboxError> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks);
        let written = self.write_record(&acks, false);
        self.acks = acks;
        self.drop_acks(written.is_err());
        let (_, _, rotated) = written?;
        self.maintain(rotated);
        Ok(())
    }

    /// Whether tombstones wait for [`Outbox::flush`].
    pub fn has_unwritten_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Whether `seq` is pending.
    pub fn contains(&self, seq: Seq) -> bool {
        self.index.contains_key(&seq)
    }

    /// The pending sequence numbers, oldest first.
    pub fn pending_seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        self.index.keys().copied()
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the pending records, as counted against `max_bytes`.
    pub fn bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of the segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }

    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the buffered tombstones, syncs (unless the mode is [`SyncMode::None`]) and
    /// releases the directory.
    pub fn close(mut self) -> Result<(), OutboxError> {
        let verified = self.verify();
        let closed = if self.options.sync != SyncMode::None {
            self.sync()
        } else {
            self.flush()
        };
        verified.and(closed)
    }

    // ---- internals ----

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(segment_name(number))
    }

    fn segment_mut(&mut self, number: u64) -> Option<&mut Segment> {
        let i = self
            .segments
            .binary_search_by_key(&number, |s| s.number)
            .ok()?;
        self.segments.get_mut(i)
    }
}

#[cfg(test)]
impl Outbox {
    /// The process dies here: buffered tombstones are lost, nothing more is written.
    pub(crate) fn kill(mut self) {
        self.acks.clear();
        self.dirty = false;
        self.active.abandon();
    }

    /// Whether appends go through a mapping of the active segment.
    pub(crate) fn is_mapped(&self) -> bool {
        self.active.is_mapped()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let _ = self.flush();
        if self.options.sync != SyncMode::None && self.dirty {
            let _ = self.sync_active();
        }
    }
}
