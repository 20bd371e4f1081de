//! Target `frames`: a byte stream fed in pieces to the frame reader of both sides,
//! [`FrameReader`]. It must give exactly the frames, and end exactly as, the protocol's
//! framing (a model written here from docs/PROTOCOL.md section 2) gives over the whole stream
//! at once, whatever the pieces, the reads that find nothing yet (`Pending`), a read that
//! fails, or the frames the caller drops at once or keeps; and it may not buffer past the
//! 10 MiB cap.
//!
//! The input: a count of pieces, the pieces (raw bytes, frames of chosen sizes around the
//! reader's large-body threshold and 1 MiB, bare headers announcing anything or about the
//! 10 MiB cap), then the plan of reads (each byte a piece size, a `Pending`, or a failure),
//! whose bytes also steer what the caller does after each frame.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use futures_util::Stream;
use imt_gateway::protocol::frame::HEADER_LEN;
use imt_gateway::protocol::reader::LARGE_BODY;
use imt_gateway::protocol::{Frame, FrameError, FrameReader, MAX_BUFFER};
use tokio::io::{AsyncRead, ReadBuf};

use super::input::Input;

/// Longest stream built.
const MAX_STREAM: usize = 3 << 20;

/// How a reader's stream ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Clean,
    Oversize(u64),
    Truncated(usize),
    Io,
}

fn end_of(err: &FrameError) -> End {
    match err {
        FrameError::Oversize { frame_len } => End::Oversize(*frame_len),
        FrameError::Truncated { buffered } => End::Truncated(*buffered),
        FrameError::Io(_) => End::Io,
    }
}

/// One step of the peer.
#[derive(Debug, Clone)]
enum Step {
    Bytes(Bytes),
    Pending,
    Fail,
}

/// An `AsyncRead` that plays the steps: each read takes what fits of the current piece.
struct Peer {
    steps: VecDeque<Step>,
}

impl AsyncRead for Peer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.steps.front_mut() {
            None => Poll::Ready(Ok(())),
            Some(Step::Pending) => {
                self.steps.pop_front();
                Poll::Pending
            }
            // Stays: every later read fails too.
            Some(Step::Fail) => Poll::Ready(Err(io::Error::other("injected read error"))),
            Some(Step::Bytes(piece)) => {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                piece.advance(n);
                if piece.is_empty() {
                    self.steps.pop_front();
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

fn header(out: &mut Vec<u8>, token: u8, reserved: u8, len: u32) {
    out.push(token);
    out.push(reserved);
    out.extend_from_slice(&len.to_le_bytes());
}

/// A whole frame whose body starts with a few input bytes and is `fill` after them.
fn frame(out: &mut Vec<u8>, input: &mut Input, len: usize) {
    if out.len() + HEADER_LEN + len > MAX_STREAM {
        return;
    }
    let token = input.byte();
    header(out, token, 0, len as u32);
    let start = input.bytes(len.min(24));
    out.extend_from_slice(start);
    let fill = input.byte();
    out.resize(out.len() + (len - start.len()), fill);
}

fn stream(input: &mut Input) -> Vec<u8> {
    let mut out = Vec::new();
    let pieces = input.byte() % 24;
    for _ in 0..pieces {
        match input.byte() % 7 {
            0 => {
                let n = usize::from(input.byte());
                out.extend_from_slice(input.bytes(n));
            }
            1 => {
                let len = usize::from(input.byte());
                frame(&mut out, input, len);
            }
            2 => {
                let len = usize::from(input.u16());
                frame(&mut out, input, len);
            }
            3 => {
                // Around the reader's large-body threshold, and a few times it.
                let len = match input.byte() % 2 {
                    0 => LARGE_BODY - 8 + input.below(16),
                    _ => input.below(4 * LARGE_BODY),
                };
                frame(&mut out, input, len);
            }
            4 => {
                // A header alone, announcing anything or about the cap (which is judged on
                // the header: a whole frame of 10 MiB costs too much per run here, and the
                // frame.rs tests take one of exactly the cap).
                let token = input.byte();
                let reserved = input.byte();
                let len = match input.byte() % 2 {
                    0 => input.u32(),
                    _ => (MAX_BUFFER - HEADER_LEN - 2 + input.below(4)) as u32,
                };
                header(&mut out, token, reserved, len);
            }
            5 => {
                // Around 1 MiB, where the client's reader maps a large body for huge pages.
                let len = (1 << 20) - 8 + input.below(16);
                frame(&mut out, input, len);
            }
            _ => {
                // A torn end: the last bytes never arrive.
                let cut = usize::from(input.u16());
                out.truncate(out.len().saturating_sub(cut));
            }
        }
    }
    out
}

/// The steps that deliver `stream`, and how many of its bytes come before a failure.
fn plan(stream: &Bytes, controls: &[u8]) -> (VecDeque<Step>, usize, bool) {
    let mut steps = VecDeque::new();
    let mut at = 0;
    for &b in controls {
        if at == stream.len() {
            break;
        }
        let size = match b {
            0 => {
                steps.push_back(Step::Pending);
                continue;
            }
            0xff => {
                steps.push_back(Step::Fail);
                return (steps, at, true);
            }
            1..=0xf0 => usize::from(b),
            _ => usize::from(b - 0xf0) * 8 * 1024,
        };
        let end = (at + size).min(stream.len());
        steps.push_back(Step::Bytes(stream.slice(at..end)));
        at = end;
    }
    if at < stream.len() {
        steps.push_back(Step::Bytes(stream.slice(at..)));
    }
    (steps, stream.len(), false)
}

/// The same bytes in one piece (and the same failure after them).
fn whole(bytes: &Bytes, failed: bool) -> VecDeque<Step> {
    let mut steps = VecDeque::new();
    if !bytes.is_empty() {
        steps.push_back(Step::Bytes(bytes.clone()));
    }
    if failed {
        steps.push_back(Step::Fail);
    }
    steps
}

/// What the protocol makes of `bytes` in one piece, then the end of the stream (or a failed
/// read): whole frames one after the other; a header that announces more than the 10 MiB cap
/// ends the stream at once; bytes left over at the end are a frame cut short.
fn reference(bytes: &[u8], failed: bool) -> (Vec<Frame>, End) {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some(&[token, _reserved, l0, l1, l2, l3]) = rest.get(..HEADER_LEN) {
        let len = HEADER_LEN as u64 + u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        if len > MAX_BUFFER as u64 {
            return (frames, End::Oversize(len));
        }
        let Some(body) = rest.get(HEADER_LEN..len as usize) else {
            break;
        };
        let body = Bytes::copy_from_slice(body);
        frames.push(Frame { token, body });
        rest = &rest[len as usize..];
    }
    match (failed, rest.len()) {
        (true, _) => (frames, End::Io),
        (false, 0) => (frames, End::Clean),
        (false, left) => (frames, End::Truncated(left)),
    }
}

/// Polls `reader` to its end, comparing each frame with the expected one as it comes. After
/// each frame `after` gets a control byte (keep the frame or drop it at once, let go of idle
/// memory...). `buffer` tells what the reader holds, checked against the cap after each poll.
fn drive<S>(
    name: &str,
    reader: &mut S,
    expected: &(Vec<Frame>, End),
    controls: &[u8],
    buffer: fn(&S) -> (usize, usize),
    after: fn(&mut S, u8),
) -> Result<(), String>
where
    S: Stream<Item = Result<Frame, FrameError>> + Unpin,
{
    let (frames, end) = expected;
    let mut cx = Context::from_waker(Waker::noop());
    let mut kept = Vec::new();
    let mut got = 0;
    let mut pending = 0;
    loop {
        let polled = Pin::new(&mut *reader).poll_next(&mut cx);
        let (len, capacity) = buffer(reader);
        if len > MAX_BUFFER || capacity > MAX_BUFFER + 64 * 1024 {
            return Err(format!(
                "{name}: a read buffer of {len} bytes in {capacity} (cap {MAX_BUFFER})"
            ));
        }
        let ending = match polled {
            Poll::Pending => {
                // Only the peer's Pending steps make a reader wait; a reader that waits
                // without reading would spin here.
                pending += 1;
                if pending > controls.len() + 1 {
                    return Err(format!("{name}: Pending with no read pending"));
                }
                continue;
            }
            Poll::Ready(Some(Ok(frame))) => {
                match frames.get(got) {
                    Some(want) if *want == frame => {}
                    Some(want) => {
                        let (token, len) = (want.token, want.body.len());
                        return Err(format!(
                            "{name}: frame {got} is token {} with {} bytes, not {token} with {len}",
                            frame.token,
                            frame.body.len(),
                        ));
                    }
                    None => return Err(format!("{name}: frame {got} is one too many")),
                }
                let control = controls.get(got % controls.len().max(1)).copied();
                got += 1;
                let control = control.unwrap_or(0);
                if control & 0x10 != 0 {
                    kept.push(frame);
                }
                after(reader, control);
                continue;
            }
            Poll::Ready(Some(Err(err))) => end_of(&err),
            Poll::Ready(None) => End::Clean,
        };
        if got != frames.len() || ending != *end {
            return Err(format!(
                "{name}: {got} frames then {ending:?}, expected {} frames then {end:?}",
                frames.len()
            ));
        }
        return Ok(());
    }
}

pub fn run(data: &[u8]) -> Result<(), String> {
    let mut input = Input::new(data);
    let bytes = Bytes::from(stream(&mut input));
    let controls = input.rest();
    let (steps, delivered, failed) = plan(&bytes, controls);
    let expected = reference(&bytes[..delivered], failed);

    // Fed in the planned pieces and in one.
    for (name, steps) in [
        ("FrameReader", steps),
        (
            "FrameReader (whole)",
            whole(&bytes.slice(..delivered), failed),
        ),
    ] {
        let mut reader = FrameReader::new(Peer { steps });
        drive(
            name,
            &mut reader,
            &expected,
            controls,
            |r| (r.read_buffer().len(), r.read_buffer().capacity()),
            |r, control| {
                if control & 0x20 != 0 {
                    r.release_idle();
                }
            },
        )?;
        // Ended (or failed): nothing more, however often asked.
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Some(_)) | Poll::Pending = Pin::new(&mut reader).poll_next(&mut cx) {
            return Err(format!("{name}: more after the end"));
        }
    }
    Ok(())
}
