//! An open connection ([`Connection`]): the frame reader, and the write queue (`Outgoing`) with
//! its vectored writes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::gate::ReadGate;
use super::Stream;
use crate::protocol::FrameReader;

/// An open connection: frames in, bytes out.
pub(super) struct Connection {
    pub(super) reader: FrameReader<ReadHalf<Stream>>,
    /// Lets the driver's `select!` poll `reader` only when it may have a frame.
    pub(super) gate: ReadGate,
    pub(super) out: Outgoing,
}

/// The writing side. Outgoing frames are kept as the session gave them (shared `Bytes`), so a
/// large event is never copied on its way to the socket.
pub(super) struct Outgoing {
    writer: WriteHalf<Stream>,
    pub(super) queue: VecDeque<Bytes>,
    /// The writer holds bytes that have not been flushed yet.
    unflushed: bool,
}

impl Connection {
    pub(super) fn new(stream: Stream) -> Connection {
        let (read, write) = tokio::io::split(stream);
        Connection {
            // Empty until a frame arrives (see `FrameReader::release_idle`).
            reader: FrameReader::new(read),
            gate: ReadGate::default(),
            out: Outgoing {
                writer: write,
                queue: VecDeque::new(),
                unflushed: false,
            },
        }
    }

    /// Writes what is left (a BYE, an acknowledgement), then closes, within a bound so that
    /// a peer that stopped reading cannot hold the connection open.
    pub(super) async fn finish(self) {
        let mut out = self.out;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while out.wants_write() {
                out.write_some().await?;
            }
            out.writer.shutdown().await
        })
        .await;
    }
}

/// At most this many queued frames go to the writer in one vectored write: a pipelined burst
/// becomes one TLS record and one system call, and no frame is copied to get there.
const WRITE_BATCH: usize = 64;

/// Drops the first `written` bytes of the write queue: the frames written whole, and the written
/// part of the next.
fn consume(queue: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if front.len() > written {
            front.advance(written);
            return;
        }
        written -= front.len();
        queue.pop_front();
    }
}

impl Outgoing {
    pub(super) fn wants_write(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// Writes some of the write queue, or flushes once it is empty; cancel-safe, as it is raced
    /// against reading.
    pub(super) async fn write_some(&mut self) -> std::io::Result<()> {
        if !self.queue.is_empty() {
            // The slices are made afresh on each poll, on the stack: kept across the wait they
            // would be a kilobyte in every client's task.
            let (writer, queue) = (&mut self.writer, &self.queue);
            let written = std::future::poll_fn(|cx| {
                let mut slices = [std::io::IoSlice::new(&[]); WRITE_BATCH];
                let count = slices
                    .iter_mut()
                    .zip(queue)
                    .map(|(slice, frame)| *slice = std::io::IoSlice::new(frame))
                    .count();
                Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            consume(&mut self.queue, written);
            self.unflushed = true;
        } else {
            self.writer.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer that records each write call and accepts at most `limit` bytes per call.
    struct Recorder {
        writes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
        limit: usize,
    }

    impl tokio::io::AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let taken: Vec<u8> = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .take(self.limit)
                .collect();
            let n = taken.len();
            self.writes.lock().unwrap().push(taken);
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_one_write_without_being_copied() {
        let frame = |n: usize, byte: u8| Bytes::from(vec![byte; n]);
        let writes = Arc::default();
        let recorder = Recorder {
            writes: Arc::clone(&writes),
            limit: usize::MAX,
        };
        let mut connection = Connection::new(Box::new(recorder));
        let out = &mut connection.out;
        let mut partly_written = frame(8, 9);
        partly_written.advance(5);
        out.queue = [partly_written, frame(10, 1), frame(20, 2), frame(30, 3)].into();
        out.write_some().await.unwrap();
        let mut expected = vec![9; 3];
        expected.extend([vec![1; 10], vec![2; 20], vec![3; 30]].concat());
        assert_eq!(
            *writes.lock().unwrap(),
            vec![expected],
            "one write, in order"
        );
        assert!(out.queue.is_empty());

        // A short write leaves the rest queued, where it was: nothing is copied.
        let writes = Arc::default();
        let recorder = Recorder {
            writes: Arc::clone(&writes),
            limit: 25,
        };
        let mut connection = Connection::new(Box::new(recorder));
        let out = &mut connection.out;
        let big = frame(100_000, 7);
        out.queue = [frame(10, 1), big.clone(), frame(5, 2)].into();
        out.write_some().await.unwrap();
        assert_eq!(out.queue.len(), 2);
        assert_eq!(out.queue[0].len(), 100_000 - 15);
        assert_eq!(out.queue[0].as_ptr(), big[15..].as_ptr());
        while !out.queue.is_empty() {
            out.write_some().await.unwrap();
        }
        let sent: Vec<u8> = writes.lock().unwrap().concat();
        assert_eq!(sent, [vec![1; 10], vec![7; 100_000], vec![2; 5]].concat());

        // More frames than one write takes: the first WRITE_BATCH go, the rest wait.
        let recorder = Recorder {
            writes: Arc::default(),
            limit: usize::MAX,
        };
        let mut connection = Connection::new(Box::new(recorder));
        let out = &mut connection.out;
        out.queue = (0..WRITE_BATCH + 10).map(|i| frame(3, i as u8)).collect();
        out.write_some().await.unwrap();
        assert_eq!(out.queue.len(), 10);
        assert_eq!(out.queue[0], frame(3, WRITE_BATCH as u8));
    }
}
