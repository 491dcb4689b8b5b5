//! A rate limiter for warnings about bad input, so a flood of garbage cannot fill the disk.
//!
//! It only decides whether to log now; it does not log.

use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the ones it held back.
#[derive(Debug, Clone)]
pub struct RateLimit {
    interval: Duration,
    last_allowed: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one event per `interval`.
    pub fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last_allowed: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held back since the
    /// last one that was; `None` when it must be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let due = match self.last_allowed {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.interval,
        };
        if due {
            self.last_allowed = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_held_back_count() {
        let start = Instant::now();
        let mut limit = RateLimit::new(Duration::from_secs(1));
        assert_eq!(limit.allow(start), Some(0));
        for millis in [1, 10, 500, 999] {
            assert_eq!(limit.allow(start + Duration::from_millis(millis)), None);
        }
        assert_eq!(limit.allow(start + Duration::from_millis(1000)), Some(4));
        assert_eq!(limit.allow(start + Duration::from_millis(1001)), None);
        assert_eq!(limit.allow(start + Duration::from_millis(2500)), Some(1));
    }
}
