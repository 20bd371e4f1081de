//! Writing to the active segment: a record (after the buffered tombstones), a new segment when
//! the active one is full, and the repair of the file's end after a failed write or sync.

use super::dir::create_segment;
use super::format::{self, HEADER_LEN};
use super::tail::Tail;
use super::{Outbox, OutboxError, Segment, SyncMode, MIRROR_CAP};
use crate::errors::ErrorCode;

impl Outbox {
    /// Cuts the active segment back to `len` (after a failed write or sync).
    pub(super) fn truncate_active(&mut self, len: u64) {
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

    /// Writes the buffered tombstones and then `record` with one write, and returns where
    /// `record` went (see [`Outbox::write_record`]). On failure neither is written, and the
    /// tombstones are dropped as in [`Outbox::flush`].
    pub(super) fn write_with_acks(
        &mut self,
        record: &[u8],
    ) -> Result<(u64, u64, bool), OutboxError> {
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
    pub(super) fn drop_acks(&mut self, failed: bool) {
        if failed {
            self.stats.ack_write_errors += (self.acks.len() / format::ACK_LEN) as u64;
        }
        self.acks.clear();
    }

    /// Appends one encoded record to the active segment, starting a new segment first if it
    /// would not fit. Returns where it went and whether a segment was started. On failure the
    /// file is cut back to the last good record.
    pub(super) fn write_record(
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
        let old = self.replace_active(number, durable)?;
        // The old segment is cut back to its last record; should that fail, its zeros still
        // read as its end.
        let _ = old.finish();
        if !durable {
            self.dirty = true;
        }
        Ok(())
    }

    /// Creates segment `number` ([`create_segment`], synced with the directory when `durable`)
    /// and makes it the active one, counted as written, with nothing mirrored yet. Returns the
    /// segment it replaces, for the caller to finish or discard.
    pub(super) fn replace_active(
        &mut self,
        number: u64,
        durable: bool,
    ) -> Result<Tail, OutboxError> {
        let tail = create_segment(
            &self.dir,
            number,
            self.next_seq,
            self.options.segment_bytes,
            durable,
        )?;
        self.segments.push_back(Segment::new(number, HEADER_LEN));
        self.disk_bytes += HEADER_LEN;
        self.stats.bytes_written += HEADER_LEN;
        self.stats.segments_created += 1;
        self.mirror.clear();
        self.mirror_from = HEADER_LEN;
        Ok(std::mem::replace(&mut self.active, tail))
    }
}
