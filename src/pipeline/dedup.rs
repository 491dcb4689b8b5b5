//! The duplicate window: the same parcel id from the same scanner, seen again inside the
//! window, must not be actuated twice.
//!
//! Two generations of parcel fingerprints: a parcel is a duplicate when either generation
//! holds it; the current generation becomes the previous one every `window` (or sooner
//! when it is full), and the previous one is forgotten. A parcel is therefore remembered
//! for at least `window` and at most twice that: a sorter's recirculation loop takes far
//! longer than the default window, so a parcel that comes round again is decided again.
//!
//! Fingerprints are 64-bit mixes of (scanner id, parcel id) kept in flat tables of
//! cache lines sized at start: no allocation per parcel, 16 bytes per remembered parcel.
//! A parcel's home line is chosen by its scanner and its parcel id without the two low
//! bits, so the consecutive ids a scanner hands out share a line and a run of parcels
//! costs one cache miss per four instead of one or two each. Two different parcels share
//! a fingerprint with probability about n / 2^64 (n parcels in the window): about 1e-13
//! for a million. Pure: time comes in as an argument.

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

    /// Where the parcel's fingerprint is kept: a mix of the scanner and the parcel id
    /// without its low bits, so a scanner's consecutive parcel ids share a cache line.
    fn home(self) -> u64 {
        ParcelKey {
            scanner_id: self.scanner_id,
            parcel_id: self.parcel_id >> PARCELS_PER_HOME_BITS,
        }
        .fingerprint()
    }
}

/// Consecutive parcel ids of one scanner that share a home line (a power of two).
const PARCELS_PER_HOME_BITS: u32 = 2;
/// Fingerprints per line: one 64-byte cache line.
const LINE_SLOTS: usize = 8;

/// One cache line of fingerprints, filled from the front (0 = empty).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Line([u64; LINE_SLOTS]);

/// A set of fingerprints with a fixed capacity: lines of 8, probed linearly from the
/// home line until a line with an empty slot, so a lookup usually reads one cache line
/// and consecutive parcels of a scanner read the same one.
#[derive(Debug)]
struct FingerprintSet {
    lines: Box<[Line]>,
    len: usize,
}

impl FingerprintSet {
    /// Room for `entries_max` at a load factor of at most one half.
    fn new(entries_max: usize) -> FingerprintSet {
        let slots = (entries_max.max(1) * 2).next_power_of_two().max(LINE_SLOTS);
        FingerprintSet {
            lines: vec![Line([0; LINE_SLOTS]); slots / LINE_SLOTS].into_boxed_slice(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.lines.len() - 1
    }

    /// Walks from `home`'s line: `Ok(())` when `fingerprint` is there, else the line and
    /// slot of the first empty slot (where it would go). The caller keeps `len` at most
    /// half the slots, so an empty slot exists; `None` only if that were broken.
    fn find(&self, home: u64, fingerprint: u64) -> Result<(), Option<(usize, usize)>> {
        let mut index = home as usize & self.mask();
        for _ in 0..self.lines.len() {
            let Some(line) = self.lines.get(index) else {
                break;
            };
            for (slot, &value) in line.0.iter().enumerate() {
                if value == fingerprint {
                    return Ok(());
                }
                if value == 0 {
                    return Err(Some((index, slot)));
                }
            }
            index = (index + 1) & self.mask();
        }
        Err(None)
    }

    fn contains(&self, home: u64, fingerprint: u64) -> bool {
        self.find(home, fingerprint).is_ok()
    }

    /// Prefetches `home`'s line: the first memory `contains` reads.
    fn prefetch_home(&self, home: u64) {
        if let Some(line) = self.lines.get(home as usize & self.mask()) {
            prefetch_read(line);
        }
    }

    fn insert(&mut self, home: u64, fingerprint: u64) {
        if let Err(Some((index, slot))) = self.find(home, fingerprint) {
            if let Some(value) = self
                .lines
                .get_mut(index)
                .and_then(|line| line.0.get_mut(slot))
            {
                *value = fingerprint;
                self.len += 1;
            }
        }
    }

    fn clear(&mut self) {
        if self.len > 0 {
            self.lines.fill(Line([0; LINE_SLOTS]));
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
        let (home, fingerprint) = (key.home(), key.fingerprint());
        if self.current.contains(home, fingerprint) || self.previous.contains(home, fingerprint) {
            return true;
        }
        self.current.insert(home, fingerprint);
        false
    }

    /// Prefetches the slots that checking these parcels will read first, so a batch's
    /// cache misses overlap. Changes nothing: prefetches are hints.
    pub fn warm(&self, keys: impl Iterator<Item = ParcelKey>) {
        let mut last_home = None;
        for key in keys {
            // Consecutive parcels of a scanner share a line: prefetch it once.
            let home = key.home();
            if last_home != Some(home) {
                self.current.prefetch_home(home);
                self.previous.prefetch_home(home);
                last_home = Some(home);
            }
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

    #[test]
    fn runs_of_consecutive_ids_and_random_ids_fill_the_lines_to_capacity_exactly() {
        // Runs of consecutive ids (which share home lines) and random ids, up to the
        // generation's capacity: a set model must agree on every check, including long
        // overflow chains between lines.
        let start = Instant::now();
        let mut rng = fastrand::Rng::with_seed(0x11e5);
        let mut window = DuplicateWindow::new(Duration::from_secs(3600), 1 << 15);
        let mut model = std::collections::HashSet::new();
        while model.len() < (1 << 14) - 64 {
            let scanner = rng.u32(0..8);
            let first = if rng.bool() {
                rng.u64(..)
            } else {
                rng.u64(..4096)
            };
            for parcel_id in first..first.saturating_add(rng.u64(1..64)) {
                let candidate = key(scanner, parcel_id);
                let seen = !model.insert(candidate);
                assert_eq!(window.is_duplicate(candidate, start), seen, "{candidate:?}");
            }
        }
        assert_eq!(window.len(), model.len());
        assert!(model.iter().all(|key| window.is_duplicate(*key, start)));
    }
}
