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

mod format;
mod tail;
#[cfg(test)]
mod tests;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::errors::{fs_code, ErrorCode};
use format::{Body, Stop, EVENT_OVERHEAD, HEADER_LEN};
use tail::Tail;

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

/// An outbox failure, with a stable [`ErrorCode`]: `EQUEUEFULL` (a bound), `EOUTBOXLOCKED`
/// (another opener), `EOUTBOXPERM` (a directory or file of another user, a directory others
/// may write), `EOUTBOX` (not an outbox, a record too large, a record that changed on
/// disk), or the OS's name for an I/O error (`ENOSPC`, `EFBIG`, `EACCES`, `EROFS`, `EIO`, ...).
#[derive(Debug)]
pub struct OutboxError {
    code: ErrorCode,
    message: String,
    source: Option<io::Error>,
}

impl OutboxError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OutboxError {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// An error with this code that comes from no I/O (for the outbox's owners).
    pub fn other(code: ErrorCode, message: impl Into<String>) -> Self {
        OutboxError::new(code, message)
    }

    fn io(what: impl fmt::Display, err: io::Error) -> Self {
        OutboxError {
            code: fs_code(&err),
            message: format!("{what}: {err}"),
            source: Some(err),
        }
    }

    /// The stable code (`err.code` in JavaScript).
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The OS error behind it, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OutboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A sync of the active segment, detached from its [`Outbox`] ([`Outbox::sync_job`]): run it
/// (on any thread), then call [`Outbox::sync_done`].
#[derive(Debug)]
pub struct SyncJob {
    file: File,
    path: PathBuf,
}

impl SyncJob {
    /// Forces what was written to the segment before the job was made to stable storage.
    pub fn run(&self) -> Result<(), OutboxError> {
        self.file
            .sync_data()
            .map_err(|e| OutboxError::io(format_args!("cannot sync {}", self.path.display()), e))
    }
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

const LOCK_FILE: &str = "LOCK";

/// Bytes written to the active segment after which its file is looked at again (one `fstat`),
/// so that at most this much is kept in memory for a rescue.
const MIRROR_CAP: usize = 64 * 1024;

fn segment_name(number: u64) -> String {
    format!("{number:016x}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|&n| n < format::MAX_NUMBER)
}

/// Makes a new or removed directory entry durable (Unix; Windows has no directory handles to
/// sync and its file systems commit them with the file's metadata).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Makes `options` create files with mode 0600 (Unix): the events are the user's alone.
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Sets a file this process created to mode 0600 exactly, whatever the umask (Unix).
fn set_private(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// The effective user of this process (Unix).
#[cfg(unix)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(unix)]
fn permission_error(message: String) -> OutboxError {
    OutboxError::new(ErrorCode::OutboxPerm, message)
}

/// Creates the outbox's directory, mode 0700 whatever the umask (its parents as `mkdir -p`
/// would), or checks the one that exists, as OpenSSH's StrictModes does: it must be owned by
/// this process's user and writable by nobody else (`EOUTBOXPERM`), or another user could read
/// the events, plant segments, or hold the lock. (Unix; elsewhere it is only created.)
fn prepare_dir(dir: &Path) -> Result<(), OutboxError> {
    let create_err = |e| OutboxError::io(format_args!("cannot create {}", dir.display()), e);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let create = || fs::DirBuilder::new().mode(0o700).create(dir);
        let created = match create() {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent() {
                    fs::create_dir_all(parent).map_err(create_err)?;
                }
                match create() {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(create_err(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(create_err(e)),
        };
        if created {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(create_err)?;
        }
        let meta = fs::metadata(dir)
            .map_err(|e| OutboxError::io(format_args!("cannot open {}", dir.display()), e))?;
        if !meta.is_dir() {
            return Err(OutboxError::new(
                ErrorCode::Outbox,
                format!("{} is not a directory", dir.display()),
            ));
        }
        if meta.uid() != euid() {
            return Err(permission_error(format!(
                "the outbox directory {} belongs to user {}, not to this process's user {}",
                dir.display(),
                meta.uid(),
                euid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(permission_error(format!(
                "the outbox directory {} is writable by other users (mode {:o}; chmod go-w, or 700)",
                dir.display(),
                meta.mode() & 0o7777
            )));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir).map_err(create_err)
    }
}

/// Checks that a file of the outbox belongs to this process's user (`EOUTBOXPERM` if not), and
/// makes it mode 0600 if it is more open (a file an earlier version left 0644). (Unix.)
fn check_file(file: &File, path: &Path) -> Result<(), OutboxError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(|e| OutboxError::io(format_args!("cannot inspect {}", path.display()), e))?;
        if meta.uid() != euid() {
            return Err(permission_error(format!(
                "{} belongs to user {}, not to this process's user {}",
                path.display(),
                meta.uid(),
                euid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            set_private(file)
                .map_err(|e| OutboxError::io(format_args!("cannot chmod {}", path.display()), e))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        Ok(())
    }
}

/// Creates segment `number` with its header, ready to append up to `capacity` bytes (see
/// `tail.rs`); with `durable`, syncs it and the directory. A file that could not be completed
/// (no room to preallocate it, say) is removed again.
fn create_segment(
    dir: &Path,
    number: u64,
    first_seq: Seq,
    capacity: u64,
    durable: bool,
) -> Result<Tail, OutboxError> {
    let path = dir.join(segment_name(number));
    let header = format::encode_header(number, first_seq);
    let mut file = private(OpenOptions::new().read(true).write(true).create_new(true))
        .open(&path)
        .map_err(|e| OutboxError::io(format_args!("cannot create {}", path.display()), e))?;
    let created = set_private(&file)
        .and_then(|()| file.write_all(&header))
        .and_then(|()| {
            let tail = Tail::open(file.try_clone()?, HEADER_LEN, capacity)?;
            if durable {
                tail.sync_data()?;
                sync_dir(dir)?;
            }
            Ok(tail)
        });
    match created {
        Ok(tail) => Ok(tail),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(&path);
            Err(OutboxError::io(
                format_args!("cannot create {}", path.display()),
                e,
            ))
        }
    }
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
        if options.segment_bytes < HEADER_LEN + EVENT_OVERHEAD as u64 {
            return Err(OutboxError::new(
                ErrorCode::Outbox,
                format!("segment_bytes {} is too small", options.segment_bytes),
            ));
        }
        prepare_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .open(&lock_path)
        .map_err(|e| OutboxError::io(format_args!("cannot open {}", lock_path.display()), e))?;
        check_file(&lock, &lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OutboxError::new(
                    ErrorCode::OutboxLocked,
                    format!("the outbox {} is open elsewhere", dir.display()),
                ))
            }
            Err(TryLockError::Error(e)) => {
                return Err(OutboxError::io(
                    format_args!("cannot lock {}", lock_path.display()),
                    e,
                ))
            }
        }

        let mut numbers = Vec::new();
        let entries = fs::read_dir(&dir)
            .map_err(|e| OutboxError::io(format_args!("cannot list {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| OutboxError::io(format_args!("cannot list {}", dir.display()), e))?;
            if let Some(number) = entry.file_name().to_str().and_then(parse_segment_name) {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();

        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        // Every event record found (first copy wins), and every acknowledged sequence.
        let mut events: BTreeMap<Seq, Loc> = BTreeMap::new();
        let mut acked = HashSet::new();
        let mut next_seq: Seq = 1;
        let sync_truncation = options.sync != SyncMode::None;
        // Whether appending may go on at the end of the last segment kept: not after damage
        // that was left in place.
        let mut last_appendable = false;

        for (i, &number) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            let path = dir.join(segment_name(number));
            let bytes = File::open(&path)
                .map_err(|e| OutboxError::io(format_args!("cannot read {}", path.display()), e))
                .and_then(|mut file| {
                    check_file(&file, &path)?;
                    let mut bytes = Vec::new();
                    file.read_to_end(&mut bytes).map_err(|e| {
                        OutboxError::io(format_args!("cannot read {}", path.display()), e)
                    })?;
                    Ok(bytes)
                })?;
            recovery.segments += 1;
            let header = format::decode_header(&bytes).filter(|&(n, _)| n == number);
            let Some((_, first_seq)) = header else {
                let torn = (bytes.len() as u64) < HEADER_LEN;
                // A newest segment no longer than a header is one whose creation was cut
                // short: it holds nothing yet. Anything longer is left in place.
                let dropped = newest && bytes.len() as u64 <= HEADER_LEN;
                if dropped {
                    fs::remove_file(&path).map_err(|e| {
                        OutboxError::io(format_args!("cannot remove {}", path.display()), e)
                    })?;
                } else {
                    // Unreadable: kept as garbage for compaction to delete.
                    last_appendable = false;
                    segments.push_back(Segment {
                        number,
                        len: bytes.len() as u64,
                        live_bytes: 0,
                        live_count: 0,
                    });
                }
                recovery.damage.push(Damage {
                    segment: path,
                    offset: 0,
                    bytes: bytes.len() as u64,
                    kind: if torn {
                        DamageKind::Torn
                    } else {
                        DamageKind::BadHeader
                    },
                    truncated: dropped,
                });
                continue;
            };
            next_seq = next_seq.max(first_seq);
            let (found, mut stop) = format::scan(&bytes, HEADER_LEN as usize);
            // Zeros to the end are the unwritten part of a preallocated segment (or what a power
            // cut leaves of an extending write): the log ends there, nothing is damaged.
            let mut len = bytes.len() as u64;
            if let Some((offset, _)) = stop.filter(|&(offset, _)| format::is_zero(&bytes[offset..]))
            {
                stop = None;
                len = offset as u64;
            }
            for record in &found {
                next_seq = next_seq.max(record.seq.saturating_add(1));
                match record.body {
                    Body::Event { .. } => {
                        recovery.events += 1;
                        let loc = Loc {
                            segment: number,
                            offset: record.offset as u64,
                            len: record.len as u64,
                        };
                        match events.entry(record.seq) {
                            // Segments are read oldest first: the first copy is the original.
                            Entry::Vacant(slot) => {
                                slot.insert(loc);
                            }
                            Entry::Occupied(_) => recovery.duplicates += 1,
                        }
                    }
                    Body::Ack => {
                        recovery.acks += 1;
                        acked.insert(record.seq);
                    }
                }
            }
            last_appendable = stop.is_none() || newest;
            if let Some((offset, why)) = stop {
                recovery.damage.push(Damage {
                    segment: path.clone(),
                    offset: offset as u64,
                    bytes: (bytes.len() - offset) as u64,
                    kind: match why {
                        Stop::Torn => DamageKind::Torn,
                        Stop::Checksum => DamageKind::Checksum,
                        Stop::Invalid => DamageKind::Invalid,
                    },
                    truncated: newest,
                });
                if newest {
                    let file = OpenOptions::new().write(true).open(&path).map_err(|e| {
                        OutboxError::io(format_args!("cannot open {}", path.display()), e)
                    })?;
                    file.set_len(offset as u64)
                        .and_then(|()| {
                            if sync_truncation {
                                file.sync_all()
                            } else {
                                Ok(())
                            }
                        })
                        .map_err(|e| {
                            OutboxError::io(format_args!("cannot truncate {}", path.display()), e)
                        })?;
                    len = offset as u64;
                }
            }
            segments.push_back(Segment {
                number,
                len,
                live_bytes: 0,
                live_count: 0,
            });
        }

        let mut index = BTreeMap::new();
        let mut live_bytes = 0;
        for (seq, loc) in events {
            if acked.contains(&seq) {
                continue;
            }
            if let Some(segment) = segments.iter_mut().find(|s| s.number == loc.segment) {
                segment.live_bytes += loc.len;
                segment.live_count += 1;
            }
            live_bytes += loc.len;
            index.insert(seq, loc);
        }

        // Append to the newest segment if there is room, else start one.
        let reuse = segments
            .back()
            .filter(|s| last_appendable && s.len < options.segment_bytes);
        let mut stats = OutboxStats::default();
        let active = match reuse {
            Some(segment) => {
                let path = dir.join(segment_name(segment.number));
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .and_then(|file| Tail::open(file, segment.len, options.segment_bytes))
                    .map_err(|e| {
                        OutboxError::io(format_args!("cannot open {}", path.display()), e)
                    })?
            }
            None => {
                let number = segments.back().map_or(1, |s| s.number + 1);
                let file = create_segment(
                    &dir,
                    number,
                    next_seq,
                    options.segment_bytes,
                    sync_truncation,
                )?;
                segments.push_back(Segment {
                    number,
                    len: HEADER_LEN,
                    live_bytes: 0,
                    live_count: 0,
                });
                stats.segments_created += 1;
                stats.bytes_written += HEADER_LEN;
                file
            }
        };
        let disk_bytes = segments.iter().map(|s| s.len).sum();
        let outbox = Outbox {
            dir,
            options,
            _lock: lock,
            segments,
            active,
            index,
            next_seq,
            live_bytes,
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
        recovery.pending = outbox.pending()?;
        Ok((outbox, recovery))
    }

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

    /// Reads every pending event from disk, oldest first.
    pub fn pending(&self) -> Result<Vec<Record>, OutboxError> {
        let mut reader = Reader::default();
        let mut out = Vec::with_capacity(self.index.len());
        for (&seq, &loc) in &self.index {
            out.push(reader.record(self, seq, loc)?);
        }
        Ok(out)
    }

    /// Reads one pending event from disk.
    pub fn read(&self, seq: Seq) -> Result<Option<Record>, OutboxError> {
        match self.index.get(&seq) {
            Some(&loc) => Reader::default().record(self, seq, loc).map(Some),
            None => Ok(None),
        }
    }

    /// Syncs everything written so far to stable storage (buffered tombstones included),
    /// whatever the mode.
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        self.verify()?;
        let flushed = self.flush();
        if self.dirty {
            self.sync_active()?;
        }
        flushed
    }

    /// When [`Outbox::handle_timeout`] wants to be called: with [`SyncMode::Interval`], while
    /// something written waits for a sync, the end of the interval since the last sync (the
    /// opening, before the first: at once). `None` otherwise: call it again after the next
    /// `append`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.options.sync {
            SyncMode::Interval(_) if self.dirty => self.next_sync,
            _ => None,
        }
    }

    /// Drives [`SyncMode::Interval`] (`now` is the owner's clock): writes the buffered
    /// tombstones, and syncs when something was written and [`Outbox::poll_timeout`]'s time has
    /// come. With the other modes it does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), OutboxError> {
        match self.sync_job(now)? {
            Some(job) => {
                let synced = job.run();
                self.sync_done(synced.is_ok());
                synced
            }
            None => Ok(()),
        }
    }

    /// [`Outbox::handle_timeout`] in two halves, for an owner that shares the outbox between
    /// threads: this decides, and returns the sync that is due as a job that runs without the
    /// outbox (so appends go on meanwhile); then [`Outbox::sync_done`] says how it went. What is
    /// written after the job is made waits for the next interval. After a failure the next try
    /// is an interval later, so that an owner following `poll_timeout` never spins.
    pub fn sync_job(&mut self, now: Instant) -> Result<Option<SyncJob>, OutboxError> {
        let SyncMode::Interval(interval) = self.options.sync else {
            return Ok(None);
        };
        let job = self.start_sync(now);
        if !matches!(job, Ok(None)) {
            self.next_sync = now.checked_add(interval);
        }
        job
    }

    fn start_sync(&mut self, now: Instant) -> Result<Option<SyncJob>, OutboxError> {
        self.look()?;
        // A tombstone write that failed (a full disk) leaves the sync to the next try.
        self.flush()?;
        if !self.dirty || self.next_sync.is_none_or(|due| now < due) {
            return Ok(None);
        }
        let number = self.segments.back().map_or(0, |s| s.number);
        let file = self.active.try_clone().map_err(|e| {
            OutboxError::io(
                format_args!("cannot sync {}", self.segment_path(number).display()),
                e,
            )
        })?;
        self.stats.syncs += 1;
        self.dirty = false;
        Ok(Some(SyncJob {
            file,
            path: self.segment_path(number),
        }))
    }

    /// How the job [`Outbox::sync_job`] gave went: after a failure, what it should have synced
    /// is synced again at the next interval.
    pub fn sync_done(&mut self, ok: bool) {
        if !ok {
            self.dirty = true;
        }
    }

    /// Whether something was written since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.dirty
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

    /// Deletes acknowledged segments and copies the pending records of every sparse old segment
    /// forward, now (`append` and `ack` do this a segment at a time on their own).
    pub fn compact(&mut self) -> Result<(), OutboxError> {
        self.delete_acknowledged()?;
        let old: Vec<u64> = self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
            .map(|s| s.number)
            .collect();
        for number in old {
            let Some(head) = self.segments.front() else {
                break;
            };
            if head.number > number {
                continue; // already deleted
            }
            if self.segments.len() < 2 {
                break;
            }
            if head.live_bytes * 4 <= head.len || self.bloated() {
                self.copy_head()?;
            } else {
                break;
            }
            self.delete_acknowledged()?;
        }
        Ok(())
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

    fn sync_active(&mut self) -> Result<(), OutboxError> {
        self.stats.syncs += 1;
        let number = self.segments.back().map_or(0, |s| s.number);
        self.active.sync_data().map_err(|e| {
            OutboxError::io(
                format_args!("cannot sync {}", self.segment_path(number).display()),
                e,
            )
        })?;
        self.dirty = false;
        Ok(())
    }

    /// Cuts the active segment back to `len` (after a failed write or sync).
    fn truncate_active(&mut self, len: u64) {
        if let Some(active) = self.segments.back_mut() {
            self.disk_bytes -= active.len.saturating_sub(len);
            active.len = active.len.min(len);
        }
        match len.checked_sub(self.mirror_from) {
            Some(keep) => self.mirror.truncate(keep as usize),
            None => {
                self.mirror.clear();
                self.mirror_from = len;
            }
        }
        self.tail_dirty = true;
        let _ = self.repair_tail();
    }

    /// Makes the file end where the log ends, after a failed write.
    fn repair_tail(&mut self) -> Result<(), OutboxError> {
        if !self.tail_dirty {
            return Ok(());
        }
        let (number, len) = self.segments.back().map_or((0, 0), |s| (s.number, s.len));
        self.active.cut(len).map_err(|e| {
            OutboxError::io(
                format_args!("cannot truncate {}", self.segment_path(number).display()),
                e,
            )
        })?;
        self.tail_dirty = false;
        Ok(())
    }

    /// Looks at the active segment's file (one `fstat`): if another program shortened it below
    /// the end of the log or removed it, [`Outbox::rescue`]s what it still holds. Done when a
    /// write through the mapping faulted, before a segment is finished, and at
    /// [`Outbox::sync`] and `close`; by its size alone ([`Outbox::look`]) at each group commit
    /// ([`Outbox::sync_job`]), every [`MIRROR_CAP`] bytes written, and with
    /// [`SyncMode::Always`] before each append.
    pub fn verify(&mut self) -> Result<(), OutboxError> {
        let (number, len) = self.segments.back().map_or((0, 0), |s| (s.number, s.len));
        let state = self.active.state().map_err(|e| {
            OutboxError::io(
                format_args!("cannot inspect {}", self.segment_path(number).display()),
                e,
            )
        })?;
        if state.linked && state.size >= len {
            self.suspect = false;
            self.mirror.clear();
            self.mirror_from = len;
            return Ok(());
        }
        self.rescue()
    }

    /// [`Outbox::verify`] by the file's size alone (a seek to its end), for the frequent looks
    /// (group commits, every [`MIRROR_CAP`] bytes): an `fstat` there makes the next
    /// `fdatasync` measurably slower on ext4. A removed file keeps its size and its records
    /// (read back through the open handle): the full looks (a new segment, `sync`, close, a
    /// fault) find it.
    fn look(&mut self) -> Result<(), OutboxError> {
        let len = self.segments.back().map_or(0, |s| s.len);
        if !self.suspect && self.active.size().is_ok_and(|size| size >= len) {
            self.mirror.clear();
            self.mirror_from = len;
            return Ok(());
        }
        self.verify()
    }

    /// The active segment lost records to another program (shortened, or removed): every
    /// pending record it still holds that reads back whole (through the open handle, so a
    /// removed file gives all of them) is copied to a new segment, which becomes
    /// the active one; the others are no longer pending (counted in [`OutboxStats::lost`]).
    /// The old file is cut to its readable records, or left alone if removed, and goes the
    /// way of any old segment. Until this succeeds, every write tries it again first.
    fn rescue(&mut self) -> Result<(), OutboxError> {
        let (number, len) = self.segments.back().map_or((0, 0), |s| (s.number, s.len));
        let path = self.segment_path(number);
        self.suspect = true;
        let bytes = self
            .active
            .read_to(len)
            .map_err(|e| OutboxError::io(format_args!("cannot read {}", path.display()), e))?;
        // What is left of the log: the header and the records before the first one cut.
        let readable = match format::decode_header(&bytes) {
            Some((n, _)) if n == number => format::scan(&bytes, HEADER_LEN as usize)
                .1
                .map_or(bytes.len(), |(offset, _)| offset)
                as u64,
            _ => 0,
        };
        let mut moving = Vec::new();
        let mut lost = Vec::new();
        for (&seq, &loc) in &self.index {
            if loc.segment != number {
                continue;
            }
            // Written since the last look: from memory. Else from what the file still has.
            let record = loc
                .offset
                .checked_sub(self.mirror_from)
                .and_then(|at| self.mirror.get(at as usize..(at + loc.len) as usize))
                .or_else(|| bytes.get(loc.offset as usize..(loc.offset + loc.len) as usize))
                .filter(|r| format::parse(r, 0).is_ok_and(|f| f.seq == seq));
            match record {
                Some(record) => moving.push((seq, loc, record.to_vec())),
                None => lost.push((seq, loc)),
            }
        }
        for (seq, loc) in lost {
            self.index.remove(&seq);
            self.live_bytes -= loc.len;
            if let Some(s) = self.segment_mut(number) {
                s.live_bytes -= loc.len;
                s.live_count -= 1;
            }
            self.stats.lost += 1;
            self.stats.lost_bytes += loc.len;
        }
        // A new active segment, synced with its directory entry (the records copied into it are
        // synced below), then the copies.
        let next = number + 1;
        let tail = create_segment(
            &self.dir,
            next,
            self.next_seq,
            self.options.segment_bytes,
            true,
        )?;
        let old = std::mem::replace(&mut self.active, tail);
        self.segments.push_back(Segment {
            number: next,
            len: HEADER_LEN,
            live_bytes: 0,
            live_count: 0,
        });
        self.disk_bytes += HEADER_LEN;
        self.stats.bytes_written += HEADER_LEN;
        self.stats.segments_created += 1;
        self.dirty = false;
        self.suspect = false;
        self.tail_dirty = false;
        self.mirror.clear();
        self.mirror_from = HEADER_LEN;
        for (seq, loc, record) in moving {
            let (segment, offset, _) = self.write_record(&record, true)?;
            self.index.insert(
                seq,
                Loc {
                    segment,
                    offset,
                    len: loc.len,
                },
            );
            if let Some(s) = self.segment_mut(number) {
                s.live_bytes -= loc.len;
                s.live_count -= 1;
            }
            let active = self.segments.back_mut().expect("an active segment");
            active.live_bytes += loc.len;
            active.live_count += 1;
            self.stats.copied_records += 1;
            self.stats.copied_bytes += loc.len;
        }
        if self.dirty && self.options.sync != SyncMode::None {
            self.sync_active()?;
        }
        // Only now is the old file cut to its readable records (its records after a hole were
        // still needed until copied); one left without a whole header holds nothing to read,
        // and would only be reported as damage at the next opening: it goes.
        let linked = old.state().is_ok_and(|s| s.linked);
        let _ = old.discard(readable);
        if readable == 0 && linked {
            let _ = fs::remove_file(&path);
        }
        if let Some(s) = self.segment_mut(number) {
            let cut = s.len.saturating_sub(readable);
            s.len -= cut;
            self.disk_bytes -= cut;
        }
        self.stats.shortened += 1;
        let _ = self.delete_acknowledged();
        Ok(())
    }

    /// Writes the buffered tombstones and then `record` with one write, and returns where
    /// `record` went (see [`Outbox::write_record`]). On failure neither is written, and the
    /// tombstones are dropped as in [`Outbox::flush`].
    fn write_with_acks(&mut self, record: &[u8]) -> Result<(u64, u64, bool), OutboxError> {
        if self.acks.is_empty() {
            return self.write_record(record, false);
        }
        let before = self.acks.len() as u64;
        let mut acks = std::mem::take(&mut self.acks);
        acks.extend_from_slice(record);
        let written = self.write_record(&acks, false);
        acks.truncate(before as usize);
        self.acks = acks;
        self.drop_acks(written.is_err());
        let (segment, offset, rotated) = written?;
        Ok((segment, offset + before, rotated))
    }

    /// Forgets the buffered tombstones once written, or counts them as lost when not.
    fn drop_acks(&mut self, failed: bool) {
        if failed {
            self.stats.ack_write_errors += (self.acks.len() / format::ACK_LEN) as u64;
        }
        self.acks.clear();
    }

    /// Appends one encoded record to the active segment, starting a new segment first if it
    /// would not fit. Returns where it went and whether a segment was started. On failure the
    /// file is cut back to the last good record.
    fn write_record(
        &mut self,
        buf: &[u8],
        compacting: bool,
    ) -> Result<(u64, u64, bool), OutboxError> {
        self.repair_tail()?;
        let mut rotated = false;
        // A fault sends the write round again, after a look at the file (a mapping faults at
        // most once; a rescued segment starts anew): three rounds are always enough.
        let mut rounds = 0;
        let (number, offset) = loop {
            rounds += 1;
            if self.suspect || self.mirror.len() >= MIRROR_CAP {
                self.look()?;
            }
            let active_len = self.segments.back().map_or(0, |s| s.len);
            if active_len > HEADER_LEN && active_len + buf.len() as u64 > self.options.segment_bytes
            {
                // A segment is only finished once its file is known to be whole.
                self.verify()?;
                let active_len = self.segments.back().map_or(0, |s| s.len);
                if active_len > HEADER_LEN
                    && active_len + buf.len() as u64 > self.options.segment_bytes
                {
                    self.start_segment(compacting)?;
                    rotated = true;
                }
            }
            let active = self.segments.back().expect("an active segment");
            let (number, offset) = (active.number, active.len);
            match self.active.write_at(offset, buf) {
                Ok(true) => break (number, offset),
                // The mapping faulted (the file was shortened, or had no block for a page):
                // nothing is known to be written. The file is looked at, and rescued if it
                // lost records, before the next round writes with a system call.
                Ok(false) if rounds < 3 => {
                    self.stats.faults += 1;
                    self.suspect = true;
                }
                Ok(false) => {
                    self.suspect = true;
                    return Err(OutboxError::new(
                        ErrorCode::Outbox,
                        format!(
                            "cannot write {}: it keeps changing under the outbox",
                            self.segment_path(number).display()
                        ),
                    ));
                }
                Err(e) => {
                    let err = OutboxError::io(
                        format_args!("cannot write {}", self.segment_path(number).display()),
                        e,
                    );
                    self.tail_dirty = true;
                    let _ = self.repair_tail();
                    return Err(err);
                }
            }
        };
        if self.mirror.is_empty() {
            self.mirror_from = offset;
        }
        self.mirror.extend_from_slice(buf);
        let active = self.segments.back_mut().expect("an active segment");
        active.len += buf.len() as u64;
        self.disk_bytes += buf.len() as u64;
        self.stats.bytes_written += buf.len() as u64;
        self.dirty = true;
        Ok((number, offset, rotated))
    }

    /// Starts a new active segment. The one it replaces is synced first (unless the mode is
    /// `None` and this is not a compaction), and so are the new file and the directory, so that
    /// later syncs of the new segment are enough.
    fn start_segment(&mut self, compacting: bool) -> Result<(), OutboxError> {
        let durable = compacting || self.options.sync != SyncMode::None;
        if durable && self.dirty && !self.segments.is_empty() {
            self.sync_active()?;
        }
        let number = self.segments.back().map_or(1, |s| s.number + 1);
        let file = create_segment(
            &self.dir,
            number,
            self.next_seq,
            self.options.segment_bytes,
            durable,
        )?;
        // The old segment is cut back to its last record; should that fail, its zeros still
        // read as its end.
        let _ = std::mem::replace(&mut self.active, file).finish();
        self.mirror.clear();
        self.mirror_from = HEADER_LEN;
        self.segments.push_back(Segment {
            number,
            len: HEADER_LEN,
            live_bytes: 0,
            live_count: 0,
        });
        self.disk_bytes += HEADER_LEN;
        self.stats.bytes_written += HEADER_LEN;
        self.stats.segments_created += 1;
        if !durable {
            self.dirty = true;
        }
        Ok(())
    }

    /// The directory holds more than twice the pending bytes plus two segments.
    fn bloated(&self) -> bool {
        self.disk_bytes > 2 * self.live_bytes + 2 * self.options.segment_bytes
    }

    /// Deletes the oldest segments while they hold no pending event.
    fn delete_acknowledged(&mut self) -> Result<(), OutboxError> {
        while self.segments.len() > 1 && self.segments[0].live_count == 0 {
            let number = self.segments[0].number;
            let path = self.segment_path(number);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(OutboxError::io(
                        format_args!("cannot remove {}", path.display()),
                        e,
                    ))
                }
            }
            let segment = self.segments.pop_front().expect("a segment");
            self.disk_bytes -= segment.len;
            self.stats.segments_deleted += 1;
        }
        Ok(())
    }

    /// Copies the pending records of the oldest segment to the active one, syncs them, and
    /// deletes the oldest segment.
    fn copy_head(&mut self) -> Result<(), OutboxError> {
        let number = self.segments[0].number;
        let path = self.segment_path(number);
        let bytes = fs::read(&path)
            .map_err(|e| OutboxError::io(format_args!("cannot read {}", path.display()), e))?;
        let moving: Vec<(Seq, Loc)> = self
            .index
            .iter()
            .filter(|(_, loc)| loc.segment == number)
            .map(|(&seq, &loc)| (seq, loc))
            .collect();
        for (seq, loc) in moving {
            let record = bytes
                .get(loc.offset as usize..(loc.offset + loc.len) as usize)
                .filter(|r| format::parse(r, 0).is_ok_and(|f| f.seq == seq))
                .ok_or_else(|| changed(&path, loc))?;
            let (segment, offset, _) = self.write_record(record, true)?;
            let new = Loc {
                segment,
                offset,
                len: loc.len,
            };
            self.index.insert(seq, new);
            if let Some(s) = self.segment_mut(number) {
                s.live_bytes -= loc.len;
                s.live_count -= 1;
            }
            let active = self.segments.back_mut().expect("an active segment");
            active.live_bytes += loc.len;
            active.live_count += 1;
            self.stats.copied_records += 1;
            self.stats.copied_bytes += loc.len;
        }
        // The copies must be on stable storage before the originals go.
        if self.dirty {
            self.sync_active()?;
        }
        self.delete_acknowledged()
    }

    /// Deletes acknowledged segments and, after a new segment was started, compacts the oldest
    /// one if worth it. Failures are counted, not returned: the caller's own write succeeded,
    /// and the next attempt may succeed.
    fn maintain(&mut self, rotated: bool) {
        let mut result = self.delete_acknowledged();
        if result.is_ok() && rotated && self.segments.len() > 1 {
            let head = &self.segments[0];
            if self.bloated() {
                // Rare (the garbage exceeds everything pending): clean every old segment now.
                result = self.compact();
            } else if head.live_bytes * 4 <= head.len {
                result = self.copy_head();
            }
        }
        if result.is_err() {
            self.stats.maintenance_errors += 1;
        }
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

/// Reads records at known places, keeping the last segment file open.
#[derive(Default)]
struct Reader {
    file: Option<(u64, File)>,
}

impl Reader {
    fn record(&mut self, outbox: &Outbox, seq: Seq, loc: Loc) -> Result<Record, OutboxError> {
        let path = outbox.segment_path(loc.segment);
        let io_err = |e| OutboxError::io(format_args!("cannot read {}", path.display()), e);
        if self.file.as_ref().is_none_or(|(n, _)| *n != loc.segment) {
            self.file = Some((loc.segment, File::open(&path).map_err(io_err)?));
        }
        let (_, file) = self.file.as_mut().expect("opened above");
        let mut bytes = vec![0; loc.len as usize];
        file.seek(SeekFrom::Start(loc.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(io_err)?;
        match format::parse(&bytes, 0) {
            Ok(found) if found.seq == seq => match found.body {
                Body::Event { id, frame } => Ok(Record {
                    seq,
                    id: bytes[id].to_vec(),
                    frame: bytes[frame].to_vec(),
                }),
                Body::Ack => Err(changed(&path, loc)),
            },
            _ => Err(changed(&path, loc)),
        }
    }
}

fn changed(path: &Path, loc: Loc) -> OutboxError {
    OutboxError::new(
        ErrorCode::Outbox,
        format!(
            "{} changed on disk at offset {}",
            path.display(),
            loc.offset
        ),
    )
}
