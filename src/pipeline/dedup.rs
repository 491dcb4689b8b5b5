//! The duplicate window: the same parcel id from the same scanner, seen again inside the
//! window, must not be actuated twice.
//!
//! Pure: time comes in as an argument. Memory is bounded by `entries_max`; when the
//! window holds more parcels than that, the oldest are forgotten first (a parcel that old
//! has long left the sorter).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ahash::AHashMap;

/// Identifies a parcel as the scanner named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParcelKey {
    /// The scanner that reported the parcel.
    pub scanner_id: u32,
    /// The parcel or tray id that scanner assigned.
    pub parcel_id: u64,
}

/// Remembers recently decided parcels.
#[derive(Debug)]
pub struct DuplicateWindow {
    window: Duration,
    entries_max: usize,
    first_seen: AHashMap<ParcelKey, Instant>,
    order: VecDeque<(ParcelKey, Instant)>,
}

impl DuplicateWindow {
    /// A window of `window` length remembering at most `entries_max` parcels
    /// (`entries_max` of zero is treated as one).
    pub fn new(window: Duration, entries_max: usize) -> DuplicateWindow {
        let entries_max = entries_max.max(1);
        DuplicateWindow {
            window,
            entries_max,
            first_seen: AHashMap::with_capacity(entries_max.min(1 << 20)),
            order: VecDeque::with_capacity(entries_max.min(1 << 20)),
        }
    }

    /// Records the parcel and says whether it was already seen inside the window.
    /// A duplicate does not extend the window: the first sighting counts.
    pub fn is_duplicate(&mut self, key: ParcelKey, now: Instant) -> bool {
        self.expire(now);
        if let Some(first) = self.first_seen.get(&key) {
            if now.saturating_duration_since(*first) <= self.window {
                return true;
            }
        }
        if self.order.len() >= self.entries_max {
            self.forget_oldest();
        }
        self.first_seen.insert(key, now);
        self.order.push_back((key, now));
        false
    }

    /// How many parcels the window remembers now.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    /// Whether the window remembers no parcel.
    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, seen)) = self.order.front() {
            if now.saturating_duration_since(*seen) <= self.window {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((key, seen)) = self.order.pop_front() {
            // Remove only if the map still holds this sighting (not a later re-insertion).
            if self.first_seen.get(&key) == Some(&seen) {
                self.first_seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scanner_id: u32, parcel_id: u64) -> ParcelKey {
        ParcelKey {
            scanner_id,
            parcel_id,
        }
    }

    #[test]
    fn same_parcel_inside_window_is_duplicate_and_outside_is_not() {
        let start = Instant::now();
        let mut window = DuplicateWindow::new(Duration::from_millis(100), 16);
        assert!(!window.is_duplicate(key(1, 7), start));
        assert!(window.is_duplicate(key(1, 7), start + Duration::from_millis(100)));
        // Another scanner with the same parcel id is a different parcel.
        assert!(!window.is_duplicate(key(2, 7), start + Duration::from_millis(10)));
        // After the window the parcel may be decided again (it went round again).
        assert!(!window.is_duplicate(key(1, 7), start + Duration::from_millis(101)));
        assert!(window.is_duplicate(key(1, 7), start + Duration::from_millis(150)));
    }

    #[test]
    fn memory_is_bounded_and_oldest_forgotten_first() {
        let start = Instant::now();
        let mut window = DuplicateWindow::new(Duration::from_secs(60), 3);
        for parcel in 0..10 {
            assert!(!window.is_duplicate(key(1, parcel), start));
            assert!(window.len() <= 3);
        }
        assert!(window.is_duplicate(key(1, 9), start));
        assert!(window.is_duplicate(key(1, 7), start));
        assert!(!window.is_duplicate(key(1, 0), start));
    }

    #[test]
    fn seeded_random_stream_matches_a_naive_model() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let start = Instant::now();
        let window_length = Duration::from_millis(50);
        let mut window = DuplicateWindow::new(window_length, usize::MAX);
        let mut model: Vec<(ParcelKey, Instant)> = Vec::new();
        let mut now = start;
        for _ in 0..5_000 {
            now += Duration::from_millis(rng.u64(0..5));
            let candidate = key(rng.u32(0..3), rng.u64(0..40));
            model.retain(|(_, seen)| now.saturating_duration_since(*seen) <= window_length);
            let expected = model.iter().any(|(k, _)| *k == candidate);
            if !expected {
                model.push((candidate, now));
            }
            assert_eq!(window.is_duplicate(candidate, now), expected);
        }
    }
}
