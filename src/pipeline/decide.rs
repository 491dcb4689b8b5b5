//! Turning a decoded scan into a decision: resolve against the plan, then steer around
//! chutes the PLC reported full or disabled.
//!
//! Pure and allocation-free; it neither reads the clock nor touches a socket. Deadlines
//! and duplicates are judged later, where the decision leaves for the PLC.

use std::time::Instant;

use crate::decision::{ChuteNumber, Reason};
use crate::plan::{DefaultKind, Outcome, Plan};
use crate::plc::{ChuteState, ChuteStateTable};

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
    /// The version of the plan that decided it.
    pub plan_version: u32,
    /// That plan's chute for late parcels, used if the decision misses its deadline.
    pub late_chute: ChuteNumber,
    /// When sortd received the frame.
    pub received_at: Instant,
}

/// Resolves a parcel and picks the first usable chute in plan order.
///
/// Sorted parcels whose primary and alternates are all full or disabled go to the plan's
/// `no_rule` exception chute with reason `chute_unavailable`.
pub fn decide(
    plan: &Plan,
    chute_states: &ChuteStateTable,
    barcodes: &[&[u8]],
    destination: Option<&[u8]>,
) -> (ChuteNumber, Reason) {
    let resolution = plan.resolve(barcodes, destination);
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
