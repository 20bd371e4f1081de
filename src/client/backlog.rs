//! The read-ahead bound between the driver and a busy host ([`Backlog`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::protocol::Frame;

/// Read-ahead bound between the driver and a host whose thread may be busy. The driver counts
/// what each frame it reads costs ([`Backlog::FRAME_COST`] plus its length) and stops reading
/// the socket once [`Backlog::LIMIT`] is passed; the host calls [`Backlog::taken`] when it
/// takes the notices off the sink, which wakes the driver. TCP then pushes back on the gateway:
/// a flood meets a busy JavaScript thread with a few MB read ahead, not with everything the
/// network can carry. Under the libuv driver the host takes every batch at the end of the
/// turn that made it, so the bound is never reached there.
#[derive(Debug, Default)]
pub struct Backlog {
    cost: AtomicUsize,
    pub(super) taken: Notify,
}

impl Backlog {
    /// Read-ahead allowed before the driver waits for the host.
    pub const LIMIT: usize = 4 << 20;
    /// What a frame costs beyond its bytes (its notice and the values made of it): so that a
    /// flood of tiny frames is bounded by count too.
    pub const FRAME_COST: usize = 512;

    /// The host took every notice handed to it so far.
    pub fn taken(&self) {
        if self.cost.swap(0, Ordering::AcqRel) > 0 {
            self.taken.notify_one();
        }
    }

    pub(super) fn read(&self, frame: &Frame) {
        self.cost
            .fetch_add(Self::FRAME_COST + frame.body.len(), Ordering::AcqRel);
    }

    pub(super) fn full(&self) -> bool {
        self.cost.load(Ordering::Acquire) >= Self::LIMIT
    }
}
