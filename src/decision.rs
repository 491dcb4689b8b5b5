//! The vocabulary of a sort decision shared by every layer: chute numbers, the reason a
//! parcel went where it went, and the kind of plan rule that answered.
//!
//! This module only names things; resolving a parcel is the plan's job and sending the
//! decision is the PLC link's.

/// A chute (outlet) number on the sorter, 1 to 65535. Zero is never a valid chute.
pub type ChuteNumber = u16;

/// Why a parcel got the chute it got. Every parcel gets exactly one.
///
/// The numeric values are part of the PLC link protocol (PROTOCOL.md) and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reason {
    /// Sorted to the primary chute of the matching rule.
    SortedPrimary = 1,
    /// Sorted to an alternate chute because the primary was full or disabled.
    SortedAlternate = 2,
    /// The scanner read no barcode and sent no destination code.
    NoRead = 3,
    /// Several barcodes resolved to different chutes.
    MultiRead = 4,
    /// Nothing in the plan matched the parcel.
    NoRule = 5,
    /// The primary and every alternate chute were full or disabled.
    ChuteUnavailable = 6,
    /// The decision could not be made before the parcel's deadline.
    Late = 7,
    /// The same parcel id from the same scanner was already decided inside the window.
    Duplicate = 8,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 8] = [
        Reason::SortedPrimary,
        Reason::SortedAlternate,
        Reason::NoRead,
        Reason::MultiRead,
        Reason::NoRule,
        Reason::ChuteUnavailable,
        Reason::Late,
        Reason::Duplicate,
    ];

    /// The wire code of this reason.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// This reason's position in [`Reason::ALL`]: the slot of a table with one entry per
    /// reason (`[T; Reason::ALL.len()]`), always in range.
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// The reason for a wire code, or `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<Reason> {
        match code {
            1 => Some(Reason::SortedPrimary),
            2 => Some(Reason::SortedAlternate),
            3 => Some(Reason::NoRead),
            4 => Some(Reason::MultiRead),
            5 => Some(Reason::NoRule),
            6 => Some(Reason::ChuteUnavailable),
            7 => Some(Reason::Late),
            8 => Some(Reason::Duplicate),
            _ => None,
        }
    }

    /// The snake_case name used in logs, metrics and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::SortedPrimary => "sorted_primary",
            Reason::SortedAlternate => "sorted_alternate",
            Reason::NoRead => "no_read",
            Reason::MultiRead => "multi_read",
            Reason::NoRule => "no_rule",
            Reason::ChuteUnavailable => "chute_unavailable",
            Reason::Late => "late",
            Reason::Duplicate => "duplicate",
        }
    }
}

/// Which kind of plan rule answered for a parcel: the `rule` of its sort event.
///
/// The numeric values are part of the sort-event record (PROTOCOL.md) and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Rule {
    /// No rule was consulted.
    None = 0,
    /// An `exact` barcode entry of the plan.
    Exact = 1,
    /// A `prefix` destination-code entry of the plan.
    Prefix = 2,
    /// One of the plan's default chutes (no read, no rule, multi read, unavailable, late).
    Default = 3,
    /// A pre-advice entry (its batch is the event's `pre_advice_seq`), naming chutes or a
    /// destination code resolved through the plan's prefixes.
    PreAdvice = 4,
}

impl Rule {
    /// Every rule kind, in code order.
    pub const ALL: [Rule; 5] = [
        Rule::None,
        Rule::Exact,
        Rule::Prefix,
        Rule::Default,
        Rule::PreAdvice,
    ];

    /// The record code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The rule kind for a record code.
    pub const fn from_code(code: u8) -> Option<Rule> {
        match code {
            0 => Some(Rule::None),
            1 => Some(Rule::Exact),
            2 => Some(Rule::Prefix),
            3 => Some(Rule::Default),
            4 => Some(Rule::PreAdvice),
            _ => None,
        }
    }

    /// snake_case name for JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::None => "none",
            Rule::Exact => "exact",
            Rule::Prefix => "prefix",
            Rule::Default => "default",
            Rule::PreAdvice => "pre_advice",
        }
    }
}

const _: () = {
    let mut index = 0;
    while index < Reason::ALL.len() {
        assert!(Reason::ALL[index].index() == index);
        index += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
            assert!(names.insert(reason.as_str()));
        }
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(9), None);
    }

    #[test]
    fn rule_codes_round_trip_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for rule in Rule::ALL {
            assert_eq!(Rule::from_code(rule.code()), Some(rule));
            assert!(names.insert(rule.as_str()));
        }
        assert_eq!(Rule::from_code(5), None);
    }
}
