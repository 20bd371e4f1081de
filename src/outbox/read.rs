//! Reading pending events back from the segment files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{self, Body};
use super::{Loc, Outbox, OutboxError, Record, Seq};
use crate::errors::ErrorCode;

impl Outbox {
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

pub(super) fn changed(path: &Path, loc: Loc) -> OutboxError {
    OutboxError::new(
        ErrorCode::Outbox,
        format!(
            "{} changed on disk at offset {}",
            path.display(),
            loc.offset
        ),
    )
}
