//! Reconciling the hub's event stream: fed the messages of the sort-event stream in stream
//! order (one sorter per subject, many binary records per message, docs/export.md), it
//! tallies per sorter the events, the first and last event id, gaps and duplicates in the
//! event sequence, how many parcels were decided exactly once, and how many outcomes match
//! a decision. Pure: bytes in, a report out; `sortd events reconcile` reads the stream and
//! prints it.
//!
//! What counts: an event sequence below the next expected one is a duplicate (the stream
//! holds that event twice); one above it is a gap (events missing). A parcel is
//! `(scanner id, parcel id)` within its sorter; its actuating decisions (`sent`,
//! `undelivered`, `late`) should be one, `duplicate` decisions (the same parcel scanned
//! again inside the duplicate window) are counted apart. An outcome matches when its
//! `decision_seq` is a decision of the same parcel in the same sorter.

use std::collections::{BTreeMap, HashMap};

use super::record::{Action, Event, RecordDecoded, decode};

/// At most this many gap ranges are kept per sorter (all are counted).
pub const GAPS_KEPT_MAX: usize = 16;

/// One parcel's decisions in one sorter.
#[derive(Debug, Clone, Default)]
struct ParcelTally {
    /// Decisions that actuated (or tried to): sent, undelivered, late.
    actuating: u32,
    /// Decisions of repeated scans inside the duplicate window.
    repeats: u32,
    /// The event sequences of its decisions (for matching outcomes).
    decision_seqs: Vec<u64>,
}

/// What one sorter's events show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SorterReport {
    /// The sorter id (the subject's last token).
    pub sorter: String,
    /// NATS messages read.
    pub messages: u64,
    /// Events read (duplicates included).
    pub events: u64,
    /// The first event sequence seen (the first event id is `<sorter>:<first_seq>`).
    pub first_seq: u64,
    /// The highest event sequence seen.
    pub last_seq: u64,
    /// Events missing between `first_seq` and `last_seq`.
    pub gap_events: u64,
    /// The first [`GAPS_KEPT_MAX`] missing ranges, inclusive.
    pub gaps: Vec<(u64, u64)>,
    /// Events seen more than once.
    pub duplicate_events: u64,
    /// Records that did not decode (damaged), and messages whose headers disagree with
    /// their payload.
    pub damaged: u64,
    /// Distinct parcels with a decision.
    pub parcels: u64,
    /// Parcels with exactly one actuating decision.
    pub parcels_decided_once: u64,
    /// Parcels with more than one actuating decision.
    pub parcels_decided_more: u64,
    /// Decisions of repeated scans (`duplicate` action).
    pub repeat_scans: u64,
    /// Outcome events.
    pub outcomes: u64,
    /// Outcomes whose decision is in the stream.
    pub outcomes_matched: u64,
    /// Sent decisions without an outcome (not confirmed yet, or lost).
    pub sent_unconfirmed: u64,
}

impl SorterReport {
    /// True when the event ids have no gap and no duplicate, nothing is damaged and no
    /// parcel was decided twice.
    pub fn is_exact(&self) -> bool {
        self.gap_events == 0
            && self.duplicate_events == 0
            && self.damaged == 0
            && self.parcels_decided_more == 0
    }
}

#[derive(Debug, Default)]
struct SorterState {
    report: SorterReport,
    next_seq: Option<u64>,
    parcels: HashMap<(u32, u64), ParcelTally>,
    sent_seqs: HashMap<u64, (u32, u64)>,
}

/// The reconciler: feed it messages, then take the [`Reconciler::report`].
#[derive(Debug, Default)]
pub struct Reconciler {
    sorters: BTreeMap<String, SorterState>,
}

impl Reconciler {
    /// A reconciler that has seen nothing.
    pub fn new() -> Reconciler {
        Reconciler::default()
    }

    /// One message of `sorter`'s subject: its payload (concatenated records) and, when
    /// present, its `Sortd-First-Seq` / `Sortd-Last-Seq` headers.
    pub fn message(&mut self, sorter: &str, headers: Option<(u64, u64)>, payload: &[u8]) {
        let state = self.sorters.entry(sorter.to_string()).or_default();
        state.report.sorter = sorter.to_string();
        state.report.messages += 1;
        let mut rest = payload;
        let mut bounds: Option<(u64, u64)> = None;
        while !rest.is_empty() {
            match decode(rest) {
                RecordDecoded::Complete { record, consumed } => {
                    bounds = Some(
                        bounds.map_or((record.seq, record.seq), |(first, _)| (first, record.seq)),
                    );
                    state.record(record.seq, &record.event);
                    rest = rest.get(consumed..).unwrap_or_default();
                }
                RecordDecoded::NeedMore | RecordDecoded::Corrupt(_) => {
                    state.report.damaged += 1;
                    break;
                }
            }
        }
        if let Some(expected) = headers
            && bounds != Some(expected)
        {
            state.report.damaged += 1;
        }
    }

    /// The report per sorter, by sorter id.
    pub fn report(&self) -> Vec<SorterReport> {
        self.sorters
            .values()
            .map(|state| {
                let mut report = state.report.clone();
                report.parcels = state.parcels.len() as u64;
                report.parcels_decided_once = state
                    .parcels
                    .values()
                    .filter(|tally| tally.actuating == 1)
                    .count() as u64;
                report.parcels_decided_more = state
                    .parcels
                    .values()
                    .filter(|tally| tally.actuating > 1)
                    .count() as u64;
                report.sent_unconfirmed = state.sent_seqs.len() as u64;
                report
            })
            .collect()
    }
}

impl SorterState {
    fn record(&mut self, seq: u64, event: &Event<'_>) {
        let report = &mut self.report;
        report.events += 1;
        match self.next_seq {
            None => report.first_seq = seq,
            Some(next) if seq < next => {
                report.duplicate_events += 1;
                return;
            }
            Some(next) if seq > next => {
                report.gap_events += seq - next;
                if report.gaps.len() < GAPS_KEPT_MAX {
                    report.gaps.push((next, seq - 1));
                }
            }
            Some(_) => {}
        }
        self.next_seq = Some(seq + 1);
        report.last_seq = report.last_seq.max(seq);
        match event {
            Event::Decision(decision) => {
                let key = (decision.scanner_id, decision.parcel_id);
                let tally = self.parcels.entry(key).or_default();
                if decision.action == Action::Duplicate {
                    tally.repeats += 1;
                    report.repeat_scans += 1;
                } else {
                    tally.actuating += 1;
                }
                tally.decision_seqs.push(seq);
                if decision.action == Action::Sent {
                    self.sent_seqs.insert(seq, key);
                }
            }
            Event::Outcome(outcome) => {
                report.outcomes += 1;
                let key = (outcome.scanner_id, outcome.parcel_id);
                let matched = self
                    .parcels
                    .get(&key)
                    .is_some_and(|tally| tally.decision_seqs.contains(&outcome.decision_seq));
                if matched {
                    report.outcomes_matched += 1;
                    self.sent_seqs.remove(&outcome.decision_seq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::events::record::{DecisionEvent, OutcomeEvent, Rule, encode};
    use crate::plc::Outcome;
    use crate::wire::Barcodes;

    fn decision(parcel_id: u64, action: Action) -> Event<'static> {
        Event::Decision(DecisionEvent {
            action,
            parcel_id,
            scanner_id: 1,
            barcodes: Barcodes::from_slice(&[b"YT1"]).expect("one barcode"),
            destination: b"",
            chute: 7,
            reason: Reason::SortedPrimary,
            rule: Rule::Exact,
            plan_name: "p",
            plan_version: 1,
            pre_advice_seq: 0,
            plc_seq: 1,
            flags: 0,
            weight_g: 0,
            length_mm: 0,
            width_mm: 0,
            height_mm: 0,
            received_us: 1,
            decided_after_us: 0,
            sent_after_us: 0,
        })
    }

    fn outcome(parcel_id: u64, decision_seq: u64) -> Event<'static> {
        Event::Outcome(OutcomeEvent {
            parcel_id,
            scanner_id: 1,
            chute: 7,
            outcome: Outcome::Diverted,
            plc_seq: 1,
            decision_seq,
            confirmed_us: 2,
        })
    }

    fn message(events: &[(u64, Event<'static>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, event) in events {
            encode(*seq, event, &mut out).expect("encodes");
        }
        out
    }

    #[test]
    fn an_exact_stream_reconciles() {
        let mut reconciler = Reconciler::new();
        let first = message(&[(1, decision(10, Action::Sent)), (2, outcome(10, 1))]);
        let second = message(&[(3, decision(11, Action::Sent))]);
        reconciler.message("a", Some((1, 2)), &first);
        reconciler.message("a", Some((3, 3)), &second);
        let report = &reconciler.report()[0];
        assert!(report.is_exact(), "{report:?}");
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (3, 1, 3)
        );
        assert_eq!((report.parcels, report.parcels_decided_once), (2, 2));
        assert_eq!((report.outcomes_matched, report.sent_unconfirmed), (1, 1));
    }

    #[test]
    fn gaps_duplicates_and_double_decisions_are_found() {
        let mut reconciler = Reconciler::new();
        reconciler.message("a", None, &message(&[(1, decision(10, Action::Sent))]));
        // Event 1 again, then 4 (2 and 3 missing), then parcel 10 decided again.
        reconciler.message("a", None, &message(&[(1, decision(10, Action::Sent))]));
        reconciler.message("a", None, &message(&[(4, decision(10, Action::Sent))]));
        reconciler.message("a", None, &message(&[(5, decision(10, Action::Duplicate))]));
        reconciler.message("b", Some((1, 2)), &message(&[(1, outcome(3, 9))]));
        let reports = reconciler.report();
        let a = &reports[0];
        assert_eq!(a.duplicate_events, 1);
        assert_eq!((a.gap_events, a.gaps.clone()), (2, vec![(2, 3)]));
        assert_eq!((a.parcels_decided_more, a.repeat_scans), (1, 1));
        assert!(!a.is_exact());
        let b = &reports[1];
        assert_eq!(b.sorter, "b");
        assert_eq!((b.damaged, b.outcomes, b.outcomes_matched), (1, 1, 0));
    }

    #[test]
    fn a_damaged_payload_is_counted_not_a_panic() {
        let mut reconciler = Reconciler::new();
        let mut bytes = message(&[(1, decision(10, Action::Sent))]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        reconciler.message("a", None, &bytes);
        reconciler.message("a", None, &[1, 2, 3]);
        assert_eq!(reconciler.report()[0].damaged, 2);
    }
}
