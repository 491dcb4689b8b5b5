//! The hot path: exact and longest-prefix lookup in a compiled plan, and the resolution
//! rule that turns a parcel's barcodes and destination code into chutes.
//!
//! Nothing here allocates or panics, whatever the plan bytes or the input: a malformed
//! bucket or record reads as "no entry". The iterators over all entries (for diff,
//! stats and load generation) live here too because they share the record decoding.
//!
//! Resolution rule: every non-empty barcode with an `exact` entry contributes that
//! entry's chute list; if two contributed lists differ (same chutes in the same order
//! counts as agreeing), the parcel is `MultiRead`; if they all agree, `Exact` with the
//! first matching barcode's rule. If no barcode matched, the longest `prefix` of the
//! destination code decides (`Prefix`). Otherwise `NoRule` if anything was read, and
//! `NoRead` if there were no non-empty barcodes and no non-empty destination.

use super::format::{self, BUCKET_BYTES, KEY_BYTES_MAX, RECORD_FIXED_BYTES};
use super::open::Plan;
use super::types::{Chutes, DefaultKind, Outcome, Resolution, RuleKind, RuleRef};
use crate::util::prefetch::prefetch_read;

/// One barcode's exact answer inside [`Plan::resolve_by`].
#[derive(Clone, Copy, Debug)]
pub(super) struct ExactAnswer {
    /// The chutes the entry gives.
    pub(super) chutes: Chutes,
    /// The plan rule, or `None` for a pre-advice entry that names chutes.
    pub(super) rule: Option<RuleRef>,
    /// The pre-advice batch sequence of the entry, 0 for a plan entry.
    pub(super) preadvice_seq: u64,
}

/// A view of one hash table: its buckets and its records.
#[derive(Clone, Copy, Debug)]
pub(super) struct TableView<'a> {
    pub(super) buckets: &'a [u8],
    pub(super) records: &'a [u8],
    bucket_count: u64,
    probe_limit: u32,
}

/// One decoded record.
#[derive(Clone, Copy, Debug)]
pub(super) struct Record<'a> {
    pub(super) offset: u32,
    pub(super) line: u32,
    pub(super) chute_set: u32,
    pub(super) key: &'a [u8],
}

impl<'a> TableView<'a> {
    /// The record at `offset`, or `None` when it does not fit or its key length is bad.
    #[inline]
    pub(super) fn record_at(&self, offset: u32) -> Option<Record<'a>> {
        let start = offset as usize;
        let fixed = self
            .records
            .get(start..start.checked_add(RECORD_FIXED_BYTES)?)?;
        let line = u32::from_le_bytes(fixed.get(0..4)?.try_into().ok()?);
        let chute_set = u32::from_le_bytes(fixed.get(4..8)?.try_into().ok()?);
        let key_len = usize::from(*fixed.get(8)?);
        if key_len == 0 || key_len > KEY_BYTES_MAX {
            return None;
        }
        let key_start = start + RECORD_FIXED_BYTES;
        let key = self.records.get(key_start..key_start + key_len)?;
        Some(Record {
            offset,
            line,
            chute_set,
            key,
        })
    }

    /// Prefetches `key`'s home bucket: the first memory `find` will touch.
    #[inline]
    fn prefetch_bucket(&self, key: &[u8]) {
        self.prefetch_bucket_hashed(format::key_hash(key));
    }

    /// [`TableView::prefetch_bucket`] with the key's hash already computed.
    #[inline]
    pub(super) fn prefetch_bucket_hashed(&self, hash: u64) {
        if self.bucket_count == 0 {
            return;
        }
        let position = format::home_bucket(hash, self.bucket_count) as usize;
        if let Some(byte) = self.buckets.get(position * BUCKET_BYTES) {
            prefetch_read(byte);
        }
    }

    /// Prefetches the record at `offset` (a bucket's reference).
    #[inline]
    pub(super) fn prefetch_record_at(&self, offset: u32) {
        if let Some(byte) = self.records.get(offset as usize) {
            prefetch_read(byte);
        }
    }

    /// Walks `key`'s buckets as `find` does and prefetches the record of the first
    /// bucket whose tag matches (the one `find` compares first, and almost always the
    /// key's); returns whether one did. Reads the buckets, so call it once
    /// [`TableView::prefetch_bucket`] had time to bring them in.
    #[inline]
    fn prefetch_record(&self, key: &[u8]) -> bool {
        if self.bucket_count == 0 {
            return false;
        }
        let hash = format::key_hash(key);
        let tag = format::bucket_tag(hash);
        let bucket_count = self.bucket_count as usize;
        let mut position = format::home_bucket(hash, self.bucket_count) as usize;
        for _ in 0..self.probe_limit {
            let Some(bucket) = format::read_u64(self.buckets, position * BUCKET_BYTES) else {
                return false;
            };
            let bucket_tag = bucket as u32;
            if bucket_tag == 0 {
                return false;
            }
            if bucket_tag == tag {
                if let Some(byte) = self.records.get((bucket >> 32) as usize) {
                    prefetch_read(byte);
                }
                return true;
            }
            position += 1;
            if position == bucket_count {
                position = 0;
            }
        }
        false
    }

    /// Find `key`: linear probing from its home bucket, at most `probe_limit` buckets,
    /// stopping at the first empty bucket.
    #[inline]
    pub(super) fn find(&self, key: &[u8]) -> Option<Record<'a>> {
        self.find_hashed(key, format::key_hash(key))
    }

    /// [`TableView::find`] with `hash = format::key_hash(key)` already computed.
    #[inline]
    pub(super) fn find_hashed(&self, key: &[u8], hash: u64) -> Option<Record<'a>> {
        if self.bucket_count == 0 {
            return None;
        }
        let tag = format::bucket_tag(hash);
        let bucket_count = self.bucket_count as usize;
        let mut position = format::home_bucket(hash, self.bucket_count) as usize;
        for _ in 0..self.probe_limit {
            let bucket = format::read_u64(self.buckets, position * BUCKET_BYTES)?;
            let bucket_tag = bucket as u32;
            if bucket_tag == 0 {
                return None;
            }
            if bucket_tag == tag {
                if let Some(record) = self.record_at((bucket >> 32) as u32) {
                    if record.key == key {
                        return Some(record);
                    }
                }
            }
            position += 1;
            if position == bucket_count {
                position = 0;
            }
        }
        None
    }
}

impl Plan {
    /// The table of `kind`.
    #[inline]
    pub(super) fn table(&self, kind: RuleKind) -> TableView<'_> {
        let (buckets, records, bucket_count, probe_limit) = match kind {
            RuleKind::Exact => (
                self.layout.exact_buckets,
                self.layout.exact_records,
                self.header.exact_bucket_count,
                self.header.exact_probe_max,
            ),
            RuleKind::Prefix => (
                self.layout.prefix_buckets,
                self.layout.prefix_records,
                self.header.prefix_bucket_count,
                self.header.prefix_probe_max,
            ),
        };
        TableView {
            buckets: self.section(buckets),
            records: self.section(records),
            bucket_count,
            probe_limit,
        }
    }

    /// The chutes and rule of an `exact` record (found through the joint index).
    #[inline]
    pub(super) fn exact_entry(&self, record: Record<'_>) -> Option<(Chutes, RuleRef)> {
        self.entry(RuleKind::Exact, record)
    }

    #[inline]
    fn entry(&self, kind: RuleKind, record: Record<'_>) -> Option<(Chutes, RuleRef)> {
        let chutes = self.chute_set(record.chute_set)?;
        Some((
            chutes,
            RuleRef {
                kind,
                line: record.line,
                record_offset: record.offset,
            },
        ))
    }

    /// The `exact` entry for a barcode, if any.
    #[inline]
    pub fn exact(&self, barcode: &[u8]) -> Option<(Chutes, RuleRef)> {
        if barcode.is_empty() || barcode.len() > KEY_BYTES_MAX {
            return None;
        }
        let record = self.table(RuleKind::Exact).find(barcode)?;
        self.entry(RuleKind::Exact, record)
    }

    /// [`Plan::exact`] with `hash = format::key_hash(barcode)` already computed (the
    /// pre-advice overlay hashes once for its filter and for the plan).
    #[inline]
    pub(super) fn exact_hashed(&self, barcode: &[u8], hash: u64) -> Option<(Chutes, RuleRef)> {
        if barcode.is_empty() || barcode.len() > KEY_BYTES_MAX {
            return None;
        }
        let record = self.table(RuleKind::Exact).find_hashed(barcode, hash)?;
        self.entry(RuleKind::Exact, record)
    }

    /// The `prefix` entry with exactly this key, if any.
    #[inline]
    pub fn prefix(&self, key: &[u8]) -> Option<(Chutes, RuleRef)> {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return None;
        }
        let record = self.table(RuleKind::Prefix).find(key)?;
        self.entry(RuleKind::Prefix, record)
    }

    /// The longest `prefix` entry that is a prefix of `code`: one probe per prefix
    /// length present in the plan, longest first, skipping lengths longer than `code`.
    #[inline]
    pub fn longest_prefix(&self, code: &[u8]) -> Option<(Chutes, RuleRef)> {
        let table = self.table(RuleKind::Prefix);
        for prefix in self.prefix_probes(code) {
            if let Some(record) = table.find(prefix) {
                if let Some(entry) = self.entry(RuleKind::Prefix, record) {
                    return Some(entry);
                }
            }
        }
        None
    }

    fn default_resolution(&self, outcome: Outcome, which: DefaultKind) -> Resolution {
        // Defaults are checked non-zero at open, so the clamp never changes a chute.
        let chutes = Chutes::single_clamped(self.default_chute(which));
        Resolution {
            outcome,
            chutes,
            rule: None,
        }
    }

    /// The prefix lengths of this plan that fit in `code`, longest first: the probes
    /// [`Plan::longest_prefix`] makes, in its order.
    #[inline]
    fn prefix_probes<'c>(&self, code: &'c [u8]) -> impl Iterator<Item = &'c [u8]> + use<'_, 'c> {
        self.prefix_lengths_desc
            .get(..self.prefix_length_count)
            .unwrap_or(&[])
            .iter()
            .filter_map(move |len| code.get(..usize::from(*len)))
    }

    /// Prefetches the table buckets that [`Plan::resolve`] of the same parcel may read
    /// first: each barcode's home bucket and the destination's home bucket at every
    /// prefix length. A caller with several parcels in hand warms them all, then
    /// [`Plan::warm_records`] them all, then resolves them, so their cache and TLB
    /// misses overlap instead of queueing. Changes nothing: prefetches are hints.
    #[inline]
    pub fn warm(&self, barcodes: &[&[u8]], destination: Option<&[u8]>) {
        let exact = self.table(RuleKind::Exact);
        for barcode in barcodes.iter().filter(|code| !code.is_empty()) {
            exact.prefetch_bucket(barcode);
        }
        if let Some(code) = destination {
            let prefix = self.table(RuleKind::Prefix);
            for probe in self.prefix_probes(code) {
                prefix.prefetch_bucket(probe);
            }
        }
    }

    /// The second step of warming (after [`Plan::warm`]): reads the buckets and
    /// prefetches the records [`Plan::resolve`] will compare: each barcode's, and the
    /// destination's longest matching prefix's.
    #[inline]
    pub fn warm_records(&self, barcodes: &[&[u8]], destination: Option<&[u8]>) {
        let exact = self.table(RuleKind::Exact);
        for barcode in barcodes.iter().filter(|code| !code.is_empty()) {
            exact.prefetch_record(barcode);
        }
        if let Some(code) = destination {
            let prefix = self.table(RuleKind::Prefix);
            for probe in self.prefix_probes(code) {
                if prefix.prefetch_record(probe) {
                    break;
                }
            }
        }
    }

    /// Resolve a parcel (see the module docs for the rule). Never allocates or panics.
    pub fn resolve(&self, barcodes: &[&[u8]], destination: Option<&[u8]>) -> Resolution {
        self.resolve_by(barcodes, destination, |barcode| {
            self.exact(barcode).map(|(chutes, rule)| ExactAnswer {
                chutes,
                rule: Some(rule),
                preadvice_seq: 0,
            })
        })
        .0
    }

    /// The resolution rule with the exact lookup supplied by the caller (the plan's own
    /// table, or the pre-advice overlay over it). Returns the resolution and the
    /// pre-advice sequence of the first exact answer that decided it (0 = none).
    #[inline]
    pub(super) fn resolve_by<F>(
        &self,
        barcodes: &[&[u8]],
        destination: Option<&[u8]>,
        mut exact: F,
    ) -> (Resolution, u64)
    where
        F: FnMut(&[u8]) -> Option<ExactAnswer>,
    {
        let mut anything_read = false;
        let mut matched: Option<ExactAnswer> = None;
        for barcode in barcodes {
            if barcode.is_empty() {
                continue;
            }
            anything_read = true;
            if let Some(answer) = exact(barcode) {
                match matched {
                    None => matched = Some(answer),
                    Some(first) if first.chutes == answer.chutes => {}
                    Some(_) => {
                        let resolution =
                            self.default_resolution(Outcome::MultiRead, DefaultKind::MultiRead);
                        return (resolution, 0);
                    }
                }
            }
        }
        if let Some(answer) = matched {
            let resolution = Resolution {
                outcome: Outcome::Exact,
                chutes: answer.chutes,
                rule: answer.rule,
            };
            return (resolution, answer.preadvice_seq);
        }
        if let Some(code) = destination.filter(|code| !code.is_empty()) {
            anything_read = true;
            if let Some((chutes, rule)) = self.longest_prefix(code) {
                let resolution = Resolution {
                    outcome: Outcome::Prefix,
                    chutes,
                    rule: Some(rule),
                };
                return (resolution, 0);
            }
        }
        let resolution = if anything_read {
            self.default_resolution(Outcome::NoRule, DefaultKind::NoRule)
        } else {
            self.default_resolution(Outcome::NoRead, DefaultKind::NoRead)
        };
        (resolution, 0)
    }

    /// The key of the rule `rule` points at (empty if it does not point at a record).
    pub fn rule_key(&self, rule: &RuleRef) -> &[u8] {
        self.table(rule.kind)
            .record_at(rule.record_offset)
            .map_or(&[][..], |record| record.key)
    }

    /// Every `exact` entry in CSV order.
    pub fn exact_entries(&self) -> impl Iterator<Item = (&[u8], Chutes)> + '_ {
        self.entries(RuleKind::Exact)
            .map(|(key, chutes, _)| (key, chutes))
    }

    /// Every `prefix` entry in CSV order.
    pub fn prefix_entries(&self) -> impl Iterator<Item = (&[u8], Chutes)> + '_ {
        self.entries(RuleKind::Prefix)
            .map(|(key, chutes, _)| (key, chutes))
    }

    /// Every entry of one table in CSV order, with its rule. Stops at the first malformed
    /// record ([`Plan::verify`] reports those).
    pub fn entries(&self, kind: RuleKind) -> impl Iterator<Item = (&[u8], Chutes, RuleRef)> + '_ {
        let table = self.table(kind);
        let mut offset = 0usize;
        std::iter::from_fn(move || {
            let record = table.record_at(u32::try_from(offset).ok()?)?;
            offset += RECORD_FIXED_BYTES + record.key.len();
            let (chutes, rule) = self.entry(kind, record)?;
            Some((record.key, chutes, rule))
        })
    }
}
