//! Reading frames from a byte stream: the one reader of both sides, the client's connection
//! and each of the server's, and of bytes already in memory ([`frames_of`]), so that every
//! framing decision (the header, the 10 MiB cap judged from the header alone, a stream that
//! ends inside a frame) is made here once. Small frames are cut from one read buffer. A large
//! frame's body is read straight into memory of its own instead, so that handing it on (to
//! JavaScript as a Buffer that lives until garbage collection) never pins the read buffer,
//! and the read buffer never grows past a small frame.
//!
//! Fresh memory costs a page fault per 4 KiB on first touch, which for a body of megabytes is a
//! large part of what receiving it costs (docs/performance.md has the figures and the command
//! that counts the faults). So a large body goes where that cost is least:
//! - into the previous large body's memory when that has been dropped (the [`Spare`] slot:
//!   a body dropped at once, as in Rust or when its strings were copied out, is reused);
//! - on Linux, from 1 MiB on, into a mapping of its own aligned to 2 MiB and advised for
//!   transparent huge pages: one fault per 2 MiB where the kernel offers them, the same faults
//!   as any allocation where it does not;
//! - elsewhere, into an ordinary allocation.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};

use super::frame::{Frame, FrameError, HEADER_LEN, MAX_BUFFER};

/// Bodies this long or longer are read into memory of their own (see the module's text).
pub const LARGE_BODY: usize = 64 * 1024;

/// The room a read buffer is given when a frame starts arriving in an empty or small one.
const READ_ROOM: usize = 8 * 1024;

/// What a read into an empty buffer takes, on the stack (see [`FrameReader`]'s `poll_next`).
const PROBE: usize = 2048;

/// From this length a large body is mapped for huge pages where the system has them.
#[cfg(target_os = "linux")]
const HUGE_FROM: usize = 1024 * 1024;

/// The size of a huge page on the systems that have them.
#[cfg(target_os = "linux")]
const HUGE: usize = 2 * 1024 * 1024;

/// Asks the kernel to back the 2 MiB-aligned parts of a large allocation, which nothing has
/// touched yet, with huge pages (Linux, from 1 MiB): what `text.rs` transcodes an 8 MB string
/// into then costs a few faults rather than one per 4 KiB. Only advice: refused or elsewhere,
/// the memory is the same.
pub(crate) fn advise_huge_pages(start: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= HUGE_FROM {
        let from = (start as usize).div_ceil(HUGE) * HUGE;
        let to = (start as usize + len) / HUGE * HUGE;
        if to > from {
            // SAFETY: the range lies inside the caller's allocation; the advice changes no
            // byte of it.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len);
}

/// Where a dropped large body leaves its memory for the reader's next one.
type Spare = Mutex<Option<Region>>;

/// A stream of [`Frame`]s read from `R`.
pub struct FrameReader<R> {
    inner: R,
    buffer: BytesMut,
    /// The large frame being read: its token and its body so far.
    large: Option<(u8, Body)>,
    spare: Arc<Spare>,
    /// The last frame was large: its memory may come back for the next one, so an idle turn
    /// does not let go of it (see [`FrameReader::release_idle`]).
    last_large: bool,
    /// The stream ended, or failed: nothing more is read.
    done: bool,
}

impl<R> FrameReader<R> {
    /// A reader whose buffer is empty until the first bytes arrive.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buffer: BytesMut::new(),
            large: None,
            spare: Arc::default(),
            last_large: false,
            done: false,
        }
    }

    /// The stream read from, for reading past the frames (what was buffered stays here).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The bytes read and not yet taken as a frame (a large frame's body being read is not
    /// among them).
    pub fn read_buffer(&self) -> &BytesMut {
        &self.buffer
    }

    /// Lets go of an empty read buffer and of a spare large body, so that an idle connection
    /// keeps neither; not right after a large frame, whose memory the next large frame may
    /// use again.
    pub fn release_idle(&mut self) {
        if self.last_large {
            return;
        }
        release_idle_buffer(&mut self.buffer);
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Memory for a large body of `len` bytes: the spare one if it is large enough.
    fn body(&self, len: usize) -> Body {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        let region = match spare {
            Some(region) if region.capacity >= len => region,
            _ => Region::new(len),
        };
        Body {
            region: Some(region),
            len,
            filled: 0,
            home: Arc::downgrade(&self.spare),
        }
    }

    /// A frame cut from the read buffer, or the start of a large one taken out of it.
    fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some((token, body_len)) = header(&self.buffer) {
            let whole = self.buffer.len() >= HEADER_LEN + body_len;
            if body_len >= LARGE_BODY && HEADER_LEN + body_len <= MAX_BUFFER && !whole {
                let mut body = self.body(body_len);
                body.fill_from(&self.buffer[HEADER_LEN..]);
                self.buffer.clear();
                self.large = Some((token, body));
                return Ok(None);
            }
        }
        let frame = cut(&mut self.buffer)?;
        if let Some(frame) = &frame {
            self.last_large = frame.body.len() >= LARGE_BODY;
        }
        Ok(frame)
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Frame, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some((token, body)) = this.large.take_if(|(_, body)| body.filled == body.len) {
                this.last_large = true;
                let body = Bytes::from_owner(body);
                return Poll::Ready(Some(Ok(Frame { token, body })));
            }
            if let Some((_, body)) = &mut this.large {
                let mut read = ReadBuf::uninit(body.unfilled());
                let result = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read));
                let n = read.filled().len();
                match result {
                    Err(err) => return this.fail(err.into()),
                    Ok(()) if n == 0 => {
                        let buffered = HEADER_LEN + body.filled;
                        return this.fail(FrameError::Truncated { buffered });
                    }
                    Ok(()) => body.filled += n,
                }
                continue;
            }
            match this.decode() {
                Err(err) => return this.fail(err),
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.large.is_some() => continue,
                Ok(None) => {}
            }
            if this.buffer.capacity() == 0 {
                // No read buffer (a new connection, or one that waited with nothing in flight,
                // see `release_idle`): the read goes to the stack. A small frame that arrives
                // whole, as each does on a connection that waits for every answer, is then
                // cut from there with one allocation, its body's, rather than a read buffer
                // made for it and let go again. Anything else goes on in a read buffer.
                let mut probe = [MaybeUninit::<u8>::uninit(); PROBE];
                let mut read = ReadBuf::uninit(&mut probe);
                let result = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read));
                if let Err(err) = result {
                    return this.fail(err.into());
                }
                let got = read.filled();
                if got.is_empty() {
                    this.done = true;
                    return Poll::Ready(None);
                }
                if let Some((frame, rest)) = small_frame(got) {
                    this.buffer.extend_from_slice(rest);
                    this.last_large = false;
                    return Poll::Ready(Some(Ok(frame)));
                }
                this.buffer.extend_from_slice(got);
                continue;
            }
            if this.buffer.capacity() == this.buffer.len() {
                // Room for a header only: a read that finds nothing leaves an idle connection
                // with a few bytes, not READ_ROOM (`cut` makes room once a header shows
                // what is coming).
                this.buffer.reserve(HEADER_LEN);
            }
            let mut read = ReadBuf::uninit(this.buffer.spare_capacity_mut());
            let result = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read));
            let n = read.filled().len();
            if let Err(err) = result {
                return this.fail(err.into());
            }
            // SAFETY: the read initialized the first `n` bytes of the spare capacity.
            unsafe { this.buffer.set_len(this.buffer.len() + n) };
            if n == 0 {
                // What is left is no whole frame (`decode` took those): part of one, or none.
                this.done = true;
                if this.buffer.is_empty() {
                    return Poll::Ready(None);
                }
                let buffered = this.buffer.len();
                return Poll::Ready(Some(Err(FrameError::Truncated { buffered })));
            }
        }
    }
}

/// The frames of `bytes`, read as from a stream that ends after them: each frame, then the
/// error that ended the stream (an oversize header, a frame cut short), if any.
pub fn frames_of(bytes: &[u8]) -> impl Iterator<Item = Result<Frame, FrameError>> + '_ {
    let mut reader = FrameReader::new(bytes);
    std::iter::from_fn(move || {
        let next = reader.next().now_or_never();
        next.expect("bytes in memory are read at once")
    })
}

/// A whole frame taken from the front of `buffer`, or `None` until one is there. The frame's
/// size is judged from its header alone: one over [`MAX_BUFFER`] is refused before any more of
/// it is read, since waiting for bytes that can never be accepted would only let the peer
/// fill our memory first.
fn cut(buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some((token, body_len)) = header(buffer) else {
        return Ok(None);
    };
    let frame_len = HEADER_LEN as u64 + body_len as u64;
    if frame_len > MAX_BUFFER as u64 {
        return Err(FrameError::Oversize { frame_len });
    }
    // It fits in usize now: it is at most MAX_BUFFER.
    let frame_len = frame_len as usize;
    if buffer.len() < frame_len {
        // Grow to the whole frame at once rather than doubling through many reads; and a
        // buffer that starts empty (see `release_idle_buffer`) gets `READ_ROOM` at its first
        // frame, so that the reads that follow take many small frames at once.
        let room = if buffer.capacity() < READ_ROOM {
            frame_len.max(READ_ROOM)
        } else {
            frame_len
        };
        buffer.reserve(room - buffer.len());
        return Ok(None);
    }
    buffer.advance(HEADER_LEN);
    let body = if body_len == 0 {
        // Not a slice of the read buffer, so it does not pin that buffer's memory.
        Bytes::new()
    } else {
        buffer.split_to(body_len).freeze()
    };
    Ok(Some(Frame { token, body }))
}

/// The first frame of `bytes` and the bytes after it, when the frame is whole there and its
/// body is small (under [`LARGE_BODY`], so never over the cap); its body is a copy, memory of
/// its own.
fn small_frame(bytes: &[u8]) -> Option<(Frame, &[u8])> {
    let (token, body_len) = header(bytes)?;
    if body_len >= LARGE_BODY || bytes.len() - HEADER_LEN < body_len {
        return None;
    }
    let (body, rest) = bytes[HEADER_LEN..].split_at(body_len);
    // An empty body is `Bytes::new()`, no allocation, as `cut` makes it.
    let body = Bytes::copy_from_slice(body);
    Some((Frame { token, body }, rest))
}

/// The token and the body's length that a frame's header gives, when `bytes` start with a
/// whole header.
fn header(bytes: &[u8]) -> Option<(u8, usize)> {
    let &[token, _reserved, l0, l1, l2, l3, ..] = bytes else {
        return None;
    };
    Some((token, u32::from_le_bytes([l0, l1, l2, l3]) as usize))
}

/// Lets go of an empty read buffer's memory: a connection does so whenever it waits with
/// nothing in flight, so an idle one keeps no read buffer (8 KB each). The next frame to
/// arrive makes a new one (see [`READ_ROOM`]).
fn release_idle_buffer(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

impl<R> FrameReader<R> {
    fn fail(&mut self, err: FrameError) -> Poll<Option<Result<Frame, FrameError>>> {
        self.done = true;
        self.large = None;
        Poll::Ready(Some(Err(err)))
    }
}

/// A large frame's body: `len` bytes in `region`, `filled` of them read so far. Once whole it
/// is the owner of the frame's [`Bytes`], and when those are dropped its memory goes to the
/// reader's spare slot if that is empty and the reader still exists.
struct Body {
    region: Option<Region>,
    len: usize,
    filled: usize,
    home: Weak<Spare>,
}

impl Body {
    fn unfilled(&mut self) -> &mut [MaybeUninit<u8>] {
        let region = self
            .region
            .as_mut()
            .expect("a body has its memory until dropped");
        // SAFETY: the region holds `capacity >= len` bytes and nothing else refers to them.
        unsafe {
            std::slice::from_raw_parts_mut(
                region.ptr.as_ptr().add(self.filled).cast(),
                self.len - self.filled,
            )
        }
    }

    /// Takes the first bytes of the body from `bytes` (all of them: fewer than the body).
    fn fill_from(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.len - self.filled);
        for (to, from) in self.unfilled()[..n].iter_mut().zip(bytes) {
            to.write(*from);
        }
        self.filled += n;
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        match &self.region {
            // SAFETY: the first `filled` bytes were written by reads or `fill_from`.
            Some(region) => unsafe { std::slice::from_raw_parts(region.ptr.as_ptr(), self.filled) },
            None => &[],
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let (Some(region), Some(home)) = (self.region.take(), self.home.upgrade()) else {
            return;
        };
        let mut spare = home.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_none() {
            *spare = Some(region);
        }
    }
}

/// Memory for one large body, uninitialized or holding an earlier body's bytes.
struct Region {
    ptr: NonNull<u8>,
    capacity: usize,
    /// A mapping of its own (unmapped when dropped), or else a `Vec`'s allocation.
    #[cfg(target_os = "linux")]
    mapped: bool,
}

// SAFETY: a Region owns its memory alone, like a Vec<u8>.
unsafe impl Send for Region {}

impl Region {
    fn new(len: usize) -> Region {
        #[cfg(target_os = "linux")]
        if len >= HUGE_FROM {
            if let Some(region) = Region::mapped(len) {
                return region;
            }
        }
        let mut vec = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len));
        Region {
            ptr: NonNull::new(vec.as_mut_ptr()).expect("a Vec's pointer is never null"),
            capacity: vec.capacity(),
            #[cfg(target_os = "linux")]
            mapped: false,
        }
    }

    /// `len` bytes rounded up to 2 MiB, mapped at a 2 MiB boundary and advised for huge
    /// pages (the advice may be refused: the mapping serves all the same).
    #[cfg(target_os = "linux")]
    fn mapped(len: usize) -> Option<Region> {
        let capacity = len.div_ceil(HUGE) * HUGE;
        // SAFETY: a fresh private anonymous mapping; only its own parts are unmapped.
        unsafe {
            let raw = libc::mmap(
                std::ptr::null_mut(),
                capacity + HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if raw == libc::MAP_FAILED {
                return None;
            }
            let start = raw as usize;
            let aligned = start.div_ceil(HUGE) * HUGE;
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            let tail = start + capacity + HUGE - (aligned + capacity);
            if tail > 0 {
                libc::munmap((aligned + capacity) as *mut libc::c_void, tail);
            }
            libc::madvise(aligned as *mut libc::c_void, capacity, libc::MADV_HUGEPAGE);
            Some(Region {
                ptr: NonNull::new(aligned as *mut u8)?,
                capacity,
                mapped: true,
            })
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.mapped {
            // SAFETY: the mapping made in `Region::mapped`, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.capacity) };
            return;
        }
        // SAFETY: the allocation of a Vec<u8> of this capacity, given back once.
        drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), 0, self.capacity) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameCodec;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    fn frame(token: u8, len: usize, fill: u8) -> Frame {
        Frame {
            token,
            body: Bytes::from(vec![fill; len]),
        }
    }

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            FrameCodec.encode(f.clone(), &mut out).unwrap();
        }
        out.to_vec()
    }

    #[tokio::test]
    async fn small_and_large_frames_in_any_pieces_arrive_whole_and_in_order() {
        let sent = vec![
            frame(2, 0, 0),
            frame(5, 100, 1),
            frame(5, LARGE_BODY, 2),
            frame(4, 10, 3),
            frame(5, 3 * 1024 * 1024 + 7, 4),
            frame(5, LARGE_BODY - 1, 5),
            frame(7, 0, 0),
        ];
        let bytes = wire(&sent);
        for piece in [1, 5, 6, 4096, 70_000, bytes.len()] {
            let (mut gateway, ours) = tokio::io::duplex(1 << 16);
            let write = bytes.clone();
            tokio::spawn(async move {
                for chunk in write.chunks(piece) {
                    gateway.write_all(chunk).await.unwrap();
                }
            });
            let mut reader = FrameReader::new(ours);
            let mut got = Vec::new();
            while let Some(frame) = reader.next().await {
                got.push(frame.unwrap());
            }
            assert_eq!(got, sent, "in pieces of {piece}");
            assert!(reader.read_buffer().capacity() < 2 * LARGE_BODY);
        }
    }

    #[tokio::test]
    async fn a_dropped_large_body_is_reused_and_a_kept_one_is_not_overwritten() {
        let (mut gateway, ours) = tokio::io::duplex(1 << 16);
        let bytes = wire(&[
            frame(5, 2 * 1024 * 1024, 1),
            frame(5, 2 * 1024 * 1024, 2),
            frame(5, 1024 * 1024, 3),
        ]);
        tokio::spawn(async move { gateway.write_all(&bytes).await.unwrap() });
        let mut reader = FrameReader::new(ours);
        let first = reader.next().await.unwrap().unwrap();
        let at = first.body.as_ptr();
        drop(first);
        let second = reader.next().await.unwrap().unwrap();
        assert_eq!(second.body.as_ptr(), at, "the dropped body's memory again");
        // Kept (as JavaScript keeps a Buffer): the next body needs memory of its own.
        let third = reader.next().await.unwrap().unwrap();
        assert_ne!(third.body.as_ptr(), at);
        assert!(second.body.iter().all(|&b| b == 2));
        assert!(third.body.iter().all(|&b| b == 3) && third.body.len() == 1024 * 1024);
        // An idle turn right after a large frame keeps the spare; after a small one it goes.
        drop(second);
        reader.release_idle();
        assert!(reader.spare.lock().unwrap().is_some());
        reader.last_large = false;
        reader.release_idle();
        assert!(reader.spare.lock().unwrap().is_none());
        // Bodies outliving their reader free themselves.
        drop(reader);
        drop(third);
    }

    #[tokio::test]
    async fn a_reader_waiting_for_bytes_keeps_almost_no_buffer() {
        use futures_util::FutureExt;
        let (mut gateway, ours) = tokio::io::duplex(1 << 16);
        gateway.write_all(&wire(&[frame(2, 0, 0)])).await.unwrap();
        let mut reader = FrameReader::new(ours);
        assert_eq!(reader.next().await.unwrap().unwrap(), frame(2, 0, 0));
        reader.release_idle();
        assert!(reader.next().now_or_never().is_none(), "nothing to read");
        // What an idle connection holds while it waits (1,000 idle clients are measured).
        assert!(reader.read_buffer().capacity() <= 16);
        gateway
            .write_all(&wire(&[frame(6, 3000, 9)]))
            .await
            .unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), frame(6, 3000, 9));
    }

    #[tokio::test]
    async fn a_small_frame_that_arrives_whole_at_an_idle_reader_needs_no_read_buffer() {
        let (mut gateway, ours) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(ours);
        // One frame at a time, as a connection that waits for each answer gets them.
        for n in 0..3u8 {
            gateway.write_all(&wire(&[frame(5, 40, n)])).await.unwrap();
            assert_eq!(reader.next().await.unwrap().unwrap(), frame(5, 40, n));
            assert_eq!(reader.read_buffer().capacity(), 0, "frame {n}");
            reader.release_idle();
        }
        // Two in one read: the first at once, the second from a read buffer.
        let two = [frame(6, 0, 0), frame(4, 300, 7)];
        gateway.write_all(&wire(&two)).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), two[0]);
        assert_eq!(reader.read_buffer().len(), HEADER_LEN + 300);
        assert_eq!(reader.next().await.unwrap().unwrap(), two[1]);
        reader.release_idle();
        // One larger than a read on the stack takes, and the start of a large one: read on
        // in a buffer, whole all the same.
        let more = [frame(5, PROBE + 10, 1), frame(5, LARGE_BODY + 1, 2)];
        let bytes = wire(&more);
        tokio::spawn(async move { gateway.write_all(&bytes).await.unwrap() });
        assert_eq!(reader.next().await.unwrap().unwrap(), more[0]);
        assert_eq!(reader.next().await.unwrap().unwrap(), more[1]);
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_large_body_is_truncated_and_then_ends() {
        let (mut gateway, ours) = tokio::io::duplex(1 << 16);
        let mut bytes = wire(&[frame(4, 5, 1), frame(5, 200_000, 2)]);
        bytes.truncate(bytes.len() - 1000);
        tokio::spawn(async move { gateway.write_all(&bytes).await.unwrap() });
        let mut reader = FrameReader::new(ours);
        assert_eq!(reader.next().await.unwrap().unwrap(), frame(4, 5, 1));
        match reader.next().await {
            Some(Err(FrameError::Truncated { buffered })) => {
                assert_eq!(buffered, HEADER_LEN + 200_000 - 1000)
            }
            other => panic!("{other:?}"),
        }
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn an_oversize_header_fails_before_any_body_is_read() {
        let (mut gateway, ours) = tokio::io::duplex(1 << 16);
        let mut header = vec![5, 0];
        header.extend_from_slice(&(MAX_BUFFER as u32).to_le_bytes());
        tokio::spawn(async move { gateway.write_all(&header).await.unwrap() });
        let mut reader = FrameReader::new(ours);
        assert!(matches!(
            reader.next().await,
            Some(Err(FrameError::Oversize { .. }))
        ));
        assert!(reader.next().await.is_none());
    }

    /// Cutting frames from the read buffer, as bytes arrive.
    mod cutting {
        use super::super::*;

        fn frame(token: u8, body: &[u8]) -> Frame {
            Frame {
                token,
                body: Bytes::copy_from_slice(body),
            }
        }

        fn wire(frames: &[Frame]) -> BytesMut {
            BytesMut::from(&super::wire(frames)[..])
        }

        fn decode_all(buf: &mut BytesMut) -> Vec<Frame> {
            let mut frames = Vec::new();
            while let Some(f) = cut(buf).unwrap() {
                frames.push(f);
            }
            frames
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
                assert_eq!(cut(&mut buf).unwrap(), None, "after {i} bytes");
                buf.extend_from_slice(&[*b]);
            }
            assert_eq!(cut(&mut buf).unwrap(), Some(sent));
            assert_eq!(cut(&mut buf).unwrap(), None);
        }

        #[test]
        fn a_stream_that_ends_inside_a_frame_is_truncated() {
            let mut buf = wire(&[frame(5, b"\x81\xa1a\x01")]);
            buf.truncate(buf.len() - 1);
            assert!(cut(&mut buf).unwrap().is_none());
            let mut read = frames_of(&buf);
            assert!(matches!(
                read.next(),
                Some(Err(FrameError::Truncated { buffered: 9 }))
            ));
            assert!(read.next().is_none());
            assert!(frames_of(&[]).next().is_none());
        }

        #[test]
        fn a_released_buffer_takes_the_next_frames_small_or_large() {
            let small = frame(4, &[1; 40]);
            let large = frame(5, &vec![7; 100_000]);
            let mut buf = wire(std::slice::from_ref(&small));
            assert_eq!(cut(&mut buf).unwrap(), Some(small.clone()));
            release_idle_buffer(&mut buf);
            assert_eq!(buf.capacity(), 0, "an empty buffer is let go");
            // As a reader fills it after release: a few bytes first, then what `cut` made
            // room for.
            let bytes = wire(&[small.clone(), large.clone(), small.clone()]);
            buf.reserve(1);
            buf.extend_from_slice(&bytes[..8]);
            assert_eq!(cut(&mut buf).unwrap(), None);
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
            assert_eq!(cut(&mut buf).unwrap(), None);
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
            let f = cut(&mut buf).unwrap().unwrap();
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
            assert_eq!(cut(&mut buf).unwrap(), None);
            buf.resize(MAX_BUFFER, 0xc0);
            let f = cut(&mut buf).unwrap().unwrap();
            assert_eq!(f.body.len(), body_len);
            assert!(buf.is_empty());
        }

        #[test]
        fn one_byte_more_is_refused_from_the_header_alone() {
            let mut buf = header(0x04, (MAX_BUFFER - HEADER_LEN + 1) as u32);
            match cut(&mut buf) {
                Err(FrameError::Oversize { frame_len }) => {
                    assert_eq!(frame_len, MAX_BUFFER as u64 + 1)
                }
                other => panic!("{other:?}"),
            }
            let mut buf = header(0x04, u32::MAX);
            match cut(&mut buf) {
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
                assert_eq!(cut(&mut buf).unwrap(), None);
                assert_eq!(buf.len(), n);
            }
        }

        proptest::proptest! {
            #[test]
            fn cutting_never_panics(
                chunks in proptest::collection::vec(
                    proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8),
            ) {
                let mut buf = BytesMut::new();
                for chunk in chunks {
                    buf.extend_from_slice(&chunk);
                    loop {
                        match cut(&mut buf) {
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
}
