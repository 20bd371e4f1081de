//! An event on its way to the gateway ([`OutgoingEvent`]): its EVENT frame, encoded once.

#[cfg(doc)]
use super::{Notice, Output, Session};
use crate::protocol::value::{value_writer, write_str};
use crate::protocol::{decode, DecodeError, Message, Text, Value};
use bytes::{Bytes, BytesMut};
use std::convert::Infallible;
use std::ops::Range;

/// An event handed to [`Session::send`]. The frame is encoded once, by the caller, so that
/// re-sending it after a reconnect is a cheap clone and carries the very same bytes and id.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    /// The caller's handle for the send callback, given back in [`Notice::EventDone`].
    pub seq: u64,
    /// The event id, which the server's acknowledgement names as its `correlid`.
    pub id: Value,
    /// The whole EVENT frame, header and body.
    pub frame: Bytes,
    /// Its number in the client's durable outbox, if it is kept there: given back in
    /// [`Output::Forget`] once the outbox need not keep it any more.
    pub stored: Option<u64>,
}

/// An EVENT frame up to this size is encoded in a buffer kept for the next one and then
/// copied out at its exact size (it may wait long in a queue of 100,000); a larger one keeps
/// the buffer it was encoded in.
const COPIED_FRAME: usize = 64 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

impl OutgoingEvent {
    /// Encodes the EVENT frame for `{id, type, bundle}`.
    pub fn new(seq: u64, id: Value, kind: impl AsRef<str>, bundle: Value) -> OutgoingEvent {
        let written: Result<_, Infallible> =
            encode_event(value_writer(&id), kind.as_ref(), value_writer(&bundle));
        let Ok((frame, _)) = written;
        OutgoingEvent {
            seq,
            id,
            frame,
            stored: None,
        }
    }

    /// Encodes the EVENT frame for `{id, type, bundle}` with the id and the bundle written by
    /// the caller's own encoders, straight from its values (JavaScript ones) into the frame;
    /// the id, needed to match the acknowledgement, is read back from the frame. An encoder's
    /// error is the result.
    pub fn encode<E: From<DecodeError>>(
        seq: u64,
        write_id: impl FnOnce(&mut BytesMut) -> Result<(), E>,
        kind: &str,
        write_bundle: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<OutgoingEvent, E> {
        let (frame, id) = encode_event(write_id, kind, write_bundle)?;
        let id = decode(&frame.slice(id))?;
        Ok(OutgoingEvent {
            seq,
            id,
            frame,
            stored: None,
        })
    }

    /// As [`OutgoingEvent::encode`], for the string id `id` (one made by [`new_event_id`]),
    /// which is then not read back from the frame.
    pub fn encode_with_id<E>(
        seq: u64,
        id: &str,
        kind: &str,
        write_bundle: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<OutgoingEvent, E> {
        let write_id = |out: &mut BytesMut| {
            write_str(id, out);
            Ok(())
        };
        let (frame, at) = encode_event(write_id, kind, write_bundle)?;
        // The id's characters end its encoding (`write_id` wrote `id` as it is): a slice of
        // the frame, which the event keeps anyway, rather than a copy of their own. An id made
        // by `new_event_id` is ASCII; any other is copied.
        let shared = Text::ascii(frame.slice(at.end - id.len()..at.end));
        debug_assert!(shared.as_deref().is_none_or(|text| text == id));
        Ok(OutgoingEvent {
            seq,
            id: Value::String(shared.unwrap_or_else(|| id.into())),
            frame,
            stored: None,
        })
    }
}

/// Random bytes for event ids, drawn from the system's generator 4 KiB at a time.
struct IdPool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static IDS: std::cell::RefCell<IdPool> = const {
        std::cell::RefCell::new(IdPool { bytes: [0; 4096], used: 4096 })
    };
}

/// A new event id, as the original makes them: a random UUID (version 4) without its dashes,
/// 32 lowercase hex characters. `None` if the system's random generator failed.
pub fn new_event_id() -> Option<[u8; 32]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    IDS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used == pool.bytes.len() {
            aws_lc_rs::rand::fill(&mut pool.bytes).ok()?;
            pool.used = 0;
        }
        let at = pool.used;
        pool.used += 16;
        let mut id = [0u8; 32];
        for (i, &byte) in pool.bytes[at..at + 16].iter().enumerate() {
            let byte = match i {
                6 => (byte & 0x0f) | 0x40, // version 4
                8 => (byte & 0x3f) | 0x80, // the RFC 4122 variant
                _ => byte,
            };
            id[2 * i] = HEX[usize::from(byte >> 4)];
            id[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        Some(id)
    })
}

/// An EVENT frame and where its id is in it (see [`Message::encode_event`]), encoded in a
/// buffer kept for the next one.
fn encode_event<E>(
    write_id: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    kind: &str,
    write_bundle: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(Bytes, Range<usize>), E> {
    SCRATCH.with(|scratch| {
        // Taken out while in use, so that an encoder that sends too is no problem.
        let mut frame = std::mem::take(&mut *scratch.borrow_mut());
        frame.clear();
        let written = Message::encode_event(&mut frame, write_id, kind, write_bundle);
        if frame.len() > COPIED_FRAME {
            return written.map(|id| (frame.freeze(), id));
        }
        let exact = written.map(|id| (Bytes::copy_from_slice(&frame), id));
        *scratch.borrow_mut() = frame;
        exact
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_event_ids_are_uuid_v4_hex_and_all_different() {
        let mut seen = std::collections::HashSet::new();
        // More than one pool's worth, so the pool is refilled on the way.
        for _ in 0..1000 {
            let id = new_event_id().expect("random bytes");
            let text = std::str::from_utf8(&id).unwrap();
            assert_eq!(text.len(), 32);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(&text[12..13], "4", "version 4: {text}");
            assert!(
                "89ab".contains(&text[16..17]),
                "the RFC 4122 variant: {text}"
            );
            assert!(seen.insert(id), "ids repeat");
        }
    }

    #[test]
    fn encode_with_id_writes_the_id_as_encode_would() {
        let id = new_event_id().unwrap();
        let id = std::str::from_utf8(&id).unwrap();
        let bundle = Value::Map(vec![("n".to_owned(), Value::Number(1.0))]);
        let made: Result<_, Infallible> =
            OutgoingEvent::encode_with_id(7, id, "reading", value_writer(&bundle));
        let made = made.unwrap();
        let expected = OutgoingEvent::new(7, Value::String(id.into()), "reading", bundle);
        assert_eq!(made, expected);
    }
}
