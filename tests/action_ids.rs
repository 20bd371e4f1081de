//! What a client session keeps for the actions the application has not acknowledged yet,
//! measured by the allocator: the ids, not the frames that brought them. (The only test of
//! this binary, so that nothing else allocates while it measures.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use imt_gateway::protocol::{Message, Value};
use imt_gateway::session::{Output, Session, SessionConfig, Timing, Xorshift};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to `System` with the caller's arguments; the counter is a side
// effect that touches no memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `GlobalAlloc::alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `GlobalAlloc::dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract for `GlobalAlloc::realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const ACTIONS: usize = 16;
const ID: usize = 100_000;
const PARAMETERS: usize = 600_000;

fn id(n: usize) -> Vec<u8> {
    vec![n as u8; ID]
}

#[test]
fn unacknowledged_actions_keep_their_ids_not_their_frames() {
    let timing = Timing {
        reconnect_delay: Duration::from_secs(1),
        max_reconnect_delay: Duration::from_secs(1),
        connect_timeout: None,
        ack_timeout: None,
    };
    let mut s = Session::new(SessionConfig::default(), timing, Xorshift::new(1));
    s.connect(Instant::now());
    s.connected();
    s.receive(Message::Welcome, Instant::now());
    s.receive(Message::Drained, Instant::now());

    let before = live();
    for n in 0..ACTIONS {
        // As the client reads it: a frame of its own, the id and the parameters decoded as
        // slices of it.
        let frame = Message::Action {
            id: Value::Binary(id(n).into()),
            kind: "x".into(),
            parameters: Value::Binary(vec![0; PARAMETERS].into()),
        }
        .to_frame();
        let out = s.receive(Message::from_frame(&frame).unwrap(), Instant::now());
        assert_eq!(out.len(), 1, "the action notice");
        // The application got the action and let it go without acknowledging it.
    }
    let kept = (live() - before) as usize;
    assert!(
        kept >= ACTIONS * ID,
        "{kept} bytes kept for {ACTIONS} ids of {ID} bytes"
    );
    assert!(
        kept < ACTIONS * (ID + 4096),
        "{kept} bytes kept for {ACTIONS} ids of {ID} bytes: the frames ({} bytes each) are kept",
        ID + PARAMETERS
    );

    for n in 0..ACTIONS {
        let expected = Message::Acknowledgement {
            correlid: Value::Binary(id(n).into()),
            status: 0,
            error: None,
        }
        .to_bytes();
        assert_eq!(
            s.ack_action(Value::Binary(id(n).into()), None),
            [Output::Write(expected)],
            "action {n}"
        );
    }
    let left = live() - before;
    assert!(
        left < 4096,
        "{left} bytes left once every action is acknowledged"
    );
}
