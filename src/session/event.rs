//! An event on its way to the gateway ([`OutgoingEvent`]): its EVENT frame, encoded once.

#[cfg(doc)]
use super::{Notice, Output, Session};
use crate::protocol::value::value_writer;
use crate::protocol::{decode, DecodeError, Message, Value};
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
