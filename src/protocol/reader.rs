//! Reading frames from a byte stream (a client's connection). Small frames are cut from one
//! read buffer, as [`FrameCodec`] does. A large frame's body is read straight into memory of
//! its own instead, so that handing it on (to JavaScript as a Buffer that lives until garbage
//! collection) never pins the read buffer, and the read buffer never grows past a small frame.
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

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;

use super::frame::{Frame, FrameCodec, FrameError, HEADER_LEN, MAX_BUFFER};

/// Bodies this long or longer are read into memory of their own (see the module's text).
pub const LARGE_BODY: usize = 64 * 1024;

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
        super::frame::release_idle_buffer(&mut self.buffer);
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
        if let Some(&[token, _, l0, l1, l2, l3]) = self.buffer.get(..HEADER_LEN) {
            let body_len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            let whole = self.buffer.len() >= HEADER_LEN + body_len;
            if body_len >= LARGE_BODY && HEADER_LEN + body_len <= MAX_BUFFER && !whole {
                let mut body = self.body(body_len);
                body.fill_from(&self.buffer[HEADER_LEN..]);
                self.buffer.clear();
                self.large = Some((token, body));
                return Ok(None);
            }
        }
        let frame = FrameCodec.decode(&mut self.buffer)?;
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
            if this.buffer.capacity() == this.buffer.len() {
                // Room for a header only: a read that finds nothing leaves an idle connection
                // with a few bytes, not READ_ROOM (the codec makes room once a header shows
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
                this.done = true;
                return match FrameCodec.decode_eof(&mut this.buffer) {
                    Ok(Some(frame)) => Poll::Ready(Some(Ok(frame))),
                    Ok(None) => Poll::Ready(None),
                    Err(err) => Poll::Ready(Some(Err(err))),
                };
            }
        }
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
}
