//! The outbox's error: a stable code, a message, and the OS error behind it.

use std::fmt;
use std::io;

use crate::errors::{fs_code, ErrorCode};

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
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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

    pub(super) fn io(what: impl fmt::Display, err: io::Error) -> Self {
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
