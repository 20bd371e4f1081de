//! The outbox's directory and its files: the names of segment files, the `LOCK` file and its
//! lock, creating a segment, and the permissions (Unix: the directory 0700 and its files 0600,
//! and `EOUTBOXPERM` for a directory or file of another user, or a directory others may write).

#[cfg(unix)]
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::Path;

use super::format::{self, HEADER_LEN};
use super::tail::Tail;
use super::{OutboxError, Seq};
use crate::errors::ErrorCode;

pub(super) const LOCK_FILE: &str = "LOCK";

pub(super) fn segment_name(number: u64) -> String {
    format!("{number:016x}.seg")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
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
pub(super) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(unix)]
fn permission_error(message: String) -> OutboxError {
    OutboxError::new(ErrorCode::OutboxPerm, message)
}

/// Refuses (`EOUTBOXPERM`) a directory or file, `what`, that another user owns. (Unix.)
#[cfg(unix)]
fn check_owner(meta: &fs::Metadata, what: impl fmt::Display) -> Result<(), OutboxError> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != euid() {
        return Err(permission_error(format!(
            "{what} belongs to user {}, not to this process's user {}",
            meta.uid(),
            euid()
        )));
    }
    Ok(())
}

/// Creates the outbox's directory, mode 0700 whatever the umask (its parents as `mkdir -p`
/// would), or checks the one that exists, as OpenSSH's StrictModes does: it must be owned by
/// this process's user and writable by nobody else (`EOUTBOXPERM`), or another user could read
/// the events, plant segments, or hold the lock. (Unix; elsewhere it is only created.)
pub(super) fn prepare_dir(dir: &Path) -> Result<(), OutboxError> {
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
        check_owner(
            &meta,
            format_args!("the outbox directory {}", dir.display()),
        )?;
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

/// How long a lock held elsewhere is waited for before `EOUTBOXLOCKED`: a child process forked
/// by another thread holds a copy of every descriptor, the lock's too, until it executes its
/// program (the descriptors are close-on-exec), so a lock just released by this process can
/// seem held for that moment (milliseconds, more under emulation). A lock held by a live
/// `Outbox` is still refused, only this much later.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);

/// Opens the directory's `LOCK` file (created 0600 if missing), checks that it is this user's
/// ([`check_file`]), and locks it: `EOUTBOXLOCKED` when another `Outbox`, in this process or
/// another, holds it (for longer than [`LOCK_PATIENCE`]). The lock lasts as long as the returned
/// file is open.
pub(super) fn lock_dir(dir: &Path) -> Result<File, OutboxError> {
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
    let started = std::time::Instant::now();
    let mut locked = lock.try_lock();
    while matches!(locked, Err(TryLockError::WouldBlock)) && started.elapsed() < LOCK_PATIENCE {
        std::thread::sleep(std::time::Duration::from_millis(5));
        locked = lock.try_lock();
    }
    match locked {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(OutboxError::new(
            ErrorCode::OutboxLocked,
            format!("the outbox {} is open elsewhere", dir.display()),
        )),
        Err(TryLockError::Error(e)) => Err(OutboxError::io(
            format_args!("cannot lock {}", lock_path.display()),
            e,
        )),
    }
}

/// The numbers of the directory's segment files, oldest first (files with other names are not
/// the outbox's and are left alone).
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, OutboxError> {
    let list_err = |e| OutboxError::io(format_args!("cannot list {}", dir.display()), e);
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        if let Some(number) = entry
            .map_err(list_err)?
            .file_name()
            .to_str()
            .and_then(parse_segment_name)
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Checks that a file of the outbox belongs to this process's user (`EOUTBOXPERM` if not), and
/// makes it mode 0600 if it is more open (a file an earlier version left 0644). (Unix.)
pub(super) fn check_file(file: &File, path: &Path) -> Result<(), OutboxError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(|e| OutboxError::io(format_args!("cannot inspect {}", path.display()), e))?;
        check_owner(&meta, path.display())?;
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
pub(super) fn create_segment(
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
