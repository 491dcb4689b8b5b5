//! The small value types of the plan layer: chute lists, defaults, rule references and
//! the result of resolving a parcel, and the key, name and line limits that the CSV, the
//! file format and their errors share.
//!
//! All of them are `Copy` and fixed-size so the hot path never allocates. Parsing CSV
//! and reading files live elsewhere.

use crate::decision::ChuteNumber;

/// The most chutes one rule can list: the primary and up to three alternates.
pub const CHUTES_PER_RULE_MAX: usize = 4;
/// Longest key (barcode or prefix) in bytes.
pub const KEY_BYTES_MAX: usize = 128;
/// Longest plan name in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest CSV line accepted.
pub const LINE_BYTES_MAX: usize = 4096;

/// One to four distinct, non-zero chute numbers, primary first, then alternates in order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chutes {
    /// The chutes; slots at `len..` are zero.
    slots: [ChuteNumber; CHUTES_PER_RULE_MAX],
    /// How many slots are used, 1..=4.
    len: u8,
}

impl Chutes {
    /// A list of chutes, or `None` unless it has 1 to 4 distinct non-zero entries.
    pub fn new(chutes: &[ChuteNumber]) -> Option<Chutes> {
        if chutes.is_empty() || chutes.len() > CHUTES_PER_RULE_MAX {
            return None;
        }
        let mut slots = [0; CHUTES_PER_RULE_MAX];
        for (index, &chute) in chutes.iter().enumerate() {
            if chute == 0 || slots.contains(&chute) {
                return None;
            }
            *slots.get_mut(index)? = chute;
        }
        Some(Chutes {
            slots,
            len: chutes.len() as u8,
        })
    }

    /// A single chute (no alternates). Chute 0 is invalid and gives `None`.
    pub fn single(chute: ChuteNumber) -> Option<Chutes> {
        Chutes::new(&[chute])
    }

    /// A single chute; 0 (invalid) becomes 1. For values already checked non-zero.
    pub(crate) const fn single_clamped(chute: ChuteNumber) -> Chutes {
        let chute = if chute == 0 { 1 } else { chute };
        Chutes {
            slots: [chute, 0, 0, 0],
            len: 1,
        }
    }

    /// The chutes, primary first.
    pub fn as_slice(&self) -> &[ChuteNumber] {
        self.slots
            .get(..usize::from(self.len))
            .unwrap_or(&self.slots[..1])
    }

    /// The primary chute.
    pub fn primary(&self) -> ChuteNumber {
        self.slots[0]
    }

    /// The four slots as stored on disk: used slots then zeros.
    pub fn slots(&self) -> [ChuteNumber; CHUTES_PER_RULE_MAX] {
        self.slots
    }

    /// Decode four on-disk slots; `None` unless they are a valid list followed by zeros.
    pub fn from_slots(slots: [ChuteNumber; CHUTES_PER_RULE_MAX]) -> Option<Chutes> {
        let len = slots.iter().take_while(|&&chute| chute != 0).count();
        if slots.get(len..)?.iter().any(|&chute| chute != 0) {
            return None;
        }
        Chutes::new(slots.get(..len)?)
    }
}

impl std::fmt::Debug for Chutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chutes({self})")
    }
}

impl std::fmt::Display for Chutes {
    /// `7` or `12|13`, the CSV spelling.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, chute) in self.as_slice().iter().enumerate() {
            if index > 0 {
                f.write_str("|")?;
            }
            write!(f, "{chute}")?;
        }
        Ok(())
    }
}

/// The four fallback chutes every plan names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefaultKind {
    /// No barcode and no destination code was read.
    NoRead,
    /// Something was read but no rule matched it.
    NoRule,
    /// Barcodes resolved to different chute lists.
    MultiRead,
    /// The decision came too late (used by the daemon, not by [`super::Plan::resolve`]).
    Late,
}

impl DefaultKind {
    /// Every default, in header order.
    pub const ALL: [DefaultKind; 4] = [
        DefaultKind::NoRead,
        DefaultKind::NoRule,
        DefaultKind::MultiRead,
        DefaultKind::Late,
    ];

    /// The CSV spelling: `no_read`, `no_rule`, `multi_read`, `late`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DefaultKind::NoRead => "no_read",
            DefaultKind::NoRule => "no_rule",
            DefaultKind::MultiRead => "multi_read",
            DefaultKind::Late => "late",
        }
    }

    /// Parse the CSV spelling.
    pub fn from_name(name: &str) -> Option<DefaultKind> {
        DefaultKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Position in the header's default array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Which table a rule lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// An `exact` barcode entry.
    Exact,
    /// A `prefix` destination-code entry.
    Prefix,
}

impl RuleKind {
    /// The CSV spelling: `exact` or `prefix`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleKind::Exact => "exact",
            RuleKind::Prefix => "prefix",
        }
    }
}

/// Points at the rule that decided a parcel, to explain the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// The table the rule is in.
    pub kind: RuleKind,
    /// The CSV line the rule came from.
    pub line: u32,
    /// Byte offset of the rule's record inside its table's record section.
    pub record_offset: u32,
}

/// How a parcel was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A barcode matched an `exact` entry (all matching barcodes agreed).
    Exact,
    /// No barcode matched; the longest `prefix` of the destination code matched.
    Prefix,
    /// No barcode and no destination code: the `no_read` default.
    NoRead,
    /// Something was read but nothing matched: the `no_rule` default.
    NoRule,
    /// Barcodes matched entries with different chute lists: the `multi_read` default.
    MultiRead,
}

impl Outcome {
    /// The snake_case name used in output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Exact => "exact",
            Outcome::Prefix => "prefix",
            Outcome::NoRead => "no_read",
            Outcome::NoRule => "no_rule",
            Outcome::MultiRead => "multi_read",
        }
    }
}

/// The answer for one parcel: outcome, chutes and the rule that gave them.
#[derive(Clone, Copy, Debug)]
pub struct Resolution {
    /// How the parcel was resolved.
    pub outcome: Outcome,
    /// The chutes to use; for `NoRead`, `NoRule` and `MultiRead` the default's one chute.
    pub chutes: Chutes,
    /// The matching rule for `Exact` and `Prefix`; `None` for the defaults.
    pub rule: Option<RuleRef>,
}

/// Sizes and shape of a compiled plan, for `sortd plan stats` and capacity checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanStats {
    /// Total file size in bytes.
    pub file_bytes: u64,
    /// Number of `exact` keys.
    pub exact_keys: u64,
    /// Buckets in the exact table.
    pub exact_buckets: u64,
    /// Longest probe sequence in the exact table (buckets visited for the worst key).
    pub exact_probe_max: u32,
    /// Bytes of the exact records section (keys plus per-record fields).
    pub exact_record_bytes: u64,
    /// Number of `prefix` keys.
    pub prefix_keys: u64,
    /// Buckets in the prefix table.
    pub prefix_buckets: u64,
    /// Longest probe sequence in the prefix table.
    pub prefix_probe_max: u32,
    /// Bytes of the prefix records section.
    pub prefix_record_bytes: u64,
    /// Bit `n - 1` set when some prefix is `n` bytes long.
    pub prefix_lengths: u128,
    /// Distinct chute lists in the plan.
    pub chute_sets: u32,
}

impl PlanStats {
    /// The distinct prefix lengths present, shortest first.
    pub fn prefix_lengths_present(&self) -> Vec<u8> {
        (1..=128u8)
            .filter(|&len| self.prefix_lengths & (1u128 << (len - 1)) != 0)
            .collect()
    }
}
