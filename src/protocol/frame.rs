//! Framing (docs/PROTOCOL.md section 2, Frames): a 6-byte header `token, 0, u32 LE length`,
//! then the body. The decoder waits for whole frames, reserves room for a large frame once (so
//! receiving is linear in the frame size), and refuses a frame that could never fit the 10 MiB
//! buffer limit.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

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

/// `tokio_util` codec for [`Frame`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(&[token, _reserved, l0, l1, l2, l3]) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let body_len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        let frame_len = HEADER_LEN as u64 + body_len;
        // Judged from the header alone: waiting for bytes that can never be accepted would
        // only let the peer fill our memory first.
        if frame_len > MAX_BUFFER as u64 {
            return Err(FrameError::Oversize { frame_len });
        }
        // Both fit in usize now: they are at most MAX_BUFFER.
        let (frame_len, body_len) = (frame_len as usize, body_len as usize);
        if src.len() < frame_len {
            // Grow to the whole frame at once rather than doubling through many reads; and a
            // buffer that starts empty (see `release_idle_buffer`) gets `READ_ROOM` at its
            // first frame, so that the reads that follow take many small frames at once.
            let room = if src.capacity() < READ_ROOM {
                frame_len.max(READ_ROOM)
            } else {
                frame_len
            };
            src.reserve(room - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = if body_len == 0 {
            // Not a slice of the read buffer, so it does not pin that buffer's memory.
            Bytes::new()
        } else {
            src.split_to(body_len).freeze()
        };
        Ok(Some(Frame { token, body }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

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

/// The room a read buffer is given when a frame starts arriving in an empty or small one.
const READ_ROOM: usize = 8 * 1024;

/// Lets go of an empty read buffer's memory: a client's connection does so whenever it waits
/// with nothing in flight, so an idle client keeps no read buffer (8 KB each). The next frame
/// to arrive makes a new one (see [`READ_ROOM`]).
pub fn release_idle_buffer(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

/// Read buffers start small and grow to hold a large frame whole; once such a frame has been
/// taken out and nothing else waits in the buffer, it goes back to small, so that an idle
/// connection that once received 8 MB does not keep 8 MB.
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

    fn decode_all(buf: &mut BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = FrameCodec.decode(buf).unwrap() {
            frames.push(f);
        }
        frames
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
    fn reserved_byte_is_ignored_and_unknown_tokens_pass() {
        let mut buf = BytesMut::from(&[0x09, 0x7f, 0x01, 0x00, 0x00, 0x00, 0xc0][..]);
        assert_eq!(decode_all(&mut buf), vec![frame(0x09, &[0xc0])]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_fed_byte_by_byte() {
        let sent = frame(0x05, b"\x81\xa1a\x01");
        let bytes = wire(std::slice::from_ref(&sent));
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(
                FrameCodec.decode(&mut buf).unwrap(),
                None,
                "after {i} bytes"
            );
            buf.extend_from_slice(&[*b]);
        }
        assert_eq!(FrameCodec.decode(&mut buf).unwrap(), Some(sent));
        assert_eq!(FrameCodec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_truncated() {
        let mut buf = wire(&[frame(5, b"\x81\xa1a\x01")]);
        buf.truncate(buf.len() - 1);
        let mut codec = FrameCodec;
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { buffered: 9 })
        ));
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn a_buffer_grown_for_a_large_frame_shrinks_back_once_empty() {
        let mut codec = FrameCodec;
        let big = frame(5, &vec![0xc0; 1 << 20]);
        // A read buffer that grew while the frame arrived in pieces.
        let mut buf = BytesMut::with_capacity(4 << 20);
        buf.extend_from_slice(&wire(std::slice::from_ref(&big)));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(big));
        assert!(buf.capacity() > 64 * 1024);
        shrink_after_large_frame(&mut buf);
        assert!(buf.capacity() <= 64 * 1024);
        // Not while bytes of the next frame wait in it.
        let mut busy = BytesMut::with_capacity(1 << 20);
        busy.extend_from_slice(&[5, 0]);
        shrink_after_large_frame(&mut busy);
        assert_eq!(&busy[..], &[5, 0]);
    }

    #[test]
    fn a_released_buffer_takes_the_next_frames_small_or_large() {
        let mut codec = FrameCodec;
        let small = frame(4, &[1; 40]);
        let large = frame(5, &vec![7; 100_000]);
        let mut buf = wire(std::slice::from_ref(&small));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(small.clone()));
        release_idle_buffer(&mut buf);
        assert_eq!(buf.capacity(), 0, "an empty buffer is let go");
        // As a reader fills it after release: a few bytes first, then what the codec made
        // room for.
        let bytes = wire(&[small.clone(), large.clone(), small.clone()]);
        buf.reserve(1);
        buf.extend_from_slice(&bytes[..8]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= READ_ROOM, "room for many small frames");
        buf.extend_from_slice(&bytes[8..]);
        assert_eq!(decode_all(&mut buf), vec![small.clone(), large, small]);
        // Not while bytes of the next frame wait in it.
        buf.extend_from_slice(&[5, 0]);
        release_idle_buffer(&mut buf);
        assert_eq!(&buf[..], &[5, 0]);
    }

    #[test]
    fn a_frame_in_two_halves() {
        let sent = frame(0x04, &[7; 1000]);
        let bytes = wire(std::slice::from_ref(&sent));
        let mut buf = BytesMut::from(&bytes[..500]);
        assert_eq!(FrameCodec.decode(&mut buf).unwrap(), None);
        // The incomplete frame made room for all of itself at once.
        assert!(buf.capacity() >= bytes.len());
        buf.extend_from_slice(&bytes[500..]);
        assert_eq!(decode_all(&mut buf), vec![sent]);
    }

    #[test]
    fn three_frames_in_one_read() {
        let sent = vec![
            frame(0x02, &[]),
            frame(0x05, b"\x83\xa2id\x01\xa4type\xa1x\xaaparameters\xc0"),
            frame(0x07, &[]),
        ];
        let mut buf = wire(&sent);
        buf.extend_from_slice(&[0x06, 0x00, 0x09]);
        assert_eq!(decode_all(&mut buf), sent);
        // The start of a fourth stays buffered.
        assert_eq!(&buf[..], &[0x06, 0x00, 0x09]);
    }

    #[test]
    fn bodies_share_the_read_buffer() {
        let mut buf = wire(&[frame(0x04, &[1, 2, 3])]);
        let start = buf.as_ptr();
        let f = FrameCodec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.body.as_ptr(), start.wrapping_add(HEADER_LEN));
    }

    fn header(token: u8, body_len: u32) -> BytesMut {
        let mut h = BytesMut::from(&[token, 0][..]);
        h.extend_from_slice(&body_len.to_le_bytes());
        h
    }

    #[test]
    fn a_frame_of_exactly_max_buffer_is_accepted() {
        let body_len = MAX_BUFFER - HEADER_LEN;
        let mut buf = header(0x04, body_len as u32);
        assert_eq!(FrameCodec.decode(&mut buf).unwrap(), None);
        buf.resize(MAX_BUFFER, 0xc0);
        let f = FrameCodec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.body.len(), body_len);
        assert!(buf.is_empty());
    }

    #[test]
    fn one_byte_more_is_refused_from_the_header_alone() {
        let mut buf = header(0x04, (MAX_BUFFER - HEADER_LEN + 1) as u32);
        match FrameCodec.decode(&mut buf) {
            Err(FrameError::Oversize { frame_len }) => {
                assert_eq!(frame_len, MAX_BUFFER as u64 + 1)
            }
            other => panic!("{other:?}"),
        }
        let mut buf = header(0x04, u32::MAX);
        match FrameCodec.decode(&mut buf) {
            Err(e @ FrameError::Oversize { frame_len }) => {
                assert_eq!(frame_len, u64::from(u32::MAX) + 6);
                assert_eq!(e.to_string(), "Maximum buffer size exceeded.");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_headers_wait() {
        for n in 0..HEADER_LEN {
            let mut buf = BytesMut::from(&[0x01, 0, 0xff, 0xff, 0xff, 0xff][..n]);
            assert_eq!(FrameCodec.decode(&mut buf).unwrap(), None);
            assert_eq!(buf.len(), n);
        }
    }

    proptest::proptest! {
        #[test]
        fn codec_never_panics(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8),
        ) {
            let mut buf = BytesMut::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match FrameCodec.decode(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
        }

        #[test]
        fn frames_survive_any_split(
            bodies in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..40), 1..5),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let sent: Vec<Frame> = bodies.iter().map(|b| frame(0x04, b)).collect();
            let bytes = wire(&sent);
            let at = cut.index(bytes.len() + 1);
            let mut buf = BytesMut::from(&bytes[..at]);
            let mut got = decode_all(&mut buf);
            buf.extend_from_slice(&bytes[at..]);
            got.extend(decode_all(&mut buf));
            proptest::prop_assert_eq!(got, sent);
        }
    }
}
