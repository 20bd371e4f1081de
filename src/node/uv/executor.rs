//! The executor: the clients' tasks, polled on the loop's thread when woken, and the
//! `uv_async`/`uv_idle` handles through which their wake-ups reach the loop.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};

use napi::{sys, Env};

use super::table::{alloc_handle, free_handle, node_libuv, uv, UV_ASYNC, UV_IDLE};
use super::{loop_callback, on_loop, with_flag, AFTER_CALLBACK, LOOP};
use crate::client::Task;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
thread_local! {
    /// This thread's executor, once a client has been made here, and the environment it
    /// serves (the one whose cleanup hook tears it down).
    static EXECUTOR: RefCell<Option<(usize, Rc<Executor>)>> = const { RefCell::new(None) };
    /// Wake-ups being made here are followed by a run of this thread's tasks, so they need
    /// no signal through the loop (see [`run_after`]).
    static RUN_FOLLOWS: Cell<bool> = const { Cell::new(false) };
}

/// What wakers, on any thread, share with the loop: the woken tasks, the tasks spawned, and
/// the async handle that tells the loop about them.
pub(super) struct Shared {
    uv_loop: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
pub(super) struct Queue {
    woken: Vec<usize>,
    pub(super) spawned: Vec<Task>,
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
            // SAFETY: only on the loop's thread (`Shared::schedule` checks `on_loop`, and
            // `Executor::run` runs there), as libuv wants of all but `uv_async_send`. `idle` is
            // the idle handle initialized in `executor()`: it is non-zero only until `teardown`
            // clears it, under this same lock, before closing it, so it is still open here.
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
            // SAFETY: called from `Executor::run`, on the loop's thread; `idling` is set only
            // by a successful `uv_idle_start` on the open handle, and `teardown` takes the
            // queue (and with it `idling`) before it closes the handle.
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
            // SAFETY: `uv_async_send` is the one libuv function that may be called from any
            // thread. `signal` is the async handle initialized in `executor()`, still open:
            // `teardown` sets it to 0 under this same lock before it closes the handle.
            unsafe { (uv.async_send)(self.signal as *mut c_void) };
        }
    }
}

impl Shared {
    pub(super) fn schedule(&self, update: impl FnOnce(&mut Queue)) {
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
pub(super) struct Executor {
    pub(super) shared: Arc<Shared>,
    tasks: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    /// The woken list of the last run, emptied: swapped into the queue at the next, so that
    /// wake-ups do not allocate a list for every turn.
    spare: RefCell<Vec<usize>>,
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
        let mut woken = self.spare.take();
        let spawned = {
            let mut queue = lock(&self.shared.queue);
            queue.signalled = false;
            queue.stop_idle();
            std::mem::swap(&mut queue.woken, &mut woken);
            std::mem::take(&mut queue.spawned)
        };
        for task in spawned {
            if let Ok(id) = catch_unwind(AssertUnwindSafe(|| self.insert(task))) {
                woken.push(id);
            }
        }
        if !woken.is_empty() {
            napi::bindgen_prelude::within_runtime_if_available(|| {
                for &id in &woken {
                    // Each task on its own: one that panics cannot keep the others, woken
                    // and so not queued again, from ever being polled.
                    let _ = catch_unwind(AssertUnwindSafe(|| self.poll(id)));
                }
            });
        }
        woken.clear();
        self.spare.replace(woken);
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
/// made here): the woken tasks run. Safe: it reads nothing through the handle, and the tasks
/// it runs are this thread's.
extern "C" fn on_wake(_handle: *mut c_void) {
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
pub(super) fn executor(env: &Env) -> Option<Rc<Executor>> {
    if let Some((owner, existing)) = EXECUTOR.with(|e| e.borrow().clone()) {
        // Another environment on this thread: tokio (see the module documentation).
        return (owner == env.raw() as usize).then_some(existing);
    }
    let uv = uv()?;
    if !node_libuv(env, uv) {
        return None;
    }
    let mut uv_loop = std::ptr::null_mut();
    // SAFETY: `env` is the environment of the Node-API call running on this thread, and
    // `uv_loop` a place for the result.
    let status = unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut uv_loop) };
    if status != sys::Status::napi_ok || uv_loop.is_null() {
        return None;
    }
    let signal = alloc_handle(uv, UV_ASYNC);
    // SAFETY: on the loop's own thread (the JavaScript thread of `env`, whose loop this is);
    // `signal` is zeroed memory of the async handle's size, and `on_wake` an `AsyncCb`.
    if signal.is_null() || unsafe { (uv.async_init)(uv_loop.cast(), signal, on_wake) } != 0 {
        // SAFETY: a failed `uv_async_init` returns before it registers the handle with the
        // loop, so it is plain memory from `alloc_handle` (or null), which `free_handle` frees.
        unsafe { free_handle(signal) };
        return None;
    }
    let idle = alloc_handle(uv, UV_IDLE);
    // SAFETY: as for `signal`: this loop's thread, zeroed memory of the idle handle's size.
    if idle.is_null() || unsafe { (uv.idle_init)(uv_loop.cast(), idle) } != 0 {
        // SAFETY: `idle` was not registered (as above), so `free_handle` frees it now;
        // `signal` was, so it is closed, on the loop's thread, and freed by `free_handle` once
        // libuv is done with it.
        unsafe {
            free_handle(idle);
            (uv.close)(signal, Some(free_handle));
        }
        return None;
    }
    // The handles never keep the process alive: each client's threadsafe function does that.
    // SAFETY: both handles were initialized just above on this loop, and this is its thread.
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
        spare: RefCell::default(),
        running: Cell::new(false),
    });
    EXECUTOR.with(|e| *e.borrow_mut() = Some((env.raw() as usize, executor.clone())));
    LOOP.with(|l| l.set(uv_loop as usize));
    // SAFETY: `env` is live (see above); `teardown` ignores its argument, and Node runs the
    // hook on this thread when the environment goes, while the loop still exists.
    unsafe {
        sys::napi_add_env_cleanup_hook(env.raw(), Some(teardown), std::ptr::null_mut());
    }
    Some(executor)
}

/// The environment is going away: drop its clients' tasks (closing their sockets) and the
/// loop's handles, so that nothing touches this loop again.
///
/// # Safety
///
/// Called by Node as the environment's cleanup hook, on its JavaScript thread (the loop's),
/// after the loop's last callback: the handles closed here are then closed once.
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
        let calls = AFTER_CALLBACK.with(|d| std::mem::take(&mut *d.borrow_mut()));
        drop(calls);
        if let Some(uv) = uv() {
            for handle in handles.into_iter().filter(|&h| h != 0) {
                // SAFETY: `handle` is one of this loop's handles, made and initialised by
                // `executor` and taken out of the queue above, so closed once; this runs on the
                // loop's thread (the caller's guarantee), and `free_handle` frees it once
                // libuv is done with it.
                unsafe { (uv.close)(handle as *mut c_void, Some(free_handle)) };
            }
        }
        LOOP.with(|l| l.set(0));
    });
}
