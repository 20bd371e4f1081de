//! Round-trip timing: when the events' frames were written ([`WriteTimes`]).

use std::collections::VecDeque;
use std::time::Duration;

#[cfg(doc)]
use crate::session::SessionStats;

/// When the events' frames were written, to time their round trips: `(first, last, at)` for
/// the writes numbered `first..=last` (see [`SessionStats::events_written`]), made by one
/// input. Only the last `max_in_flight` writes can still be acknowledged, so it keeps at most
/// that many entries, and none is made or looked up unless an event was written or
/// acknowledged.
#[derive(Default)]
pub(super) struct WriteTimes(VecDeque<(u64, u64, std::time::Instant)>);

impl WriteTimes {
    /// Called after each input with the session's `(events_written, last_acked_write)` from
    /// before it: notes this input's writes, and returns the round trip of the event it saw
    /// acknowledged.
    pub(super) fn update(
        &mut self,
        before: (u64, u64),
        after: (u64, u64),
        window: u64,
    ) -> Option<Duration> {
        if before == after {
            return None;
        }
        let now = std::time::Instant::now();
        let (written, acked) = after;
        let rtt = if acked != before.1 {
            // Entries are in write order: a binary search, even with a wide window.
            let at = self.0.partition_point(|(_, last, _)| *last < acked);
            self.0
                .get(at)
                .filter(|(first, _, _)| *first <= acked)
                .map(|(_, _, at)| now.saturating_duration_since(*at))
        } else {
            None
        };
        if written != before.0 {
            self.0.push_back((before.0 + 1, written, now));
            while self
                .0
                .front()
                .is_some_and(|(_, last, _)| last.saturating_add(window) <= written)
            {
                self.0.pop_front();
            }
        }
        rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_times_give_the_round_trip_of_the_acknowledged_write_and_stay_bounded() {
        let mut times = WriteTimes::default();
        assert_eq!(times.update((0, 0), (0, 0), 2), None, "nothing happened");
        assert_eq!(times.update((0, 0), (2, 0), 2), None, "writes 1 and 2");
        std::thread::sleep(Duration::from_millis(5));
        let rtt = times
            .update((2, 0), (2, 2), 2)
            .expect("write 2 acknowledged");
        assert!(rtt >= Duration::from_millis(5), "{rtt:?}");
        // Write 1 acknowledged later, in the same input as write 3.
        let late = times
            .update((2, 2), (3, 1), 2)
            .expect("write 1 acknowledged");
        assert!(late >= rtt);
        assert_eq!(times.0.len(), 2, "writes 1-2 and 3");
        // Writes 4 and 5: only writes 4 and 5 can still be acknowledged with a window of 2.
        times.update((3, 1), (5, 1), 2);
        assert_eq!(times.0.len(), 1);
        assert_eq!(
            times.update((5, 1), (5, 3), 2),
            None,
            "write 3 is forgotten"
        );
        assert!(times.update((5, 3), (5, 5), 2).is_some());
    }
}
