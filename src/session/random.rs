//! The reconnect wait: its growth with the attempts made ([`backoff`]) and the random numbers
//! of its jitter ([`Random`], [`Xorshift`]).

use std::fmt;
use std::time::Duration;

/// Where the reconnect jitter's random numbers come from: the driver's [`Xorshift`], seeded
/// per process and client, or fixed draws in a test.
pub trait Random: Send {
    /// Uniform in [0, 1).
    fn draw(&mut self) -> f64;
}

impl fmt::Debug for dyn Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Random")
    }
}

/// A small xorshift generator: spreading reconnects needs no more than a seed that differs
/// between processes and clients, which the caller supplies.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed | 1)
    }
}

impl Random for Xorshift {
    fn draw(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The wait before reconnect attempt `attempts + 1`: `base` when `max` does not exceed it
/// (the original's fixed delay), else `base * 2^attempts` capped at `max`, of which the upper
/// half is scaled by `random` (in [0, 1)).
pub fn backoff(base: Duration, max: Duration, attempts: u32, random: f64) -> Duration {
    if max <= base {
        return base;
    }
    let grown = base.saturating_mul(1u32 << attempts.min(16)).min(max);
    let half = grown / 2;
    half + half.mul_f64(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        for (attempts, grown) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (30, 1000),
        ] {
            for random in [0.0, 0.25, 0.5, 0.999_999] {
                let wait = backoff(ms(100), ms(1000), attempts, random);
                assert!(
                    wait >= ms(grown / 2) && wait < ms(grown),
                    "{attempts} {wait:?}"
                );
            }
        }
    }

    #[test]
    fn without_a_larger_maximum_backoff_is_fixed() {
        assert_eq!(backoff(ms(1000), ms(1000), 0, 0.7), ms(1000));
        assert_eq!(backoff(ms(1000), ms(0), 9, 0.7), ms(1000));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_half_of_it_random() {
        let delays: Vec<_> = (0..6)
            .map(|n| {
                (
                    backoff(ms(40), ms(400), n, 0.0),
                    backoff(ms(40), ms(400), n, 0.999),
                )
            })
            .collect();
        assert_eq!(delays[0], (ms(20), ms(40) - Duration::from_micros(20)));
        assert_eq!(delays[1].0, ms(40));
        assert_eq!(delays[3].0, ms(160));
        assert_eq!(delays[4].0, ms(200), "capped at 400, half fixed");
        assert_eq!(delays[5].0, ms(200));
        assert!(delays[5].1 < ms(400) && delays[5].1 > ms(399));
        assert_eq!(backoff(ms(40), ms(400), u32::MAX, 0.0), ms(200));
    }

    #[test]
    fn xorshift_draws_stay_in_their_interval_and_vary() {
        let mut random = Xorshift::new(0x9e37_79b9_7f4a_7c15);
        let draws: Vec<f64> = (0..1000).map(|_| random.draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
        let mut zero = Xorshift::new(0);
        assert_ne!(zero.draw(), zero.draw(), "a zero seed still moves");
    }
}
