//! Framing (docs/PROTOCOL.md section 2, Frames): a 6-byte header `token, 0, u32 LE length`,
//! then the body. What a frame is, and how one is written; frames are read by `reader.rs`,
//! the one reader of both sides.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Encoder;

/// The most a peer may buffer without holding a complete frame (IM491 past it).
pub const MAX_BUFFER: usize = 10 * 1024 * 1024;
/// Size of the frame header.
pub const HEADER_LEN: usize = 6;

/// Message types (docs/PROTOCOL.md section 3, Messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Token {
    Hello = 0x01,
    Welcome = 0x02,
    Bye = 0x03,
    Event = 0x04,
    Action = 0x05,
    Acknowledgement = 0x06,
    Drained = 0x07,
}

impl TryFrom<u8> for Token {
    type Error = u8;
    fn try_from(byte: u8) -> Result<Self, u8> {
        Ok(match byte {
            0x01 => Token::Hello,
            0x02 => Token::Welcome,
            0x03 => Token::Bye,
            0x04 => Token::Event,
            0x05 => Token::Action,
            0x06 => Token::Acknowledgement,
            0x07 => Token::Drained,
            other => return Err(other),
        })
    }
}

/// One frame as it came off the wire: the raw token byte (unknown tokens are the message
/// layer's to refuse) and the body, empty when the length was 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub token: u8,
    pub body: Bytes,
}

/// Why the byte stream could not be framed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced or sent a frame larger than [`MAX_BUFFER`]: IM491.
    #[error("Maximum buffer size exceeded.")]
    Oversize { frame_len: u64 },
    /// The stream ended in the middle of a frame.
    #[error("Connection closed in the middle of a frame ({buffered} bytes of it received).")]
    Truncated { buffered: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The writing half of framing: a `tokio_util` encoder of [`Frame`]s (and of messages, see
/// `message.rs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let body_len = u32::try_from(frame.body.len()).map_err(|_| FrameError::Oversize {
            frame_len: HEADER_LEN as u64 + frame.body.len() as u64,
        })?;
        dst.reserve(HEADER_LEN + frame.body.len());
        dst.put_u8(frame.token);
        dst.put_u8(0);
        dst.put_u32_le(body_len);
        dst.put_slice(&frame.body);
        Ok(())
    }
}

/// A buffer grows to hold a large frame whole (the server's write buffer, for a large echo);
/// once such a frame has gone and nothing else waits in the buffer, it goes back to small, so
/// that an idle connection that once sent 8 MB does not keep 8 MB.
pub fn shrink_after_large_frame(buffer: &mut BytesMut) {
    const KEEP: usize = 64 * 1024;
    if buffer.is_empty() && buffer.capacity() > KEEP {
        *buffer = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(token: u8, body: &[u8]) -> Frame {
        Frame {
            token,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn wire(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            FrameCodec.encode(f.clone(), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn tokens_are_the_seven_protocol_bytes() {
        for byte in 0..=u8::MAX {
            match Token::try_from(byte) {
                Ok(token) => assert_eq!(token as u8, byte),
                Err(back) => {
                    assert_eq!(back, byte);
                    assert!(byte == 0 || byte > 7);
                }
            }
        }
        assert_eq!(Token::try_from(0x06), Ok(Token::Acknowledgement));
    }

    #[test]
    fn header_is_token_zero_and_little_endian_length() {
        let out = wire(&[frame(0x04, &[0xaa; 0x0102])]);
        assert_eq!(&out[..HEADER_LEN], &[0x04, 0x00, 0x02, 0x01, 0x00, 0x00]);
        assert_eq!(out.len(), HEADER_LEN + 0x0102);
        assert_eq!(&wire(&[frame(0x02, &[])])[..], &[0x02, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_buffer_grown_for_a_large_frame_shrinks_back_once_empty() {
        let mut buf = wire(&[frame(5, &vec![0xc0; 1 << 20])]);
        // Written out.
        buf.clear();
        assert!(buf.capacity() > 64 * 1024);
        shrink_after_large_frame(&mut buf);
        assert!(buf.capacity() <= 64 * 1024);
        // Not while bytes of the next frame wait in it.
        let mut busy = BytesMut::with_capacity(1 << 20);
        busy.extend_from_slice(&[5, 0]);
        shrink_after_large_frame(&mut busy);
        assert_eq!(&busy[..], &[5, 0]);
    }
}
