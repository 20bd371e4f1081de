//! The driver's one sleep ([`Timer`]), until the session's earliest deadline.

use std::future::Future;
use std::pin::Pin;

use tokio::time::{Instant, Sleep};

#[cfg(doc)]
use crate::session::Session;

/// The driver's one sleep: until the session's earliest deadline
/// ([`Session::poll_timeout`], asked after every input), or none.
#[derive(Default)]
pub(super) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline the sleep is set for; `None` when the session has none.
    deadline: Option<std::time::Instant>,
}

impl Timer {
    /// Sets the sleep for `deadline`, when that is new: the sleep is made once and reset after.
    pub(super) fn arm(&mut self, deadline: Option<std::time::Instant>) {
        if deadline == self.deadline {
            return;
        }
        self.deadline = deadline;
        let Some(at) = deadline else {
            return;
        };
        let at = Instant::from_std(at);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at),
            slot => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Resolves when the deadline passes (and forgets it); never while there is none.
    pub(super) async fn expired(&mut self) {
        std::future::poll_fn(|cx| {
            let Some(sleep) = self.sleep.as_mut().filter(|_| self.deadline.is_some()) else {
                return std::task::Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return std::task::Poll::Pending;
            }
            self.deadline = None;
            std::task::Poll::Ready(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::time::Duration;

    #[tokio::test]
    async fn the_one_sleep_follows_the_session_deadline() {
        let ms = Duration::from_millis;
        let mut timer = Timer::default();
        assert_eq!(timer.expired().now_or_never(), None, "no deadline");
        let started = std::time::Instant::now();
        timer.arm(Some(started + ms(10)));
        timer.expired().await;
        assert!(started.elapsed() >= ms(10));
        assert_eq!(
            timer.expired().now_or_never(),
            None,
            "an expired deadline is forgotten"
        );
        // Moved: only the latest deadline counts.
        timer.arm(Some(started + ms(20)));
        timer.arm(Some(started + ms(80)));
        timer.expired().await;
        assert!(started.elapsed() >= ms(80), "{:?}", started.elapsed());
        // Stopped.
        timer.arm(Some(started + ms(90)));
        timer.arm(None);
        tokio::time::sleep(ms(30)).await;
        assert_eq!(timer.expired().now_or_never(), None);
    }
}
