//! The last word on a decision before it leaves for the PLC: a duplicate parcel is not
//! actuated again, and a decision past its deadline goes to the late chute.
//!
//! Pure: time comes in as an argument. It runs on the PLC thread, the one place every
//! decision passes, so a scanner that reconnects to another worker is still de-duplicated.

use std::time::{Duration, Instant};

use crate::decision::{Reason, Rule};

use super::decide::Decision;
use super::dedup::{DuplicateWindow, ParcelKey};

/// Applies the duplicate window and the deadline.
#[derive(Debug)]
pub struct Finalizer {
    duplicates: DuplicateWindow,
    deadline: Duration,
}

impl Finalizer {
    /// A finalizer with this deadline (from receipt) and duplicate window.
    pub fn new(deadline: Duration, duplicate_window: Duration, entries_max: usize) -> Finalizer {
        Finalizer {
            duplicates: DuplicateWindow::new(duplicate_window, entries_max),
            deadline,
        }
    }

    /// Prefetches the duplicate window's slots for a batch about to be finalized (see
    /// [`DuplicateWindow::warm`]).
    pub fn warm(&self, decisions: &[Decision]) {
        self.duplicates
            .warm(decisions.iter().map(|decision| ParcelKey {
                scanner_id: decision.scanner_id,
                parcel_id: decision.parcel_id,
            }));
    }

    /// How long after receipt a decision may still leave for its chute.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Parcels the duplicate window remembers now (bounded by its `entries_max`).
    pub fn remembered(&self) -> usize {
        self.duplicates.len()
    }

    /// The decision as it must leave at `now`.
    pub fn finalize(&mut self, mut decision: Decision, now: Instant) -> Decision {
        let key = ParcelKey {
            scanner_id: decision.scanner_id,
            parcel_id: decision.parcel_id,
        };
        if self.duplicates.is_duplicate(key, decision.received_at) {
            decision.reason = Reason::Duplicate;
            return decision;
        }
        if now.saturating_duration_since(decision.received_at) > self.deadline {
            decision.reason = Reason::Late;
            decision.rule = Rule::Default;
            decision.chute = decision.late_chute;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(scanner_id: u32, parcel_id: u64, received_at: Instant) -> Decision {
        Decision {
            parcel_id,
            scanner_id,
            chute: 12,
            reason: Reason::SortedPrimary,
            rule: Rule::Exact,
            plan_version: 3,
            preadvice_seq: 0,
            late_chute: 996,
            received_at,
        }
    }

    #[test]
    fn late_goes_to_the_late_chute_and_duplicates_are_marked() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut finalizer = Finalizer::new(ms(500), ms(10_000), 1_000);

        let on_time = finalizer.finalize(decision(1, 1, start), start + ms(500));
        assert_eq!((on_time.chute, on_time.reason), (12, Reason::SortedPrimary));

        let late = finalizer.finalize(decision(1, 2, start), start + ms(501));
        assert_eq!(
            (late.chute, late.reason, late.rule),
            (996, Reason::Late, Rule::Default)
        );
        assert_eq!(late.plan_version, 3);

        let again = finalizer.finalize(decision(1, 1, start + ms(5)), start + ms(6));
        assert_eq!(again.reason, Reason::Duplicate);
        // Late and duplicate: the duplicate wins, it is not actuated at all.
        let late_again = finalizer.finalize(decision(1, 2, start + ms(5)), start + ms(900));
        assert_eq!(late_again.reason, Reason::Duplicate);
    }
}
