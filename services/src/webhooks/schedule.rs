//! When a failed delivery is tried again: exponential backoff with jitter, for at least a day.
//!
//! After the n-th failed attempt of a retry window the next one waits `first × 2^(n-1)`, capped
//! at `max`, times a random factor in `[1 - jitter, 1 + jitter]` (so endpoints that came back
//! up are not hit by every stalled delivery in the same second). A delivery is given up — state
//! `failed` — only when an attempt fails at least `give_up_after` after the window began. With
//! the defaults (5 s, ×2, capped at 3 h, ±20 %, 24 h) that is about 18 attempts over 24 to 28 h:
//! an endpoint that is down for a day still gets every event.

use std::time::Duration;

/// The retry schedule of webhook deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait between two attempts (before jitter).
    pub max: Duration,
    /// Retries go on until an attempt fails at least this long after the first one.
    pub give_up_after: Duration,
    /// The random spread of each wait, as a fraction (0.2: ±20 %).
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// 5 s doubling to at most 3 h, ±20 %, for at least 24 h.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(5),
            max: Duration::from_secs(3 * 3600),
            give_up_after: Duration::from_secs(24 * 3600),
            jitter: 0.2,
        }
    }
}

impl RetrySchedule {
    /// A schedule for tests: waits of `first` doubling, for `give_up_after`.
    pub fn quick(first: Duration) -> Self {
        Self {
            first,
            max: first * 16,
            ..Self::default()
        }
    }

    /// The wait after `failed` failures of a window (1 = the first), before jitter.
    pub fn base_delay(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(40);
        let delay = self
            .first
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max);
        delay.min(self.max)
    }

    /// The wait before the next attempt after `failed` failures, the latest `elapsed` after the
    /// window began; `None` gives up. `unit` is a random number in `[0, 1)`.
    pub fn next(&self, failed: u32, elapsed: Duration, unit: f64) -> Option<Duration> {
        if elapsed >= self.give_up_after {
            return None;
        }
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Some(self.base_delay(failed).mul_f64(factor.max(0.0)))
    }
}

/// A random number in `[0, 1)` from the operating system (0.5 if it cannot give one: the jitter
/// is a courtesy, not a correctness matter).
pub fn unit_random() -> f64 {
    match getrandom::u32() {
        Ok(r) => f64::from(r) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a delivery that always fails: the times of its attempts (0 = the first), with a
    /// constant jitter draw.
    fn attempts_until_given_up(s: &RetrySchedule, unit: f64) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        let mut times = vec![at];
        let mut failed = 0;
        loop {
            failed += 1;
            match s.next(failed, at, unit) {
                Some(wait) => {
                    at += wait;
                    times.push(at);
                }
                None => return times,
            }
            assert!(times.len() < 1000, "the schedule never gives up");
        }
    }

    #[test]
    fn the_default_schedule_spans_at_least_a_day() {
        let s = RetrySchedule::default();
        for unit in [0.0, 0.5, 0.999_999] {
            let times = attempts_until_given_up(&s, unit);
            let last = *times.last().unwrap();
            assert!(
                last >= Duration::from_secs(24 * 3600),
                "jitter draw {unit}: the last attempt is at {last:?}, before 24 h"
            );
            // Never more than one (jittered) maximum wait past the day.
            assert!(
                last <= Duration::from_secs(24 * 3600) + s.max.mul_f64(1.0 + s.jitter),
                "jitter draw {unit}: the last attempt is at {last:?}"
            );
            assert!(
                (14..=24).contains(&times.len()),
                "jitter draw {unit}: {} attempts",
                times.len()
            );
        }
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let s = RetrySchedule::default();
        let waits: Vec<u64> = (1..=14).map(|n| s.base_delay(n).as_secs()).collect();
        assert_eq!(
            waits,
            [
                5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 10800, 10800
            ]
        );
        assert_eq!(s.base_delay(0), Duration::from_secs(5));
        assert_eq!(s.base_delay(u32::MAX), s.max, "no overflow");
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let s = RetrySchedule::default();
        let base = s.base_delay(4);
        let low = s.next(4, Duration::ZERO, 0.0).unwrap();
        let high = s.next(4, Duration::ZERO, 0.999_999).unwrap();
        assert_eq!(low, base.mul_f64(0.8));
        assert!(high <= base.mul_f64(1.2) && high > base.mul_f64(1.19));
        for _ in 0..100 {
            let r = unit_random();
            assert!((0.0..1.0).contains(&r));
            let d = s.next(4, Duration::ZERO, r).unwrap();
            assert!(d >= low && d <= base.mul_f64(1.2));
        }
    }

    #[test]
    fn gives_up_only_after_the_window() {
        let s = RetrySchedule::default();
        let day = Duration::from_secs(24 * 3600);
        assert!(s.next(30, day - Duration::from_secs(1), 0.5).is_some());
        assert!(s.next(30, day, 0.5).is_none());
        assert!(
            s.next(1, day, 0.5).is_none(),
            "the window is time, not a count"
        );
    }
}
