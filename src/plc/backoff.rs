//! Capped exponential reconnect backoff with jitter, from a seeded generator.
//!
//! Attempt `n` (counting from 0 since the link was last up) waits a random time in
//! `[base/2, base]` where `base = min(max, min * 2^n)` ("equal jitter": spreads many
//! hosts apart yet never waits more than `max`). It only computes delays; the host link
//! owns the timer.

use std::time::Duration;

/// Reconnect delay generator.
#[derive(Debug)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: fastrand::Rng,
}

/// Doublings after which the base delay is certainly capped (2^32 ms > 49 days).
const ATTEMPT_MAX: u32 = 32;

impl Backoff {
    /// A backoff between `min_ms` and `max_ms` (callers pass a validated range).
    pub fn new(min_ms: u32, max_ms: u32, seed: u64) -> Self {
        let min_ms = u64::from(min_ms.max(1));
        Backoff {
            min_ms,
            max_ms: u64::from(max_ms).max(min_ms),
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The base (upper bound) of the next delay, in ms.
    pub fn next_base_ms(&self) -> u64 {
        self.min_ms
            .saturating_mul(1u64 << self.attempt.min(ATTEMPT_MAX))
            .min(self.max_ms)
    }

    /// The next delay; each call doubles the base until it reaches the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base_ms = self.next_base_ms();
        let floor_ms = base_ms / 2;
        let delay_ms = self.rng.u64(floor_ms..=base_ms);
        self.attempt = (self.attempt + 1).min(ATTEMPT_MAX);
        Duration::from_millis(delay_ms)
    }

    /// The link came up: start again from the smallest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets_within_jitter_bounds() {
        for seed in 0..50 {
            let mut backoff = Backoff::new(100, 5000, seed);
            let bases: Vec<u64> = (0..10)
                .map(|_| {
                    let base = backoff.next_base_ms();
                    let delay = backoff.next_delay().as_millis() as u64;
                    assert!(delay >= base / 2 && delay <= base, "{delay} vs {base}");
                    base
                })
                .collect();
            assert_eq!(
                bases,
                vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
            );
            backoff.reset();
            assert_eq!(backoff.next_base_ms(), 100);
        }
    }
}
