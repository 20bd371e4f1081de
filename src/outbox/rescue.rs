//! Another program's changes to the active segment: it may shorten or remove the file while the
//! outbox is open (`logrotate copytruncate`, a cleanup job). [`Outbox::verify`] (and its quick
//! form, `look`) notices, and `rescue` moves what can still be read to a new segment.

use std::fs;

use super::format::{self, HEADER_LEN};
use super::{Outbox, OutboxError, SyncMode};

impl Outbox {
    /// Looks at the active segment's file (one `fstat`): if another program shortened it below
    /// the end of the log or removed it, [`Outbox::rescue`]s what it still holds. Done when a
    /// write through the mapping faulted, before a segment is finished, and at
    /// [`Outbox::sync`] and `close`; by its size alone ([`Outbox::look`]) at each group commit
    /// ([`Outbox::sync_job`]), every [`MIRROR_CAP`](super::MIRROR_CAP) bytes written, and with
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
    /// (group commits, every [`MIRROR_CAP`](super::MIRROR_CAP) bytes): an `fstat` there makes
    /// the next `fdatasync` measurably slower on ext4. A removed file keeps its size and its
    /// records (read back through the open handle): the full looks (a new segment, `sync`,
    /// close, a fault) find it.
    pub(super) fn look(&mut self) -> Result<(), OutboxError> {
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
    /// removed file gives all of them) is copied to a new segment, which becomes the active
    /// one; the others are no longer pending (counted in
    /// [`OutboxStats::lost`](super::OutboxStats::lost)). The old file is cut to its readable
    /// records, or left alone if removed, and goes the way of any old segment. Until this
    /// succeeds, every write tries it again first.
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
        let old = self.replace_active(number + 1, true)?;
        self.dirty = false;
        self.suspect = false;
        self.tail_dirty = false;
        for (seq, loc, record) in moving {
            self.copy_forward(seq, loc, &record)?;
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
}
