//! [`ReadGate`]: the connection's reader is polled only when it may have something to give.
//!
//! The driver's `select!` polls every branch each time the task runs: for a command (an
//! `ack()`, a `send()`) as for a frame. Polling a reader that has nothing costs a pass through
//! the TLS layers down to the socket, about 500 instructions, two or three times per small
//! action. The gate skips those passes. It polls the reader with a waker of its own, and lets
//! the next poll through only when that waker has fired since the reader last returned
//! `Pending`, or when the reader last returned a frame (more may be buffered, with no wake-up to
//! come for it).
//!
//! A reader that returns `Pending` has registered the waker it was given (the contract of
//! `Stream::poll_next`, kept by tokio's sockets, ours on libuv and tokio-rustls above them), so
//! a skipped poll misses nothing: the gate's waker fires when the reader may go on, and wakes
//! the task that last polled the gate.
//!
//! **Reading after a write.** A device answers the gateway one message at a time: it writes an
//! acknowledgement or an event, and the gateway answers with the next action or the
//! acknowledgement. When the gateway runs on the same CPU and answers while the client is still
//! writing, the answer is already in the socket when the write returns; waiting for the event
//! loop to report it costs a system call and a whole turn of the loop. So after each turn that
//! wrote (`after_write`), the gate lets one poll through, and tells a socket whose readiness
//! comes from the loop to try reading once ([`READ_AHEAD`]). A try that finds nothing costs a
//! pass through the TLS layers and a `recv` that fails, so each one that finds nothing doubles
//! how many writes pass before the next try (up to [`MOST_WRITES_BETWEEN`]), and one that finds
//! a frame starts again at every write: a gateway across a network, which never answers that
//! fast, costs one try in 64 writes.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::{waker_ref, ArcWake, AtomicWaker};

/// One pointer in the connection (every client's task holds one), the rest on the heap.
pub(super) struct ReadGate {
    shared: Arc<Shared>,
}

struct Shared {
    /// The reader may have something: its waker fired, or it last returned a value.
    open: AtomicBool,
    /// The task that last polled the gate.
    task: AtomicWaker,
    /// The next poll is a read after a write (see the module documentation).
    trying: AtomicBool,
    /// Writes to let pass before the next read after a write.
    skip: AtomicU8,
    /// How many writes the last try that found nothing made pass: the next such try doubles it.
    backoff: AtomicU8,
}

/// The most writes that pass between two reads after a write.
const MOST_WRITES_BETWEEN: u8 = 64;

thread_local! {
    /// Set when the gate lets a read after a write through: the socket under the reader, if
    /// its readiness comes from the host's event loop (`node::uv::socket`), reads once even if
    /// the loop has not reported it readable, and clears this. Cleared by the gate after the
    /// poll in any case, so it never reaches another connection's socket.
    pub(crate) static READ_AHEAD: Cell<bool> = const { Cell::new(false) };
}

impl ArcWake for Shared {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.open.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

impl Default for ReadGate {
    fn default() -> Self {
        ReadGate {
            shared: Arc::new(Shared {
                // A new reader has never registered a waker: the first poll goes through.
                open: AtomicBool::new(true),
                task: AtomicWaker::new(),
                trying: AtomicBool::new(false),
                skip: AtomicU8::new(0),
                backoff: AtomicU8::new(0),
            }),
        }
    }
}

impl ReadGate {
    /// Polls the reader through `poll` if it may have something, else returns `Pending` with
    /// `cx`'s waker kept for the reader's wake-up.
    pub(super) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // First the task's waker, then the flag: a wake-up in between finds the waker.
        self.shared.task.register(cx.waker());
        if !self.shared.open.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let trying = self.shared.trying.swap(false, Ordering::Relaxed);
        if trying {
            READ_AHEAD.with(|ahead| ahead.set(true));
        }
        // The reader keeps a clone of this waker when it has nothing (a counted reference).
        let result = poll(&mut Context::from_waker(&waker_ref(&self.shared)));
        if result.is_ready() {
            self.shared.open.store(true, Ordering::Release);
        }
        if trying {
            READ_AHEAD.with(|ahead| ahead.set(false));
            let backoff = if result.is_ready() {
                0
            } else {
                (self.shared.backoff.load(Ordering::Relaxed) * 2).clamp(1, MOST_WRITES_BETWEEN)
            };
            self.shared.backoff.store(backoff, Ordering::Relaxed);
            self.shared.skip.store(backoff, Ordering::Relaxed);
        }
        result
    }

    /// The driver wrote: the next poll goes through, and reads even before the loop reports
    /// the socket readable, unless tries that found nothing make this write pass (see the
    /// module documentation).
    pub(super) fn after_write(&self) {
        let skip = self.shared.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.shared.skip.store(skip - 1, Ordering::Relaxed);
            return;
        }
        self.shared.trying.store(true, Ordering::Relaxed);
        self.shared.open.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// A task's waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_reader_is_polled_again_only_after_its_waker_fires_or_it_gave_a_value() {
        let gate = ReadGate::default();
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        // The reader: how often it was polled, the waker it registered, what it returns next.
        let polls = Cell::new(0);
        let registered: RefCell<Option<Waker>> = RefCell::new(None);
        let reader = |next: Poll<u8>| {
            let (polls, registered) = (&polls, &registered);
            move |cx: &mut Context<'_>| {
                polls.set(polls.get() + 1);
                if next.is_pending() {
                    *registered.borrow_mut() = Some(cx.waker().clone());
                }
                next
            }
        };

        // The first poll goes through; the reader has nothing and registers.
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        assert_eq!(polls.get(), 1);
        // Until its waker fires, the reader is not polled again, however often the task runs.
        for _ in 0..3 {
            assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(1))), Poll::Pending);
        }
        assert_eq!(polls.get(), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 0);

        // The reader's waker fires: the task is woken, and the next poll goes through.
        registered.borrow_mut().take().expect("registered").wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(2))), Poll::Ready(2));
        assert_eq!(polls.get(), 2);

        // After a value, the next poll goes through with no wake-up: more may be buffered.
        assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(3))), Poll::Ready(3));
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        assert_eq!(polls.get(), 4);
        assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(4))), Poll::Pending);
        assert_eq!(polls.get(), 4);

        // A wake-up from another thread reaches the task that polled the gate last.
        let other = Arc::new(Counter(AtomicUsize::new(0)));
        let other_waker = Waker::from(other.clone());
        assert_eq!(
            gate.poll(
                &mut Context::from_waker(&other_waker),
                reader(Poll::Ready(5))
            ),
            Poll::Pending
        );
        let fired = registered.borrow_mut().take().expect("registered");
        std::thread::spawn(move || fired.wake()).join().unwrap();
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(6))), Poll::Ready(6));
    }

    #[test]
    fn after_a_write_the_reader_is_tried_once_and_tries_that_find_nothing_back_off() {
        let gate = ReadGate::default();
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        // The reader: whether the gate asked it to read ahead, and what it returns next.
        let asked = Cell::new(Vec::new());
        let reader = |next: Poll<u8>| {
            let asked = &asked;
            move |_: &mut Context<'_>| {
                let mut seen = asked.take();
                seen.push(READ_AHEAD.with(Cell::get));
                asked.set(seen);
                next
            }
        };
        // Closed: the reader had nothing.
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        assert_eq!(asked.take(), [false]);

        // A write: the next poll goes through, with no wake-up, and reads ahead; the hint is
        // gone after it.
        gate.after_write();
        assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(1))), Poll::Ready(1));
        assert_eq!(asked.take(), [true]);
        assert!(!READ_AHEAD.with(Cell::get));
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        // It found a frame: the next write is tried too.
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        gate.after_write();
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        assert_eq!(asked.take(), [false, true]);
        assert!(!READ_AHEAD.with(Cell::get));

        // Each try that finds nothing doubles the writes let pass before the next: 1, 2, 4 ...
        // up to 64.
        let mut passed = Vec::new();
        for _ in 0..8 {
            let mut writes = 0;
            loop {
                gate.after_write();
                writes += 1;
                assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
                if asked.take() == [true] {
                    break;
                }
            }
            passed.push(writes - 1);
        }
        assert_eq!(passed, [1, 2, 4, 8, 16, 32, 64, 64]);

        // A try that finds a frame starts again at every write (after the 64 writes it lets
        // pass).
        for _ in 0..=64 {
            gate.after_write();
        }
        assert_eq!(gate.poll(&mut cx, reader(Poll::Ready(2))), Poll::Ready(2));
        assert_eq!(asked.take(), [true]);
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        asked.take();
        gate.after_write();
        assert_eq!(gate.poll(&mut cx, reader(Poll::Pending)), Poll::Pending);
        assert_eq!(asked.take(), [true]);
    }
}
