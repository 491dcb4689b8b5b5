//! The load generator's parcel mix: which parcels to send, drawn from a compiled plan so
//! that the shares of exact hits, prefix hits, unknown codes, no-reads, multi-reads and
//! duplicates are what the operator asked for.
//!
//! Pure and seeded: the same plan, shares and seed give the same parcels. It builds
//! parcels; encoding and sending them is the scanner side's job.

use std::fmt;

use crate::plan::Plan;

/// Exact keys sampled from the plan, at most (a 50 M-key plan is not copied whole).
const EXACT_SAMPLE_MAX: usize = 100_000;
/// Prefix keys sampled from the plan, at most.
const PREFIX_SAMPLE_MAX: usize = 100_000;

/// What kind of parcel to send, and so what decision to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParcelKind {
    /// A barcode with an exact entry.
    Exact,
    /// An unknown barcode and a destination code that a prefix rule matches.
    Prefix,
    /// An unknown barcode and a destination code no rule matches.
    Unknown,
    /// No barcode and no destination code.
    NoRead,
    /// Two barcodes whose exact entries send them to different chutes.
    MultiRead,
    /// The previous parcel again, same scanner and parcel id.
    Duplicate,
}

impl ParcelKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ParcelKind; 6] = [
        ParcelKind::Exact,
        ParcelKind::Prefix,
        ParcelKind::Unknown,
        ParcelKind::NoRead,
        ParcelKind::MultiRead,
        ParcelKind::Duplicate,
    ];

    /// snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParcelKind::Exact => "exact",
            ParcelKind::Prefix => "prefix",
            ParcelKind::Unknown => "unknown",
            ParcelKind::NoRead => "no_read",
            ParcelKind::MultiRead => "multi_read",
            ParcelKind::Duplicate => "duplicate",
        }
    }
}

/// Relative weights of each kind (any scale; zero disables a kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixShares {
    /// Weight of [`ParcelKind::Exact`].
    pub exact: u32,
    /// Weight of [`ParcelKind::Prefix`].
    pub prefix: u32,
    /// Weight of [`ParcelKind::Unknown`].
    pub unknown: u32,
    /// Weight of [`ParcelKind::NoRead`].
    pub no_read: u32,
    /// Weight of [`ParcelKind::MultiRead`].
    pub multi_read: u32,
    /// Weight of [`ParcelKind::Duplicate`].
    pub duplicate: u32,
}

impl Default for MixShares {
    /// Roughly a transit hub: most parcels routed by destination code, a third
    /// pre-advised, a few percent of each exception.
    fn default() -> Self {
        MixShares {
            exact: 30,
            prefix: 55,
            unknown: 4,
            no_read: 5,
            multi_read: 3,
            duplicate: 3,
        }
    }
}

impl MixShares {
    fn weight(&self, kind: ParcelKind) -> u32 {
        match kind {
            ParcelKind::Exact => self.exact,
            ParcelKind::Prefix => self.prefix,
            ParcelKind::Unknown => self.unknown,
            ParcelKind::NoRead => self.no_read,
            ParcelKind::MultiRead => self.multi_read,
            ParcelKind::Duplicate => self.duplicate,
        }
    }

    fn total(&self) -> u64 {
        ParcelKind::ALL
            .iter()
            .map(|kind| u64::from(self.weight(*kind)))
            .sum()
    }
}

/// Why a mix cannot be built from a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixError {
    /// Every share is zero.
    NoShares,
    /// The kind needs plan entries the plan does not have.
    PlanLacks(ParcelKind),
}

impl fmt::Display for MixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixError::NoShares => write!(f, "every share of the parcel mix is zero"),
            MixError::PlanLacks(kind) => write!(
                f,
                "the plan has no entries to make `{}` parcels from; set that share to 0",
                kind.as_str()
            ),
        }
    }
}

impl std::error::Error for MixError {}

/// One parcel to send (its id is the sender's business).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParcelDraft {
    /// Barcodes read, 0 to 2.
    pub barcodes: Vec<Vec<u8>>,
    /// Destination code, if any.
    pub destination: Option<Vec<u8>>,
    /// Weight in grams.
    pub weight_g: u32,
    /// Length, width, height in millimetres.
    pub dimensions_mm: [u16; 3],
}

/// Draws parcels. One per scanner connection, each with its own seed.
#[derive(Debug, Clone)]
pub struct ParcelMix {
    exact_keys: Vec<Vec<u8>>,
    /// Pairs of exact keys (indices) whose chutes differ.
    conflicting_pairs: Vec<(usize, usize)>,
    prefix_keys: Vec<Vec<u8>>,
    shares: MixShares,
    rng: fastrand::Rng,
    previous: Option<ParcelDraft>,
}

impl ParcelMix {
    /// Samples keys from `plan` (deterministically for a given `seed`).
    pub fn from_plan(plan: &Plan, shares: MixShares, seed: u64) -> Result<ParcelMix, MixError> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (exact, exact_chutes) = sample(
            plan.exact_entries()
                .map(|(key, chutes)| (key.to_vec(), chutes.as_slice().to_vec())),
            EXACT_SAMPLE_MAX,
            &mut rng,
        );
        let (prefix_keys, _) = sample(
            plan.prefix_entries()
                .map(|(key, chutes)| (key.to_vec(), chutes.as_slice().to_vec())),
            PREFIX_SAMPLE_MAX,
            &mut rng,
        );
        let mut conflicting_pairs = Vec::new();
        if exact.len() >= 2 {
            for _ in 0..(exact.len() * 4).min(4096) {
                let first = rng.usize(..exact.len());
                let second = rng.usize(..exact.len());
                if exact_chutes.get(first) != exact_chutes.get(second) {
                    conflicting_pairs.push((first, second));
                }
            }
        }
        let mix = ParcelMix {
            exact_keys: exact,
            conflicting_pairs,
            prefix_keys,
            shares,
            rng,
            previous: None,
        };
        mix.check()?;
        Ok(mix)
    }

    fn check(&self) -> Result<(), MixError> {
        if self.shares.total() == 0 {
            return Err(MixError::NoShares);
        }
        let lacks = |kind: ParcelKind, missing: bool| {
            if self.shares.weight(kind) > 0 && missing {
                Err(MixError::PlanLacks(kind))
            } else {
                Ok(())
            }
        };
        lacks(ParcelKind::Exact, self.exact_keys.is_empty())?;
        lacks(ParcelKind::Prefix, self.prefix_keys.is_empty())?;
        lacks(ParcelKind::MultiRead, self.conflicting_pairs.is_empty())?;
        Ok(())
    }

    /// A copy of this mix drawing from its own seed (one per connection).
    pub fn fork(&self, seed: u64) -> ParcelMix {
        let mut fork = self.clone();
        fork.rng = fastrand::Rng::with_seed(seed);
        fork.previous = None;
        fork
    }

    fn pick_kind(&mut self) -> ParcelKind {
        let mut ticket = self.rng.u64(..self.shares.total());
        for kind in ParcelKind::ALL {
            let weight = u64::from(self.shares.weight(kind));
            if ticket < weight {
                if kind == ParcelKind::Duplicate && self.previous.is_none() {
                    return ParcelKind::NoRead;
                }
                return kind;
            }
            ticket -= weight;
        }
        ParcelKind::NoRead
    }

    fn unknown_barcode(&mut self) -> Vec<u8> {
        // "LG" plus 13 digits: shaped like a tracking number, never pre-advised in
        // sortd's example plans (they use other prefixes).
        let mut code = b"LG".to_vec();
        for _ in 0..13 {
            code.push(b'0' + self.rng.u8(..10));
        }
        code
    }

    /// The next parcel and its kind. A duplicate repeats the previous parcel exactly.
    pub fn draw(&mut self) -> (ParcelKind, ParcelDraft) {
        let kind = self.pick_kind();
        if kind == ParcelKind::Duplicate {
            if let Some(previous) = &self.previous {
                return (kind, previous.clone());
            }
        }
        let mut draft = ParcelDraft {
            barcodes: Vec::new(),
            destination: None,
            weight_g: self.rng.u32(50..30_000),
            dimensions_mm: [
                self.rng.u16(50..800),
                self.rng.u16(50..600),
                self.rng.u16(20..500),
            ],
        };
        match kind {
            ParcelKind::Exact => {
                let index = self.rng.usize(..self.exact_keys.len().max(1));
                draft.barcodes.extend(self.exact_keys.get(index).cloned());
            }
            ParcelKind::Prefix => {
                draft.barcodes.push(self.unknown_barcode());
                let index = self.rng.usize(..self.prefix_keys.len().max(1));
                let mut code = self.prefix_keys.get(index).cloned().unwrap_or_default();
                // Extend towards a full 12-digit administrative code.
                while code.len() < 12 && code.iter().all(u8::is_ascii_digit) {
                    code.push(b'0' + self.rng.u8(..10));
                }
                draft.destination = Some(code);
            }
            ParcelKind::Unknown => {
                draft.barcodes.push(self.unknown_barcode());
                let mut code = b"ZZ".to_vec();
                for _ in 0..8 {
                    code.push(b'0' + self.rng.u8(..10));
                }
                draft.destination = Some(code);
            }
            ParcelKind::NoRead | ParcelKind::Duplicate => {}
            ParcelKind::MultiRead => {
                let pair = self.rng.usize(..self.conflicting_pairs.len().max(1));
                if let Some((first, second)) = self.conflicting_pairs.get(pair).copied() {
                    draft.barcodes.extend(self.exact_keys.get(first).cloned());
                    draft.barcodes.extend(self.exact_keys.get(second).cloned());
                }
            }
        }
        self.previous = Some(draft.clone());
        (kind, draft)
    }
}

/// Reservoir sample of at most `max` items; returns keys and their chutes.
fn sample(
    entries: impl Iterator<Item = (Vec<u8>, Vec<u16>)>,
    max: usize,
    rng: &mut fastrand::Rng,
) -> (Vec<Vec<u8>>, Vec<Vec<u16>>) {
    let mut keys = Vec::new();
    let mut chutes = Vec::new();
    for (seen, (key, chute_list)) in entries.enumerate() {
        if keys.len() < max {
            keys.push(key);
            chutes.push(chute_list);
        } else {
            let slot = rng.usize(..=seen);
            if slot < max {
                if let (Some(k), Some(c)) = (keys.get_mut(slot), chutes.get_mut(slot)) {
                    *k = key;
                    *c = chute_list;
                }
            }
        }
    }
    (keys, chutes)
}
