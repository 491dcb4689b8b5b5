//! Turning a decoded scan into a decision: resolve against the plan and its pre-advice
//! overlay, then steer around chutes the PLC reported full or disabled. A scanner that
//! flags a multi-read (it saw codes it could not reconcile) sends the parcel to the
//! multi-read chute whatever it read: the code it reports may belong to the parcel next
//! to it.
//!
//! Pure and allocation-free; it neither reads the clock nor touches a socket. Deadlines
//! and duplicates are judged later, where the decision leaves for the PLC.

use std::time::Instant;

use crate::decision::{ChuteNumber, Reason, Rule};
use crate::plan::{DefaultKind, Outcome, PlanView, Resolution};
use crate::plc::{ChuteState, ChuteStateTable};
use crate::wire::ScanFlags;

/// One parcel's decision as it travels from an ingress worker to the PLC thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The parcel or tray id (assigned by sortd when the scanner gave none).
    pub parcel_id: u64,
    /// The scanner that reported it.
    pub scanner_id: u32,
    /// Where it goes.
    pub chute: ChuteNumber,
    /// Why.
    pub reason: Reason,
    /// Which kind of rule answered (for the sort event).
    pub rule: Rule,
    /// The version of the plan that decided it.
    pub plan_version: u32,
    /// The sequence of the pre-advice batch whose entry decided it; 0 = none.
    pub preadvice_seq: u64,
    /// That plan's chute for late parcels, used if the decision misses its deadline.
    pub late_chute: ChuteNumber,
    /// When sortd received the frame.
    pub received_at: Instant,
}

/// What [`decide`] chose for one parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// Where it goes.
    pub chute: ChuteNumber,
    /// Why.
    pub reason: Reason,
    /// Which kind of rule answered: exact, prefix, a default chute, or pre-advice.
    pub rule: Rule,
    /// The pre-advice batch whose entry resolved it; 0 = the plan alone.
    pub preadvice_seq: u64,
}

/// Resolves a parcel through `view` (plan plus pre-advice overlay) and picks the first
/// usable chute in plan order.
///
/// Sorted parcels whose primary and alternates are all full or disabled go to the plan's
/// `no_rule` exception chute with reason `chute_unavailable`. A scan with the scanner's
/// multi-read flag goes to the plan's `multi_read` chute with reason `multi_read`, as a
/// multi-read sortd finds itself does.
#[inline]
pub fn decide(
    view: &PlanView,
    chute_states: &ChuteStateTable,
    flags: ScanFlags,
    barcodes: &[&[u8]],
    destination: Option<&[u8]>,
) -> Decided {
    if flags.contains(ScanFlags::MULTI_READ) {
        return Decided {
            chute: view.plan.default_chute(DefaultKind::MultiRead),
            reason: Reason::MultiRead,
            rule: Rule::Default,
            preadvice_seq: 0,
        };
    }
    let resolved = view.resolve(barcodes, destination);
    let (chute, reason) = steer(view, chute_states, resolved.resolution);
    let rule = match (reason, resolved.resolution.outcome) {
        (Reason::SortedPrimary | Reason::SortedAlternate, _) if resolved.preadvice_seq != 0 => {
            Rule::PreAdvice
        }
        (Reason::SortedPrimary | Reason::SortedAlternate, Outcome::Exact) => Rule::Exact,
        (Reason::SortedPrimary | Reason::SortedAlternate, _) => Rule::Prefix,
        _ => Rule::Default,
    };
    Decided {
        chute,
        reason,
        rule,
        preadvice_seq: resolved.preadvice_seq,
    }
}

fn steer(
    view: &PlanView,
    chute_states: &ChuteStateTable,
    resolution: Resolution,
) -> (ChuteNumber, Reason) {
    let plan = &view.plan;
    match resolution.outcome {
        Outcome::Exact | Outcome::Prefix => {
            for (index, chute) in resolution.chutes.as_slice().iter().enumerate() {
                if chute_states.get(*chute) == ChuteState::Available {
                    let reason = if index == 0 {
                        Reason::SortedPrimary
                    } else {
                        Reason::SortedAlternate
                    };
                    return (*chute, reason);
                }
            }
            (
                plan.default_chute(DefaultKind::NoRule),
                Reason::ChuteUnavailable,
            )
        }
        Outcome::NoRead => (resolution.chutes.primary(), Reason::NoRead),
        Outcome::NoRule => (resolution.chutes.primary(), Reason::NoRule),
        Outcome::MultiRead => (resolution.chutes.primary(), Reason::MultiRead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, PlanHandle, compile_str};

    const CSV: &str = "kind,key,chutes
prefix,3301,12|13
exact,YT0000000000001,7
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
";

    #[test]
    fn the_scanners_multi_read_flag_goes_to_the_multi_read_chute() {
        let plan = PlanHandle::new(
            Plan::from_bytes(compile_str("plan.csv", CSV).expect("compiles")).expect("opens"),
        );
        let view = plan.view();
        let chutes = ChuteStateTable::new();
        let code: &[u8] = b"YT0000000000001";
        let partial = ScanFlags::PARTIAL_READ;
        let multi = ScanFlags::MULTI_READ;
        type Case<'a> = (
            ScanFlags,
            &'a [&'a [u8]],
            Option<&'a [u8]>,
            (ChuteNumber, Reason, Rule),
        );
        let cases: &[Case] = &[
            (
                ScanFlags::EMPTY,
                &[code],
                None,
                (7, Reason::SortedPrimary, Rule::Exact),
            ),
            (
                partial,
                &[code],
                None,
                (7, Reason::SortedPrimary, Rule::Exact),
            ),
            (
                multi,
                &[code],
                None,
                (997, Reason::MultiRead, Rule::Default),
            ),
            (multi, &[], None, (997, Reason::MultiRead, Rule::Default)),
            (
                multi,
                &[],
                Some(b"330105"),
                (997, Reason::MultiRead, Rule::Default),
            ),
            (
                ScanFlags::EMPTY,
                &[],
                None,
                (998, Reason::NoRead, Rule::Default),
            ),
            (
                ScanFlags::EMPTY,
                &[],
                Some(b"330105"),
                (12, Reason::SortedPrimary, Rule::Prefix),
            ),
        ];
        for (flags, barcodes, destination, expected) in cases {
            assert_eq!(
                {
                    let decided = decide(&view, &chutes, *flags, barcodes, *destination);
                    (decided.chute, decided.reason, decided.rule)
                },
                *expected,
                "{flags:?} {barcodes:?} {destination:?}"
            );
        }
    }

    #[test]
    fn the_rule_says_what_answered_exact_prefix_pre_advice_or_a_default() {
        use crate::plan::{Chutes, OverlaySnapshot, PreAdviceEntry, PreAdviceValue};
        let plan = std::sync::Arc::new(
            Plan::from_bytes(compile_str("plan.csv", CSV).expect("compiles")).expect("opens"),
        );
        let entries = [
            PreAdviceEntry {
                barcode: b"PA1".to_vec().into_boxed_slice(),
                value: PreAdviceValue::Chutes(Chutes::single(40).expect("a chute")),
            },
            PreAdviceEntry {
                barcode: b"PA2".to_vec().into_boxed_slice(),
                value: PreAdviceValue::Destination(b"330199".to_vec().into_boxed_slice()),
            },
        ];
        let (overlay, _) = OverlaySnapshot::empty().with_batch(&entries, 5, 100);
        let view = PlanView { plan, overlay };
        let chutes = ChuteStateTable::new();
        type Case<'a> = (
            &'a [&'a [u8]],
            Option<&'a [u8]>,
            (ChuteNumber, Reason, Rule, u64),
        );
        let cases: &[Case] = &[
            (
                &[b"YT0000000000001"],
                None,
                (7, Reason::SortedPrimary, Rule::Exact, 0),
            ),
            (
                &[b"LG1"],
                Some(b"330105"),
                (12, Reason::SortedPrimary, Rule::Prefix, 0),
            ),
            (
                &[b"PA1"],
                None,
                (40, Reason::SortedPrimary, Rule::PreAdvice, 5),
            ),
            (
                &[b"PA2"],
                None,
                (12, Reason::SortedPrimary, Rule::PreAdvice, 5),
            ),
            (
                &[b"LG1"],
                Some(b"9999"),
                (999, Reason::NoRule, Rule::Default, 0),
            ),
        ];
        for (barcodes, destination, expected) in cases {
            let decided = decide(&view, &chutes, ScanFlags::EMPTY, barcodes, *destination);
            assert_eq!(
                (
                    decided.chute,
                    decided.reason,
                    decided.rule,
                    decided.preadvice_seq
                ),
                *expected,
                "{barcodes:?} {destination:?}"
            );
        }
        // Every chute of the exact entry full: the no_rule default chute answers.
        chutes.set(7, ChuteState::Full);
        let decided = decide(
            &view,
            &chutes,
            ScanFlags::EMPTY,
            &[b"YT0000000000001"],
            None,
        );
        assert_eq!(
            (decided.chute, decided.reason, decided.rule),
            (999, Reason::ChuteUnavailable, Rule::Default)
        );
    }
}
