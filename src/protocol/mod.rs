//! The gateway wire protocol: frames (`frame`), the MessagePack value model (`value`) and the
//! typed messages carried by frames (`message`). Pure code, no I/O: the client, the server and
//! the fuzzer all go through these few functions, so there is one codec and one value mapping.

pub mod frame;
pub mod message;
pub mod reader;
pub mod text;
pub mod value;

pub use frame::{shrink_after_large_frame, Frame, FrameCodec, FrameError, Token, MAX_BUFFER};
pub use message::{ErrorBody, Message, MessageError};
pub use reader::{frames_of, FrameReader};
pub use value::{decode, encode, encode_into, DecodeError, Text, Value};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder as _;

/// One fuzzing run over untrusted bytes, kept here so that the cargo-fuzz target
/// (`fuzz/fuzz_targets/decode.rs`) and the seed corpus replayed by `cargo test` take the very
/// same path: the bytes as a stream of frames and each frame as a message, and the bytes as
/// one MessagePack body. Whatever decodes must encode to bytes that decode back to the same
/// bytes again; `Err` names the broken promise. A panic anywhere is a bug too.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) -> Result<(), String> {
    for frame in frames_of(data).map_while(Result::ok) {
        let _ = decode(&frame.body);
        let Ok(message) = Message::from_frame(&frame) else {
            continue;
        };
        let written = message.to_frame();
        let again = Message::from_frame(&written)
            .map_err(|e| format!("{message:?} was written as {written:?}, which reads as {e}"))?;
        if again.to_frame() != written {
            return Err(format!("{message:?} reads back as {again:?}"));
        }
        let mut wire = BytesMut::new();
        message.encode(&mut wire);
        let mut framed = BytesMut::new();
        FrameCodec
            .encode(written.clone(), &mut framed)
            .map_err(|e| e.to_string())?;
        if wire != framed {
            return Err(format!("encode and to_frame disagree on {message:?}"));
        }
    }
    if let Ok(value) = decode(&Bytes::copy_from_slice(data)) {
        let written = encode(&value);
        let again = decode(&Bytes::from(written.clone()))
            .map_err(|e| format!("{value:?} was written as {written:02x?}, which reads as {e}"))?;
        if encode(&again) != written {
            return Err(format!("{value:?} reads back as {again:?}"));
        }
    }
    Ok(())
}

/// The fuzzer's seed corpus, replayed on every `cargo test` so that the interesting inputs
/// it was started from (and any crash it found and someone saved there) stay fixed.
#[cfg(test)]
mod corpus {
    use super::*;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode")
    }

    #[test]
    fn seed_corpus_replays_cleanly() {
        let mut count = 0;
        for entry in std::fs::read_dir(dir()).expect("fuzz/corpus/decode exists") {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            if let Err(broken) = fuzz_decode(&data) {
                panic!("{}: {broken}", path.display());
            }
            count += 1;
        }
        assert!(count >= 10, "only {count} seeds");
    }

    fn message(m: &Message) -> Vec<u8> {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        out.to_vec()
    }

    fn frame(token: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![token, 0];
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Regenerates the hand-made seeds: `cargo test --lib write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/decode; run by hand after changing the seeds"]
    fn write_seed_corpus() {
        let text = |s: &str| Value::String(s.into());
        let error = |code: Option<&str>, message: &str| ErrorBody {
            code: code.map(str::to_owned),
            message: message.to_owned(),
        };
        let bundle = Value::Map(vec![
            ("n".into(), Value::Number(-129.0)),
            ("f".into(), Value::Number(1.5)),
            ("when".into(), Value::Date(1_718_000_000_123.0)),
            ("bin".into(), Value::Binary(Bytes::from_static(b"\x00\x01"))),
            (
                "list".into(),
                Value::Array(vec![Value::Nil, Value::Bool(true)]),
            ),
            ("ext".into(), Value::Ext(7, Bytes::from_static(b"xyz"))),
        ]);
        let three = [
            message(&Message::Welcome),
            message(&Message::Drained),
            message(&Message::Bye { error: None }),
        ]
        .concat();
        let seeds: Vec<(&str, Vec<u8>)> = vec![
            ("hello", message(&Message::hello("device-1"))),
            ("welcome", message(&Message::Welcome)),
            ("bye", message(&Message::Bye { error: None })),
            (
                "bye-error",
                message(&Message::Bye {
                    error: Some(error(Some("IM491"), "Maximum buffer size exceeded.")),
                }),
            ),
            (
                "event",
                message(&Message::Event {
                    id: text("0123456789abcdef0123456789abcdef"),
                    kind: "temperature".into(),
                    bundle,
                }),
            ),
            (
                "action",
                message(&Message::Action {
                    id: Value::Number(1_718_000_000_123.0),
                    kind: "reboot".into(),
                    parameters: Value::Map(vec![("delay".into(), Value::Number(5.0))]),
                }),
            ),
            (
                "ack",
                message(&Message::Acknowledgement {
                    correlid: text("0123456789abcdef0123456789abcdef"),
                    status: 0,
                    error: None,
                }),
            ),
            (
                "ack-error",
                message(&Message::Acknowledgement {
                    correlid: Value::Number(42.0),
                    status: 1,
                    error: Some(error(Some("E1"), "nope")),
                }),
            ),
            ("drained", message(&Message::Drained)),
            ("three-frames", three),
            ("unknown-token", frame(0x09, &[0xc0])),
            ("reserved-c1", frame(0x04, &[0xc1])),
            ("trailing-bytes", frame(0x04, &[0x80, 0x00])),
            (
                "truncated-body",
                frame(0x05, &[0x83, 0xa2, b'i', b'd'])[..9].to_vec(),
            ),
            ("huge-length", frame(0x04, &[0xdd, 0xff, 0xff, 0xff, 0xff])),
            ("deep-nesting", frame(0x04, &[0x91; 2000])),
            ("oversize-header", vec![0x04, 0x00, 0xfb, 0xff, 0x9f, 0x00]),
            (
                "non-string-keys",
                frame(0x06, &[0x82, 0x01, 0xc0, 0xc3, 0xa1, b'x']),
            ),
        ];
        std::fs::create_dir_all(dir()).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir().join(name), bytes).unwrap();
        }
    }
}
