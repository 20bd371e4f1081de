//! Opening an outbox ([`Outbox::open`]): the directory is made ready and locked, every segment
//! is read, oldest first, the index of pending events is rebuilt from the records found, and the
//! segment to append to is chosen or created. What was found, damage included, is the
//! [`Recovery`].

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::dir::{check_file, create_segment, list_segments, lock_dir, prepare_dir, segment_name};
use super::format::{self, Body, Found, Stop, EVENT_OVERHEAD, HEADER_LEN};
use super::tail::Tail;
use super::{Loc, Outbox, OutboxError, OutboxOptions, OutboxStats, Record, Segment, Seq, SyncMode};
use crate::errors::ErrorCode;

/// What [`Outbox::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The events not yet acknowledged, in the order they were appended.
    pub pending: Vec<Record>,
    /// Torn or corrupt places, at most one per segment.
    pub damage: Vec<Damage>,
    /// Segment files read.
    pub segments: usize,
    /// Complete event records read (acknowledged ones included).
    pub events: u64,
    /// Acknowledgement records read.
    pub acks: u64,
    /// Second copies of an event left by a compaction that was interrupted (counted once).
    pub duplicates: u64,
}

impl Recovery {
    /// No damage was found.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// Bytes cut off torn or corrupt tails.
    pub fn truncated_bytes(&self) -> u64 {
        self.damage
            .iter()
            .filter(|d| d.truncated)
            .map(|d| d.bytes)
            .sum()
    }
}

/// A place in a segment where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// Where the bad record (or header) starts.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file that could not be read.
    pub bytes: u64,
    pub kind: DamageKind,
    /// The bytes were cut off (the newest segment), or the segment was dropped (a newest segment
    /// without a complete header). `false`: an older segment, left as it is.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A record or header that runs past the end of the file: a write that did not finish.
    Torn,
    /// A complete record whose checksum does not match.
    Checksum,
    /// A record with a valid checksum but contents no writer makes.
    Invalid,
    /// A segment file whose header is missing or wrong.
    BadHeader,
}

impl Outbox {
    /// Opens (creating it if needed) the outbox in `dir`, locks it, reads what an earlier process
    /// left, and cuts off a torn tail. Fails with `EOUTBOXLOCKED` when another `Outbox`, in this
    /// process or another, has the directory open.
    pub fn open(
        dir: impl AsRef<Path>,
        options: OutboxOptions,
    ) -> Result<(Outbox, Recovery), OutboxError> {
        let dir = dir.as_ref().to_path_buf();
        check_options(&options)?;
        prepare_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let numbers = list_segments(&dir)?;
        let mut scan = Scan::new(options.sync != SyncMode::None);
        for (i, &number) in numbers.iter().enumerate() {
            scan.recover_segment(&dir, number, i + 1 == numbers.len())?;
        }
        scan.rebuild_index();
        let (active, stats) = scan.open_active(&dir, &options)?;
        let (outbox, mut recovery) = Outbox::assemble(dir, options, lock, scan, active, stats);
        recovery.pending = outbox.pending()?;
        Ok((outbox, recovery))
    }

    /// The open outbox made of what the opening's steps found, and their [`Recovery`] (its
    /// `pending` still to be read).
    fn assemble(
        dir: PathBuf,
        options: OutboxOptions,
        lock: File,
        scan: Scan,
        active: Tail,
        stats: OutboxStats,
    ) -> (Outbox, Recovery) {
        let disk_bytes = scan.segments.iter().map(|s| s.len).sum();
        let outbox = Outbox {
            dir,
            options,
            _lock: lock,
            segments: scan.segments,
            active,
            index: scan.index,
            next_seq: scan.next_seq,
            live_bytes: scan.live_bytes,
            disk_bytes,
            dirty: false,
            tail_dirty: false,
            suspect: false,
            mirror: Vec::new(),
            mirror_from: 0,
            next_sync: Some(Instant::now()),
            stats,
            scratch: Vec::new(),
            acks: Vec::new(),
        };
        (outbox, scan.recovery)
    }
}

/// Refuses (`EOUTBOX`) a `segment_bytes` too small for a header and one empty event.
fn check_options(options: &OutboxOptions) -> Result<(), OutboxError> {
    if options.segment_bytes < HEADER_LEN + EVENT_OVERHEAD as u64 {
        return Err(OutboxError::new(
            ErrorCode::Outbox,
            format!("segment_bytes {} is too small", options.segment_bytes),
        ));
    }
    Ok(())
}

/// What the opening has found so far, reading the segments oldest first.
struct Scan {
    /// Whether a truncation is synced (the mode is not [`SyncMode::None`]), and so is a segment
    /// created to append to.
    durable: bool,
    recovery: Recovery,
    /// The segments kept, oldest first.
    segments: VecDeque<Segment>,
    /// Every event record found (the first copy of a sequence wins).
    events: BTreeMap<Seq, Loc>,
    /// Every acknowledged sequence.
    acked: HashSet<Seq>,
    next_seq: Seq,
    /// Whether appending may go on at the end of the last segment kept: not after damage that
    /// was left in place.
    last_appendable: bool,
    /// The pending events (found, not acknowledged) and their bytes, once
    /// [`Scan::rebuild_index`] has run.
    index: BTreeMap<Seq, Loc>,
    live_bytes: u64,
}

impl Scan {
    fn new(durable: bool) -> Scan {
        Scan {
            durable,
            recovery: Recovery::default(),
            segments: VecDeque::new(),
            events: BTreeMap::new(),
            acked: HashSet::new(),
            next_seq: 1,
            last_appendable: false,
            index: BTreeMap::new(),
            live_bytes: 0,
        }
    }

    /// Reads segment `number` (the directory's `newest`, or an older one) and takes in its
    /// records up to the first that is incomplete or fails its checksum: that damage is
    /// reported, and cut off the newest segment (a torn tail), or left in an older one.
    fn recover_segment(
        &mut self,
        dir: &Path,
        number: u64,
        newest: bool,
    ) -> Result<(), OutboxError> {
        let path = dir.join(segment_name(number));
        let bytes = read_segment(&path)?;
        self.recovery.segments += 1;
        let header = format::decode_header(&bytes).filter(|&(n, _)| n == number);
        let Some((_, first_seq)) = header else {
            return self.bad_header(path, number, bytes.len() as u64, newest);
        };
        self.next_seq = self.next_seq.max(first_seq);
        let (found, stop) = format::scan(&bytes, HEADER_LEN as usize);
        let (mut len, stop) = end_of_log(&bytes, stop);
        self.take_records(number, &found);
        self.last_appendable = stop.is_none() || newest;
        if let Some((offset, why)) = stop {
            self.report_damage(&path, bytes.len(), offset, why, newest);
            if newest {
                cut_tail(&path, offset as u64, self.durable)?;
                len = offset as u64;
            }
        }
        self.segments.push_back(Segment::new(number, len));
        Ok(())
    }

    /// Takes in a segment file of `len` bytes whose header is missing or wrong, as damage. A
    /// newest segment no longer than a header is one whose creation was cut short: it holds
    /// nothing yet, and is removed. Anything longer is left in place, unreadable, as garbage
    /// for compaction to delete.
    fn bad_header(
        &mut self,
        path: PathBuf,
        number: u64,
        len: u64,
        newest: bool,
    ) -> Result<(), OutboxError> {
        let torn = len < HEADER_LEN;
        let dropped = newest && len <= HEADER_LEN;
        if dropped {
            fs::remove_file(&path).map_err(|e| {
                OutboxError::io(format_args!("cannot remove {}", path.display()), e)
            })?;
        } else {
            self.last_appendable = false;
            self.segments.push_back(Segment::new(number, len));
        }
        self.recovery.damage.push(Damage {
            segment: path,
            offset: 0,
            bytes: len,
            kind: if torn {
                DamageKind::Torn
            } else {
                DamageKind::BadHeader
            },
            truncated: dropped,
        });
        Ok(())
    }

    /// Takes in the complete records of segment `number`: where each event is (a second copy of
    /// a sequence, left by an interrupted compaction, is counted as a duplicate), which
    /// sequences are acknowledged, and the sequence the next append gets.
    fn take_records(&mut self, number: u64, found: &[Found]) {
        for record in found {
            self.next_seq = self.next_seq.max(record.seq.saturating_add(1));
            match record.body {
                Body::Event { .. } => {
                    self.recovery.events += 1;
                    let loc = Loc {
                        segment: number,
                        offset: record.offset as u64,
                        len: record.len as u64,
                    };
                    match self.events.entry(record.seq) {
                        // Segments are read oldest first: the first copy is the original.
                        Entry::Vacant(slot) => {
                            slot.insert(loc);
                        }
                        Entry::Occupied(_) => self.recovery.duplicates += 1,
                    }
                }
                Body::Ack => {
                    self.recovery.acks += 1;
                    self.acked.insert(record.seq);
                }
            }
        }
    }

    /// Reports where reading a segment file of `file_len` bytes stopped, at `offset`, and why;
    /// `truncated` when it is the newest segment, whose tail is cut off there.
    fn report_damage(
        &mut self,
        path: &Path,
        file_len: usize,
        offset: usize,
        why: Stop,
        newest: bool,
    ) {
        self.recovery.damage.push(Damage {
            segment: path.to_path_buf(),
            offset: offset as u64,
            bytes: (file_len - offset) as u64,
            kind: match why {
                Stop::Torn => DamageKind::Torn,
                Stop::Checksum => DamageKind::Checksum,
                Stop::Invalid => DamageKind::Invalid,
            },
            truncated: newest,
        });
    }

    /// Rebuilds the index of pending events (those found with no tombstone), counting each one
    /// in its segment and in the bytes held against `max_bytes`.
    fn rebuild_index(&mut self) {
        for (seq, loc) in std::mem::take(&mut self.events) {
            if self.acked.contains(&seq) {
                continue;
            }
            if let Some(segment) = self.segments.iter_mut().find(|s| s.number == loc.segment) {
                segment.live_bytes += loc.len;
                segment.live_count += 1;
            }
            self.live_bytes += loc.len;
            self.index.insert(seq, loc);
        }
    }

    /// Chooses the active segment: the newest one, appended to after its last record, if
    /// appending may go on there and it has room; else a new one after it (synced with the
    /// directory unless the mode is [`SyncMode::None`]). Returns it with the counters the
    /// opening starts from (the new segment and its header).
    fn open_active(
        &mut self,
        dir: &Path,
        options: &OutboxOptions,
    ) -> Result<(Tail, OutboxStats), OutboxError> {
        let mut stats = OutboxStats::default();
        let reuse = self
            .segments
            .back()
            .filter(|s| self.last_appendable && s.len < options.segment_bytes);
        if let Some(segment) = reuse {
            let path = dir.join(segment_name(segment.number));
            let tail = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .and_then(|file| Tail::open(file, segment.len, options.segment_bytes))
                .map_err(|e| OutboxError::io(format_args!("cannot open {}", path.display()), e))?;
            return Ok((tail, stats));
        }
        let number = self.segments.back().map_or(1, |s| s.number + 1);
        let tail = create_segment(
            dir,
            number,
            self.next_seq,
            options.segment_bytes,
            self.durable,
        )?;
        self.segments.push_back(Segment::new(number, HEADER_LEN));
        stats.segments_created += 1;
        stats.bytes_written += HEADER_LEN;
        Ok((tail, stats))
    }
}

/// The bytes of a segment file, once it is known to be this user's ([`check_file`]).
fn read_segment(path: &Path) -> Result<Vec<u8>, OutboxError> {
    let read_err = |e| OutboxError::io(format_args!("cannot read {}", path.display()), e);
    let mut file = File::open(path).map_err(read_err)?;
    check_file(&file, path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    Ok(bytes)
}

/// Where the log of a segment read up to `stop` ends, and the damage that stopped it, if any.
/// Zeros to the end are the unwritten part of a preallocated segment (or what a power cut
/// leaves of an extending write): the log ends there, nothing is damaged.
fn end_of_log(bytes: &[u8], stop: Option<(usize, Stop)>) -> (u64, Option<(usize, Stop)>) {
    match stop {
        Some((offset, _)) if format::is_zero(&bytes[offset..]) => (offset as u64, None),
        _ => (bytes.len() as u64, stop),
    }
}

/// Cuts the newest segment's file at `offset`, where its torn or corrupt tail starts, so that
/// appending goes on after the last good record; synced when `durable`.
fn cut_tail(path: &Path, offset: u64, durable: bool) -> Result<(), OutboxError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| OutboxError::io(format_args!("cannot open {}", path.display()), e))?;
    file.set_len(offset)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
        .map_err(|e| OutboxError::io(format_args!("cannot truncate {}", path.display()), e))
}
