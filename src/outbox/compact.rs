//! Compaction: acknowledged segments are deleted, and the pending records of a sparse old
//! segment are copied forward to the active one so that it can go (see the module documentation
//! for when, and `docs/ARCHITECTURE.md` for what it costs).

use std::fs;
use std::io;

use super::format;
use super::read::changed;
use super::{Loc, Outbox, OutboxError, Seq};

impl Outbox {
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

    /// The directory holds more than twice the pending bytes plus two segments.
    fn bloated(&self) -> bool {
        self.disk_bytes > 2 * self.live_bytes + 2 * self.options.segment_bytes
    }

    /// Deletes the oldest segments while they hold no pending event.
    pub(super) fn delete_acknowledged(&mut self) -> Result<(), OutboxError> {
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
            self.copy_forward(seq, loc, record)?;
        }
        // The copies must be on stable storage before the originals go.
        if self.dirty {
            self.sync_active()?;
        }
        self.delete_acknowledged()
    }

    /// Copies the pending record `seq`, `record` read from `loc`, verbatim to the active segment
    /// (not synced), where the index then finds it; the segment it came from no longer counts it.
    pub(super) fn copy_forward(
        &mut self,
        seq: Seq,
        loc: Loc,
        record: &[u8],
    ) -> Result<(), OutboxError> {
        let (segment, offset, _) = self.write_record(record, true)?;
        self.index.insert(
            seq,
            Loc {
                segment,
                offset,
                len: loc.len,
            },
        );
        if let Some(s) = self.segment_mut(loc.segment) {
            s.live_bytes -= loc.len;
            s.live_count -= 1;
        }
        let active = self.segments.back_mut().expect("an active segment");
        active.live_bytes += loc.len;
        active.live_count += 1;
        self.stats.copied_records += 1;
        self.stats.copied_bytes += loc.len;
        Ok(())
    }

    /// Deletes acknowledged segments and, after a new segment was started, compacts the oldest
    /// one if worth it. Failures are counted, not returned: the caller's own write succeeded,
    /// and the next attempt may succeed.
    pub(super) fn maintain(&mut self, rotated: bool) {
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
