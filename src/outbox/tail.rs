//! The active segment's writer. Appending is the outbox's hot path: on the development VM one
//! `write` system call costs about 5 µs, more than half of what the whole client spends per
//! event at `maxInFlight: 64`. So on Linux, where the file system is one that allocates blocks
//! at `fallocate` time (ext4, XFS, f2fs, tmpfs), the segment is preallocated to its full size
//! and mapped shared: an append is a copy into the page cache, with no system call, and is as
//! safe from a killed process as a `write` (the kernel owns the dirty pages; `fdatasync` writes
//! them like any other). Elsewhere, or when preallocating or mapping is not possible, each
//! append is one positioned write, as before.
//!
//! Why only those file systems: a write fault on a mapped page that needs a block the file
//! system cannot find (a full disk) kills the process with `SIGBUS` instead of returning
//! `ENOSPC`. The file systems listed reserve every block of a preallocated range, and a segment
//! is only mapped once its whole range is preallocated; when there is no room for that, the
//! segment is appended to with writes, which report `ENOSPC` record by record. Copy-on-write
//! file systems (btrfs, ZFS) may need new blocks for a rewrite, so they always get writes.
//!
//! A preallocated segment ends in zeros after its last record. Readers treat a run of zeros to
//! the end of a file as the end of the log (`format::is_zero`), which is also what a file system
//! leaves when a power cut interrupts an extending write. When a segment stops being the active
//! one, or the outbox closes, its file is cut back to its last record.

use std::fs::File;
use std::io;

/// The active segment file and, on Linux when possible, a shared mapping of its first
/// `capacity` bytes.
pub(crate) struct Tail {
    file: File,
    #[cfg(target_os = "linux")]
    map: Option<linux::Map>,
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
                map,
                end: len,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = capacity;
            Ok(Tail { file, end: len })
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
    pub(crate) fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(map) = &mut self.map {
            if map.write_at(offset, buf) {
                self.end = self.end.max(offset + buf.len() as u64);
                return Ok(());
            }
        }
        write_all_at(&self.file, offset, buf)?;
        self.end = self.end.max(offset + buf.len() as u64);
        Ok(())
    }

    /// Makes the log end at `len` again after a failed write or sync: the bytes after it are
    /// cleared in the mapping, and the file is cut back (never below the mapped range).
    pub(crate) fn cut(&mut self, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(map) = &mut self.map {
            map.zero(len, self.end);
            let floor = map.len();
            if self.end > floor {
                self.file.set_len(len.max(floor))?;
            }
            self.end = len;
            return Ok(());
        }
        self.file.set_len(len)?;
        self.end = len;
        Ok(())
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

    fn trim(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.map.take().is_some() {
            return self.file.set_len(self.end);
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
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.trim();
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
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

    /// File systems that reserve every block of a preallocated range (`f_type` of `fstatfs`).
    const RESERVING: [u32; 4] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // XFS
        0xF2F5_2010, // f2fs
        0x0102_1994, // tmpfs
    ];

    /// A shared, writable mapping of a file's first `len` bytes, all preallocated.
    pub(super) struct Map {
        ptr: *mut u8,
        len: usize,
    }

    // SAFETY: the mapping is plain memory owned by this value; nothing else in the process
    // holds its address, and `&mut self` guards every write.
    unsafe impl Send for Map {}

    impl Map {
        /// Preallocates and maps `file`'s first `len` bytes: `Ok(None)` where the file system
        /// is not one that reserves blocks, or preallocating or mapping fails.
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
            Ok(Some(Map {
                ptr: ptr.cast(),
                len: size,
            }))
        }

        pub(super) fn len(&self) -> u64 {
            self.len as u64
        }

        /// Copies `buf` to `offset` if it fits inside the mapping.
        pub(super) fn write_at(&mut self, offset: u64, buf: &[u8]) -> bool {
            let Ok(start) = usize::try_from(offset) else {
                return false;
            };
            if start > self.len || buf.len() > self.len - start {
                return false;
            }
            // SAFETY: start + buf.len() <= self.len (checked above), the mapping is writable
            // and the file covers it (preallocated), and `buf` cannot overlap it (no slice of
            // the mapping is ever handed out).
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(start), buf.len()) };
            true
        }

        /// Zeros `[from, to)`, clipped to the mapping.
        pub(super) fn zero(&mut self, from: u64, to: u64) {
            let from = usize::try_from(from).unwrap_or(usize::MAX).min(self.len);
            let to = usize::try_from(to).unwrap_or(usize::MAX).min(self.len);
            if from < to {
                // SAFETY: from < to <= self.len, inside the writable mapping.
                unsafe { std::ptr::write_bytes(self.ptr.add(from), 0, to - from) };
            }
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: ptr/len are exactly what mmap returned, unmapped once, here.
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
