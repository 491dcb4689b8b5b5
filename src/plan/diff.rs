//! Comparing two plans key by key: which keys changed chutes, which were added and which
//! removed, plus changed defaults. Operators run it (`sortd plan diff`) before a wave.
//!
//! Counts are always complete; the listed examples are bounded by the caller's limit so
//! a diff of two 50 M-key plans stays readable. Cost: one lookup per key of each plan.

use super::open::Plan;
use super::types::{Chutes, DefaultKind, RuleKind};
use crate::decision::ChuteNumber;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the new plan.
    Added,
    /// Only in the old plan.
    Removed,
    /// In both, with different chute lists.
    Changed,
}

impl Change {
    /// `added`, `removed` or `changed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// One listed difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffSample {
    /// The table.
    pub kind: RuleKind,
    /// What happened.
    pub change: Change,
    /// The key.
    pub key: Vec<u8>,
    /// Chutes in the old plan.
    pub old: Option<Chutes>,
    /// Chutes in the new plan.
    pub new: Option<Chutes>,
}

/// Counts for one table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// Keys only in the new plan.
    pub added: u64,
    /// Keys only in the old plan.
    pub removed: u64,
    /// Keys in both with different chutes.
    pub changed: u64,
    /// Keys in both with the same chutes.
    pub unchanged: u64,
}

/// The difference between two plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// Exact-table counts.
    pub exact: TableDiff,
    /// Prefix-table counts.
    pub prefix: TableDiff,
    /// Defaults whose chute changed: (which, old, new).
    pub defaults: Vec<(DefaultKind, ChuteNumber, ChuteNumber)>,
    /// Up to the requested number of examples, in the new plan's order then removals.
    pub samples: Vec<DiffSample>,
}

impl PlanDiff {
    /// True when nothing differs (names and versions aside).
    pub fn is_empty(&self) -> bool {
        let quiet =
            |table: &TableDiff| table.added == 0 && table.removed == 0 && table.changed == 0;
        quiet(&self.exact) && quiet(&self.prefix) && self.defaults.is_empty()
    }
}

/// Compare `old` and `new`, listing at most `samples_max` examples.
pub fn diff(old: &Plan, new: &Plan, samples_max: usize) -> PlanDiff {
    let mut result = PlanDiff::default();
    for which in DefaultKind::ALL {
        let (before, after) = (old.default_chute(which), new.default_chute(which));
        if before != after {
            result.defaults.push((which, before, after));
        }
    }
    for kind in [RuleKind::Exact, RuleKind::Prefix] {
        let find = |plan: &Plan, key: &[u8]| match kind {
            RuleKind::Exact => plan.exact(key),
            RuleKind::Prefix => plan.prefix(key),
        };
        let mut counts = TableDiff::default();
        let sample = |samples: &mut Vec<DiffSample>, change, key: &[u8], old, new| {
            if samples.len() < samples_max {
                samples.push(DiffSample {
                    kind,
                    change,
                    key: key.to_vec(),
                    old,
                    new,
                });
            }
        };
        for (key, chutes, _) in new.entries(kind) {
            match find(old, key) {
                None => {
                    counts.added += 1;
                    sample(&mut result.samples, Change::Added, key, None, Some(chutes));
                }
                Some((before, _)) if before != chutes => {
                    counts.changed += 1;
                    sample(
                        &mut result.samples,
                        Change::Changed,
                        key,
                        Some(before),
                        Some(chutes),
                    );
                }
                Some(_) => counts.unchanged += 1,
            }
        }
        for (key, chutes, _) in old.entries(kind) {
            if find(new, key).is_none() {
                counts.removed += 1;
                sample(
                    &mut result.samples,
                    Change::Removed,
                    key,
                    Some(chutes),
                    None,
                );
            }
        }
        match kind {
            RuleKind::Exact => result.exact = counts,
            RuleKind::Prefix => result.prefix = counts,
        }
    }
    result
}
