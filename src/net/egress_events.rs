//! The PLC thread's sort-event hook: turns each parcel's fate into a decision event and
//! each SORT_CONFIRM into an outcome event, appended to the [`JournalWriter`]'s batch.
//! The PLC thread writes the batch once per turn, before the link's bytes go to the
//! socket ([`EgressJournal::write`]), so a SORT leaves only after its event is in the
//! page cache: a killed process loses nothing that was decided.
//!
//! Flat out this runs once per parcel or more, on the one thread every SORT passes
//! through, so it is kept lean: no clock read of its own (the turn's instant, converted
//! to Unix time once per distinct instant), the outcome map's set loaded while the
//! decision is encoded, and confirmations looked up in small bursts (kept back until the
//! next decision event or write, so the journal's order stays the order of the calls).
//!
//! The scan's barcodes, destination, measurements and plan name come with the decision
//! (the batch's facts arena, [`ScanFacts`]); the rule that answered comes on the
//! decision itself. It does not decide anything or fsync (the writer's group-commit
//! thread does).

use std::time::{Duration, Instant};

use crate::core::egress::Fate;
use crate::events::journal::JournalWriter;
use crate::events::record::{
    Action, DecisionEvent, Event, FLAG_DIMENSIONS_MEASURED, FLAG_WEIGHT_MEASURED, OutcomeEvent,
};
use crate::pipeline::decide::Decision;
use crate::pipeline::facts::ScanFacts;
use crate::plc::SortConfirm;
use crate::wire::ScanFlags;

/// Slots of the parcel to decision map, in sets of [`SENT_WAYS`]. A confirmation comes
/// when the parcel reaches its chute, one to three seconds after its SORT. 2^14 slots
/// (384 KiB, only with `[events]` on) keep about the latest 12,000 SORTs: four seconds at
/// 3,000 parcels/s, a hundred times a real sorter's rate. The map stays this small on
/// purpose: every SORT and every confirmation touches it, and at 2^18 slots its cache
/// misses cost a third of the PLC thread flat out (`perf`, 0.67x parcels/s). An entry
/// pushed out by newer SORTs gives "unknown" (0) in the outcome event: at the demo's
/// 100,000 parcels/s with confirmations 1.5 s later, most outcomes.
const SENT_SLOTS: usize = 1 << 14;
const SENT_WAYS: usize = 4;
/// Confirmations kept back before they are looked up and journaled together: each one's
/// set is loaded into the cache while the others are taken in (confirmations come in
/// bursts, one read of the PLC socket at a time), so the lookups rarely wait for memory.
const CONFIRMS_PENDING_MAX: usize = 16;

/// The first slot of a parcel's set: scanners number their parcels independently, so
/// the key is the pair, mixed so that parcels 1, 2, 3 of every scanner spread out.
fn sent_set(scanner_id: u32, parcel_id: u64) -> usize {
    let key = parcel_id ^ (u64::from(scanner_id)).rotate_left(40);
    let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let slot = (mixed >> (64 - SENT_SLOTS.trailing_zeros())) as usize;
    slot & !(SENT_WAYS - 1)
}

/// Starts loading the set at `start` into the cache, so that the write after the
/// encoding finds it there: a load whose value nobody waits for (the out-of-order core
/// goes on with the encoding meanwhile). A set is 96 bytes: it may span two cache lines.
#[inline(always)]
fn warm(sent: &[SentSort], start: usize) {
    if let Some(set) = sent.get(start..start + SENT_WAYS) {
        std::hint::black_box((set[0].decision_seq, set[SENT_WAYS - 1].decision_seq));
    }
}

/// The journal as the PLC thread's observer sees it.
#[derive(Debug)]
pub struct EgressJournal {
    writer: JournalWriter,
    /// The turn's clock: an instant and the same moment in Unix microseconds.
    turn_at: Instant,
    turn_unix_us: u64,
    /// The last instant turned into Unix microseconds, and the result: a turn's events
    /// mostly share their `now`, so one conversion serves them all.
    clock_at: Instant,
    clock_unix_us: u64,
    /// Recent SORTs, in the set of [`sent_set`].
    sent: Box<[SentSort]>,
    /// Confirmations not yet journaled, with when each was read; journaled before the
    /// next decision event and before every write, so the journal's order is the order
    /// of the calls.
    confirms: Vec<(Instant, SortConfirm)>,
}

/// A SORT whose confirmation may come.
#[derive(Debug, Clone, Copy, Default)]
struct SentSort {
    parcel_id: u64,
    scanner_id: u32,
    plc_seq: u32,
    decision_seq: u64,
}

/// The record's measurement flags for the scanner's flags.
fn record_flags(flags: ScanFlags) -> u8 {
    let mut record = 0;
    if flags.contains(ScanFlags::WEIGHT_MEASURED) {
        record |= FLAG_WEIGHT_MEASURED;
    }
    if flags.contains(ScanFlags::DIMENSIONS_MEASURED) {
        record |= FLAG_DIMENSIONS_MEASURED;
    }
    record
}

fn micros_u32(duration: std::time::Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

impl EgressJournal {
    /// A hook around an open writer.
    pub fn new(writer: JournalWriter) -> EgressJournal {
        let now = Instant::now();
        EgressJournal {
            writer,
            turn_at: now,
            turn_unix_us: 0,
            clock_at: now,
            clock_unix_us: 0,
            sent: vec![SentSort::default(); SENT_SLOTS].into_boxed_slice(),
            confirms: Vec::with_capacity(CONFIRMS_PENDING_MAX),
        }
    }

    /// Sets the turn's clock (call once per turn, before the core runs).
    pub fn start_turn(&mut self, now: Instant, unix_us: u64) {
        self.turn_at = now;
        self.turn_unix_us = unix_us;
        self.clock_at = now;
        self.clock_unix_us = unix_us;
    }

    /// `at` in Unix microseconds, on the turn's clock (one instant subtraction when `at`
    /// is not the last instant converted, none when it is).
    fn unix_us_at(&mut self, at: Instant) -> u64 {
        if at != self.clock_at {
            let unix_us = match at.checked_duration_since(self.turn_at) {
                Some(after) => self.turn_unix_us + after.as_micros() as u64,
                None => self
                    .turn_unix_us
                    .saturating_sub(self.turn_at.duration_since(at).as_micros() as u64),
            };
            self.clock_at = at;
            self.clock_unix_us = unix_us;
        }
        self.clock_unix_us
    }

    /// Appends the decision event of a parcel that met `fate` at `now`, with its scan's
    /// `facts` (empty values without them).
    pub fn on_decision(
        &mut self,
        now: Instant,
        decision: &Decision,
        facts: Option<&ScanFacts<'_>>,
        fate: Fate,
    ) {
        let age = now.saturating_duration_since(decision.received_at);
        self.on_decision_aged(now, age, decision, facts, fate);
    }

    /// [`EgressJournal::on_decision`] for a caller that already knows the decision's
    /// `age` at `now` (the time since its scan was received): the PLC thread measures it
    /// for the latency histogram, and the clock is the costliest part of an event.
    pub fn on_decision_aged(
        &mut self,
        now: Instant,
        age: Duration,
        decision: &Decision,
        facts: Option<&ScanFacts<'_>>,
        fate: Fate,
    ) {
        if !self.confirms.is_empty() {
            self.journal_confirms();
        }
        let (action, plc_seq) = match fate {
            Fate::Sent { plc_seq } => (Action::Sent, plc_seq),
            Fate::Duplicate => (Action::Duplicate, 0),
            Fate::Undelivered => (Action::Undelivered, 0),
        };
        let start = sent_set(decision.scanner_id, decision.parcel_id);
        if action == Action::Sent {
            // The set is written after the encoding: start loading it now.
            warm(&self.sent, start);
        }
        let after = micros_u32(age);
        let received_us = self.unix_us_at(now).saturating_sub(age.as_micros() as u64);
        let facts = facts.copied().unwrap_or_default();
        let flags = record_flags(facts.flags);
        let measured = |flag: u8, value: u16| if flags & flag != 0 { value } else { 0 };
        let event = DecisionEvent {
            action,
            parcel_id: decision.parcel_id,
            scanner_id: decision.scanner_id,
            barcodes: facts.barcodes,
            destination: facts.destination,
            chute: decision.chute,
            reason: decision.reason,
            rule: decision.rule,
            plan_name: facts.plan_name,
            plan_version: decision.plan_version,
            pre_advice_seq: decision.preadvice_seq,
            plc_seq,
            flags,
            weight_g: if flags & FLAG_WEIGHT_MEASURED != 0 {
                facts.weight_g
            } else {
                0
            },
            length_mm: measured(FLAG_DIMENSIONS_MEASURED, facts.length_mm),
            width_mm: measured(FLAG_DIMENSIONS_MEASURED, facts.width_mm),
            height_mm: measured(FLAG_DIMENSIONS_MEASURED, facts.height_mm),
            received_us,
            decided_after_us: after,
            sent_after_us: if action == Action::Sent { after } else { 0 },
        };
        if let Some(seq) = self.writer.append(&Event::Decision(event)) {
            if action == Action::Sent {
                // The oldest entry of the set (an empty one has sequence 0) makes room.
                if let Some(slot) = self
                    .sent
                    .get_mut(start..start + SENT_WAYS)
                    .and_then(|set| set.iter_mut().min_by_key(|sent| sent.decision_seq))
                {
                    *slot = SentSort {
                        parcel_id: decision.parcel_id,
                        scanner_id: decision.scanner_id,
                        plc_seq,
                        decision_seq: seq,
                    };
                }
            }
        }
    }

    /// Appends the outcome event of a confirmation received at `now`, naming the SORT and
    /// the decision event it confirms when they are still known. Kept back with a few
    /// others (at most [`CONFIRMS_PENDING_MAX`]) until the next decision event or write.
    pub fn on_confirm(&mut self, now: Instant, confirm: &SortConfirm) {
        warm(&self.sent, sent_set(confirm.scanner_id, confirm.parcel_id));
        self.confirms.push((now, *confirm));
        if self.confirms.len() >= CONFIRMS_PENDING_MAX {
            self.journal_confirms();
        }
    }

    /// Appends the outcome events of the confirmations kept back, in their order.
    fn journal_confirms(&mut self) {
        let mut confirms = std::mem::take(&mut self.confirms);
        for (now, confirm) in &confirms {
            self.journal_confirm(*now, confirm);
        }
        confirms.clear();
        self.confirms = confirms;
    }

    fn journal_confirm(&mut self, now: Instant, confirm: &SortConfirm) {
        let start = sent_set(confirm.scanner_id, confirm.parcel_id);
        // The newest match: a parcel id a scanner reused is the latest SORT of it.
        let sent = self
            .sent
            .get(start..start + SENT_WAYS)
            .and_then(|set| {
                set.iter()
                    .filter(|sent| {
                        sent.decision_seq != 0
                            && sent.parcel_id == confirm.parcel_id
                            && sent.scanner_id == confirm.scanner_id
                    })
                    .max_by_key(|sent| sent.decision_seq)
            })
            .copied()
            .unwrap_or_default();
        let event = OutcomeEvent {
            parcel_id: confirm.parcel_id,
            scanner_id: confirm.scanner_id,
            chute: confirm.chute,
            outcome: confirm.outcome,
            plc_seq: sent.plc_seq,
            decision_seq: sent.decision_seq,
            confirmed_us: self.unix_us_at(now),
        };
        self.writer.append(&Event::Outcome(event));
    }

    /// Writes the turn's events to the page cache (one `write`); call before the
    /// link's bytes are flushed to the socket.
    pub fn write(&mut self) {
        self.journal_confirms();
        self.writer.write_batch();
    }

    /// The writer, for a driver that runs its group commit itself (the simulator).
    pub fn writer_mut(&mut self) -> &mut JournalWriter {
        &mut self.writer
    }

    /// Dies as a killed process: the turn's unwritten events are lost (the simulator's
    /// crash points).
    #[doc(hidden)]
    pub fn crash(self) {
        self.writer.crash();
    }

    /// Writes what is left and stops the writer (its last fsync included).
    pub fn close(mut self) {
        self.journal_confirms();
        self.writer.write_batch();
        self.writer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::egress::test_support::decision;
    use crate::events::journal::{JournalReader, WriterConfig};
    use crate::events::record::{RecordDecoded, decode};
    use crate::plc::Outcome;

    #[test]
    fn outcomes_name_their_decision_when_scanners_share_parcel_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WriterConfig::new(dir.path(), "hub", "s1");
        config.sync_thread = false;
        let mut journal = EgressJournal::new(JournalWriter::open(config).unwrap());
        let now = Instant::now();
        journal.start_turn(now, 1_000_000);
        // Parcels 1..=3 of scanners 1 and 2: the same parcel ids, six different parcels.
        let mut plc_seq = 0;
        for scanner_id in [1, 2] {
            for parcel_id in 1..=3 {
                plc_seq += 1;
                let mut sent = decision(parcel_id, now);
                sent.scanner_id = scanner_id;
                journal.on_decision(now, &sent, None, Fate::Sent { plc_seq });
            }
        }
        for scanner_id in [2, 1] {
            for parcel_id in 1..=3 {
                let confirm = SortConfirm {
                    parcel_id,
                    scanner_id,
                    chute: 7,
                    outcome: Outcome::Diverted,
                };
                journal.on_confirm(now, &confirm);
            }
        }
        journal.write();
        journal.writer_mut().sync().unwrap();
        journal.close();

        let mut reader = JournalReader::open(dir.path()).unwrap();
        let mut bytes = Vec::new();
        reader.read_batch(&mut bytes, 100, 1 << 20).unwrap();
        let mut decisions = std::collections::HashMap::new();
        let mut outcomes = 0;
        let mut rest = bytes.as_slice();
        while let RecordDecoded::Complete { record, consumed } = decode(rest) {
            match record.event {
                Event::Decision(event) => {
                    decisions.insert(
                        record.seq,
                        (event.scanner_id, event.parcel_id, event.plc_seq),
                    );
                }
                Event::Outcome(event) => {
                    outcomes += 1;
                    let named = decisions.get(&event.decision_seq).copied();
                    assert_eq!(
                        named,
                        Some((event.scanner_id, event.parcel_id, event.plc_seq)),
                        "outcome of scanner {} parcel {} names decision {} with SORT {}",
                        event.scanner_id,
                        event.parcel_id,
                        event.decision_seq,
                        event.plc_seq
                    );
                }
            }
            rest = &rest[consumed..];
        }
        assert_eq!((decisions.len(), outcomes), (6, 6));
    }

    #[test]
    fn the_map_remembers_the_latest_sorts_of_many_scanners() {
        // 16 scanners numbering parcels from 1, 12,000 SORTs (three quarters of the
        // slots) between the first SORT and its confirmation: nearly all are still known.
        let dir = tempfile::tempdir().unwrap();
        let mut config = WriterConfig::new(dir.path(), "hub", "s1");
        config.sync_thread = false;
        let mut journal = EgressJournal::new(JournalWriter::open(config).unwrap());
        let now = Instant::now();
        let mut sent = Vec::new();
        for parcel_id in 1..=750u64 {
            for scanner_id in 1..=16u32 {
                let mut decision = decision(parcel_id, now);
                decision.scanner_id = scanner_id;
                sent.push((scanner_id, parcel_id));
                journal.on_decision(now, &decision, None, Fate::Sent { plc_seq: 1 });
            }
            journal.write();
        }
        let known = sent
            .iter()
            .filter(|&&(scanner_id, parcel_id)| {
                let start = sent_set(scanner_id, parcel_id);
                journal.sent[start..start + SENT_WAYS]
                    .iter()
                    .any(|entry| entry.scanner_id == scanner_id && entry.parcel_id == parcel_id)
            })
            .count();
        eprintln!("{known} of {} known", sent.len());
        assert!(known >= 11_700, "{known} of {} known", sent.len());
        journal.close();
    }
}
