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
//! Wake-ups made on the loop's own thread (a `send()`) need no system call: a `uv_idle` handle
//! runs the tasks on the loop's next turn. And what a loop callback has for JavaScript is
//! called directly when its work is done ([`deliver`]), as Node calls a socket's listeners.
//! libuv is found at run time in the host process, and used only where it is really Node's:
//! the `uv_*` functions must come from the image that provides `napi_get_uv_event_loop` (or
//! from a shared libuv, as distributions build Node), report the version
//! `process.versions.uv` names, and the host must not be Bun or Deno (Bun exports `uv_*`
//! functions that abort, Deno's loop is not libuv's). Any other host, or
//! `IMT_GATEWAY_IO=tokio` in the environment, keeps the clients on the tokio runtime; so does
//! a second Node-API environment on a thread that already has one (embedders, Electron
//! sub-frames), since one loop handle and cleanup hook serve one environment.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::thread::LocalKey;
use std::time::Duration;

use napi::{sys, Env};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::{prepare_socket, Reactor, Stream, Task, TcpConnecting};

/// libuv's handle type numbers and poll event bits, stable across libuv 1.x.
const UV_ASYNC: c_int = 1;
const UV_POLL: c_int = 8;
const UV_IDLE: c_int = 6;
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
    idle_init: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    idle_start: unsafe extern "C" fn(*mut c_void, AsyncCb) -> c_int,
    idle_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, Option<CloseCb>),
    unref: unsafe extern "C" fn(*mut c_void),
    version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
}

#[cfg(unix)]
fn find_uv() -> Option<Uv> {
    /// The image (executable or library) that holds `address`: its base and file name.
    unsafe fn image(address: *mut c_void) -> Option<(usize, &'static std::ffi::CStr)> {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if address.is_null() || libc::dladdr(address, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some((
            info.dli_fbase as usize,
            std::ffi::CStr::from_ptr(info.dli_fname),
        ))
    }
    // SAFETY: dlsym and dladdr only look symbols up.
    let (node, _) = unsafe {
        image(libc::dlsym(
            libc::RTLD_DEFAULT,
            c"napi_get_uv_event_loop".as_ptr(),
        ))
    }?;
    // libuv is in the image that runs Node-API (Node's own build), or is a shared libuv
    // (distributions build Node with --shared-libuv): not a library of some other addon,
    // whose loops are not Node's.
    let (uv, name) = unsafe {
        image(libc::dlsym(
            libc::RTLD_DEFAULT,
            c"uv_version_string".as_ptr(),
        ))
    }?;
    let shared = name
        .to_bytes()
        .rsplit(|&b| b == b'/')
        .next()
        .is_some_and(|file| file.starts_with(b"libuv."));
    if uv != node && !shared {
        return None;
    }
    unsafe fn symbol<T: Copy>(name: &std::ffi::CStr, uv: usize) -> Option<T> {
        let found = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        // Every function from that same image.
        (image(found)?.0 == uv).then(|| std::mem::transmute_copy(&found))
    }
    // SAFETY: each symbol is a libuv 1.x function with the signature declared in `Uv`.
    unsafe {
        Some(Uv {
            version_string: symbol(c"uv_version_string", uv)?,
            handle_size: symbol(c"uv_handle_size", uv)?,
            poll_init: symbol(c"uv_poll_init", uv)?,
            poll_start: symbol(c"uv_poll_start", uv)?,
            poll_stop: symbol(c"uv_poll_stop", uv)?,
            async_init: symbol(c"uv_async_init", uv)?,
            async_send: symbol(c"uv_async_send", uv)?,
            idle_init: symbol(c"uv_idle_init", uv)?,
            idle_start: symbol(c"uv_idle_start", uv)?,
            idle_stop: symbol(c"uv_idle_stop", uv)?,
            close: symbol(c"uv_close", uv)?,
            unref: symbol(c"uv_unref", uv)?,
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

/// Whether the host that runs `env` is Node with the libuv found by [`uv`]: not Bun or Deno
/// (asked before any libuv function is called, since Bun's abort), and `uv_version_string()`
/// equal to `process.versions.uv`. Asked once per process.
fn node_libuv(env: &Env, uv: &Uv) -> bool {
    static NODE: OnceLock<bool> = OnceLock::new();
    *NODE.get_or_init(|| unsafe { is_node_libuv(env.raw(), uv) }.unwrap_or(false))
}

unsafe fn is_node_libuv(env: sys::napi_env, uv: &Uv) -> Option<bool> {
    unsafe fn property(
        env: sys::napi_env,
        object: sys::napi_value,
        name: &std::ffi::CStr,
    ) -> Option<sys::napi_value> {
        let mut value = std::ptr::null_mut();
        (sys::napi_get_named_property(env, object, name.as_ptr(), &mut value)
            == sys::Status::napi_ok)
            .then_some(value)
    }
    unsafe fn kind(env: sys::napi_env, value: sys::napi_value) -> Option<i32> {
        let mut kind = 0;
        (sys::napi_typeof(env, value, &mut kind) == sys::Status::napi_ok).then_some(kind)
    }
    let mut global = std::ptr::null_mut();
    if sys::napi_get_global(env, &mut global) != sys::Status::napi_ok {
        return None;
    }
    for runtime in [c"Bun", c"Deno"] {
        if kind(env, property(env, global, runtime)?)? != sys::ValueType::napi_undefined {
            return Some(false);
        }
    }
    let versions = property(env, property(env, global, c"process")?, c"versions")?;
    for runtime in [c"bun", c"deno"] {
        if kind(env, property(env, versions, runtime)?)? != sys::ValueType::napi_undefined {
            return Some(false);
        }
    }
    let node = super::value::read_string(env, property(env, versions, c"uv")?).ok()?;
    let ours = (uv.version_string)();
    if ours.is_null() {
        return Some(false);
    }
    Some(std::ffi::CStr::from_ptr(ours).to_bytes() == node.as_bytes())
}

/// Allocates a libuv handle of `kind`; freed by [`free_handle`] from its close callback.
fn alloc_handle(uv: &Uv, kind: c_int) -> *mut c_void {
    unsafe { libc::calloc(1, (uv.handle_size)(kind)) }
}

unsafe extern "C" fn free_handle(handle: *mut c_void) {
    libc::free(handle);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// This thread's executor, once a client has been made here, and the environment it
    /// serves (the one whose cleanup hook tears it down).
    static EXECUTOR: RefCell<Option<(usize, Rc<Executor>)>> = const { RefCell::new(None) };
    /// This thread's libuv loop (0 when it has none): whether a socket or a wake-up belongs
    /// to the loop of the thread at hand.
    static LOOP: Cell<usize> = const { Cell::new(0) };
    /// Wake-ups being made here are followed by a run of this thread's tasks, so they need
    /// no signal through the loop (see [`run_after`]).
    static RUN_FOLLOWS: Cell<bool> = const { Cell::new(false) };
    /// A callback of the loop itself (not a call from JavaScript) is running: what it has
    /// for JavaScript is called directly when its work is done (see [`deliver`]).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// A `send()` has run at once since the loop last called in here (see [`send_now`]).
    static SENT: Cell<bool> = const { Cell::new(false) };
    /// Bumped by a large send (see [`send_now`]): a socket that last saw another value tries
    /// its calls again.
    static PROBE: Cell<u64> = const { Cell::new(0) };
    /// What waits to call into JavaScript at the end of the loop callback running here.
    static DELIVERIES: RefCell<VecDeque<Arc<dyn Deliver>>> = const { RefCell::new(VecDeque::new()) };
}

/// Something that calls into JavaScript, on the loop's thread.
pub trait Deliver {
    fn deliver(&self);
}

/// Has `target` deliver at the end of the loop callback now running (a socket became
/// readable, a timer's wake-up arrived), with nothing in between: no threadsafe-function
/// hop, no second turn of the loop. False when no loop callback is running here (a call from
/// JavaScript, or another thread): the caller must then go by a threadsafe function, so that
/// JavaScript is never re-entered from inside one of its own calls.
pub fn deliver<T: Deliver + 'static>(target: &Arc<T>) -> bool {
    if !IN_CALLBACK.with(Cell::get) {
        return false;
    }
    DELIVERIES.with(|d| d.borrow_mut().push_back(target.clone()));
    true
}

/// An event frame at least this large takes long enough to copy (in `send()`) that the
/// socket should not sit idle meanwhile.
const LARGE_SEND: usize = 256 * 1024;

/// Whether a `send()` of a `len`-byte frame, made now, should run at once (on a thread whose
/// clients the loop drives). The first since the loop last called in here does, so that an
/// event goes on the wire before `send()` returns; small ones after it in the same turn of
/// JavaScript wait for the loop's next turn, to go out together in one write. A large one
/// always does, and lets every socket of this thread try its calls once more without the
/// loop's report (see [`Watch::poll_ready`]): a long turn that sends many large events, each
/// copied as it is sent, keeps the wire moving between its sends instead of leaving the
/// socket idle until the turn ends.
pub fn send_now(len: usize) -> bool {
    if LOOP.with(Cell::get) == 0 {
        return false;
    }
    let first = !SENT.with(|s| s.replace(true));
    if len >= LARGE_SEND {
        PROBE.with(|p| p.set(p.get().wrapping_add(1)));
        return true;
    }
    first
}

/// Runs `f` with `flag` set, and puts the flag back as it was afterwards, even on a panic.
fn with_flag<T>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> T) -> T {
    struct Restore(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(true)));
    f()
}

/// A libuv callback of ours (a wake-up, a socket's readiness): runs `work`, then makes the
/// deliveries it (and the JavaScript they run) queued, in order, until none is left.
fn loop_callback(work: impl FnOnce()) {
    SENT.with(|s| s.set(false));
    with_flag(&IN_CALLBACK, || {
        work();
        while let Some(delivery) = DELIVERIES.with(|d| d.borrow_mut().pop_front()) {
            let _ = catch_unwind(AssertUnwindSafe(|| delivery.deliver()));
        }
    });
}

fn on_loop(uv_loop: usize) -> bool {
    uv_loop != 0 && LOOP.with(Cell::get) == uv_loop
}

/// What wakers, on any thread, share with the loop: the woken tasks, the tasks spawned, and
/// the async handle that tells the loop about them.
struct Shared {
    uv_loop: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    woken: Vec<usize>,
    spawned: Vec<Task>,
    /// A signal is on its way to the loop: more wake-ups can ride on it.
    signalled: bool,
    /// The `uv_async_t`; 0 once the loop's environment has gone.
    signal: usize,
    /// The `uv_idle_t` that runs the executor on the loop's next turn, for wake-ups made on
    /// the loop's own thread: no system call, and an active idle handle keeps the loop from
    /// sleeping before it has run. 0 once the environment has gone.
    idle: usize,
    /// The idle handle is started.
    idling: bool,
}

impl Queue {
    /// Makes sure the loop runs the executor on its next turn, from the loop's own thread.
    fn run_next_turn(&mut self) {
        if self.idling || self.idle == 0 {
            return;
        }
        if let Some(uv) = uv() {
            if unsafe { (uv.idle_start)(self.idle as *mut c_void, on_wake) } == 0 {
                self.idling = true;
                return;
            }
        }
        self.signal_loop();
    }

    /// The executor is about to run: the idle handle has nothing left to do.
    fn stop_idle(&mut self) {
        if !self.idling {
            return;
        }
        self.idling = false;
        if let Some(uv) = uv() {
            unsafe { (uv.idle_stop)(self.idle as *mut c_void) };
        }
    }

    /// Makes sure the loop runs the executor on its next turn.
    fn signal_loop(&mut self) {
        if self.signalled || self.signal == 0 {
            return;
        }
        self.signalled = true;
        if let Some(uv) = uv() {
            unsafe { (uv.async_send)(self.signal as *mut c_void) };
        }
    }
}

impl Shared {
    fn schedule(&self, update: impl FnOnce(&mut Queue)) {
        let mut queue = lock(&self.queue);
        update(&mut queue);
        if !on_loop(self.uv_loop) {
            queue.signal_loop();
        } else if !RUN_FOLLOWS.with(Cell::get) {
            queue.run_next_turn();
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

fn current() -> Option<Rc<Executor>> {
    EXECUTOR.with(|e| e.borrow().as_ref().map(|(_, executor)| executor.clone()))
}

impl Executor {
    /// Adds a task, counted as woken; returns its id.
    fn insert(&self, future: Task) -> usize {
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
        id
    }

    /// Polls every task woken so far, once. Tasks woken meanwhile wait for the next turn of
    /// the loop, so a busy client cannot keep JavaScript from running.
    fn run(&self) {
        if self.running.replace(true) {
            // Asked from inside a poll (not expected): the loop's next turn runs them.
            lock(&self.shared.queue).run_next_turn();
            return;
        }
        // Cleared however this ends, a panic included: left set, every later run would only
        // ask for another turn, and the loop would spin with no task ever polled.
        struct Running<'a>(&'a Cell<bool>);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _running = Running(&self.running);
        let (mut woken, spawned) = {
            let mut queue = lock(&self.shared.queue);
            queue.signalled = false;
            queue.stop_idle();
            (
                std::mem::take(&mut queue.woken),
                std::mem::take(&mut queue.spawned),
            )
        };
        for task in spawned {
            if let Ok(id) = catch_unwind(AssertUnwindSafe(|| self.insert(task))) {
                woken.push(id);
            }
        }
        if !woken.is_empty() {
            napi::bindgen_prelude::within_runtime_if_available(|| {
                for id in woken {
                    // Each task on its own: one that panics cannot keep the others, woken
                    // and so not queued again, from ever being polled.
                    let _ = catch_unwind(AssertUnwindSafe(|| self.poll(id)));
                }
            });
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
            // A panic in a future's drop is its own, too.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(future)));
        } else if let Some(Some(slot)) = tasks.get_mut(id) {
            slot.future = Some(future);
        }
    }
}

/// The async handle's callback (a wake-up from another thread) and the idle handle's (one
/// made here): the woken tasks run.
unsafe extern "C" fn on_wake(_handle: *mut c_void) {
    loop_callback(run_ready);
}

/// Runs `wake`, which hands work to tasks of this thread (a command from JavaScript, a
/// readiness report), then those tasks at once: an acknowledgement is written before `ack()`
/// returns, and the wake-ups cost no signal through the loop.
pub fn run_after(wake: impl FnOnce()) {
    with_flag(&RUN_FOLLOWS, wake);
    run_ready();
}

/// Polls the tasks of this thread that are ready, now.
fn run_ready() {
    let _ = catch_unwind(|| {
        if let Some(executor) = current() {
            executor.run();
        }
    });
}

/// The executor of `env`'s thread, made on first use; `None` when the host has no libuv.
fn executor(env: &Env) -> Option<Rc<Executor>> {
    if let Some((owner, existing)) = EXECUTOR.with(|e| e.borrow().clone()) {
        // Another environment on this thread: tokio (see the module documentation).
        return (owner == env.raw() as usize).then_some(existing);
    }
    let uv = uv()?;
    if !node_libuv(env, uv) {
        return None;
    }
    let mut uv_loop = std::ptr::null_mut();
    let status = unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut uv_loop) };
    if status != sys::Status::napi_ok || uv_loop.is_null() {
        return None;
    }
    let signal = alloc_handle(uv, UV_ASYNC);
    if signal.is_null() || unsafe { (uv.async_init)(uv_loop.cast(), signal, on_wake) } != 0 {
        unsafe { libc::free(signal) };
        return None;
    }
    let idle = alloc_handle(uv, UV_IDLE);
    if idle.is_null() || unsafe { (uv.idle_init)(uv_loop.cast(), idle) } != 0 {
        unsafe {
            libc::free(idle);
            (uv.close)(signal, Some(free_handle));
        }
        return None;
    }
    // The handles never keep the process alive: each client's threadsafe function does that.
    unsafe {
        (uv.unref)(signal);
        (uv.unref)(idle);
    }
    let executor = Rc::new(Executor {
        shared: Arc::new(Shared {
            uv_loop: uv_loop as usize,
            queue: Mutex::new(Queue {
                signal: signal as usize,
                idle: idle as usize,
                ..Queue::default()
            }),
        }),
        tasks: RefCell::default(),
        free: RefCell::default(),
        running: Cell::new(false),
    });
    EXECUTOR.with(|e| *e.borrow_mut() = Some((env.raw() as usize, executor.clone())));
    LOOP.with(|l| l.set(uv_loop as usize));
    unsafe {
        sys::napi_add_env_cleanup_hook(env.raw(), Some(teardown), std::ptr::null_mut());
    }
    Some(executor)
}

/// The environment is going away: drop its clients' tasks (closing their sockets) and the
/// loop's handles, so that nothing touches this loop again.
unsafe extern "C" fn teardown(_arg: *mut c_void) {
    let _ = catch_unwind(|| {
        let Some((_, executor)) = EXECUTOR.with(|e| e.borrow_mut().take()) else {
            return;
        };
        let handles = {
            let mut queue = lock(&executor.shared.queue);
            [
                std::mem::take(&mut queue.signal),
                std::mem::take(&mut queue.idle),
            ]
        };
        let tasks = std::mem::take(&mut *executor.tasks.borrow_mut());
        drop(tasks);
        let leftover = std::mem::take(&mut *lock(&executor.shared.queue));
        drop(leftover);
        // JavaScript is not called while its environment goes.
        let deliveries = DELIVERIES.with(|d| std::mem::take(&mut *d.borrow_mut()));
        drop(deliveries);
        if let Some(uv) = uv() {
            for handle in handles.into_iter().filter(|&h| h != 0) {
                (uv.close)(handle as *mut c_void, Some(free_handle));
            }
        }
        LOOP.with(|l| l.set(0));
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
        shared: executor.shared.clone(),
    }))
}

struct LoopReactor {
    shared: Arc<Shared>,
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
    /// large send (see [`send_now`]), what the socket waits for counts as ready once more.
    fn poll_ready(&mut self, cx: &mut Context<'_>, event: c_int) -> Poll<io::Result<()>> {
        if self.ready & event == 0 {
            let probe = PROBE.with(Cell::get);
            if self.probe != probe {
                self.probe = probe;
                self.ready |= self.events & (UV_READABLE | UV_WRITABLE);
                self.budget = self.budget.max(1);
            }
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
    loop_callback(|| on_ready_run(handle, status, events));
}

fn on_ready_run(handle: *mut c_void, status: c_int, events: c_int) {
    run_after(|| {
        let _ = catch_unwind(|| {
            // SAFETY: `data`, the first field of every libuv handle, points at the Watch.
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
        let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
        #[cfg(not(unix))]
        let fd: c_int = -1;
        let status = unsafe { (uv.poll_init)(uv_loop as *mut c_void, handle, fd) };
        if status != 0 {
            unsafe { libc::free(handle) };
            return Err(io::Error::other(format!("uv_poll_init failed ({status})")));
        }
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
        // SAFETY: `data` is the first field of the handle.
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
    /// reports writable only once much of it is free (waiting for that cost 8 MB events
    /// about a tenth of their rate).
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
            // with the Watch as its data and the socket as its descriptor: freeing the Watch
            // would leave the loop a dangling pointer for its next report, and closing the
            // socket would let libuv watch whatever reuses the descriptor, so all are leaked.
            debug_assert!(false, "socket dropped outside its event loop's thread");
            return;
        }
        // SAFETY: the Watch was made in `new` and is freed only here, on the loop's thread;
        // closing the handle stops its callbacks at once, and libuv frees the handle's memory
        // afterwards.
        let watch = unsafe { Box::from_raw(self.watch) };
        unsafe { (uv.close)(watch.handle, Some(free_handle)) };
        // SAFETY: dropped once, here, after libuv stopped watching it.
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
