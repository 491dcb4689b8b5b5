//! The PLC thread's sort-event hook: turns each parcel's fate into a decision event and
//! each SORT_CONFIRM into an outcome event, appended to the [`JournalWriter`]'s batch.
//! The PLC thread writes the batch once per turn, before the link's bytes go to the
//! socket ([`EgressJournal::write`]), so a SORT leaves only after its event is in the
//! page cache: a killed process loses nothing that was decided.
//!
//! The scan's barcodes, destination, measurements and plan name come with the decision
//! (the batch's facts arena, [`ScanFacts`]); the rule that answered comes on the
//! decision itself. It does not decide anything or fsync (the writer's group-commit
//! thread does).

use std::time::Instant;

use crate::core::egress::Fate;
use crate::events::journal::JournalWriter;
use crate::events::record::{
    Action, DecisionEvent, Event, FLAG_DIMENSIONS_MEASURED, FLAG_WEIGHT_MEASURED, OutcomeEvent,
};
use crate::pipeline::decide::Decision;
use crate::pipeline::facts::ScanFacts;
use crate::plc::SortConfirm;
use crate::wire::ScanFlags;

/// Slots of the parcel to decision map; larger than any PLC window, so a confirmation
/// finds its decision while the SORT is outstanding (a slot taken over by another
/// parcel gives "unknown": 0).
const SENT_SLOTS: usize = 1 << 14;

/// The journal as the PLC thread's observer sees it.
#[derive(Debug)]
pub struct EgressJournal {
    writer: JournalWriter,
    /// The turn's clock: an instant and the same moment in Unix microseconds.
    turn_at: Instant,
    turn_unix_us: u64,
    /// Recent SORTs, indexed by parcel id modulo [`SENT_SLOTS`].
    sent: Box<[SentSort]>,
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
        EgressJournal {
            writer,
            turn_at: Instant::now(),
            turn_unix_us: 0,
            sent: vec![SentSort::default(); SENT_SLOTS].into_boxed_slice(),
        }
    }

    /// Sets the turn's clock (call once per turn, before the core runs).
    pub fn start_turn(&mut self, now: Instant, unix_us: u64) {
        self.turn_at = now;
        self.turn_unix_us = unix_us;
    }

    fn unix_us_of(&self, at: Instant) -> u64 {
        let before = self.turn_at.saturating_duration_since(at);
        let after = at.saturating_duration_since(self.turn_at);
        (self.turn_unix_us + after.as_micros() as u64).saturating_sub(before.as_micros() as u64)
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
        let (action, plc_seq) = match fate {
            Fate::Sent { plc_seq } => (Action::Sent, plc_seq),
            Fate::Duplicate => (Action::Duplicate, 0),
            Fate::Undelivered => (Action::Undelivered, 0),
        };
        let after = micros_u32(now.saturating_duration_since(decision.received_at));
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
            received_us: self.unix_us_of(decision.received_at),
            decided_after_us: after,
            sent_after_us: if action == Action::Sent { after } else { 0 },
        };
        if let Some(seq) = self.writer.append(&Event::Decision(event)) {
            if action == Action::Sent {
                if let Some(slot) = self.sent.get_mut(decision.parcel_id as usize % SENT_SLOTS) {
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
    /// the decision event it confirms when they are still known.
    pub fn on_confirm(&mut self, now: Instant, confirm: &SortConfirm) {
        let sent = self
            .sent
            .get(confirm.parcel_id as usize % SENT_SLOTS)
            .filter(|sent| {
                sent.decision_seq != 0
                    && sent.parcel_id == confirm.parcel_id
                    && sent.scanner_id == confirm.scanner_id
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
            confirmed_us: self.unix_us_of(now),
        };
        self.writer.append(&Event::Outcome(event));
    }

    /// Writes the turn's events to the page cache (one `write`); call before the
    /// link's bytes are flushed to the socket.
    pub fn write(&mut self) {
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
        self.writer.write_batch();
        self.writer.close();
    }
}
