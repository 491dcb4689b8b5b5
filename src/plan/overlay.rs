//! The pre-advice overlay: exact entries (tracking number -> chutes, destination code or
//! removal) held in memory on top of a compiled plan, and the resolution that consults
//! it before the plan's own exact table.
//!
//! An [`OverlaySnapshot`] is immutable: a large `base` layer with a blocked bloom filter
//! plus a small `delta` layer that every update copies (at most [`DELTA_ENTRIES_MAX`]
//! entries, then the two are merged into a new base). Readers hold a snapshot through
//! the same kind of `arc-swap` handle the plan uses
//! ([`super::preadvice::PreAdvice::view`]) and never lock. Both layers are keyed by the
//! plan's own key hash ([`format::key_hash`]), so a lookup hashes a barcode once for the
//! delta, the base and the plan. Once the background merge has given the base layer its
//! joint index with the plan ([`OverlaySnapshot::indexed`], `joint.rs`), a barcode
//! costs the delta probe (cache-resident) and one probe sequence that finds the overlay's
//! entry or the plan's; until then, the filter's word and then the plan's own lookup.
//!
//! Resolution order (PLAN.md, "Pre-advice"): for each barcode, its pre-advice entry if
//! there is one (a removal hides the plan's exact entry; a destination code resolves
//! through the plan's prefixes, and one that matches no prefix contributes nothing),
//! otherwise the plan's exact entry; then the plan's usual rule (agreement, longest
//! prefix of the scanned code, defaults). This module does no IO and keeps no limits of
//! its own beyond the ones its caller passes; logging and publishing are
//! [`super::preadvice`]'s.

use std::sync::Arc;

use hashbrown::HashTable;

use super::format::{self, KEY_BYTES_MAX};
use super::joint::{JointHit, JointIndex, OVERLAY_REFERENCE};
use super::lookup::ExactAnswer;
use super::open::Plan;
use super::types::{Chutes, Resolution, RuleKind, RuleRef};
use crate::util::huge_pages::HugePageBuffer;
use crate::util::prefetch::prefetch_read;

/// Entries the delta layer may hold before a merge into a new base layer is due
/// ([`OverlaySnapshot::needs_merge`]). Small enough that copying it on every update is
/// cheap and probing it stays in cache.
pub const DELTA_ENTRIES_MAX: usize = 8192;

/// The delta size at which an update merges at once instead of waiting for the
/// background merge ([`OverlaySnapshot::must_merge`]): the backstop if nobody runs it.
pub const DELTA_ENTRIES_HARD_MAX: usize = 8 * DELTA_ENTRIES_MAX;

/// Bloom filter bits per base entry (under 1 % false positives for a one-word blocked
/// filter with four bits per key).
const BLOOM_BITS_PER_ENTRY: usize = 16;

/// What a pre-advice entry says about a tracking number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PreAdviceValue {
    /// Sort to these chutes (primary first).
    Chutes(Chutes),
    /// Sort as if the destination code were this (1 to 128 bytes), through the plan's
    /// prefixes.
    Destination(Box<[u8]>),
    /// Forget any pre-advice for this tracking number, and hide the plan's exact entry.
    Remove,
}

/// One add or remove: a tracking number and what it now means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PreAdviceEntry {
    /// The tracking number (barcode), 1 to 128 bytes.
    pub barcode: Box<[u8]>,
    /// Chutes, destination code, or removal.
    pub value: PreAdviceValue,
}

/// An overlay entry as a reader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayValue<'a> {
    /// Explicit chutes.
    Chutes(Chutes),
    /// A destination code to resolve through the plan's prefixes.
    Destination(&'a [u8]),
    /// A removal (tombstone).
    Removed,
}

/// How a parcel was resolved with the overlay: the plan's [`Resolution`] plus what
/// answered, for the sort event.
#[derive(Clone, Copy, Debug)]
pub struct OverlayResolution {
    /// Outcome, chutes and plan rule, exactly as [`Plan::resolve`] gives them. A
    /// pre-advice entry with explicit chutes answers `Exact` with `rule: None`; one with
    /// a destination code answers `Exact` with the prefix rule that resolved it.
    pub resolution: Resolution,
    /// Version of the plan consulted.
    pub plan_version: u32,
    /// Sequence of the pre-advice batch whose entry decided the parcel; 0 = none.
    pub preadvice_seq: u64,
}

impl<'a> From<&'a PreAdviceValue> for OverlayValue<'a> {
    fn from(value: &'a PreAdviceValue) -> OverlayValue<'a> {
        match value {
            PreAdviceValue::Chutes(chutes) => OverlayValue::Chutes(*chutes),
            PreAdviceValue::Destination(code) => OverlayValue::Destination(code),
            PreAdviceValue::Remove => OverlayValue::Removed,
        }
    }
}

impl From<OverlayValue<'_>> for PreAdviceValue {
    fn from(value: OverlayValue<'_>) -> PreAdviceValue {
        match value {
            OverlayValue::Chutes(chutes) => PreAdviceValue::Chutes(chutes),
            OverlayValue::Destination(code) => PreAdviceValue::Destination(code.into()),
            OverlayValue::Removed => PreAdviceValue::Remove,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum StoredValue {
    Chutes(Chutes),
    Destination { start: usize, len: u8 },
    Removed,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    key_start: usize,
    key_len: u8,
    seq: u64,
    value: StoredValue,
}

/// One layer: entries in arrival order (superseded ones stay in `slots` but leave the
/// table), keys and destination codes in one byte arena.
#[derive(Clone, Debug, Default)]
struct Layer {
    table: HashTable<u32>,
    slots: Vec<Slot>,
    bytes: Vec<u8>,
    bloom: Option<Bloom>,
}

impl Layer {
    fn key(&self, slot: &Slot) -> &[u8] {
        self.bytes
            .get(slot.key_start..slot.key_start + usize::from(slot.key_len))
            .unwrap_or(&[])
    }

    fn value(&self, slot: &Slot) -> OverlayValue<'_> {
        match slot.value {
            StoredValue::Chutes(chutes) => OverlayValue::Chutes(chutes),
            StoredValue::Destination { start, len } => OverlayValue::Destination(
                self.bytes
                    .get(start..start + usize::from(len))
                    .unwrap_or(&[]),
            ),
            StoredValue::Removed => OverlayValue::Removed,
        }
    }

    #[inline]
    fn find(&self, key: &[u8], hash: u64) -> Option<&Slot> {
        if let Some(bloom) = &self.bloom {
            if !bloom.may_contain(hash) {
                return None;
            }
        }
        self.find_in_table(key, hash)
    }

    /// [`Layer::find`] without the filter: the hash table probe. Kept out of line: on
    /// the hot path most lookups stop at an empty delta, the filter or the joint index
    /// before it, and the callers stay small enough to overlap their cache misses.
    #[inline(never)]
    fn find_in_table(&self, key: &[u8], hash: u64) -> Option<&Slot> {
        let slots = &self.slots;
        let bytes = &self.bytes;
        let index = self.table.find(hash, |&index| {
            slots.get(index as usize).is_some_and(|slot| {
                slot.hash == hash
                    && bytes.get(slot.key_start..slot.key_start + usize::from(slot.key_len))
                        == Some(key)
            })
        })?;
        self.slots.get(*index as usize)
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    /// Insert or replace. Returns true when the key was new to this layer.
    fn upsert(&mut self, key: &[u8], hash: u64, value: OverlayValue<'_>, seq: u64) -> bool {
        let key_start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let value = match value {
            OverlayValue::Chutes(chutes) => StoredValue::Chutes(chutes),
            OverlayValue::Destination(code) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(code);
                StoredValue::Destination {
                    start,
                    len: code.len() as u8,
                }
            }
            OverlayValue::Removed => StoredValue::Removed,
        };
        let new_index = self.slots.len() as u32;
        self.slots.push(Slot {
            hash,
            key_start,
            key_len: key.len() as u8,
            seq,
            value,
        });
        let slots = &self.slots;
        let bytes = &self.bytes;
        let same_key = |index: &u32| {
            slots.get(*index as usize).is_some_and(|slot| {
                slot.hash == hash
                    && bytes.get(slot.key_start..slot.key_start + usize::from(slot.key_len))
                        == Some(key)
            })
        };
        match self.table.find_mut(hash, same_key) {
            Some(index) => {
                *index = new_index;
                false
            }
            None => {
                let slots = &self.slots;
                self.table.insert_unique(hash, new_index, |&index| {
                    slots.get(index as usize).map_or(0, |slot| slot.hash)
                });
                true
            }
        }
    }

    /// Live entries (the ones the table points at), in arrival order.
    fn live(&self) -> impl Iterator<Item = (&[u8], u64, OverlayValue<'_>, u64)> + '_ {
        let mut indexes: Vec<u32> = self.table.iter().copied().collect();
        indexes.sort_unstable();
        indexes.into_iter().filter_map(move |index| {
            let slot = self.slots.get(index as usize)?;
            Some((self.key(slot), slot.hash, self.value(slot), slot.seq))
        })
    }
}

/// A blocked bloom filter: one 64-bit word per query, four bits set per key within
/// it (about 16 bits per entry, under 1 % false positives). A query is one load and a
/// mask test: few instructions, so independent lookups still overlap their cache
/// misses. The words live in huge pages where the filter is large enough
/// ([`HugePageBuffer`]): a filter of 1 M entries is then one TLB entry instead of
/// hundreds. The filter answers when the base layer has no joint index for the plan.
#[derive(Clone, Debug)]
struct Bloom {
    words: HugePageBuffer,
    word_count: usize,
}

impl Bloom {
    fn with_entries(entries: usize) -> Bloom {
        let bits = entries.saturating_mul(BLOOM_BITS_PER_ENTRY);
        let words = HugePageBuffer::zeroed(bits.div_ceil(64).max(1) * 8);
        let word_count = words.len() / 8;
        Bloom { words, word_count }
    }

    /// Byte offset of the key's word (from the high half of the hash; the plan's home
    /// bucket uses the low half) and its four-bit mask (from the low half).
    #[inline]
    fn position(&self, hash: u64) -> (usize, u64) {
        let offset = ((((hash >> 32) * self.word_count as u64) >> 32) as usize) * 8;
        let low = hash as u32;
        let mask = (1u64 << (low & 63))
            | (1u64 << ((low >> 6) & 63))
            | (1u64 << ((low >> 12) & 63))
            | (1u64 << ((low >> 18) & 63));
        (offset, mask)
    }

    fn insert(&mut self, hash: u64) {
        let (offset, mask) = self.position(hash);
        if let Some(word) = self.words.read_u64(offset) {
            self.words.write_u64(offset, word | mask);
        }
    }

    #[inline]
    fn may_contain(&self, hash: u64) -> bool {
        let (offset, mask) = self.position(hash);
        self.words
            .read_u64(offset)
            .is_none_or(|word| word & mask == mask)
    }

    #[inline]
    fn prefetch(&self, hash: u64) {
        if let Some(byte) = self.words.bytes().get(self.position(hash).0) {
            prefetch_read(byte);
        }
    }
}

/// The base layer's joint index with a plan ([`JointIndex`]), or why there is none.
#[derive(Clone, Debug, Default)]
enum BaseIndex {
    /// Not built yet for this base layer (the filter path answers meanwhile).
    #[default]
    Unbuilt,
    /// Built for the plan it [`serves`](JointIndex::serves).
    Joint(Arc<JointIndex>),
    /// Not built for the plan with this checksum: too many entries.
    Declined {
        /// The plan's checksum.
        plan_checksum: u64,
    },
}

/// An immutable overlay: what every reader holding it sees. Cheap to clone (a few
/// `Arc`s).
#[derive(Clone, Debug, Default)]
pub struct OverlaySnapshot {
    base: Arc<Layer>,
    delta: Arc<Layer>,
    /// The base layer's joint index with the plan, if built (goes with `base`).
    index: BaseIndex,
    /// Distinct keys across both layers (removals included).
    entries: usize,
    /// Highest batch sequence applied (0 = none).
    seq_max: u64,
}

/// What [`OverlaySnapshot::with_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Entries stored (new keys and replacements).
    pub stored: u64,
    /// New keys refused because the overlay held its maximum of entries.
    pub refused_full: u64,
}

impl OverlaySnapshot {
    /// An empty overlay.
    pub fn empty() -> OverlaySnapshot {
        OverlaySnapshot::default()
    }

    /// Distinct tracking numbers in the overlay, removals included.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when the overlay holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Highest batch sequence applied to this snapshot (0 = none).
    pub fn seq_max(&self) -> u64 {
        self.seq_max
    }

    /// The entry for `barcode` with its batch sequence, if any.
    pub fn get(&self, barcode: &[u8]) -> Option<(OverlayValue<'_>, u64)> {
        self.get_hashed(barcode, format::key_hash(barcode))
    }

    #[inline(always)]
    fn get_hashed(&self, barcode: &[u8], hash: u64) -> Option<(OverlayValue<'_>, u64)> {
        if let Some(entry) = self.delta_entry(barcode, hash) {
            return Some(entry);
        }
        let slot = self.base.find(barcode, hash)?;
        Some((self.base.value(slot), slot.seq))
    }

    /// The delta layer's entry for `barcode`, which answers before the base layer.
    #[inline]
    fn delta_entry(&self, barcode: &[u8], hash: u64) -> Option<(OverlayValue<'_>, u64)> {
        if self.delta.table.is_empty() {
            return None;
        }
        let slot = self.delta.find_in_table(barcode, hash)?;
        Some((self.delta.value(slot), slot.seq))
    }

    /// Every entry (key, value, batch sequence); delta entries replace base ones.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], OverlayValue<'_>, u64)> + '_ {
        let from_base = self.base.live().filter(|(key, hash, _, _)| {
            self.delta.table.is_empty() || self.delta.find(key, *hash).is_none()
        });
        from_base
            .chain(self.delta.live())
            .map(|(key, _, value, seq)| (key, value, seq))
    }

    /// A new snapshot with `batch` applied at sequence `seq`: later entries for the same
    /// tracking number replace earlier ones; new keys beyond `entries_max` are refused
    /// and counted. Entries must be valid (checked by the parser or
    /// [`validate_entry`]); invalid ones are skipped. Cost: a copy of the delta layer
    /// (at most [`DELTA_ENTRIES_MAX`] entries) plus the batch; see
    /// [`OverlaySnapshot::needs_merge`].
    pub fn with_batch(
        &self,
        batch: &[PreAdviceEntry],
        seq: u64,
        entries_max: usize,
    ) -> (OverlaySnapshot, BatchCounts) {
        let mut delta = Layer::clone(&self.delta);
        let mut entries = self.entries;
        let mut counts = BatchCounts::default();
        for entry in batch {
            if validate_entry(entry).is_err() {
                continue;
            }
            let hash = format::key_hash(&entry.barcode);
            let known = delta.find(&entry.barcode, hash).is_some()
                || self.base.find(&entry.barcode, hash).is_some();
            if !known && entries >= entries_max {
                counts.refused_full += 1;
                continue;
            }
            let value = OverlayValue::from(&entry.value);
            delta.upsert(&entry.barcode, hash, value, seq);
            if !known {
                entries += 1;
            }
            counts.stored += 1;
        }
        let next = OverlaySnapshot {
            base: Arc::clone(&self.base),
            delta: Arc::new(delta),
            index: self.index.clone(),
            entries,
            seq_max: self.seq_max.max(seq),
        };
        (next, counts)
    }

    /// True when the delta layer has outgrown [`DELTA_ENTRIES_MAX`] (replaced entries
    /// count too: they stay in the layer's arena until a merge): publish this snapshot
    /// first (so the batch takes effect now), then [`OverlaySnapshot::merged`].
    pub fn needs_merge(&self) -> bool {
        self.delta.slots.len() > DELTA_ENTRIES_MAX
    }

    /// True when the delta layer has outgrown [`DELTA_ENTRIES_HARD_MAX`].
    pub fn must_merge(&self) -> bool {
        self.delta.slots.len() > DELTA_ENTRIES_HARD_MAX
    }

    /// True when the base layer holds entries but no joint index for `plan` was built
    /// or declined yet: [`OverlaySnapshot::indexed`] is due (on a background thread: it
    /// is linear in plan plus overlay).
    pub fn needs_index(&self, plan: &Plan) -> bool {
        if self.base.len() == 0 {
            return false;
        }
        match &self.index {
            BaseIndex::Unbuilt => true,
            BaseIndex::Joint(joint) => !joint.serves(plan),
            BaseIndex::Declined { plan_checksum } => *plan_checksum != plan.checksum(),
        }
    }

    /// This snapshot with its base layer's joint index for `plan` (see `joint.rs`),
    /// or with the index declined when plan and overlay hold more than
    /// `JOINT_ENTRIES_MAX` (8 M) entries. Resolution gives the same answers
    /// either way; with the index a barcode costs one probe instead of a filter check and
    /// the plan's own probe.
    pub fn indexed(&self, plan: &Plan) -> OverlaySnapshot {
        let base = &self.base;
        let live = base.table.iter().filter_map(|&index| {
            let slot = base.slots.get(index as usize)?;
            Some((index, base.key(slot), slot.hash))
        });
        let index = match JointIndex::build(plan, base.len(), live) {
            Some(joint) => BaseIndex::Joint(Arc::new(joint)),
            None => BaseIndex::Declined {
                plan_checksum: plan.checksum(),
            },
        };
        OverlaySnapshot {
            index,
            ..self.clone()
        }
    }

    /// Bytes taken by the base layer's joint index (0 without one).
    pub fn index_bytes(&self) -> usize {
        match &self.index {
            BaseIndex::Joint(joint) => joint.bytes(),
            _ => 0,
        }
    }

    /// The base layer's joint index, when it serves `plan`.
    #[inline]
    fn joint_for(&self, plan: &Plan) -> Option<&JointIndex> {
        match &self.index {
            BaseIndex::Joint(joint) if joint.serves(plan) => Some(joint),
            _ => None,
        }
    }

    /// The answer of the base layer's slot `index` (from a joint index probe).
    #[inline]
    fn base_slot(&self, index: u32) -> Option<(OverlayValue<'_>, u64)> {
        let slot = self.base.slots.get(index as usize)?;
        Some((self.base.value(slot), slot.seq))
    }

    /// The key of the base layer's slot `index`.
    #[inline]
    fn base_key(&self, index: u32) -> Option<&[u8]> {
        self.base
            .slots
            .get(index as usize)
            .map(|slot| self.base.key(slot))
    }

    /// `merged` (made by [`OverlaySnapshot::merged`] from `from`, an earlier version of
    /// this snapshot) with the entries applied to this snapshot since `from` put on top,
    /// as its delta. `None` when this snapshot does not descend from `from` by applies
    /// alone (a merge or compaction replaced the base meanwhile). Lets a merge run
    /// without holding the writer lock.
    pub fn rebase(
        &self,
        from: &OverlaySnapshot,
        merged: &OverlaySnapshot,
    ) -> Option<OverlaySnapshot> {
        if !Arc::ptr_eq(&self.base, &from.base) {
            return None;
        }
        let since = self.delta.slots.get(from.delta.slots.len()..)?;
        let mut delta = Layer::clone(&merged.delta);
        let mut entries = merged.entries;
        for slot in since {
            let key = self.delta.key(slot);
            let known =
                delta.find(key, slot.hash).is_some() || merged.base.find(key, slot.hash).is_some();
            delta.upsert(key, slot.hash, self.delta.value(slot), slot.seq);
            if !known {
                entries += 1;
            }
        }
        Some(OverlaySnapshot {
            base: Arc::clone(&merged.base),
            delta: Arc::new(delta),
            index: merged.index.clone(),
            entries,
            seq_max: self.seq_max,
        })
    }

    /// The same entries in one base layer with a fresh filter and an empty delta. Linear
    /// in the overlay (about 0.1 s per million entries, see benches/plan.rs).
    pub fn merged(&self) -> OverlaySnapshot {
        OverlaySnapshot::from_entries(self.entries(), self.seq_max)
    }

    /// Only the entries with a batch sequence above `seq` (what is left after a
    /// compaction that folded everything through `seq` into the plan).
    pub fn after(&self, seq: u64) -> OverlaySnapshot {
        OverlaySnapshot::from_entries(
            self.entries().filter(|(_, _, entry_seq)| *entry_seq > seq),
            self.seq_max,
        )
    }

    fn from_entries<'a>(
        entries: impl Iterator<Item = (&'a [u8], OverlayValue<'a>, u64)>,
        seq_max: u64,
    ) -> OverlaySnapshot {
        let mut base = Layer::default();
        for (key, value, seq) in entries {
            base.upsert(key, format::key_hash(key), value, seq);
        }
        let mut bloom = Bloom::with_entries(base.len());
        for slot in &base.slots {
            bloom.insert(slot.hash);
        }
        base.bloom = Some(bloom);
        let count = base.len();
        OverlaySnapshot {
            base: Arc::new(base),
            delta: Arc::new(Layer::default()),
            index: BaseIndex::Unbuilt,
            entries: count,
            seq_max,
        }
    }
}

/// Builds a snapshot from many batches in one pass (the log replay at start): one
/// mutable layer, merged once by [`OverlayReplay::finish`], so replay is linear in the
/// log rather than a copy per batch.
#[derive(Debug)]
pub struct OverlayReplay {
    layer: Layer,
    entries_max: usize,
    seq_max: u64,
    /// New keys refused because the overlay was full.
    pub refused_full: u64,
}

impl OverlayReplay {
    /// An empty replay bounded like [`OverlaySnapshot::with_batch`].
    pub fn new(entries_max: usize) -> OverlayReplay {
        OverlayReplay {
            layer: Layer::default(),
            entries_max,
            seq_max: 0,
            refused_full: 0,
        }
    }

    /// Apply one batch at `seq` (same rules as [`OverlaySnapshot::with_batch`]).
    pub fn add_batch(&mut self, batch: &[PreAdviceEntry], seq: u64) {
        for entry in batch {
            if validate_entry(entry).is_err() {
                continue;
            }
            let hash = format::key_hash(&entry.barcode);
            let known = self.layer.find(&entry.barcode, hash).is_some();
            if !known && self.layer.len() >= self.entries_max {
                self.refused_full += 1;
                continue;
            }
            let value = OverlayValue::from(&entry.value);
            self.layer.upsert(&entry.barcode, hash, value, seq);
        }
        self.seq_max = self.seq_max.max(seq);
    }

    /// The snapshot: one base layer with its filter.
    pub fn finish(self) -> OverlaySnapshot {
        OverlaySnapshot::from_entries(
            self.layer
                .live()
                .map(|(key, _, value, seq)| (key, value, seq)),
            self.seq_max,
        )
    }
}

/// Why an entry is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// The tracking number is empty or longer than 128 bytes.
    BarcodeLength {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The destination code is empty or longer than 128 bytes.
    DestinationLength {
        /// Its length in bytes.
        bytes: usize,
    },
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryError::BarcodeLength { bytes } => write!(
                f,
                "barcode is {bytes} bytes (expected 1 to {KEY_BYTES_MAX})"
            ),
            EntryError::DestinationLength { bytes } => write!(
                f,
                "destination is {bytes} bytes (expected 1 to {KEY_BYTES_MAX})"
            ),
        }
    }
}

impl std::error::Error for EntryError {}

/// Check an entry's lengths (chutes are valid by construction).
pub fn validate_entry(entry: &PreAdviceEntry) -> Result<(), EntryError> {
    let bytes = entry.barcode.len();
    if bytes == 0 || bytes > KEY_BYTES_MAX {
        return Err(EntryError::BarcodeLength { bytes });
    }
    if let PreAdviceValue::Destination(code) = &entry.value {
        let bytes = code.len();
        if bytes == 0 || bytes > KEY_BYTES_MAX {
            return Err(EntryError::DestinationLength { bytes });
        }
    }
    Ok(())
}

/// One barcode's exact answer through the overlay, then the plan: the delta layer, then
/// the joint index when the base layer has one for `plan`, otherwise the base layer
/// (behind its filter) and the plan's own table.
#[inline]
fn exact_through(
    plan: &Plan,
    overlay: &OverlaySnapshot,
    joint: Option<&JointIndex>,
    barcode: &[u8],
) -> Option<ExactAnswer> {
    if barcode.len() > KEY_BYTES_MAX {
        return None;
    }
    let hash = format::key_hash(barcode);
    let found = match joint {
        Some(joint) => overlay.get_joint(plan, joint, barcode, hash),
        None => match overlay.get_hashed(barcode, hash) {
            Some(entry) => Found::Overlay(entry),
            None => plan
                .exact_hashed(barcode, hash)
                .map_or(Found::Nothing, Found::Plan),
        },
    };
    match found {
        Found::Nothing => None,
        Found::Plan((chutes, rule)) => Some(ExactAnswer {
            chutes,
            rule: Some(rule),
            preadvice_seq: 0,
        }),
        Found::Overlay((OverlayValue::Chutes(chutes), seq)) => Some(ExactAnswer {
            chutes,
            rule: None,
            preadvice_seq: seq,
        }),
        Found::Overlay((OverlayValue::Destination(code), seq)) => {
            plan.longest_prefix(code).map(|(chutes, rule)| ExactAnswer {
                chutes,
                rule: Some(rule),
                preadvice_seq: seq,
            })
        }
        Found::Overlay((OverlayValue::Removed, _)) => None,
    }
}

/// Where a barcode's exact entry was found.
enum Found<'a> {
    Nothing,
    Plan((Chutes, RuleRef)),
    Overlay((OverlayValue<'a>, u64)),
}

impl OverlaySnapshot {
    /// The delta layer, then the joint index (which covers the base layer and the plan).
    #[inline]
    fn get_joint(&self, plan: &Plan, joint: &JointIndex, barcode: &[u8], hash: u64) -> Found<'_> {
        if let Some(entry) = self.delta_entry(barcode, hash) {
            return Found::Overlay(entry);
        }
        match joint.find(plan, |index| self.base_key(index), barcode, hash) {
            None => Found::Nothing,
            Some(JointHit::Plan(record)) => {
                plan.exact_entry(record).map_or(Found::Nothing, Found::Plan)
            }
            Some(JointHit::Overlay(index)) => {
                self.base_slot(index).map_or(Found::Nothing, Found::Overlay)
            }
        }
    }
}

/// Resolve a parcel with the pre-advice overlay over `plan` (the order is in the module
/// docs and PLAN.md). Never allocates or panics. This is the hook for the decide path:
/// call it where `Plan::resolve` is called today, with the snapshot loaded once per
/// batch beside the plan ([`super::preadvice::PlanView`]).
#[inline]
pub fn resolve_with_overlay(
    plan: &Plan,
    overlay: &OverlaySnapshot,
    barcodes: &[&[u8]],
    destination: Option<&[u8]>,
) -> OverlayResolution {
    let (resolution, preadvice_seq) = if overlay.is_empty() {
        (plan.resolve(barcodes, destination), 0)
    } else {
        let joint = overlay.joint_for(plan);
        plan.resolve_by(barcodes, destination, |barcode| {
            exact_through(plan, overlay, joint, barcode)
        })
    };
    OverlayResolution {
        resolution,
        plan_version: plan.version(),
        preadvice_seq,
    }
}

/// [`Plan::warm`] with the overlay: what [`resolve_with_overlay`] of the same parcel
/// reads first (the joint index's bucket, or the plan's bucket and the filter's word).
/// The hook beside `Plan::warm` in the ingress batch loop; prefetches only.
pub fn warm_with_overlay(
    plan: &Plan,
    overlay: &OverlaySnapshot,
    barcodes: &[&[u8]],
    destination: Option<&[u8]>,
) {
    if overlay.is_empty() {
        plan.warm(barcodes, destination);
        return;
    }
    let joint = overlay.joint_for(plan);
    let exact = plan.table(RuleKind::Exact);
    for barcode in barcodes.iter().filter(|code| !code.is_empty()) {
        let hash = format::key_hash(barcode);
        match (joint, &overlay.base.bloom) {
            (Some(joint), _) => joint.prefetch_bucket(hash),
            (None, bloom) => {
                exact.prefetch_bucket_hashed(hash);
                if let Some(bloom) = bloom {
                    bloom.prefetch(hash);
                }
            }
        }
    }
    plan.warm(&[], destination);
}

/// [`Plan::warm_records`] with the overlay: the second step of warming, after
/// [`warm_with_overlay`] of the whole window. With a joint index it reads the index's
/// buckets and prefetches the plan record or overlay slot each barcode's probe compares
/// first.
pub fn warm_records_with_overlay(
    plan: &Plan,
    overlay: &OverlaySnapshot,
    barcodes: &[&[u8]],
    destination: Option<&[u8]>,
) {
    let Some(joint) = overlay.joint_for(plan).filter(|_| !overlay.is_empty()) else {
        plan.warm_records(barcodes, destination);
        return;
    };
    let exact = plan.table(RuleKind::Exact);
    for barcode in barcodes.iter().filter(|code| !code.is_empty()) {
        let Some(reference) = joint.first_candidate(format::key_hash(barcode)) else {
            continue;
        };
        if reference & OVERLAY_REFERENCE == 0 {
            exact.prefetch_record_at(reference);
        } else if let Some(slot) = overlay
            .base
            .slots
            .get((reference & !OVERLAY_REFERENCE) as usize)
        {
            prefetch_read(slot);
        }
    }
    plan.warm_records(&[], destination);
}

/// The chutes an entry gives over `plan` when folded into it: `None` for a removal, and
/// for a destination code that matches no prefix (such an entry contributes nothing).
pub fn folded_chutes(plan: &Plan, value: OverlayValue<'_>) -> Option<Chutes> {
    match value {
        OverlayValue::Chutes(chutes) => Some(chutes),
        OverlayValue::Destination(code) => plan.longest_prefix(code).map(|(chutes, _)| chutes),
        OverlayValue::Removed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        for entries in [1usize, 1000, 100_000] {
            let mut bloom = Bloom::with_entries(entries);
            let hash = |index: u64| format::key_hash(&index.to_le_bytes());
            for index in 0..entries as u64 {
                bloom.insert(hash(index));
            }
            let copy = bloom.clone();
            assert!((0..entries as u64).all(|index| copy.may_contain(hash(index))));
            let probes = 100_000u64;
            let false_positives = (0..probes)
                .filter(|index| bloom.may_contain(hash((index + 1) << 40)))
                .count();
            assert!(false_positives < 1500, "{entries}: {false_positives}");
        }
    }
}
