//! The seven messages of the protocol as typed values, and their bodies as the original writes
//! them (docs/PROTOCOL.md section 3, Messages): the one place that knows which keys each
//! body has.

use super::frame::{Frame, Token, HEADER_LEN};
use super::value::{
    decode, decode_fields, js_string, value_writer, write_map_header, write_str, write_value,
    DecodeError, Value,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::convert::Infallible;
use std::ops::Range;

/// `{code, message}` carried by BYE and by a failed ACKNOWLEDGEMENT.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `{metadata: {device_name, ...}}`; the whole metadata map is kept.
    Hello {
        metadata: Value,
    },
    Welcome,
    Bye {
        error: Option<ErrorBody>,
    },
    /// `{id, type, bundle}`
    Event {
        id: Value,
        kind: String,
        bundle: Value,
    },
    /// `{id, type, parameters}`
    Action {
        id: Value,
        kind: String,
        parameters: Value,
    },
    /// `{correlid, status}` plus `error` when status is not 0.
    Acknowledgement {
        correlid: Value,
        status: i64,
        error: Option<ErrorBody>,
    },
    Drained,
}

/// Why a frame is not a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("Unknown message token 0x{0:02x}.")]
    UnknownToken(u8),
    #[error("Failed to deserialize packet. {0}")]
    Body(#[from] DecodeError),
    #[error("Malformed {token:?} message: {reason}")]
    Shape { token: Token, reason: String },
}

impl Message {
    pub fn token(&self) -> Token {
        match self {
            Message::Hello { .. } => Token::Hello,
            Message::Welcome => Token::Welcome,
            Message::Bye { .. } => Token::Bye,
            Message::Event { .. } => Token::Event,
            Message::Action { .. } => Token::Action,
            Message::Acknowledgement { .. } => Token::Acknowledgement,
            Message::Drained => Token::Drained,
        }
    }

    pub fn hello(device_name: &str) -> Message {
        Message::Hello {
            metadata: Value::Map(vec![(
                "device_name".to_owned(),
                Value::String(device_name.into()),
            )]),
        }
    }

    pub fn device_name(&self) -> Option<&str> {
        match self {
            Message::Hello { metadata } => match metadata.get("device_name") {
                Some(name) => name.as_str(),
                None => None,
            },
            _ => None,
        }
    }

    /// Reads a frame as leniently as the original: absent fields become `null` or `""`, and
    /// only what would make the message meaningless (a body that is no MessagePack, a body
    /// that is no object, a `type` or `status` of the wrong kind) is refused.
    ///
    /// An ACKNOWLEDGEMENT carries an error exactly when its status is not 0 (an empty one if
    /// the peer sent none), so a decoded message always encodes back to the same bytes.
    pub fn from_frame(frame: &Frame) -> Result<Message, MessageError> {
        let token = Token::try_from(frame.token).map_err(MessageError::UnknownToken)?;
        let shape = |reason: &str| MessageError::Shape {
            token,
            reason: reason.to_owned(),
        };
        Ok(match token {
            // Whatever body these carry, the original never looks at it.
            Token::Welcome => Message::Welcome,
            Token::Drained => Message::Drained,
            Token::Bye => match decode(&frame.body)? {
                Value::Nil => Message::Bye { error: None },
                body @ Value::Map(_) => Message::Bye {
                    error: match body.get("error") {
                        None | Some(Value::Nil) => None,
                        Some(error) => Some(ErrorBody::from_value(error)),
                    },
                },
                _ => return Err(shape("body is not a map")),
            },
            Token::Hello => {
                let [metadata] = fields(frame, token, ["metadata"])?;
                Message::Hello { metadata }
            }
            Token::Event => {
                let [id, kind, bundle] = fields(frame, token, ["id", "type", "bundle"])?;
                Message::Event {
                    id,
                    kind: kind_of(kind).map_err(shape)?,
                    bundle,
                }
            }
            Token::Action => {
                let [id, kind, parameters] = fields(frame, token, ["id", "type", "parameters"])?;
                Message::Action {
                    id,
                    kind: kind_of(kind).map_err(shape)?,
                    parameters,
                }
            }
            Token::Acknowledgement => {
                let [correlid, status, error] =
                    fields(frame, token, ["correlid", "status", "error"])?;
                let status = match status {
                    Value::Nil => 0,
                    // Saturating: any huge status is still "not 0", which is all it means.
                    Value::Number(n) if n.fract() == 0.0 => n as i64,
                    Value::Number(_) => return Err(shape("status is not an integer")),
                    _ => return Err(shape("status is not a number")),
                };
                let error = (status != 0).then(|| ErrorBody::from_value(&error));
                Message::Acknowledgement {
                    correlid,
                    status,
                    error,
                }
            }
        })
    }

    /// The correlid's UTF-8 bytes when `frame` is an ACKNOWLEDGEMENT of success written as
    /// the gateway writes one for a string id, `{correlid: <string>, status: 0}` and nothing
    /// else, byte for byte; `None` for any other frame, which [`Message::from_frame`] reads.
    /// The bytes are not checked to be UTF-8: they are only compared with an id's.
    pub fn plain_acknowledgement(frame: &Frame) -> Option<&[u8]> {
        const HEAD: &[u8] = b"\x82\xa8correlid";
        const TAIL: &[u8] = b"\xa6status\x00";
        if frame.token != Token::Acknowledgement as u8 {
            return None;
        }
        let rest = frame.body.strip_prefix(HEAD)?.strip_suffix(TAIL)?;
        let (&first, rest) = rest.split_first()?;
        let (len, text) = match first {
            0xa0..=0xbf => (usize::from(first & 0x1f), rest),
            0xd9 => (usize::from(*rest.first()?), &rest[1..]),
            0xda => (
                usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
                &rest[2..],
            ),
            _ => return None,
        };
        (text.len() == len).then_some(text)
    }

    /// The whole frame, header and body, ready to write, in a buffer of exactly its size.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }

    pub fn to_frame(&self) -> Frame {
        let mut body = Vec::new();
        self.write_body(&mut body);
        Frame {
            token: self.token() as u8,
            body: Bytes::from(body),
        }
    }

    /// Writes the header and the body straight into `dst`: room for the whole frame is made
    /// first (the encoder measures it), the body is encoded in place and the header's length
    /// patched afterwards, so a large bundle is copied once and `dst` never regrown.
    ///
    /// A body over 4 GiB (far past the 10 MiB limit) gets the largest length the header can
    /// say, which the peer refuses as oversize.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(HEADER_LEN + Measure::of(self));
        let written: Result<(), Infallible> = framed(self.token(), dst, |out| {
            self.write_body(out);
            Ok(())
        });
        let Ok(()) = written;
    }

    /// Writes the EVENT frame `{id, type, bundle}` into `dst`, its id and bundle by the
    /// caller's own encoders (of JavaScript values) straight into place, and returns where in
    /// `dst` the id's bytes are. If an encoder fails, `dst` is left as it was.
    pub fn encode_event<E>(
        dst: &mut BytesMut,
        write_id: impl FnOnce(&mut BytesMut) -> Result<(), E>,
        kind: &str,
        write_bundle: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<Range<usize>, E> {
        let mut id = 0..0;
        framed(Token::Event, dst, |out| {
            write_event(
                out,
                |out: &mut BytesMut| {
                    id.start = out.len();
                    write_id(out)?;
                    id.end = out.len();
                    Ok(())
                },
                kind,
                write_bundle,
            )
        })?;
        Ok(id)
    }

    /// The body, keys in the original's order; bodyless messages write nothing.
    fn write_body<B: BufMut>(&self, out: &mut B) {
        match self {
            Message::Welcome | Message::Drained | Message::Bye { error: None } => {}
            Message::Hello { metadata } => {
                write_map_header(1, out);
                write_str("metadata", out);
                write_value(metadata, out);
            }
            Message::Bye { error: Some(error) } => {
                write_map_header(1, out);
                write_str("error", out);
                error.write(ErrorKeys::CodeFirst, out);
            }
            Message::Event { id, kind, bundle } => {
                let written: Result<(), Infallible> =
                    write_event(out, value_writer(id), kind, value_writer(bundle));
                let Ok(()) = written;
            }
            Message::Action {
                id,
                kind,
                parameters,
            } => {
                write_map_header(3, out);
                write_str("id", out);
                write_value(id, out);
                write_str("type", out);
                write_str(kind, out);
                write_str("parameters", out);
                write_value(parameters, out);
            }
            Message::Acknowledgement {
                correlid,
                status,
                error,
            } => write_acknowledgement(
                out,
                |out| write_value(correlid, out),
                *status,
                error.as_ref(),
            ),
        }
    }

    /// The ACKNOWLEDGEMENT frame for an id given in its MessagePack encoding (an action's
    /// key): the bytes [`Message::to_bytes`] writes for the id decoded, made without decoding
    /// it, in a buffer of exactly their size.
    pub fn acknowledgement_bytes(correlid: &[u8], status: i64, error: Option<&ErrorBody>) -> Bytes {
        let mut measure = Measure {
            len: 0,
            scratch: [0; 16],
        };
        write_acknowledgement(&mut measure, |out| out.put_slice(correlid), status, error);
        let mut dst = BytesMut::with_capacity(HEADER_LEN + measure.len);
        let written: Result<(), Infallible> = framed(Token::Acknowledgement, &mut dst, |out| {
            write_acknowledgement(out, |out| out.put_slice(correlid), status, error);
            Ok(())
        });
        let Ok(()) = written;
        dst.freeze()
    }
}

/// An ACKNOWLEDGEMENT body, `{correlid, status}` or `{correlid, status, error}` when the
/// status says it failed, with the correlid written by `write_correlid`.
fn write_acknowledgement<B: BufMut>(
    out: &mut B,
    write_correlid: impl FnOnce(&mut B),
    status: i64,
    error: Option<&ErrorBody>,
) {
    let failed = status != 0;
    write_map_header(if failed { 3 } else { 2 }, out);
    write_str("correlid", out);
    write_correlid(out);
    write_str("status", out);
    // Beyond 2^53 an i64 is no exact JavaScript number anyway.
    write_value(&Value::Number(status as f64), out);
    if failed {
        write_str("error", out);
        let empty = ErrorBody {
            code: None,
            message: String::new(),
        };
        error.unwrap_or(&empty).write(ErrorKeys::MessageFirst, out);
    }
}

/// The original writes BYE's error as `{code, message}` but an acknowledgement's as
/// `{message, code}`; byte-exact output keeps both orders.
#[derive(Clone, Copy)]
enum ErrorKeys {
    CodeFirst,
    MessageFirst,
}

impl ErrorBody {
    /// Lenient like `new Error(error.message)` plus `err.code = error.code`: a missing message
    /// is empty, a code of any kind is shown as a string, and a non-object error carries
    /// neither.
    fn from_value(error: &Value) -> ErrorBody {
        let text = |v: Option<&Value>| match v {
            None | Some(Value::Nil) => None,
            Some(Value::String(s)) => Some(s.as_str().to_owned()),
            Some(other) => Some(js_string(other)),
        };
        ErrorBody {
            code: text(error.get("code")),
            message: text(error.get("message")).unwrap_or_default(),
        }
    }

    fn write<B: BufMut>(&self, order: ErrorKeys, out: &mut B) {
        let code = |out: &mut B| {
            if let Some(code) = &self.code {
                write_str("code", out);
                write_str(code, out);
            }
        };
        write_map_header(if self.code.is_some() { 2 } else { 1 }, out);
        if let ErrorKeys::CodeFirst = order {
            code(out);
        }
        write_str("message", out);
        write_str(&self.message, out);
        if let ErrorKeys::MessageFirst = order {
            code(out);
        }
    }
}

/// The named fields of a body that must be a map, read without building the map.
fn fields<const N: usize>(
    frame: &Frame,
    token: Token,
    names: [&str; N],
) -> Result<[Value; N], MessageError> {
    decode_fields(&frame.body, names)?.ok_or_else(|| MessageError::Shape {
        token,
        reason: "body is not a map".to_owned(),
    })
}

/// `type` must be a string when present; absent (or undefined, sent as nil) is empty.
fn kind_of(kind: Value) -> Result<String, &'static str> {
    match kind {
        Value::Nil => Ok(String::new()),
        Value::String(kind) => Ok(kind.into_string()),
        _ => Err("type is not a string"),
    }
}

/// A frame of `token` whose body `write_body` writes: header first, its length patched in
/// afterwards. On error the frame is taken out of `dst` again.
fn framed<E>(
    token: Token,
    dst: &mut BytesMut,
    write_body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), E> {
    let start = dst.len();
    dst.put_slice(&[token as u8, 0, 0, 0, 0, 0]);
    if let Err(err) = write_body(dst) {
        dst.truncate(start);
        return Err(err);
    }
    let body_len = u32::try_from(dst.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    dst[start + 2..start + HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    Ok(())
}

/// An EVENT body, the map `{id, type, bundle}`, with the id and the bundle written by
/// `write_id` and `write_bundle`.
fn write_event<B: BufMut, E>(
    out: &mut B,
    write_id: impl FnOnce(&mut B) -> Result<(), E>,
    kind: &str,
    write_bundle: impl FnOnce(&mut B) -> Result<(), E>,
) -> Result<(), E> {
    write_map_header(3, out);
    write_str("id", out);
    write_id(out)?;
    write_str("type", out);
    write_str(kind, out);
    write_str("bundle", out);
    write_bundle(out)
}

/// A `BufMut` that only counts what is written to it: the encoder itself measures a message.
struct Measure {
    len: usize,
    scratch: [u8; 16],
}

impl Measure {
    fn of(message: &Message) -> usize {
        let mut measure = Measure {
            len: 0,
            scratch: [0; 16],
        };
        message.write_body(&mut measure);
        measure.len
    }
}

// SAFETY: `chunk_mut` hands out scratch space that is never read, and `advance_mut` only
// counts; the encoder's writes all end in `put_slice`, which counts too.
unsafe impl BufMut for Measure {
    fn remaining_mut(&self) -> usize {
        usize::MAX - self.len
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.len += cnt;
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        bytes::buf::UninitSlice::new(&mut self.scratch)
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.len += src.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;
    use crate::protocol::reader::frames_of;

    fn text(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn an_event_encoded_with_its_own_bundle_writer_is_the_same_frame_and_a_failed_one_is_none() {
        let bundle = Value::Map(vec![("n".into(), Value::Number(7.0))]);
        let event = Message::Event {
            id: text("e1"),
            kind: "t".into(),
            bundle: bundle.clone(),
        };
        let mut dst = BytesMut::from(&b"before"[..]);
        let written: Result<_, ()> = Message::encode_event(
            &mut dst,
            value_writer(&text("e1")),
            "t",
            value_writer(&bundle),
        );
        let id = written.unwrap();
        assert_eq!(decode(&dst.clone().freeze().slice(id)), Ok(text("e1")));
        assert_eq!(&dst[..6], b"before");
        assert_eq!(&dst[6..], &event.to_bytes()[..]);
        let failed = Message::encode_event(&mut dst, value_writer(&text("e2")), "t", |out| {
            out.put_slice(b"partial");
            Err("cannot")
        });
        assert_eq!(failed, Err("cannot"));
        assert_eq!(&dst[6..], &event.to_bytes()[..]);
    }

    fn error(code: Option<&str>, message: &str) -> ErrorBody {
        ErrorBody {
            code: code.map(str::to_owned),
            message: message.to_owned(),
        }
    }

    fn every_message() -> Vec<Message> {
        vec![
            Message::hello("kitchen-pi"),
            Message::Hello {
                metadata: Value::Map(vec![
                    ("device_name".into(), text("x")),
                    ("version".into(), text("2.0.8")),
                ]),
            },
            Message::Welcome,
            Message::Bye { error: None },
            Message::Bye {
                error: Some(error(Some("IM491"), "Maximum buffer size exceeded.")),
            },
            Message::Bye {
                error: Some(error(None, "Go away.")),
            },
            Message::Event {
                id: text("0123456789abcdef0123456789abcdef"),
                kind: "temperature".into(),
                bundle: Value::Map(vec![
                    ("celsius".into(), Value::Number(21.5)),
                    ("at".into(), Value::Date(1_718_000_000_123.0)),
                ]),
            },
            Message::Event {
                id: text("e"),
                kind: "ping".into(),
                bundle: Value::Nil,
            },
            Message::Action {
                id: Value::Number(1_718_000_000_123.0),
                kind: "reboot".into(),
                parameters: Value::Array(vec![Value::Binary(Bytes::from_static(b"\x00"))]),
            },
            Message::Acknowledgement {
                correlid: text("0123456789abcdef0123456789abcdef"),
                status: 0,
                error: None,
            },
            Message::Acknowledgement {
                correlid: Value::Number(7.0),
                status: 1,
                error: Some(error(None, "Failed.")),
            },
            Message::Acknowledgement {
                correlid: Value::Number(7.0),
                status: -3,
                error: Some(error(Some("E42"), "Failed.")),
            },
            Message::Drained,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut wire = BytesMut::new();
        for m in every_message() {
            m.encode(&mut wire);
            assert_eq!(Message::from_frame(&m.to_frame()), Ok(m.clone()));
        }
        let mut back = Vec::new();
        for frame in frames_of(&wire) {
            back.push(Message::from_frame(&frame.unwrap()).unwrap());
        }
        assert_eq!(back, every_message());
    }

    #[test]
    fn a_frame_is_built_in_one_buffer_of_exactly_its_size() {
        let large = Message::Event {
            id: text("e"),
            kind: "upload".into(),
            bundle: Value::Map(vec![
                (
                    "data".into(),
                    Value::Binary(Bytes::from(vec![7u8; 3 << 20])),
                ),
                ("list".into(), Value::Array(vec![Value::Number(1.5); 20])),
                ("name".into(), text(&"x".repeat(70_000))),
            ]),
        };
        for m in every_message().into_iter().chain([large]) {
            let mut grown = BytesMut::new();
            m.encode(&mut grown);
            assert_eq!(Measure::of(&m) + HEADER_LEN, grown.len(), "{m:?}");
            let frame = m.to_bytes();
            assert_eq!(&frame[..], &grown[..]);
        }
    }

    #[test]
    fn encode_appends_after_what_is_buffered() {
        let mut wire = BytesMut::from(&b"xyz"[..]);
        Message::Drained.encode(&mut wire);
        Message::hello("h").encode(&mut wire);
        let mut expected = b"xyz\x07\x00\x00\x00\x00\x00\x01\x00\x19\x00\x00\x00".to_vec();
        expected.extend_from_slice(b"\x81\xa8metadata\x81\xabdevice_name\xa1h");
        assert_eq!(&wire[..], &expected[..]);
    }

    fn bytes(m: &Message) -> Vec<u8> {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        out.to_vec()
    }

    fn framed(token: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![token, 0];
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn bodies_are_written_as_the_original_writes_them() {
        assert_eq!(bytes(&Message::Welcome), framed(0x02, b""));
        assert_eq!(bytes(&Message::Drained), framed(0x07, b""));
        assert_eq!(bytes(&Message::Bye { error: None }), framed(0x03, b""));
        assert_eq!(
            bytes(&Message::Bye {
                error: Some(error(Some("IM491"), "Full."))
            }),
            framed(
                0x03,
                b"\x81\xa5error\x82\xa4code\xa5IM491\xa7message\xa5Full."
            )
        );
        assert_eq!(
            bytes(&Message::Bye {
                error: Some(error(None, "Full."))
            }),
            framed(0x03, b"\x81\xa5error\x81\xa7message\xa5Full.")
        );
        assert_eq!(
            bytes(&Message::Event {
                id: text("a"),
                kind: "t".into(),
                bundle: Value::Map(vec![("a".into(), Value::Nil)]),
            }),
            framed(0x04, b"\x83\xa2id\xa1a\xa4type\xa1t\xa6bundle\x81\xa1a\xc0")
        );
        assert_eq!(
            bytes(&Message::Action {
                id: Value::Number(300.0),
                kind: "t".into(),
                parameters: Value::Nil,
            }),
            framed(
                0x05,
                b"\x83\xa2id\xcd\x01\x2c\xa4type\xa1t\xaaparameters\xc0"
            )
        );
        assert_eq!(
            bytes(&Message::Acknowledgement {
                correlid: text("a"),
                status: 0,
                error: None,
            }),
            framed(0x06, b"\x82\xa8correlid\xa1a\xa6status\x00")
        );
        assert_eq!(
            bytes(&Message::Acknowledgement {
                correlid: text("a"),
                status: 1,
                error: Some(error(Some("E"), "m")),
            }),
            framed(
                0x06,
                b"\x83\xa8correlid\xa1a\xa6status\x01\xa5error\x82\xa7message\xa1m\xa4code\xa1E"
            )
        );
        // A failed ack always says why, if only with an empty message.
        assert_eq!(
            bytes(&Message::Acknowledgement {
                correlid: text("a"),
                status: 1,
                error: None,
            }),
            framed(
                0x06,
                b"\x83\xa8correlid\xa1a\xa6status\x01\xa5error\x81\xa7message\xa0"
            )
        );
    }

    #[test]
    fn an_acknowledgement_from_an_encoded_id_is_the_frame_of_the_decoded_one() {
        let ids = [
            text("a"),
            Value::Number(300.0),
            Value::Nil,
            Value::Map(vec![("k".into(), Value::Array(vec![text("v")]))]),
            text(&"x".repeat(300)),
        ];
        let errors = [None, Some(error(Some("E"), "m")), Some(error(None, ""))];
        for id in &ids {
            for (status, error) in [(0, None)]
                .into_iter()
                .chain(errors.iter().map(|e| (1, e.clone())))
            {
                let decoded = Message::Acknowledgement {
                    correlid: id.clone(),
                    status,
                    error: error.clone(),
                }
                .to_bytes();
                let made = Message::acknowledgement_bytes(&encode(id), status, error.as_ref());
                assert_eq!(made, decoded, "{id:?} {status} {error:?}");
            }
        }
    }

    #[test]
    fn a_plain_acknowledgement_is_read_from_the_bytes_the_gateway_writes_and_nothing_else() {
        let ack = |correlid: Value, status| {
            Message::Acknowledgement {
                correlid,
                status,
                error: None,
            }
            .to_frame()
        };
        for id in ["", "a1", &"e".repeat(32), &"x".repeat(300)] {
            let frame = ack(text(id), 0);
            assert!(
                Message::plain_acknowledgement(&frame) == Some(id.as_bytes()),
                "an id of {} bytes",
                id.len()
            );
        }
        let frame = |token: u8, body: &[u8]| Frame {
            token,
            body: Bytes::copy_from_slice(body),
        };
        // Anything else is left to `from_frame`: another id type, a failure, other keys or
        // another order, a length that does not match, another token.
        for other in [
            ack(Value::Number(1.0), 0),
            // An id over 64 KiB (a 32-bit length): rare enough to decode.
            ack(text(&"y".repeat(70_000)), 0),
            ack(text("a"), 1),
            frame(0x06, b"\x82\xa6status\x00\xa8correlid\xa1a"),
            frame(0x06, b"\x83\xa8correlid\xa1a\xa6status\x00\xa5error\xc0"),
            frame(0x06, b"\x82\xa8correlid\xa2a\xa6status\x00"),
            frame(0x06, b"\x82\xa8correlid\xd9\x02a\xa6status\x00"),
            frame(0x06, b"\x82\xa8correlid\xda\x00\xa6status\x00"),
            frame(0x06, b""),
            frame(0x05, b"\x82\xa8correlid\xa1a\xa6status\x00"),
        ] {
            assert!(
                Message::plain_acknowledgement(&other).is_none(),
                "{:?}",
                &other.body[..other.body.len().min(40)]
            );
        }
    }

    #[test]
    fn device_name_comes_from_hello_metadata() {
        assert_eq!(Message::hello("pi").device_name(), Some("pi"));
        let odd = Message::Hello {
            metadata: Value::Map(vec![("device_name".into(), Value::Number(1.0))]),
        };
        assert_eq!(odd.device_name(), None);
        assert_eq!(
            Message::Hello {
                metadata: Value::Nil
            }
            .device_name(),
            None
        );
        assert_eq!(Message::Welcome.device_name(), None);
    }

    fn read(token: u8, body: &[u8]) -> Result<Message, MessageError> {
        Message::from_frame(&Frame {
            token,
            body: Bytes::copy_from_slice(body),
        })
    }

    fn shape(result: Result<Message, MessageError>) -> bool {
        matches!(result, Err(MessageError::Shape { .. }))
    }

    #[test]
    fn reading_is_lenient_like_the_original() {
        // Bodyless tokens ignore whatever they carry, even garbage.
        assert_eq!(read(0x02, b"\xc1\xc1"), Ok(Message::Welcome));
        assert_eq!(read(0x07, b"\x81"), Ok(Message::Drained));
        // Missing fields.
        assert_eq!(
            read(0x04, b"\x80"),
            Ok(Message::Event {
                id: Value::Nil,
                kind: String::new(),
                bundle: Value::Nil
            })
        );
        assert_eq!(
            read(0x05, b"\x81\xa4type\xc0"),
            Ok(Message::Action {
                id: Value::Nil,
                kind: String::new(),
                parameters: Value::Nil
            })
        );
        assert_eq!(
            read(0x01, b"\x80"),
            Ok(Message::Hello {
                metadata: Value::Nil
            })
        );
        assert_eq!(
            read(0x06, b"\x81\xa8correlid\x01"),
            Ok(Message::Acknowledgement {
                correlid: Value::Number(1.0),
                status: 0,
                error: None
            })
        );
        // Status 0 ignores an error; any other status carries one, however incomplete.
        assert_eq!(
            read(0x06, b"\x82\xa6status\x00\xa5error\x81\xa7message\xa1m"),
            Ok(Message::Acknowledgement {
                correlid: Value::Nil,
                status: 0,
                error: None
            })
        );
        assert_eq!(
            read(0x06, b"\x81\xa6status\x02"),
            Ok(Message::Acknowledgement {
                correlid: Value::Nil,
                status: 2,
                error: Some(error(None, ""))
            })
        );
        assert_eq!(
            read(
                0x06,
                b"\x82\xa6status\xff\xa5error\x82\xa4code\xcd\x01\xeb\xa7message\x05"
            ),
            Ok(Message::Acknowledgement {
                correlid: Value::Nil,
                status: -1,
                error: Some(error(Some("491"), "5"))
            })
        );
        // BYE: no body, nil, an object without error, an error without message.
        assert_eq!(read(0x03, b""), Ok(Message::Bye { error: None }));
        assert_eq!(read(0x03, b"\xc0"), Ok(Message::Bye { error: None }));
        assert_eq!(read(0x03, b"\x80"), Ok(Message::Bye { error: None }));
        assert_eq!(
            read(0x03, b"\x81\xa5error\x81\xa4code\xa5IM491"),
            Ok(Message::Bye {
                error: Some(error(Some("IM491"), ""))
            })
        );
        // The last of repeated keys wins, as in a JavaScript object.
        assert_eq!(
            read(0x04, b"\x82\xa4type\xa1a\xa4type\xa1b"),
            Ok(Message::Event {
                id: Value::Nil,
                kind: "b".into(),
                bundle: Value::Nil
            })
        );
    }

    #[test]
    fn meaningless_messages_are_refused() {
        assert_eq!(read(0x00, b""), Err(MessageError::UnknownToken(0x00)));
        assert_eq!(read(0x08, b"\x80"), Err(MessageError::UnknownToken(0x08)));
        let bad = read(0x04, b"\xc1").unwrap_err();
        assert!(matches!(bad, MessageError::Body(_)));
        assert!(bad.to_string().starts_with("Failed to deserialize packet."));
        assert!(matches!(
            read(0x03, b"\x80\x80"),
            Err(MessageError::Body(_))
        ));
        assert!(matches!(read(0x06, b"\x92"), Err(MessageError::Body(_))));
        for token in [0x01, 0x04, 0x05, 0x06] {
            assert!(shape(read(token, b"")), "{token}: null body");
            assert!(shape(read(token, b"\x90")), "{token}: array body");
        }
        assert!(shape(read(0x03, b"\xa3bye")));
        assert!(shape(read(0x04, b"\x81\xa4type\x01")));
        assert!(shape(read(0x05, b"\x81\xa4type\x90")));
        assert!(shape(read(0x06, b"\x81\xa6status\xa1\x31")));
        assert!(shape(read(0x06, b"\x81\xa6status\xcb\x3f\xf8\0\0\0\0\0\0")));
    }
}
