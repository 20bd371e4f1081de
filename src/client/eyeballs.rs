//! Dual-stack connecting, after RFC 8305 ("Happy Eyeballs" version 2): when the gateway's name
//! resolves to several addresses, connection attempts start one after another, 250 ms apart,
//! IPv6 first and the families alternating; an attempt that fails lets the next one start at
//! once; the first to complete wins and the others are dropped. An address that silently
//! drops packets then costs 250 ms, not the whole connect timeout.
//!
//! [`Race`] decides when which attempt starts, free of I/O: it is told the time and what
//! became of each attempt, and answers [`Race::poll_timeout`] like the other cores.
//! `transport::open` runs the attempts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an attempt has alone before the next one starts (RFC 8305 section 5
/// recommends 250 ms).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// `addresses` in the order their attempts start: IPv6 first, then the families alternating,
/// each family in the order the resolver gave (RFC 8305 section 4).
pub fn interleave(addresses: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addresses.into_iter().partition(SocketAddr::is_ipv6);
    let mut v6 = v6.into_iter();
    let mut v4 = v4.into_iter();
    let mut order = Vec::new();
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
}

/// The schedule of one connect's attempts.
#[derive(Debug)]
pub struct Race {
    /// Addresses not tried yet, in order.
    waiting: VecDeque<SocketAddr>,
    /// When the next attempt may start.
    next_start: Instant,
    /// Attempts started and not yet failed.
    running: usize,
    delay: Duration,
}

impl Race {
    /// A race over `addresses` (already in order, see [`interleave`]) whose first attempt may
    /// start at `now`.
    pub fn new(addresses: Vec<SocketAddr>, now: Instant, delay: Duration) -> Race {
        Race {
            waiting: addresses.into(),
            next_start: now,
            running: 0,
            delay,
        }
    }

    /// The address to try now, if an attempt is due at `now`: the first at once, each next
    /// one `delay` after the previous started, or at once after one failed. Call until `None`.
    pub fn start(&mut self, now: Instant) -> Option<SocketAddr> {
        if now < self.next_start {
            return None;
        }
        let address = self.waiting.pop_front()?;
        self.running += 1;
        self.next_start = now + self.delay;
        Some(address)
    }

    /// An attempt failed at `now`: the next address need not wait.
    pub fn failed(&mut self, now: Instant) {
        self.running = self.running.saturating_sub(1);
        self.next_start = self.next_start.min(now);
    }

    /// When the next attempt is due, while an address is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.waiting.is_empty()).then_some(self.next_start)
    }

    /// Every address was tried and every attempt failed.
    pub fn is_lost(&self) -> bool {
        self.waiting.is_empty() && self.running == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 443))
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, last], 443))
    }

    #[test]
    fn families_alternate_from_ipv6() {
        assert_eq!(
            interleave([v4(1), v4(2), v4(3), v6(1), v6(2)]),
            [v6(1), v4(1), v6(2), v4(2), v4(3)]
        );
        assert_eq!(interleave([v4(1), v4(2)]), [v4(1), v4(2)]);
        assert_eq!(interleave([v6(1), v6(2), v4(1)]), [v6(1), v4(1), v6(2)]);
        assert_eq!(interleave([]), []);
    }

    /// Jumps a virtual clock from deadline to deadline and records when each attempt starts.
    #[test]
    fn attempts_start_250_ms_apart_and_at_once_after_a_failure() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut race = Race::new(interleave([v4(1), v6(1), v4(2)]), t0, ATTEMPT_DELAY);
        assert_eq!(race.start(t0), Some(v6(1)));
        assert_eq!(race.start(t0), None, "the next waits its turn");
        assert_eq!(race.poll_timeout(), Some(ms(250)));
        assert_eq!(race.start(ms(249)), None);
        assert_eq!(race.start(ms(250)), Some(v4(1)));
        assert_eq!(race.poll_timeout(), Some(ms(500)));
        // The IPv6 attempt fails at 300 ms: the last address starts then, not at 500 ms.
        race.failed(ms(300));
        assert_eq!(race.poll_timeout(), Some(ms(300)));
        assert_eq!(race.start(ms(300)), Some(v4(2)));
        assert_eq!(race.start(ms(300)), None);
        assert_eq!(race.poll_timeout(), None, "nothing left to start");
        assert!(!race.is_lost(), "two attempts still run");
        race.failed(ms(400));
        race.failed(ms(500));
        assert!(race.is_lost());
    }

    #[test]
    fn a_black_holed_first_address_costs_one_delay() {
        // The first address never answers; the second connects 10 ms after it starts.
        let t0 = Instant::now();
        let mut race = Race::new(vec![v6(1), v4(1)], t0, ATTEMPT_DELAY);
        let mut now = t0;
        let mut started = Vec::new();
        while let Some(deadline) = race.poll_timeout() {
            now = now.max(deadline);
            while let Some(address) = race.start(now) {
                started.push((address, now - t0));
            }
        }
        assert_eq!(
            started,
            [(v6(1), Duration::ZERO), (v4(1), ATTEMPT_DELAY)],
            "the second attempt starts after one delay, whatever the first does"
        );
        assert!(!race.is_lost());
    }

    #[test]
    fn a_late_start_is_not_made_up_for() {
        // The driver woke late (a busy loop): the next attempt waits a full delay after that.
        let t0 = Instant::now();
        let mut race = Race::new(vec![v4(1), v4(2), v4(3)], t0, ATTEMPT_DELAY);
        race.start(t0);
        let late = t0 + Duration::from_secs(2);
        assert_eq!(race.start(late), Some(v4(2)));
        assert_eq!(race.start(late), None);
        assert_eq!(race.poll_timeout(), Some(late + ATTEMPT_DELAY));
    }

    #[test]
    fn no_address_is_lost_at_once() {
        let race = Race::new(Vec::new(), Instant::now(), ATTEMPT_DELAY);
        assert!(race.is_lost());
        assert_eq!(race.poll_timeout(), None);
    }
}
