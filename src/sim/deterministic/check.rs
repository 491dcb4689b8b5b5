//! The promise checker: a ledger of what the simulated core decoded, decided, sent and
//! what the simulated PLC actuated, checked after every step and once more after the
//! final drain.
//!
//! It only observes: it is fed by the simulation's drivers and answers with the first
//! broken promise. Each observation is also folded into a digest of the run, so two
//! runs of one seed can be compared byte for byte.

use std::collections::HashMap;
use std::fmt;

use xxhash_rust::xxh3::Xxh3;

use crate::decision::Reason;
use crate::pipeline::decide::Decision;
use crate::plc::SortCommand;

/// The six promises of README's "Guarantees", and the two of the sort events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Promise {
    /// Every decoded scan gets exactly one decision, with a reason and a plan version.
    OneDecisionPerScan = 1,
    /// No parcel is actuated twice.
    NoDoubleActuation = 2,
    /// Received = decided + in flight; in flight is 0 after a drain.
    Accounting = 3,
    /// Bad input on one connection never changes what another connection gets.
    Isolation = 4,
    /// A plan swap never leaves a parcel undecided nor serves an unverified plan.
    VerifiedPlansOnly = 5,
    /// Buffers, queues and windows stay within their configured bounds.
    MemoryBounds = 6,
    /// Every decision is journaled before its SORT leaves; a crash keeps what was
    /// written, a power loss what was fsynced; sequences gap-free, never reused.
    JournalDurable = 7,
    /// The stream ends holding every journaled event exactly once, in order, no gap.
    ExportExactlyOnce = 8,
}

impl Promise {
    /// The promise's number in README.
    pub const fn number(self) -> u8 {
        self as u8
    }
}

/// A broken promise, where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which promise.
    pub promise: Promise,
    /// The simulation step it was detected at.
    pub step: u64,
    /// Virtual milliseconds since the start of the run.
    pub at_ms: u64,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "promise {} ({:?}) broken at step {} (t = {} ms): {}",
            self.promise.number(),
            self.promise,
            self.step,
            self.at_ms,
            self.detail
        )
    }
}

/// Where a decision went when it left the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Submitted to the PLC link.
    Sent,
    /// Marked duplicate: counted, not sent.
    Duplicate,
    /// Not sent: the window was full while the link was down, or the link held it and
    /// its deadline passed first. Counted as undelivered.
    Undelivered,
}

/// Counts of one parcel key (scanner id, parcel id). `decoded`, `finalized`,
/// `duplicates` and `sent_in_life` count in sortd's life `sortd_life` only (a crash
/// loses what was in flight); `sent` counts over every life.
#[derive(Debug, Default, Clone, Copy)]
struct KeyLedger {
    sortd_life: u32,
    decoded: u32,
    finalized: u32,
    /// Fates reported as duplicate.
    duplicates: u32,
    sent_in_life: u32,
    sent: u32,
    actuated: u32,
    /// Actuations in the PLC's current life (see [`Checker::on_plc_restart`]).
    actuated_in_life: u32,
    /// The PLC life of the last actuation.
    life: u32,
}

/// The ledger and the digest.
pub(super) struct Checker {
    keys: HashMap<(u32, u64), KeyLedger>,
    pub received: u64,
    pub decided: u64,
    pub sent: u64,
    pub duplicates: u64,
    pub undelivered: u64,
    pub late: u64,
    pub actuated: u64,
    digest: Xxh3,
    pub step: u64,
    pub at_ms: u64,
    /// Power cycles of the PLC so far.
    plc_life: u32,
    /// Parcels actuated again by a PLC that restarted and forgot (PROTOCOL.md allows
    /// it for SORTs in flight at the restart).
    pub actuated_again_after_restart: u64,
    /// sortd's restarts after a crash so far.
    sortd_life: u32,
    /// Decisions in flight when sortd crashed (lost with the process).
    pub lost_in_crash: u64,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("received", &self.received)
            .field("decided", &self.decided)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Checker {
    pub fn new() -> Checker {
        Checker {
            keys: HashMap::new(),
            received: 0,
            decided: 0,
            sent: 0,
            duplicates: 0,
            undelivered: 0,
            late: 0,
            actuated: 0,
            digest: Xxh3::new(),
            step: 0,
            at_ms: 0,
            plc_life: 0,
            actuated_again_after_restart: 0,
            sortd_life: 0,
            lost_in_crash: 0,
        }
    }

    /// sortd crashed with `in_flight` decisions not yet given a fate, and starts again
    /// with an empty duplicate window.
    pub fn on_sortd_crash(&mut self, in_flight: u64) {
        self.lost_in_crash += in_flight;
        self.sortd_life += 1;
    }

    /// The key's ledger, its per-life counts reset when sortd restarted since.
    fn key(&mut self, key: (u32, u64)) -> &mut KeyLedger {
        let life = self.sortd_life;
        let entry = self.keys.entry(key).or_default();
        if entry.sortd_life != life {
            *entry = KeyLedger {
                sortd_life: life,
                decoded: 0,
                finalized: 0,
                duplicates: 0,
                sent_in_life: 0,
                ..*entry
            };
        }
        entry
    }

    /// A violation of `promise` at the current step.
    pub fn violation(&self, promise: Promise, detail: String) -> Violation {
        Violation {
            promise,
            step: self.step,
            at_ms: self.at_ms,
            detail,
        }
    }

    /// Folds an event into the digest.
    pub fn trace(&mut self, tag: u8, fields: &[u64]) {
        self.digest.update(&[tag]);
        for field in fields {
            self.digest.update(&field.to_le_bytes());
        }
    }

    /// The digest of everything traced so far.
    pub fn digest(&self) -> u64 {
        self.digest.digest()
    }

    /// The PLC lost power and its memory: what it actuates from now on is a new life.
    pub fn on_plc_restart(&mut self) {
        self.plc_life += 1;
    }

    /// Ingress decoded a scan and decided it with the plan of `served_version`, while the
    /// checker's model says `expected_version` is published.
    pub fn on_decided_at_ingress(
        &mut self,
        decision: &Decision,
        expected_version: u32,
    ) -> Result<(), Violation> {
        self.received += 1;
        let key = (decision.scanner_id, decision.parcel_id);
        self.key(key).decoded += 1;
        self.trace(
            1,
            &[
                u64::from(decision.scanner_id),
                decision.parcel_id,
                u64::from(decision.chute),
                u64::from(decision.reason.code()),
                u64::from(decision.plan_version),
            ],
        );
        if decision.plan_version != expected_version {
            return Err(self.violation(
                Promise::VerifiedPlansOnly,
                format!(
                    "parcel {key:?} decided with plan v{} while v{expected_version} is the \
                     last verified plan published",
                    decision.plan_version
                ),
            ));
        }
        if decision.chute == 0 {
            return Err(self.violation(
                Promise::OneDecisionPerScan,
                format!("parcel {key:?} decided to chute 0 ({:?})", decision.reason),
            ));
        }
        Ok(())
    }

    /// The egress finalized a decision and sent, skipped or counted it.
    pub fn on_finalized(&mut self, decision: &Decision, fate: Fate) -> Result<(), Violation> {
        self.decided += 1;
        let key = (decision.scanner_id, decision.parcel_id);
        let entry = self.key(key);
        entry.finalized += 1;
        if decision.reason == Reason::Duplicate {
            entry.duplicates += 1;
        }
        let (finalized, decoded, sent_before) =
            (entry.finalized, entry.decoded, entry.sent_in_life);
        if fate == Fate::Sent {
            entry.sent += 1;
            entry.sent_in_life += 1;
        }
        match fate {
            Fate::Sent => self.sent += 1,
            Fate::Duplicate => self.duplicates += 1,
            Fate::Undelivered => self.undelivered += 1,
        }
        if decision.reason == Reason::Late {
            self.late += 1;
        }
        self.trace(
            2,
            &[
                u64::from(decision.scanner_id),
                decision.parcel_id,
                u64::from(decision.reason.code()),
                fate as u64,
            ],
        );
        if finalized > decoded {
            return Err(self.violation(
                Promise::OneDecisionPerScan,
                format!("parcel {key:?} got decision {finalized} but was decoded {decoded} times"),
            ));
        }
        if fate == Fate::Sent && sent_before > 0 {
            return Err(self.violation(
                Promise::NoDoubleActuation,
                format!(
                    "parcel {key:?} sent to the PLC a second time (window longer than the run)"
                ),
            ));
        }
        Ok(())
    }

    /// The simulated PLC received a SORT (exactly once per link sequence number).
    pub fn on_actuated(&mut self, sort: &SortCommand) -> Result<(), Violation> {
        self.actuated += 1;
        let key = (sort.scanner_id, sort.parcel_id);
        let entry = self.keys.entry(key).or_default();
        let again_after_restart = entry.actuated > 0 && entry.life != self.plc_life;
        if entry.life != self.plc_life {
            entry.life = self.plc_life;
            entry.actuated_in_life = 0;
        }
        entry.actuated += 1;
        entry.actuated_in_life += 1;
        // A PLC that lost its memory may act again on what was in flight (PROTOCOL.md,
        // "Reconnecting"); within one life of the PLC, only as often as sortd sent it
        // (once per life of sortd: a restarted sortd has an empty duplicate window).
        let (actuated, sent) = (entry.actuated_in_life, entry.sent);
        if again_after_restart {
            self.actuated_again_after_restart += 1;
        }
        self.trace(
            3,
            &[
                u64::from(sort.scanner_id),
                sort.parcel_id,
                u64::from(sort.chute),
            ],
        );
        if actuated > sent {
            return Err(self.violation(
                Promise::NoDoubleActuation,
                format!("parcel {key:?} actuated {actuated} times at the PLC, sent {sent} times"),
            ));
        }
        if !super::fixtures::PlanFixtures::is_publishable(sort.plan_version) {
            return Err(self.violation(
                Promise::VerifiedPlansOnly,
                format!(
                    "parcel {key:?} actuated with unverified plan v{}",
                    sort.plan_version
                ),
            ));
        }
        Ok(())
    }

    /// Promise 3 at this moment: everything received is decided or in flight (or was
    /// in flight when sortd crashed).
    pub fn check_accounting(&self, in_flight: u64) -> Result<(), Violation> {
        if self.received != self.decided + in_flight + self.lost_in_crash {
            return Err(self.violation(
                Promise::Accounting,
                format!(
                    "received {} != decided {} + in flight {in_flight} + lost in crashes {}",
                    self.received, self.decided, self.lost_in_crash
                ),
            ));
        }
        Ok(())
    }

    /// After the drain: nothing in flight, every key decided as often as decoded, every
    /// sent parcel actuated exactly once.
    pub fn check_drained(&self, in_flight: u64) -> Result<(), Violation> {
        self.check_accounting(in_flight)?;
        if in_flight != 0 {
            return Err(self.violation(
                Promise::Accounting,
                format!("{in_flight} decisions still in flight after the drain"),
            ));
        }
        let mut keys: Vec<_> = self.keys.iter().collect();
        keys.sort_by_key(|(key, _)| **key);
        for (key, ledger) in keys {
            if ledger.sortd_life != self.sortd_life {
                // Seen only before a crash: what was in flight then is gone.
                if ledger.finalized > ledger.decoded {
                    return Err(self.violation(
                        Promise::OneDecisionPerScan,
                        format!("parcel {key:?} decided more often than decoded"),
                    ));
                }
                continue;
            }
            if ledger.decoded != ledger.finalized {
                return Err(self.violation(
                    Promise::OneDecisionPerScan,
                    format!(
                        "parcel {key:?} decoded {} times, decided {} times",
                        ledger.decoded, ledger.finalized
                    ),
                ));
            }
            // Checked here, not as fates arrive: a first sighting held by the link while
            // it is down gets its fate after a later sighting got `duplicate`.
            if ledger.duplicates > 0 && ledger.duplicates == ledger.finalized {
                return Err(self.violation(
                    Promise::OneDecisionPerScan,
                    format!(
                        "parcel {key:?} marked duplicate on every one of its {} sightings: \
                         never actuated",
                        ledger.finalized
                    ),
                ));
            }
            if ledger.sent_in_life > 0 && ledger.actuated == 0 {
                return Err(self.violation(
                    Promise::Accounting,
                    format!(
                        "parcel {key:?} sent {} times but never actuated: lost in the link",
                        ledger.sent
                    ),
                ));
            }
            if ledger.sent < ledger.actuated_in_life {
                return Err(self.violation(
                    Promise::NoDoubleActuation,
                    format!(
                        "parcel {key:?} sent {} times, actuated {} times after the drain",
                        ledger.sent, ledger.actuated_in_life
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn decision() -> Decision {
        Decision {
            parcel_id: 7,
            scanner_id: 1,
            chute: 3,
            reason: Reason::SortedPrimary,
            rule: crate::decision::Rule::Exact,
            plan_version: 1,
            preadvice_seq: 0,
            late_chute: 9,
            received_at: Instant::now(),
        }
    }

    fn sort() -> SortCommand {
        SortCommand {
            parcel_id: 7,
            scanner_id: 1,
            chute: 3,
            reason: Reason::SortedPrimary,
            plan_version: 1,
            decided_at_us: 0,
        }
    }

    #[test]
    fn a_second_actuation_is_allowed_only_by_a_plc_restart_between() {
        let mut checker = Checker::new();
        checker
            .on_decided_at_ingress(&decision(), 1)
            .expect("decided");
        checker.on_finalized(&decision(), Fate::Sent).expect("sent");
        checker.on_actuated(&sort()).expect("first actuation");
        checker.on_plc_restart();
        checker
            .on_actuated(&sort())
            .expect("a forgetful PLC may act again");
        assert_eq!(checker.actuated_again_after_restart, 1);
        let again = checker.on_actuated(&sort()).expect_err("twice in one life");
        assert_eq!(again.promise, Promise::NoDoubleActuation);
    }
}
