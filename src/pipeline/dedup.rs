//! The duplicate window: the same parcel id from the same scanner, seen again inside the
//! window, must not be actuated twice.
//!
//! Two generations of parcel fingerprints: a parcel is a duplicate when either generation
//! holds it; the current generation becomes the previous one every `window` (or sooner
//! when it is full), and the previous one is forgotten. A parcel is therefore remembered
//! for at least `window` and at most twice that: a sorter's recirculation loop takes far
//! longer than the default window, so a parcel that comes round again is decided again.
//!
//! Fingerprints are 64-bit mixes of (scanner id, parcel id) kept in flat linear-probing
//! tables sized at start: no allocation per parcel, 16 bytes per remembered parcel. Two
//! different parcels share a fingerprint with probability about n / 2^64 (n parcels in
//! the window): about 1e-13 for a million. Pure: time comes in as an argument.

use std::time::{Duration, Instant};

use crate::util::prefetch::prefetch_read;

/// Identifies a parcel as the scanner named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParcelKey {
    /// The scanner that reported the parcel.
    pub scanner_id: u32,
    /// The parcel or tray id that scanner assigned.
    pub parcel_id: u64,
}

impl ParcelKey {
    /// A well-mixed, never-zero 64-bit fingerprint (zero marks an empty slot).
    fn fingerprint(self) -> u64 {
        // SplitMix64's finalizer over the two ids.
        let mut x =
            self.parcel_id ^ (u64::from(self.scanner_id)).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        x.max(1)
    }
}

/// A set of fingerprints with a fixed capacity.
#[derive(Debug)]
struct FingerprintSet {
    slots: Box<[u64]>,
    len: usize,
}

impl FingerprintSet {
    /// Room for `entries_max` at a load factor of at most one half.
    fn new(entries_max: usize) -> FingerprintSet {
        let slots = (entries_max.max(1) * 2).next_power_of_two();
        FingerprintSet {
            slots: vec![0; slots].into_boxed_slice(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn contains(&self, fingerprint: u64) -> bool {
        let mut index = fingerprint as usize & self.mask();
        loop {
            match self.slots.get(index) {
                Some(&slot) if slot == fingerprint => return true,
                Some(&0) | None => return false,
                Some(_) => index = (index + 1) & self.mask(),
            }
        }
    }

    /// Prefetches the home slot of `fingerprint`: the first memory `contains` reads.
    fn prefetch_home(&self, fingerprint: u64) {
        if let Some(slot) = self.slots.get(fingerprint as usize & self.mask()) {
            prefetch_read(slot);
        }
    }

    /// Inserts; the caller keeps `len` at most half the slots, so a free slot exists.
    fn insert(&mut self, fingerprint: u64) {
        let mask = self.mask();
        let mut index = fingerprint as usize & mask;
        while let Some(slot) = self.slots.get_mut(index) {
            if *slot == fingerprint {
                return;
            }
            if *slot == 0 {
                *slot = fingerprint;
                self.len += 1;
                return;
            }
            index = (index + 1) & mask;
        }
    }

    fn clear(&mut self) {
        if self.len > 0 {
            self.slots.fill(0);
            self.len = 0;
        }
    }
}

/// Remembers recently decided parcels.
#[derive(Debug)]
pub struct DuplicateWindow {
    window: Duration,
    generation_entries_max: usize,
    current: FingerprintSet,
    previous: FingerprintSet,
    generation_started: Option<Instant>,
}

impl DuplicateWindow {
    /// A window of `window` length remembering at most `entries_max` parcels (half per
    /// generation). The tables are allocated here, once.
    pub fn new(window: Duration, entries_max: usize) -> DuplicateWindow {
        let generation_entries_max = (entries_max / 2).max(1);
        DuplicateWindow {
            window,
            generation_entries_max,
            current: FingerprintSet::new(generation_entries_max),
            previous: FingerprintSet::new(generation_entries_max),
            generation_started: None,
        }
    }

    /// Records the parcel and says whether it was already seen inside the window.
    /// A duplicate does not extend the window: the first sighting counts.
    pub fn is_duplicate(&mut self, key: ParcelKey, now: Instant) -> bool {
        let started = *self.generation_started.get_or_insert(now);
        if now.saturating_duration_since(started) >= self.window
            || self.current.len >= self.generation_entries_max
        {
            self.rotate(now);
        }
        let fingerprint = key.fingerprint();
        if self.current.contains(fingerprint) || self.previous.contains(fingerprint) {
            return true;
        }
        self.current.insert(fingerprint);
        false
    }

    /// Prefetches the slots that checking these parcels will read first, so a batch's
    /// cache misses overlap. Changes nothing: prefetches are hints.
    pub fn warm(&self, keys: impl Iterator<Item = ParcelKey>) {
        for key in keys {
            let fingerprint = key.fingerprint();
            self.current.prefetch_home(fingerprint);
            self.previous.prefetch_home(fingerprint);
        }
    }

    fn rotate(&mut self, now: Instant) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        // After a long pause both generations are older than the window.
        if let Some(started) = self.generation_started {
            if now.saturating_duration_since(started) >= self.window * 2 {
                self.previous.clear();
            }
        }
        self.generation_started = Some(now);
    }

    /// How many parcels the window remembers now.
    pub fn len(&self) -> usize {
        self.current.len + self.previous.len
    }

    /// Whether the window remembers no parcel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn same_parcel_inside_window_is_duplicate_and_after_twice_the_window_is_not() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut window = DuplicateWindow::new(ms(100), 16);
        assert!(!window.is_duplicate(key(1, 7), start));
        assert!(window.is_duplicate(key(1, 7), start + ms(99)));
        // Another scanner with the same parcel id is a different parcel.
        assert!(!window.is_duplicate(key(2, 7), start + ms(10)));
        // Past twice the window the parcel may be decided again (it went round again).
        assert!(!window.is_duplicate(key(1, 7), start + ms(201)));
        assert!(window.is_duplicate(key(1, 7), start + ms(250)));
    }

    #[test]
    fn memory_is_bounded_and_the_newest_are_kept() {
        let start = Instant::now();
        let mut window = DuplicateWindow::new(Duration::from_secs(60), 8);
        for parcel in 0..100 {
            assert!(!window.is_duplicate(key(1, parcel), start));
            assert!(window.len() <= 8);
        }
        assert!(window.is_duplicate(key(1, 99), start));
        assert!(window.is_duplicate(key(1, 96), start));
        assert!(!window.is_duplicate(key(1, 0), start));
    }

    #[test]
    fn seeded_random_stream_honours_the_window_bounds() {
        // Against a naive model: a repeat within the window is always a duplicate; one
        // more than twice the window (plus the gap between calls) after the last recorded
        // sighting never is.
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let start = Instant::now();
        let length = Duration::from_millis(50);
        let mut window = DuplicateWindow::new(length, 1 << 16);
        let mut recorded: std::collections::HashMap<ParcelKey, Instant> = Default::default();
        let mut now = start;
        for _ in 0..20_000 {
            now += Duration::from_millis(rng.u64(0..5));
            let candidate = key(rng.u32(0..3), rng.u64(0..40));
            let duplicate = window.is_duplicate(candidate, now);
            match recorded.get(&candidate) {
                Some(seen) if now.saturating_duration_since(*seen) <= length => {
                    assert!(duplicate, "{candidate:?} repeated within the window");
                }
                // Rotation happens at the first call past the window: allow two call gaps.
                Some(seen)
                    if now.saturating_duration_since(*seen)
                        > length * 2 + Duration::from_millis(10) =>
                {
                    assert!(!duplicate, "{candidate:?} remembered past twice the window");
                }
                None => assert!(!duplicate, "{candidate:?} seen for the first time"),
                _ => {}
            }
            if !duplicate {
                recorded.insert(candidate, now);
            }
        }
    }
}
