//! The JavaScript thread's own event loop as the clients' reactor and executor.
//!
//! A client driven from tokio costs every action two extra thread hops: a tokio worker reads
//! the frame and wakes the JS thread, whose acknowledgement then wakes a tokio worker again
//! to write it. On a machine where waking an idle core is slow, those hops cost more than
//! the rest of the exchange. So each client's task is polled on the thread that owns its
//! `Client` object, and its socket is watched by that thread's libuv loop (`uv_poll`), as
//! Node's own sockets are: a byte from the gateway wakes the JS thread directly, and an
//! `ack()` writes to the socket before it returns.
//!
//! Timers and name resolution stay on the shared tokio runtime (its context is entered while
//! tasks are polled); their wake-ups reach this loop through one `uv_async` handle per thread.
//! libuv is found at run time in the host process; a host without it, or
//! `IMT_GATEWAY_IO=tokio` in the environment, keeps the clients on the tokio runtime.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use napi::{sys, Env};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::{prepare_socket, Reactor, Stream, Task, TcpConnecting};

/// libuv's handle type numbers and poll event bits, stable across libuv 1.x.
const UV_ASYNC: c_int = 1;
const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;
const UV_WRITABLE: c_int = 2;

type PollCb = unsafe extern "C" fn(*mut c_void, c_int, c_int);
type AsyncCb = unsafe extern "C" fn(*mut c_void);
type CloseCb = unsafe extern "C" fn(*mut c_void);

/// The few libuv functions used here, as the host process exports them.
struct Uv {
    handle_size: unsafe extern "C" fn(c_int) -> usize,
    poll_init: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    async_init: unsafe extern "C" fn(*mut c_void, *mut c_void, AsyncCb) -> c_int,
    async_send: unsafe extern "C" fn(*mut c_void) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, Option<CloseCb>),
    unref: unsafe extern "C" fn(*mut c_void),
}

#[cfg(unix)]
fn find_uv() -> Option<Uv> {
    unsafe fn symbol<T: Copy>(name: &std::ffi::CStr) -> Option<T> {
        let found = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        (!found.is_null()).then(|| std::mem::transmute_copy(&found))
    }
    // SAFETY: each symbol is a libuv 1.x function with the signature declared in `Uv`.
    unsafe {
        Some(Uv {
            handle_size: symbol(c"uv_handle_size")?,
            poll_init: symbol(c"uv_poll_init")?,
            poll_start: symbol(c"uv_poll_start")?,
            poll_stop: symbol(c"uv_poll_stop")?,
            async_init: symbol(c"uv_async_init")?,
            async_send: symbol(c"uv_async_send")?,
            close: symbol(c"uv_close")?,
            unref: symbol(c"uv_unref")?,
        })
    }
}

#[cfg(not(unix))]
fn find_uv() -> Option<Uv> {
    None
}

fn uv() -> Option<&'static Uv> {
    static UV: OnceLock<Option<Uv>> = OnceLock::new();
    UV.get_or_init(|| {
        let wanted = std::env::var("IMT_GATEWAY_IO").map_or(true, |v| v != "tokio");
        wanted.then(find_uv).flatten()
    })
    .as_ref()
}

/// Allocates a libuv handle of `kind`; freed by [`free_handle`] from its close callback.
fn alloc_handle(uv: &Uv, kind: c_int) -> *mut c_void {
    let size = unsafe { (uv.handle_size)(kind) };
    unsafe { libc::calloc(1, size.max(64)) }
}

unsafe extern "C" fn free_handle(handle: *mut c_void) {
    libc::free(handle);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What other threads (and wakers) may touch: the woken tasks, tasks spawned from afar, and
/// the async handle that tells the loop about them.
struct Shared {
    thread: ThreadId,
    queue: Mutex<Queue>,
    /// The `uv_async_t`; null once the loop's environment has gone.
    signal: Mutex<usize>,
}

#[derive(Default)]
struct Queue {
    woken: Vec<usize>,
    spawned: Vec<Task>,
    /// A signal is on its way to the loop: more wake-ups can ride on it.
    signalled: bool,
}

thread_local! {
    /// A command from JavaScript is being handed over and the tasks run right after it: its
    /// wake-ups need no signal through the loop.
    static RUN_FOLLOWS: Cell<bool> = const { Cell::new(false) };
}

impl Shared {
    fn schedule(&self, update: impl FnOnce(&mut Queue)) {
        let mut queue = lock(&self.queue);
        update(&mut queue);
        if queue.signalled
            || (RUN_FOLLOWS.with(Cell::get) && std::thread::current().id() == self.thread)
        {
            return;
        }
        queue.signalled = true;
        drop(queue);
        let signal = lock(&self.signal);
        if *signal != 0 {
            if let Some(uv) = uv() {
                unsafe { (uv.async_send)(*signal as *mut c_void) };
            }
        }
    }
}

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared.schedule(|q| q.woken.push(self.id));
        }
    }
}

struct Slot {
    future: Option<Task>,
    waker: Arc<TaskWaker>,
}

/// One per JS thread: the tasks of the clients created on it.
struct Executor {
    shared: Arc<Shared>,
    tasks: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    running: Cell<bool>,
}

thread_local! {
    static EXECUTOR: RefCell<Option<Arc<ExecutorCell>>> = const { RefCell::new(None) };
}

/// The executor, shareable by reference within its thread only.
struct ExecutorCell(Executor);
// SAFETY: the cell is only ever reached through the thread-local of the thread that made it.
unsafe impl Send for ExecutorCell {}
unsafe impl Sync for ExecutorCell {}

fn current() -> Option<Arc<ExecutorCell>> {
    EXECUTOR.with(|e| e.borrow().clone())
}

impl Executor {
    fn insert(&self, future: Task) {
        let id = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut tasks = self.tasks.borrow_mut();
            tasks.push(None);
            tasks.len() - 1
        });
        let waker = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(true),
            shared: self.shared.clone(),
        });
        self.tasks.borrow_mut()[id] = Some(Slot {
            future: Some(future),
            waker,
        });
        lock(&self.shared.queue).woken.push(id);
    }

    /// Polls every task woken so far, once. Tasks woken meanwhile wait for the next turn of
    /// the loop, so a busy client cannot keep JavaScript from running.
    fn run(&self) {
        if self.running.replace(true) {
            return;
        }
        let spawned = {
            let mut queue = lock(&self.shared.queue);
            queue.signalled = false;
            std::mem::take(&mut queue.spawned)
        };
        for task in spawned {
            self.insert(task);
        }
        let woken = std::mem::take(&mut lock(&self.shared.queue).woken);
        if !woken.is_empty() {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                napi::bindgen_prelude::within_runtime_if_available(|| {
                    for id in woken {
                        self.poll(id);
                    }
                })
            }));
        }
        self.running.set(false);
        // Woken during this run, or by a command that expected to run them itself but found
        // this run in progress: they get the loop's next turn.
        let waiting = {
            let queue = lock(&self.shared.queue);
            let idle = queue.woken.is_empty() && queue.spawned.is_empty();
            !queue.signalled && !idle
        };
        if waiting {
            RUN_FOLLOWS.with(|r| r.set(false));
            self.shared.schedule(|_| {});
        }
    }

    fn poll(&self, id: usize) {
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(Some(slot)) = tasks.get_mut(id) else {
                return;
            };
            let Some(future) = slot.future.take() else {
                return;
            };
            (future, slot.waker.clone())
        };
        waker.queued.store(false, Ordering::Release);
        let std_waker = Waker::from(waker);
        let mut cx = Context::from_waker(&std_waker);
        // The client's task catches its own panics; this catches anything else.
        let done = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)))
            .map_or(true, |p| p.is_ready());
        let mut tasks = self.tasks.borrow_mut();
        if done {
            tasks[id] = None;
            drop(tasks);
            self.free.borrow_mut().push(id);
            drop(future);
        } else if let Some(Some(slot)) = tasks.get_mut(id) {
            slot.future = Some(future);
        }
    }
}

unsafe extern "C" fn on_signal(_handle: *mut c_void) {
    run_ready();
}

/// Hands a command over with `give` and then runs this thread's ready tasks, so that an
/// acknowledgement is written before `ack()` returns.
pub fn command_now(give: impl FnOnce()) {
    RUN_FOLLOWS.with(|r| r.set(true));
    give();
    RUN_FOLLOWS.with(|r| r.set(false));
    run_ready();
}

/// Polls the tasks of this thread that are ready, now.
fn run_ready() {
    let _ = catch_unwind(|| {
        if let Some(executor) = current() {
            executor.0.run();
        }
    });
}

/// The executor of `env`'s thread, made on first use; `None` when the host has no libuv.
fn executor(env: &Env) -> Option<Arc<ExecutorCell>> {
    if let Some(existing) = current() {
        return Some(existing);
    }
    let uv = uv()?;
    let mut uv_loop = std::ptr::null_mut();
    let status = unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut uv_loop) };
    if status != sys::Status::napi_ok || uv_loop.is_null() {
        return None;
    }
    let signal = alloc_handle(uv, UV_ASYNC);
    if signal.is_null() || unsafe { (uv.async_init)(uv_loop.cast(), signal, on_signal) } != 0 {
        unsafe { libc::free(signal) };
        return None;
    }
    // The handle never keeps the process alive: each client's threadsafe function does that.
    unsafe { (uv.unref)(signal) };
    let shared = Arc::new(Shared {
        thread: std::thread::current().id(),
        queue: Mutex::default(),
        signal: Mutex::new(signal as usize),
    });
    let cell = Arc::new(ExecutorCell(Executor {
        shared,
        tasks: RefCell::default(),
        free: RefCell::default(),
        running: Cell::new(false),
    }));
    EXECUTOR.with(|e| *e.borrow_mut() = Some(cell.clone()));
    LOOP.with(|l| l.set(uv_loop.cast()));
    unsafe {
        sys::napi_add_env_cleanup_hook(env.raw(), Some(teardown), std::ptr::null_mut());
    }
    Some(cell)
}

thread_local! {
    static LOOP: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
}

/// The environment is going away: drop its clients' tasks (closing their sockets) and the
/// signal handle, so that nothing touches this loop again.
unsafe extern "C" fn teardown(_arg: *mut c_void) {
    let _ = catch_unwind(|| {
        let Some(cell) = EXECUTOR.with(|e| e.borrow_mut().take()) else {
            return;
        };
        let executor = &cell.0;
        let signal = std::mem::replace(&mut *lock(&executor.shared.signal), 0);
        let tasks = std::mem::take(&mut *executor.tasks.borrow_mut());
        drop(tasks);
        drop(std::mem::take(&mut *lock(&executor.shared.queue)));
        if let (Some(uv), true) = (uv(), signal != 0) {
            (uv.close)(signal as *mut c_void, Some(free_handle));
        }
        LOOP.with(|l| l.set(std::ptr::null_mut()));
    });
}

/// Which I/O driver clients made on this thread use: `"libuv"` (this thread's event loop)
/// or `"tokio"` (the shared runtime's threads). For diagnostics and tests.
// napi registers exports only outside `cfg(test)`, so a test build sees no caller.
#[cfg_attr(test, allow(dead_code))]
#[napi_derive::napi(catch_unwind)]
pub fn io_driver(env: Env) -> &'static str {
    if executor(&env).is_some() {
        "libuv"
    } else {
        "tokio"
    }
}

/// The reactor for clients made on `env`'s thread, or `None` to use tokio's.
pub fn reactor(env: &Env) -> Option<Arc<dyn Reactor>> {
    let executor = executor(env)?;
    Some(Arc::new(LoopReactor {
        shared: executor.0.shared.clone(),
    }))
}

/// Runs `task` on this thread's loop, or gives it back when this thread has none.
pub fn spawn(task: Task) -> Result<(), Task> {
    match current() {
        Some(executor) => {
            executor.0.insert(task);
            executor.0.shared.schedule(|_| {});
            Ok(())
        }
        None => Err(task),
    }
}

struct LoopReactor {
    shared: Arc<Shared>,
}

impl Reactor for LoopReactor {
    fn connect(&self, address: SocketAddr, keep_alive: Option<Duration>) -> TcpConnecting {
        let thread = self.shared.thread;
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
            let socket = PolledSocket::new(socket.into(), thread)?;
            poll_fn(|cx| socket.poll_ready(cx, UV_WRITABLE)).await?;
            if let Some(err) = socket.io.take_error()? {
                return Err(err);
            }
            socket.io.peer_addr()?;
            Ok(Box::new(socket) as Stream)
        })
    }

    fn spawn(&self, task: Task) {
        self.shared.schedule(|q| q.spawned.push(task));
    }
}

fn in_progress(err: &io::Error) -> bool {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    err.kind() == io::ErrorKind::WouldBlock
}

/// See [`Watch::budget`].
const READS_PER_TURN: u32 = 16;

/// What the loop's poll callback needs: who waits for which readiness.
struct Watch {
    handle: *mut c_void,
    events: c_int,
    /// Readiness reported and not yet consumed by [`PolledSocket::poll_ready`].
    fired: c_int,
    /// What the socket may be ready for: cleared by a call that would block, set again
    /// only by the loop's report, so an idle socket costs no system calls when polled.
    ready: c_int,
    /// Reads left before the socket waits for the loop's next report: a gateway that
    /// floods the client is read a slice per turn of the loop, and timers and other I/O
    /// get their turn in between, however the reads are triggered.
    budget: u32,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Watch {
    fn wait(&mut self, cx: &mut Context<'_>, event: c_int) -> Poll<io::Result<()>> {
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
unsafe extern "C" fn on_ready(handle: *mut c_void, status: c_int, events: c_int) {
    let _ = catch_unwind(|| {
        // SAFETY: `data`, the first field of every libuv handle, points at the Watch.
        let watch = unsafe { &mut **(handle as *mut *mut Watch) };
        let mut keep = 0;
        let mut wake = Vec::with_capacity(2);
        if status < 0 || events & UV_READABLE != 0 {
            watch.budget = READS_PER_TURN;
        }
        if status < 0 {
            watch.events = 0;
            watch.fired = UV_READABLE | UV_WRITABLE;
            watch.ready = UV_READABLE | UV_WRITABLE;
            wake.extend(watch.reader.take());
            wake.extend(watch.writer.take());
        } else {
            watch.fired |= events;
            watch.ready |= events;
            if events & UV_READABLE != 0 {
                wake.extend(watch.reader.take().inspect(|_| keep |= UV_READABLE));
            } else {
                keep |= watch.events & UV_READABLE;
            }
            if events & UV_WRITABLE != 0 {
                wake.extend(watch.writer.take().inspect(|_| keep |= UV_WRITABLE));
            } else {
                keep |= watch.events & UV_WRITABLE;
            }
            watch.set(keep);
        }
        RUN_FOLLOWS.with(|r| r.set(true));
        for waker in wake {
            waker.wake();
        }
        RUN_FOLLOWS.with(|r| r.set(false));
    });
    run_ready();
}

/// A non-blocking TCP socket whose readiness comes from the loop. Only the loop's thread
/// touches it; a call from any other thread fails instead of touching libuv.
struct PolledSocket {
    io: std::net::TcpStream,
    watch: *mut Watch,
    thread: ThreadId,
}

// SAFETY: every use of `watch` checks that it runs on `thread`, the loop's thread; the
// socket only moves between threads as part of a task that is polled there.
unsafe impl Send for PolledSocket {}
unsafe impl Sync for PolledSocket {}

impl PolledSocket {
    fn new(io: std::net::TcpStream, thread: ThreadId) -> io::Result<PolledSocket> {
        let uv = uv().ok_or_else(|| io::Error::other("libuv is not available"))?;
        let uv_loop = LOOP.with(|l| l.get());
        if uv_loop.is_null() {
            return Err(io::Error::other("the event loop has gone"));
        }
        let handle = alloc_handle(uv, UV_POLL);
        if handle.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        #[cfg(unix)]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
        #[cfg(not(unix))]
        let fd: c_int = -1;
        let status = unsafe { (uv.poll_init)(uv_loop, handle, fd) };
        if status != 0 {
            unsafe { libc::free(handle) };
            return Err(io::Error::other(format!("uv_poll_init failed ({status})")));
        }
        unsafe { (uv.unref)(handle) };
        let watch = Box::into_raw(Box::new(Watch {
            handle,
            events: 0,
            fired: 0,
            ready: UV_READABLE | UV_WRITABLE,
            budget: READS_PER_TURN,
            reader: None,
            writer: None,
        }));
        // SAFETY: `data` is the first field of the handle.
        unsafe { *(handle as *mut *mut Watch) = watch };
        Ok(PolledSocket { io, watch, thread })
    }

    /// Runs `f` on the Watch, on the loop's thread only.
    fn with_watch<T>(
        &self,
        f: impl FnOnce(&mut Watch) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if std::thread::current().id() != self.thread {
            return Poll::Ready(Err(io::Error::other(
                "socket used outside its event loop's thread",
            )));
        }
        // SAFETY: on the loop's thread, where libuv never runs a callback while `f` runs,
        // and no reference to the Watch outlives this call.
        f(unsafe { &mut *self.watch })
    }

    /// Ready once `event` readiness has been reported since the last wait (a connect in
    /// progress completing, or failing).
    fn poll_ready(&self, cx: &mut Context<'_>, event: c_int) -> Poll<io::Result<()>> {
        self.with_watch(|watch| {
            if watch.fired & event != 0 {
                watch.fired &= !event;
                return Poll::Ready(Ok(()));
            }
            watch.wait(cx, event)
        })
    }

    fn attempt<T>(
        &self,
        cx: &mut Context<'_>,
        event: c_int,
        mut call: impl FnMut(&std::net::TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let known = self.with_watch(|watch| {
                if watch.ready & event != 0 {
                    Poll::Ready(Ok(()))
                } else {
                    watch.wait(cx, event)
                }
            });
            match known {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
            match call(&self.io) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let _ = self.with_watch(|watch| {
                        watch.ready &= !event;
                        Poll::Ready(Ok(()))
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Drop for PolledSocket {
    fn drop(&mut self) {
        let Some(uv) = uv() else { return };
        // SAFETY: the Watch was made in `new` and is freed only here; closing the handle
        // stops its callbacks at once, and libuv frees the handle's memory afterwards.
        let watch = unsafe { Box::from_raw(self.watch) };
        if std::thread::current().id() == self.thread {
            unsafe { (uv.close)(watch.handle, Some(free_handle)) };
        }
        // Off its thread (never expected) the handle is leaked rather than touched.
    }
}

impl AsyncRead for PolledSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let spent = self.with_watch(|watch| {
            if watch.budget == 0 {
                return watch.wait(cx, UV_READABLE);
            }
            watch.budget -= 1;
            Poll::Ready(Ok(()))
        });
        if !matches!(spent, Poll::Ready(Ok(()))) {
            return spent;
        }
        let unfilled = buf.initialize_unfilled();
        match self.attempt(cx, UV_READABLE, |mut io| io.read(unfilled)) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for PolledSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.attempt(cx, UV_WRITABLE, |mut io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.attempt(cx, UV_WRITABLE, |mut io| io.write_vectored(bufs))
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
