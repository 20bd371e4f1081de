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

use std::sync::atomic::{AtomicBool, Ordering};
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
        // The reader keeps a clone of this waker when it has nothing (a counted reference).
        let result = poll(&mut Context::from_waker(&waker_ref(&self.shared)));
        if result.is_ready() {
            self.shared.open.store(true, Ordering::Release);
        }
        result
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
}
