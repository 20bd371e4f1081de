//! The reactor: clients' sockets, non-blocking, their readiness reported by the loop through
//! one `uv_poll` handle each (the Watch).

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::panic::catch_unwind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::executor::{run_after, Shared};
use super::table::{alloc_handle, free_handle, uv, OsSocket, UV_POLL, UV_READABLE, UV_WRITABLE};
use super::{loop_callback, on_loop, LOOP, PROBE};
use crate::client::{prepare_socket, Reactor, Stream, Task, TcpConnecting, READ_AHEAD};

pub(super) struct LoopReactor {
    pub(super) shared: Arc<Shared>,
}

impl Reactor for LoopReactor {
    fn connect(&self, address: SocketAddr, keep_alive: Option<Duration>) -> TcpConnecting {
        Box::pin(async move {
            let domain = socket2::Domain::for_address(address);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            socket.set_nonblocking(true)?;
            prepare_socket(socket2::SockRef::from(&socket), keep_alive);
            match socket.connect(&address.into()) {
                Ok(()) => {}
                Err(err) if in_progress(&err) => {}
                Err(err) => return Err(err),
            }
            // Nothing is known to be ready until the connection completes (or fails).
            let socket = PolledSocket::new(socket.into(), 0)?;
            poll_fn(|cx| socket.with_watch(|watch| watch.poll_ready(cx, UV_WRITABLE))).await?;
            if let Some(err) = socket.io.take_error()? {
                return Err(err);
            }
            socket.io.peer_addr()?;
            Ok(Box::new(socket) as Stream)
        })
    }

    /// Runs `task` on the loop (from any thread): with the client's own task, or a closed
    /// connection's last writes.
    fn spawn(&self, task: Task) {
        self.shared.schedule(|q| q.spawned.push(task));
    }
}

/// A non-blocking connect that has begun: EINPROGRESS on unix, WSAEWOULDBLOCK on Windows
/// (which std reads as `WouldBlock`).
fn in_progress(err: &io::Error) -> bool {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    err.kind() == io::ErrorKind::WouldBlock
}

/// Reads of a socket in one turn of the loop before it waits for the next: a gateway that
/// floods the client is read a slice per turn, and timers and other I/O get their turn in
/// between, however the reads are triggered.
const READS_PER_TURN: u32 = 16;

/// What the loop's poll callback needs: who waits for which readiness.
struct Watch {
    handle: *mut c_void,
    /// What libuv watches for.
    events: c_int,
    /// What the socket may be ready for: cleared when a call would block (or this turn's
    /// reads are spent), set again only by the loop's report, so an idle socket costs no
    /// system calls when polled.
    ready: c_int,
    /// Reads left in this turn of the loop (see [`READS_PER_TURN`]).
    budget: u32,
    /// The `PROBE` last seen.
    probe: u64,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Watch {
    /// Ready when `event` readiness is known, else waits for the loop to report it. After a
    /// large send (see [`super::send_now`]), what the socket waits for counts as ready once more.
    fn poll_ready(&mut self, cx: &mut Context<'_>, event: c_int) -> Poll<io::Result<()>> {
        if self.ready & event == 0 {
            let probe = PROBE.with(Cell::get);
            if self.probe != probe {
                self.probe = probe;
                self.ready |= self.events & (UV_READABLE | UV_WRITABLE);
                self.budget = self.budget.max(1);
            }
        }
        // A read after a write (`client::READ_AHEAD`): the answer may be here before the loop
        // reports it. Within this turn's reads, so a peer that always answers at once is still
        // read a slice per turn.
        if event == UV_READABLE
            && self.ready & UV_READABLE == 0
            && self.budget > 0
            && READ_AHEAD.with(|ahead| ahead.replace(false))
        {
            self.ready |= UV_READABLE;
        }
        if self.ready & event != 0 {
            return Poll::Ready(Ok(()));
        }
        let slot = if event == UV_READABLE {
            &mut self.reader
        } else {
            &mut self.writer
        };
        match slot {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        self.set(self.events | event);
        if self.events & event == 0 {
            return Poll::Ready(Err(io::Error::other("the event loop refused the socket")));
        }
        Poll::Pending
    }

    /// Makes libuv watch for `events`.
    fn set(&mut self, events: c_int) {
        if events == self.events {
            return;
        }
        let Some(uv) = uv() else { return };
        // SAFETY: a Watch is only reached on the loop's thread (`with_watch` checks it, and
        // `on_ready` is a callback of that loop), and its `handle` is the poll handle
        // initialized in `PolledSocket::new`, open for as long as the Watch exists: `drop`
        // frees the Watch and closes the handle together. `on_ready` is a `PollCb`.
        let status = unsafe {
            if events == 0 {
                (uv.poll_stop)(self.handle)
            } else {
                (uv.poll_start)(self.handle, events, on_ready)
            }
        };
        self.events = if status == 0 { events } else { 0 };
    }
}

/// libuv reports readiness (or, with a negative status, that it stopped watching after an
/// error): whoever waits is woken and tries its call again, which then reports the real
/// outcome. A readiness nobody waits for is no longer watched, or a level-triggered poll
/// would fire for ever.
///
/// # Safety
///
/// Called by libuv, on the loop's thread, as the poll callback of a `PolledSocket`'s handle,
/// which `handle` is (see `on_ready_run`).
unsafe extern "C" fn on_ready(handle: *mut c_void, status: c_int, events: c_int) {
    loop_callback(|| on_ready_run(handle, status, events));
}

fn on_ready_run(handle: *mut c_void, status: c_int, events: c_int) {
    run_after(|| {
        let _ = catch_unwind(|| {
            // SAFETY: `handle` is the poll handle of a `PolledSocket`, and `data`, the first
            // field of every libuv handle, points at its Watch: set in `PolledSocket::new`
            // before the handle was ever started, and still valid, since `drop` closes the
            // handle (after which libuv calls no callback) when it frees the Watch. This is the
            // loop's thread, and no other reference to the Watch is live: `with_watch` holds
            // one only while its caller runs, never across a turn of the loop, and this one
            // ends with the wake-ups, before `run_after` polls the tasks.
            let watch = unsafe { &mut **(handle as *mut *mut Watch) };
            let fired = if status < 0 {
                watch.events = 0;
                UV_READABLE | UV_WRITABLE
            } else {
                events
            };
            watch.ready |= fired;
            if fired & UV_READABLE != 0 {
                watch.budget = READS_PER_TURN;
            }
            let reader = (fired & UV_READABLE != 0)
                .then(|| watch.reader.take())
                .flatten();
            let writer = (fired & UV_WRITABLE != 0)
                .then(|| watch.writer.take())
                .flatten();
            if status >= 0 {
                let mut keep = watch.events;
                if fired & UV_READABLE != 0 && reader.is_none() {
                    keep &= !UV_READABLE;
                }
                if fired & UV_WRITABLE != 0 && writer.is_none() {
                    keep &= !UV_WRITABLE;
                }
                watch.set(keep);
            }
            reader.into_iter().chain(writer).for_each(Waker::wake);
        });
    });
}

/// A non-blocking TCP socket whose readiness comes from the loop. Only the loop's thread
/// touches it; a call from any other thread fails instead of touching libuv.
struct PolledSocket {
    /// Closed in `drop`, after the poll handle, or leaked with it (see there).
    io: std::mem::ManuallyDrop<std::net::TcpStream>,
    watch: *mut Watch,
    uv_loop: usize,
    /// The loop's thread, the only one that may touch `watch` and its handle.
    thread: std::thread::ThreadId,
}

// SAFETY: every use of `watch` checks that it runs on the loop's thread (`on_thread`); the
// socket only moves between threads as part of a task that is polled there.
unsafe impl Send for PolledSocket {}
// SAFETY: what a shared reference reaches is the `TcpStream`, itself `Sync`, and `watch`,
// which `with_watch` and `drop` only touch after `on_thread` (so one thread at a time).
unsafe impl Sync for PolledSocket {}

impl PolledSocket {
    /// Watches `io` on this thread's loop; `ready` is what it is known to be ready for.
    fn new(io: std::net::TcpStream, ready: c_int) -> io::Result<PolledSocket> {
        let uv = uv().ok_or_else(|| io::Error::other("libuv is not available"))?;
        let uv_loop = LOOP.with(Cell::get);
        if uv_loop == 0 {
            return Err(io::Error::other("the event loop has gone"));
        }
        let handle = alloc_handle(uv, UV_POLL);
        if handle.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        #[cfg(unix)]
        let socket: OsSocket = std::os::fd::AsRawFd::as_raw_fd(&io);
        // A `SOCKET` is a pointer-sized handle: `as_raw_socket` gives it as a u64, which on a
        // 64-bit (or 32-bit) Windows holds it whole.
        #[cfg(windows)]
        let socket = std::os::windows::io::AsRawSocket::as_raw_socket(&io) as OsSocket;
        // Never used: elsewhere `uv()` is `None`, so this returned above.
        #[cfg(not(any(unix, windows)))]
        let socket = OsSocket::MAX;
        // SAFETY: `uv_loop` is this thread's loop (`LOOP` is non-zero only between
        // `executor()` and `teardown`, on this thread); `handle` is zeroed memory of a poll
        // handle's size; `socket` is the open, non-blocking socket of `io` (a descriptor for
        // `uv_poll_init` on unix, a `SOCKET` for `uv_poll_init_socket` on Windows, as
        // `table::find_uv` picks), which is closed only after the handle (see `drop`).
        let status = unsafe { (uv.poll_init)(uv_loop as *mut c_void, handle, socket) };
        if status != 0 {
            // SAFETY: a failed `uv_poll_init`/`uv_poll_init_socket` returns before it
            // registers the handle with the loop, so it is still plain memory from
            // `alloc_handle`.
            unsafe { free_handle(handle) };
            return Err(io::Error::other(format!("uv_poll_init failed ({status})")));
        }
        // SAFETY: the handle was initialized just above on this loop, and this is its thread.
        unsafe { (uv.unref)(handle) };
        let watch = Box::into_raw(Box::new(Watch {
            handle,
            events: 0,
            ready,
            budget: READS_PER_TURN,
            probe: PROBE.with(Cell::get),
            reader: None,
            writer: None,
        }));
        // SAFETY: `data` (`void*`) is the first field of every libuv handle, and `handle` is
        // an initialized poll handle that nothing else uses yet: it is not started until a
        // `poll_ready` asks, so `on_ready` never sees the handle before its Watch is set.
        unsafe { *(handle as *mut *mut Watch) = watch };
        Ok(PolledSocket {
            io: std::mem::ManuallyDrop::new(io),
            watch,
            uv_loop,
            thread: std::thread::current().id(),
        })
    }

    /// On the thread whose loop watches the socket (and that loop still runs).
    fn on_thread(&self) -> bool {
        std::thread::current().id() == self.thread && on_loop(self.uv_loop)
    }

    /// Runs `f` on the Watch, on the loop's thread only.
    fn with_watch<T>(
        &self,
        f: impl FnOnce(&mut Watch) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !self.on_thread() {
            debug_assert!(false, "socket used outside its event loop's thread");
            return Poll::Ready(Err(io::Error::other(
                "socket used outside its event loop's thread",
            )));
        }
        // SAFETY: on the loop's thread, where libuv never runs a callback while `f` runs,
        // and no reference to the Watch outlives this call.
        f(unsafe { &mut *self.watch })
    }

    /// Makes `call` once the socket may be ready for `event`, and waits for the loop's report
    /// when it would block. `room` is what a read may fill (unused for a write).
    ///
    /// A read that filled less than `room` emptied the socket, as libuv's own streams
    /// assume: the next waits for the loop's report instead of failing with EAGAIN (the poll
    /// is level-triggered, so bytes that arrive meanwhile are reported). A short write is
    /// tried again instead: a fast peer frees send buffer while we look away, and the loop
    /// reports writable only once much of it is free, so waiting for that report slows large
    /// events down (measured in docs/performance.md, "Measurements behind design choices").
    fn attempt(
        &self,
        cx: &mut Context<'_>,
        event: c_int,
        room: usize,
        mut call: impl FnMut(socket2::SockRef<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        self.with_watch(|watch| loop {
            ready!(watch.poll_ready(cx, event))?;
            match call(socket2::SockRef::from(&*self.io)) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => watch.ready &= !event,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                result => {
                    if event == UV_READABLE {
                        watch.budget -= 1;
                        if watch.budget == 0 || matches!(result, Ok(n) if n < room) {
                            watch.ready &= !UV_READABLE;
                        }
                    }
                    return Poll::Ready(result);
                }
            }
        })
    }
}

impl Drop for PolledSocket {
    fn drop(&mut self) {
        let Some(uv) = uv() else { return };
        if !self.on_thread() {
            // Never expected. The poll handle cannot be closed from here, and it stays armed
            // with the Watch as its data and the socket as what it polls: freeing the Watch
            // would leave the loop a dangling pointer for its next report, and closing the
            // socket would let libuv watch whatever reuses the descriptor (or `SOCKET`), so
            // all are leaked.
            debug_assert!(false, "socket dropped outside its event loop's thread");
            return;
        }
        // SAFETY: the Watch was made in `new` and is freed only here, on the loop's thread;
        // closing the handle just below stops its callbacks at once (on Windows as on unix:
        // libuv calls no poll callback of a closing handle), and `free_handle` frees the
        // handle's memory afterwards.
        let watch = unsafe { Box::from_raw(self.watch) };
        // SAFETY: on the loop's thread; the handle is open (closed only here, once, as the
        // Watch that owned it was freed just above) and came from `alloc_handle`, so
        // `free_handle` may free it when libuv calls it back.
        unsafe { (uv.close)(watch.handle, Some(free_handle)) };
        // SAFETY: dropped once, here, after `uv_close` stopped libuv watching it. On unix it
        // took the descriptor out of the loop's poll set. On Windows it stopped the handle and
        // cancelled its pending AFD poll requests before returning (they complete into the
        // handle's own memory, which `free_handle` frees only after they have), and libuv
        // submits no new request for a closing handle; without AFD (a socket provider that is
        // not Microsoft's), a `select()` thread of libuv's that still waits on the socket
        // returns when it is closed.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.io) };
    }
}

impl AsyncRead for PolledSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Straight into the unfilled part, initialized or not: a frame's reader hands over all
        // the room reserved for the frame, which must not be zeroed on every read.
        // SAFETY: `recv` only writes to the slice, and reports how much it wrote.
        let unfilled = unsafe { buf.unfilled_mut() };
        let n = ready!(self.attempt(cx, UV_READABLE, unfilled.len(), |io| io.recv(unfilled)))?;
        // SAFETY: `recv` initialized the first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PolledSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.attempt(cx, UV_WRITABLE, 0, |io| io.send(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.attempt(cx, UV_WRITABLE, 0, |io| io.send_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(std::net::Shutdown::Write))
    }
}
