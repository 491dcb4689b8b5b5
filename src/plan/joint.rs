//! The joint exact index: one open-addressing table over a plan's `exact` entries and the
//! pre-advice overlay's base layer, so that a barcode resolved through the overlay makes
//! one probe sequence, as through the plan alone, instead of a filter check and then the
//! plan's own probe.
//!
//! Buckets are 8 bytes, laid out like the plan's (PLAN.md, "Hash tables"): the tag (the
//! key hash's high 32 bits, never 0) and a reference, either a plan record offset or an
//! overlay slot index with [`OVERLAY_REFERENCE`] set. A tracking number in both points
//! at the overlay's slot: pre-advice answers first. The table is sized to a load of at
//! most one half and lives in huge pages ([`HugePageBuffer`]), so a probe costs one cache
//! miss and rarely a TLB miss.
//!
//! An index answers only for the plan it was built from ([`JointIndex::serves`]: same
//! checksum and exact table) and the base layer it was built with (the overlay keeps the
//! two together). The overlay's delta layer is consulted before it. This module does no
//! IO beyond reading the mapped plan, and keeps no state but the table; building is
//! linear in plan plus overlay (see benches/plan.rs for the time), and is skipped above
//! [`JOINT_ENTRIES_MAX`] entries (the filter path then answers).

use super::format::{self, BUCKET_BYTES};
use super::lookup::Record;
use super::open::Plan;
use super::types::RuleKind;
use crate::util::huge_pages::HugePageBuffer;
use crate::util::prefetch::prefetch_read;

/// Marks a bucket's reference as an overlay slot index rather than a plan record offset.
pub(super) const OVERLAY_REFERENCE: u32 = 1 << 31;

/// Plan plus overlay entries above which no joint index is built (16 M buckets, 128 MiB):
/// beyond it the memory is better spent elsewhere and the filter path answers.
pub const JOINT_ENTRIES_MAX: usize = 1 << 23;

/// What a probe found.
#[derive(Clone, Copy, Debug)]
pub(super) enum JointHit<'a> {
    /// The plan's exact record (no pre-advice for this tracking number).
    Plan(Record<'a>),
    /// The overlay base layer's slot with this index.
    Overlay(u32),
}

/// The joint table (see the module docs).
#[derive(Debug)]
pub(super) struct JointIndex {
    plan_checksum: u64,
    plan_exact_buckets: u64,
    buckets: HugePageBuffer,
    bucket_count: u64,
    probe_max: u32,
}

impl JointIndex {
    /// Builds the index of `plan`'s exact entries and `overlay` (slot index, key, hash
    /// of each of the `overlay_count` live base entries, keys distinct).
    /// `None` when the two hold more than [`JOINT_ENTRIES_MAX`] entries, or the plan's
    /// record offsets do not fit beside the overlay flag.
    pub(super) fn build<'k>(
        plan: &Plan,
        overlay_count: usize,
        overlay: impl Iterator<Item = (u32, &'k [u8], u64)>,
    ) -> Option<JointIndex> {
        JointIndex::build_within(plan, overlay_count, overlay, JOINT_ENTRIES_MAX)
    }

    /// [`JointIndex::build`] with the entry limit given.
    fn build_within<'k>(
        plan: &Plan,
        overlay_count: usize,
        overlay: impl Iterator<Item = (u32, &'k [u8], u64)>,
        entries_max: usize,
    ) -> Option<JointIndex> {
        let stats = plan.stats();
        let entries = usize::try_from(stats.exact_keys)
            .ok()?
            .checked_add(overlay_count)?;
        if entries > entries_max || stats.exact_record_bytes >= u64::from(OVERLAY_REFERENCE) {
            return None;
        }
        let bucket_count = (entries * 2).max(16) as u64;
        let mut index = JointIndex {
            plan_checksum: plan.checksum(),
            plan_exact_buckets: stats.exact_buckets,
            buckets: HugePageBuffer::zeroed(bucket_count as usize * BUCKET_BYTES),
            bucket_count,
            probe_max: 0,
        };
        // The plan's keys are distinct (the compiler refuses duplicates; were one there
        // twice, the first inserted comes first in its probe sequence and answers, as
        // in the plan's own table). So are the overlay's, so an overlay key can only
        // meet a plan record with the same key, whose bucket it takes over.
        for (key, _, rule) in plan.entries(RuleKind::Exact) {
            index.place(format::key_hash(key), rule.record_offset, |_| false);
        }
        let table = plan.table(RuleKind::Exact);
        for (slot, key, hash) in overlay {
            if slot & OVERLAY_REFERENCE != 0 {
                return None;
            }
            index.place(hash, slot | OVERLAY_REFERENCE, |reference| {
                reference & OVERLAY_REFERENCE == 0
                    && table
                        .record_at(reference)
                        .is_some_and(|record| record.key == key)
            });
        }
        Some(index)
    }

    /// True when this index was built from `plan` (same content and exact table).
    #[inline]
    pub(super) fn serves(&self, plan: &Plan) -> bool {
        self.plan_checksum == plan.checksum()
            && self.plan_exact_buckets == plan.header.exact_bucket_count
    }

    /// Bytes of memory the table takes.
    pub(super) fn bytes(&self) -> usize {
        self.buckets.len()
    }

    /// Puts `reference` in the first empty bucket of `hash`'s probe sequence, or in the
    /// bucket of the same key (`replaces` says which) when it comes first.
    fn place(&mut self, hash: u64, reference: u32, replaces: impl Fn(u32) -> bool) {
        let tag = format::bucket_tag(hash);
        let word = u64::from(tag) | (u64::from(reference) << 32);
        let mut position = format::home_bucket(hash, self.bucket_count) as usize;
        // The table is at most half full, so an empty bucket comes within bucket_count.
        for probes in 1..=self.bucket_count as u32 {
            let offset = position * BUCKET_BYTES;
            let Some(bucket) = self.buckets.read_u64(offset) else {
                return;
            };
            let bucket_tag = bucket as u32;
            if bucket_tag == 0 {
                self.buckets.write_u64(offset, word);
                self.probe_max = self.probe_max.max(probes);
                return;
            }
            if bucket_tag == tag && replaces((bucket >> 32) as u32) {
                self.buckets.write_u64(offset, word);
                return;
            }
            position += 1;
            if position as u64 == self.bucket_count {
                position = 0;
            }
        }
    }

    /// Prefetches `hash`'s home bucket: the first memory [`JointIndex::find`] touches.
    #[inline]
    pub(super) fn prefetch_bucket(&self, hash: u64) {
        let position = format::home_bucket(hash, self.bucket_count) as usize;
        if let Some(byte) = self.buckets.bytes().get(position * BUCKET_BYTES) {
            prefetch_read(byte);
        }
    }

    /// The reference of the first bucket whose tag matches `hash`'s, the one
    /// [`JointIndex::find`] compares first (and almost always the key's), for
    /// prefetching what it points at. Reads the buckets: call it once
    /// [`JointIndex::prefetch_bucket`] had time to bring them in.
    #[inline]
    pub(super) fn first_candidate(&self, hash: u64) -> Option<u32> {
        let tag = format::bucket_tag(hash);
        let mut position = format::home_bucket(hash, self.bucket_count) as usize;
        for _ in 0..self.probe_max {
            let bucket = self.buckets.read_u64(position * BUCKET_BYTES)?;
            match bucket as u32 {
                0 => return None,
                bucket_tag if bucket_tag == tag => return Some((bucket >> 32) as u32),
                _ => {}
            }
            position += 1;
            if position as u64 == self.bucket_count {
                position = 0;
            }
        }
        None
    }

    /// Finds `key` (whose hash is `hash`): the overlay slot if it is pre-advised,
    /// otherwise the plan's record, otherwise `None`. `plan` must be the plan the index
    /// [`serves`](JointIndex::serves); `overlay_key` reads an overlay slot's key.
    #[inline]
    pub(super) fn find<'p, 'o>(
        &self,
        plan: &'p Plan,
        overlay_key: impl Fn(u32) -> Option<&'o [u8]>,
        key: &[u8],
        hash: u64,
    ) -> Option<JointHit<'p>> {
        let tag = format::bucket_tag(hash);
        let table = plan.table(RuleKind::Exact);
        let mut position = format::home_bucket(hash, self.bucket_count) as usize;
        for _ in 0..self.probe_max {
            let bucket = self.buckets.read_u64(position * BUCKET_BYTES)?;
            let bucket_tag = bucket as u32;
            if bucket_tag == 0 {
                return None;
            }
            if bucket_tag == tag {
                let reference = (bucket >> 32) as u32;
                if reference & OVERLAY_REFERENCE == 0 {
                    if let Some(record) = table.record_at(reference) {
                        if record.key == key {
                            return Some(JointHit::Plan(record));
                        }
                    }
                } else {
                    let slot = reference & !OVERLAY_REFERENCE;
                    if overlay_key(slot) == Some(key) {
                        return Some(JointHit::Overlay(slot));
                    }
                }
            }
            position += 1;
            if position as u64 == self.bucket_count {
                position = 0;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(exact_keys: usize) -> Plan {
        let mut csv = String::from("kind,key,chutes\nprefix,33,101\n");
        for index in 0..exact_keys {
            csv.push_str(&format!("exact,P{index},{}\n", index % 50 + 1));
        }
        csv.push_str("default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\n");
        csv.push_str("default,late,996\n");
        let bytes = crate::plan::compile_str("joint.csv", &csv).expect("compiles");
        Plan::from_bytes(bytes).expect("opens")
    }

    /// Overlay entries `(slot, key, hash)`: `P0`, `P1` (on the plan's keys) and `N0..`.
    fn overlay_keys(new_keys: usize) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = vec![b"P0".to_vec(), b"P1".to_vec()];
        keys.extend((0..new_keys).map(|index| format!("N{index}").into_bytes()));
        keys
    }

    fn build(plan: &Plan, keys: &[Vec<u8>], entries_max: usize) -> Option<JointIndex> {
        let overlay = keys
            .iter()
            .enumerate()
            .map(|(slot, key)| (slot as u32, &key[..], format::key_hash(key)));
        JointIndex::build_within(plan, keys.len(), overlay, entries_max)
    }

    #[test]
    fn the_index_is_declined_past_its_limit_and_sized_half_full() {
        let plan = plan(100);
        let keys = overlay_keys(20);
        assert!(build(&plan, &keys, 121).is_none(), "122 entries over 121");
        let index = build(&plan, &keys, 122).expect("122 entries fit");
        assert_eq!(index.bytes(), 2 * 122 * BUCKET_BYTES);
        assert!(index.serves(&plan));
        assert!(!index.serves(&self::plan(101)));
    }

    #[test]
    fn a_probe_finds_the_overlay_over_the_plan_and_the_plan_otherwise() {
        let plan = plan(1_000);
        let keys = overlay_keys(1_000);
        let index = build(&plan, &keys, JOINT_ENTRIES_MAX).expect("builds");
        let overlay_key = |slot: u32| keys.get(slot as usize).map(|key| &key[..]);
        let find = |key: &[u8]| index.find(&plan, overlay_key, key, format::key_hash(key));
        for (slot, key) in keys.iter().enumerate() {
            assert!(
                matches!(find(key), Some(JointHit::Overlay(found)) if found == slot as u32),
                "{key:?}"
            );
            assert_eq!(
                index.first_candidate(format::key_hash(key)),
                Some(slot as u32 | OVERLAY_REFERENCE)
            );
        }
        for number in 2..1_000 {
            let key = format!("P{number}");
            let Some(JointHit::Plan(record)) = find(key.as_bytes()) else {
                panic!("{key} is the plan's");
            };
            assert_eq!(record.key, key.as_bytes());
            assert_eq!(
                index.first_candidate(format::key_hash(key.as_bytes())),
                Some(record.offset)
            );
        }
        for missing in ["P1000", "N1000", "X"] {
            assert!(find(missing.as_bytes()).is_none(), "{missing}");
        }
    }
}
