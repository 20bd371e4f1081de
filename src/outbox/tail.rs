//! The active segment's writer. Appending is the outbox's hot path, and a `write` system call
//! per event is a large part of what the whole client spends per event at `maxInFlight: 64`
//! (docs/performance.md has the figures). So on Linux, where the file system is one that
//! allocates blocks at `fallocate` time (ext4, XFS, f2fs, tmpfs), the segment is preallocated to
//! its full size and mapped shared: an append is a copy into the page cache, with no system
//! call, and is as safe from a killed process as a `write` (the kernel owns the dirty pages;
//! `fdatasync` writes them like any other). Elsewhere, or when preallocating or mapping is not
//! possible, each append is one positioned write.
//!
//! # Faults
//!
//! A write to a mapped page that the file no longer covers (another program truncated or
//! shortened the file: `logrotate copytruncate`, a cleanup job), or that needs a block the file
//! system cannot find (a full copy-on-write file system), raises `SIGBUS`, which kills the
//! process. So a mapping is only ever written under a *fence* (`fence` below): a process-wide
//! `SIGBUS` handler that knows the address ranges of the outbox's mappings. A fault inside one
//! of them is answered by putting a private zero page at the faulting address (the copy then
//! finishes into memory that belongs to no file) and marking the mapping as faulted; any other
//! `SIGBUS` goes to the handler that was there before (or kills as it would have). After each
//! copy the writer looks at the mark: when it is set, the mapping is dropped, the write is
//! reported as not done (`Ok(false)` from [`Tail::write_at`]) and the caller checks the file
//! and writes again with positioned writes, which report `ENOSPC` as an error. No mapping is
//! made while the handler is not the one installed for `SIGBUS`.
//!
//! Preallocation already keeps a full disk out of the mapping on the file systems listed
//! (every block of the range is reserved); copy-on-write file systems (btrfs, ZFS) may need new
//! blocks for a rewrite, so they always get writes.
//!
//! A preallocated segment ends in zeros after its last record. Readers treat a run of zeros to
//! the end of a file as the end of the log (`format::is_zero`), which is also what a file system
//! leaves when a power cut interrupts an extending write. When a segment stops being the active
//! one, or the outbox closes, its file is cut back to its last record (unless another program
//! shortened or removed it meanwhile: then it is left as it is).

use std::fs::File;
use std::io;

/// What [`Tail::state`] found of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileState {
    /// Its size now.
    pub size: u64,
    /// Whether a directory still names it (`false`: another program removed it).
    pub linked: bool,
}

/// The active segment file and, on Linux when possible, a shared mapping of its first
/// `capacity` bytes.
pub(crate) struct Tail {
    file: File,
    #[cfg(target_os = "linux")]
    map: Option<linux::Map>,
    /// The file was preallocated past its log: it is cut back to `end` when finished.
    preallocated: bool,
    /// The highest byte written so far, so that a repair knows what to clear.
    end: u64,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("mapped", &self.is_mapped())
            .field("end", &self.end)
            .finish()
    }
}

impl Tail {
    /// Takes over `file`, whose log ends at `len` (anything after it is zeros or will be
    /// overwritten), to append up to `capacity` bytes through a mapping where that is possible.
    /// Where it is not (no room to preallocate the whole segment, say), appends are writes.
    pub(crate) fn open(file: File, len: u64, capacity: u64) -> io::Result<Tail> {
        #[cfg(target_os = "linux")]
        {
            let map = linux::Map::new(&file, capacity)?;
            Ok(Tail {
                file,
                preallocated: map.is_some(),
                map,
                end: len,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = capacity;
            Ok(Tail {
                file,
                preallocated: false,
                end: len,
            })
        }
    }

    /// Whether appends go through a mapping.
    pub(crate) fn is_mapped(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.map.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Writes `buf` at `offset`: a copy into the mapping when it fits, else a positioned write.
    /// `Ok(false)`: the mapping faulted (the file was shortened by another program, or the
    /// file system had no block for a page), so what was copied may not be in the file; the
    /// mapping is gone, and the caller should look at the file ([`Tail::state`]) before writing
    /// again (which is then a positioned write).
    pub(crate) fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        if let Some(map) = &mut self.map {
            match map.write_at(offset, buf) {
                Some(true) => {
                    self.end = self.end.max(offset + buf.len() as u64);
                    return Ok(true);
                }
                Some(false) => {
                    self.map = None;
                    self.end = self.end.max(offset + buf.len() as u64);
                    return Ok(false);
                }
                None => {}
            }
        }
        write_all_at(&self.file, offset, buf)?;
        self.end = self.end.max(offset + buf.len() as u64);
        Ok(true)
    }

    /// Makes the log end at `len` again after a failed write or sync: the bytes after it are
    /// cleared in the mapping, and the file is cut back (never below the mapped range).
    pub(crate) fn cut(&mut self, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(map) = &mut self.map {
            if map.zero(len, self.end) {
                let floor = map.len();
                if self.end > floor {
                    self.file.set_len(len.max(floor))?;
                }
                self.end = len;
                return Ok(());
            }
            // The mapping faulted: the file was shortened under it. Cut it with a system call.
            self.map = None;
        }
        // Cut, never lengthen: a file another program shortened stays as short.
        if self.state()?.size > len {
            self.file.set_len(len)?;
        }
        self.end = len;
        Ok(())
    }

    /// The file's size now, and whether it is still in its directory.
    pub(crate) fn state(&self) -> io::Result<FileState> {
        let meta = self.file.metadata()?;
        Ok(FileState {
            size: meta.len(),
            linked: linked(&meta),
        })
    }

    /// The file's size now, by a seek to its end (cheaper than [`Tail::state`], and without
    /// the link count; positioned reads and writes do not use the file position).
    pub(crate) fn size(&self) -> io::Result<u64> {
        use std::io::Seek;
        (&self.file).seek(io::SeekFrom::End(0))
    }

    /// Reads the file's first `len` bytes, or as many as it still has.
    pub(crate) fn read_to(&self, len: u64) -> io::Result<Vec<u8>> {
        let mut out = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        let mut done = 0;
        while done < out.len() {
            match read_at(&self.file, &mut out[done..], done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        out.truncate(done);
        Ok(out)
    }

    /// Forces what was written (through the mapping too) to stable storage.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        // On Linux the mapping's dirty pages are the file's page cache: fdatasync writes them.
        self.file.sync_data()
    }

    /// A second handle on the file, to sync it from another thread.
    pub(crate) fn try_clone(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Unmaps, and cuts the file back to its log: it is no longer appended to. (Dropping does
    /// the same, without the error.)
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.trim()
    }

    /// Gives the file up after another program shortened or removed it: unmaps, and cuts it to
    /// `len` (the end of its last readable record) if it is still in place and longer than that.
    pub(crate) fn discard(mut self, len: u64) -> io::Result<()> {
        self.end = len;
        self.trim()
    }

    fn trim(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            self.map = None;
        }
        if std::mem::take(&mut self.preallocated) {
            // Never lengthen a file another program shortened, nor touch one it removed.
            let state = self.state()?;
            if state.linked && state.size > self.end {
                return self.file.set_len(self.end);
            }
        }
        Ok(())
    }

    /// Unmaps without touching the file: what a killed process leaves.
    #[cfg(test)]
    pub(crate) fn abandon(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.map = None;
        }
        self.preallocated = false;
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.trim();
    }
}

#[cfg(unix)]
fn linked(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::MetadataExt::nlink(meta) > 0
}

#[cfg(not(unix))]
fn linked(_: &std::fs::Metadata) -> bool {
    // Stable std gives no link count on Windows: a removed segment is not noticed there (a
    // shortened one is, by its size).
    true
}

#[cfg(unix)]
fn write_all_at(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut offset: u64, mut buf: &[u8]) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    use super::fence;

    /// File systems that reserve every block of a preallocated range (`f_type` of `fstatfs`).
    const RESERVING: [u32; 4] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // XFS
        0xF2F5_2010, // f2fs
        0x0102_1994, // tmpfs
    ];

    /// A shared, writable mapping of a file's first `len` bytes, all preallocated, registered
    /// with the fence.
    pub(super) struct Map {
        ptr: *mut u8,
        len: usize,
        slot: fence::Slot,
    }

    // SAFETY: the mapping is plain memory owned by this value; nothing else in the process
    // holds its address (the fence's table only compares addresses with it), and `&mut self`
    // guards every write.
    unsafe impl Send for Map {}

    impl Map {
        /// Preallocates and maps `file`'s first `len` bytes: `Ok(None)` where the file system
        /// is not one that reserves blocks, the fence is not in place, or preallocating or
        /// mapping fails.
        pub(super) fn new(file: &File, len: u64) -> io::Result<Option<Map>> {
            let fd = file.as_raw_fd();
            let Ok(size) = usize::try_from(len) else {
                return Ok(None);
            };
            if size == 0 || !reserving(fd) {
                return Ok(None);
            }
            let Ok(flen) = libc::off_t::try_from(len) else {
                return Ok(None);
            };
            // Without the fence a fault would kill the process: append with writes instead.
            let Some(slot) = fence::Slot::take() else {
                return Ok(None);
            };
            // SAFETY: fd is open for the duration of the call; mode 0 allocates the range and
            // extends the file to cover it.
            if unsafe { libc::fallocate(fd, 0, 0, flen) } != 0 {
                // No room for the whole segment now (ENOSPC, EFBIG), or no support: append
                // with writes, which report a full disk record by record.
                return Ok(None);
            }
            // SAFETY: a fresh shared mapping of a range the file now covers (fallocate above);
            // the kernel picks the address. MAP_FAILED is checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Ok(None);
            }
            slot.fence(ptr as usize, size);
            Ok(Some(Map {
                ptr: ptr.cast(),
                len: size,
                slot,
            }))
        }

        pub(super) fn len(&self) -> u64 {
            self.len as u64
        }

        /// Copies `buf` to `offset` if it fits inside the mapping (`None` if not): `Some(false)`
        /// if the copy faulted (see the module documentation), and then the mapping must not be
        /// used again.
        pub(super) fn write_at(&mut self, offset: u64, buf: &[u8]) -> Option<bool> {
            let start = usize::try_from(offset).ok()?;
            if start > self.len || buf.len() > self.len - start {
                return None;
            }
            // SAFETY: start + buf.len() <= self.len (checked above), the mapping is writable,
            // and `buf` cannot overlap it (no slice of the mapping is ever handed out). No
            // JavaScript runs during the copy: `buf` is Rust memory (the event's frame, already
            // copied out of JavaScript values when it was encoded) and the copy calls nothing.
            // Other programs can change the mapped file meanwhile: the mapping is only ever
            // written through this raw pointer and never read into a Rust reference, so bytes
            // another writer changes cannot break an invariant here (they are caught by the
            // records' CRC when the log is read), and a page the file no longer backs (a
            // truncation) would fault: the fence registered for this range answers that fault
            // by mapping a private zero page there, so the copy completes into memory this
            // mapping owns, and `faulted` says so below.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(start), buf.len()) };
            Some(!self.slot.faulted())
        }

        /// Zeros `[from, to)`, clipped to the mapping: `false` if it faulted.
        pub(super) fn zero(&mut self, from: u64, to: u64) -> bool {
            let from = usize::try_from(from).unwrap_or(usize::MAX).min(self.len);
            let to = usize::try_from(to).unwrap_or(usize::MAX).min(self.len);
            if from < to {
                // SAFETY: from < to <= self.len, inside the writable mapping; as in `write_at`,
                // no JavaScript runs, other programs' writes cannot break a Rust invariant (the
                // mapping is only written through the pointer), and a truncation is fenced.
                unsafe { std::ptr::write_bytes(self.ptr.add(from), 0, to - from) };
            }
            !self.slot.faulted()
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // Out of the fence's table before the range can be reused by another mapping.
            self.slot.release();
            // SAFETY: ptr/len are exactly what mmap returned, unmapped once, here (the zero
            // pages the fence may have put inside the range go with it).
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }

    fn reserving(fd: libc::c_int) -> bool {
        // SAFETY: statfs is plain old data, for which all zeros is a valid value.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open, and `stat` is a valid, writable statfs for the call to fill.
        if unsafe { libc::fstatfs(fd, &mut stat) } != 0 {
            return false;
        }
        // (`f_type` is 32 or 64 bits wide, signed or not, by target; the magics are 32-bit.)
        RESERVING.contains(&(stat.f_type as u32))
    }
}

/// The `SIGBUS` fence of the mappings (see the module documentation): a table of the mapped
/// ranges, read by the signal handler with atomic loads only, and the handler.
#[cfg(target_os = "linux")]
mod fence {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    /// Mappings fenced at once (one per open outbox); past this, segments get writes.
    const SLOTS: usize = 64;

    struct Entry {
        taken: AtomicBool,
        /// The range; `start` 0 while it holds none.
        start: AtomicUsize,
        len: AtomicUsize,
        faulted: AtomicBool,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const FREE: Entry = Entry {
        taken: AtomicBool::new(false),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    };

    static TABLE: [Entry; SLOTS] = [FREE; SLOTS];
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    /// The `SIGBUS` action before ours, to pass on what is not ours.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
    static INSTALLED: OnceLock<bool> = OnceLock::new();

    /// One entry of the table, owned by one mapping.
    pub(super) struct Slot(usize);

    impl Slot {
        /// A free entry, once the handler is installed and still the one `SIGBUS` runs.
        pub(super) fn take() -> Option<Slot> {
            if !installed() {
                return None;
            }
            TABLE.iter().enumerate().find_map(|(i, entry)| {
                entry
                    .taken
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                    // (Made only when taken: a `Slot` frees its entry when dropped.)
                    .then(|| Slot(i))
            })
        }

        /// Fences `[start, start + len)`.
        pub(super) fn fence(&self, start: usize, len: usize) {
            let entry = &TABLE[self.0];
            entry.faulted.store(false, Ordering::Relaxed);
            entry.len.store(len, Ordering::Relaxed);
            entry.start.store(start, Ordering::Release);
        }

        /// Whether a write into the range faulted since it was fenced.
        pub(super) fn faulted(&self) -> bool {
            TABLE[self.0].faulted.load(Ordering::Acquire)
        }

        /// Unfences the range (before it is unmapped).
        pub(super) fn release(&self) {
            let entry = &TABLE[self.0];
            entry.start.store(0, Ordering::Release);
            entry.len.store(0, Ordering::Relaxed);
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            self.release();
            TABLE[self.0].taken.store(false, Ordering::Release);
        }
    }

    /// Installs the handler once; afterwards, whether it is still the one installed (a program
    /// that replaced it without passing faults on would leave mappings unfenced).
    fn installed() -> bool {
        let first = *INSTALLED.get_or_init(|| {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let Ok(page) = usize::try_from(page) else {
                return false;
            };
            if !page.is_power_of_two() {
                return false;
            }
            PAGE.store(page, Ordering::Relaxed);
            // SAFETY: sigaction is plain old data, for which all zeros is a valid value.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a query (no new action) into a valid, writable sigaction.
            if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } != 0 {
                return false;
            }
            // Kept before ours is installed, so that the handler always finds it.
            let _ = PREVIOUS.set(previous);
            // SAFETY: as above.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            // SAFETY: installs a handler that only reads atomics, calls mmap, sigaction and
            // raise (plain system calls), or calls the previous handler as the kernel would.
            unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
            }
        });
        first && current_is_ours()
    }

    fn current_is_ours() -> bool {
        // SAFETY: as in `installed`.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a query into a valid, writable sigaction.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut now) } != 0 {
            return false;
        }
        now.sa_sigaction == on_sigbus as *const () as libc::sighandler_t
    }

    /// The handler. A fault inside a fenced range gets a private zero page at its address and
    /// marks the range; anything else goes where it would have gone without us.
    extern "C" fn on_sigbus(
        sig: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; si_addr is the
        // faulting address for SIGBUS.
        let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
        // A fault the kernel raised (si_code > 0), not a SIGBUS another process sent.
        if code > 0 && addr != 0 {
            let page = PAGE.load(Ordering::Relaxed);
            for entry in &TABLE {
                let start = entry.start.load(Ordering::Acquire);
                if start == 0 || addr < start || addr - start >= entry.len.load(Ordering::Relaxed) {
                    continue;
                }
                // SAFETY: replaces exactly the faulting page, inside a range this module
                // fenced, which belongs to a mapping that is being written by this very thread
                // (the fault is synchronous) and is only unmapped after it is unfenced. mmap is
                // a plain system call (glibc's wrapper only sets errno), safe in a handler.
                let mapped = unsafe {
                    libc::mmap(
                        (addr & !(page - 1)) as *mut libc::c_void,
                        page,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if mapped != libc::MAP_FAILED {
                    entry.faulted.store(true, Ordering::Release);
                    return; // the faulting write runs again, into the zero page
                }
                break;
            }
        }
        pass_on(sig, info, context, code);
    }

    /// What `SIGBUS` would have done without us: the previous handler, or the default action.
    fn pass_on(
        sig: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
        code: libc::c_int,
    ) {
        let previous = PREVIOUS.get();
        let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
        match handler {
            libc::SIG_IGN if code <= 0 => {}
            libc::SIG_DFL | libc::SIG_IGN => {
                // SAFETY: all zeros is SIG_DFL with no flags and an empty mask.
                let default: libc::sigaction = unsafe { std::mem::zeroed() };
                // SAFETY: restores the default action and re-raises: a fault runs again on
                // return and kills as it would have; a sent signal is pending until then.
                unsafe {
                    libc::sigaction(sig, &default, std::ptr::null_mut());
                    if code <= 0 {
                        libc::raise(sig);
                    }
                }
            }
            f => {
                let siginfo = previous.is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0);
                // SAFETY: `f` is the handler another part of the process installed for
                // SIGBUS, called with the arguments its flags say it takes, as the kernel would.
                unsafe {
                    if siginfo {
                        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                            std::mem::transmute(f);
                        f(sig, info, context);
                    } else {
                        let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
                        f(sig);
                    }
                }
            }
        }
    }
}
