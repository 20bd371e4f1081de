//! Syncing: [`Outbox::sync`] at any time, and the group commit of [`SyncMode::Interval`], driven
//! by the owner's clock through [`Outbox::poll_timeout`] and [`Outbox::handle_timeout`], or in
//! two halves ([`Outbox::sync_job`], a [`SyncJob`] run on any thread, [`Outbox::sync_done`]).

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use super::{Outbox, OutboxError, SyncMode};

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

impl Outbox {
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

    pub(super) fn sync_active(&mut self) -> Result<(), OutboxError> {
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
}
