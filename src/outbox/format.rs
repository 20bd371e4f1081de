//! The bytes of a segment file: a 28-byte header, then records back to back.
//!
//! ```text
//! header   magic "IMTOBX01" (8) | segment number u64 | first sequence u64 | crc32 u32
//! record   crc32 u32 | body length u32 | kind u8 | sequence u64 | body
//!          event body: id length u16 | id | frame        ack body: empty
//! ```
//!
//! Integers are little-endian. A record's CRC-32 (IEEE) covers everything after the CRC field
//! (length, kind, sequence and body), so a torn length is caught as surely as a torn body, and
//! a record can be copied verbatim to another segment (compaction) without being re-encoded.

use std::ops::Range;

pub(crate) const MAGIC: [u8; 8] = *b"IMTOBX01";
/// Bytes of a segment header.
pub(crate) const HEADER_LEN: u64 = 28;
/// Bytes of a record before its body.
pub(crate) const RECORD_HEAD: usize = 4 + 4 + 1 + 8;
/// Bytes an event record adds to its id and frame.
pub(crate) const EVENT_OVERHEAD: usize = RECORD_HEAD + 2;
/// The largest body a reader accepts: a frame is at most 10 MiB (PROTOCOL.md section 2) and an
/// id at most 64 KiB, so a larger length can only be damage.
pub(crate) const MAX_BODY: usize = 10 * 1024 * 1024 + 6 + 2 + 65_535;

/// Sequence and segment numbers from this on are damage, however good the checksum: no writer
/// gets there (one event a nanosecond takes 146 years), and a larger one could leave the outbox
/// no next number (the outbox fuzz target made such records: the next number overflowed).
pub(crate) const MAX_NUMBER: u64 = 1 << 62;

pub(crate) const KIND_EVENT: u8 = 1;
pub(crate) const KIND_ACK: u8 = 2;

pub(crate) fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

pub(crate) fn encode_header(segment: u64, first_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(&MAGIC);
    out[8..16].copy_from_slice(&segment.to_le_bytes());
    out[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let sum = crc(&out[..24]);
    out[24..].copy_from_slice(&sum.to_le_bytes());
    out
}

/// The segment number and first sequence of a header, or `None` when it is not one.
pub(crate) fn decode_header(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < HEADER_LEN as usize || bytes[..8] != MAGIC {
        return None;
    }
    let sum = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
    if crc(&bytes[..24]) != sum {
        return None;
    }
    let segment = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let first_seq = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
    (segment < MAX_NUMBER && first_seq < MAX_NUMBER).then_some((segment, first_seq))
}

fn finish(buf: &mut [u8]) {
    let sum = crc(&buf[4..]);
    buf[..4].copy_from_slice(&sum.to_le_bytes());
}

/// Writes an event record into `buf` (cleared first). The caller checked `id.len() <= u16::MAX`.
pub(crate) fn encode_event(buf: &mut Vec<u8>, seq: u64, id: &[u8], frame: &[u8]) {
    buf.clear();
    let body = 2 + id.len() + frame.len();
    buf.reserve(RECORD_HEAD + body);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(body as u32).to_le_bytes());
    buf.push(KIND_EVENT);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(id.len() as u16).to_le_bytes());
    buf.extend_from_slice(id);
    buf.extend_from_slice(frame);
    finish(buf);
}

/// Bytes of an acknowledgement (tombstone) record.
pub(crate) const ACK_LEN: usize = RECORD_HEAD;

/// Adds an acknowledgement (tombstone) record for `seq` at the end of `buf`.
pub(crate) fn push_ack(buf: &mut Vec<u8>, seq: u64) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.push(KIND_ACK);
    buf.extend_from_slice(&seq.to_le_bytes());
    finish(&mut buf[start..]);
}

/// What a record holds, with ranges into the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    Event {
        id: Range<usize>,
        frame: Range<usize>,
    },
    Ack,
}

/// One complete record found by [`scan`] or [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub offset: usize,
    pub len: usize,
    pub seq: u64,
    pub body: Body,
}

/// Why reading stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The record runs past the end: a write that did not finish.
    Torn,
    /// A complete record whose checksum does not match.
    Checksum,
    /// A record with a matching checksum but a length, kind or id length no writer makes.
    Invalid,
}

/// Parses the record at `offset`; `Err` says why there is no complete, valid record there.
pub(crate) fn parse(bytes: &[u8], offset: usize) -> Result<Found, Stop> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEAD {
        return Err(Stop::Torn);
    }
    let stored = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let body_len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
    if body_len > MAX_BODY {
        // A length no writer makes: damage, whether or not the file ends before it would.
        return Err(Stop::Checksum);
    }
    let len = RECORD_HEAD + body_len;
    if rest.len() < len {
        return Err(Stop::Torn);
    }
    if crc(&rest[4..len]) != stored {
        return Err(Stop::Checksum);
    }
    let kind = rest[8];
    let seq = u64::from_le_bytes(rest[9..17].try_into().expect("8 bytes"));
    if seq >= MAX_NUMBER {
        return Err(Stop::Invalid);
    }
    let body = match kind {
        KIND_EVENT => {
            if body_len < 2 {
                return Err(Stop::Invalid);
            }
            let id_len = u16::from_le_bytes([rest[17], rest[18]]) as usize;
            if id_len > body_len - 2 {
                return Err(Stop::Invalid);
            }
            let id_start = offset + RECORD_HEAD + 2;
            Body::Event {
                id: id_start..id_start + id_len,
                frame: id_start + id_len..offset + len,
            }
        }
        KIND_ACK if body_len == 0 => Body::Ack,
        _ => return Err(Stop::Invalid),
    };
    Ok(Found {
        offset,
        len,
        seq,
        body,
    })
}

/// Whether `bytes` are all zeros: past a log's last record, the unwritten end of its segment.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Every complete record from `start` on, and where and why reading stopped before the end (if
/// it did). Reading stops at the first bad record: its length cannot be trusted, so nothing after
/// it can be found reliably.
pub(crate) fn scan(bytes: &[u8], start: usize) -> (Vec<Found>, Option<(usize, Stop)>) {
    let mut found = Vec::new();
    let mut offset = start;
    while offset < bytes.len() {
        match parse(bytes, offset) {
            Ok(record) => {
                offset += record.len;
                found.push(record);
            }
            Err(stop) => return (found, Some((offset, stop))),
        }
    }
    (found, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = encode_header(7, 42);
        assert_eq!(decode_header(&header), Some((7, 42)));
        for i in 0..header.len() {
            let mut bad = header;
            bad[i] ^= 0x10;
            assert_eq!(decode_header(&bad), None, "flipped byte {i}");
        }
        assert_eq!(decode_header(&header[..27]), None);
    }

    #[test]
    fn records_round_trip() {
        let mut bytes = Vec::new();
        let mut buf = Vec::new();
        encode_event(&mut buf, 1, b"id-1", b"frame one");
        bytes.extend_from_slice(&buf);
        buf.clear();
        push_ack(&mut buf, 1);
        bytes.extend_from_slice(&buf);
        encode_event(&mut buf, 2, b"", b"");
        bytes.extend_from_slice(&buf);
        let (found, stop) = scan(&bytes, 0);
        assert_eq!(stop, None);
        assert_eq!(found.len(), 3);
        let Body::Event { id, frame } = found[0].body.clone() else {
            panic!("event expected")
        };
        assert_eq!(&bytes[id], b"id-1");
        assert_eq!(&bytes[frame], b"frame one");
        assert_eq!((found[1].seq, found[1].body.clone()), (1, Body::Ack));
        assert_eq!(found[2].len, EVENT_OVERHEAD);
    }

    #[test]
    fn numbers_no_writer_reaches_are_damage() {
        let mut buf = Vec::new();
        encode_event(&mut buf, MAX_NUMBER - 1, b"", b"");
        assert_eq!(scan(&buf, 0).1, None);
        encode_event(&mut buf, MAX_NUMBER, b"", b"");
        assert_eq!(scan(&buf, 0).1, Some((0, Stop::Invalid)));
        buf.clear();
        push_ack(&mut buf, u64::MAX);
        assert_eq!(scan(&buf, 0).1, Some((0, Stop::Invalid)));
        assert_eq!(decode_header(&encode_header(1, u64::MAX)), None);
        assert_eq!(decode_header(&encode_header(MAX_NUMBER, 1)), None);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode_event(&mut buf, 9, b"abc", b"0123456789");
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let (found, stop) = scan(&bad, 0);
                assert!(found.is_empty(), "byte {i} bit {bit}");
                assert!(stop.is_some());
            }
        }
    }
}
