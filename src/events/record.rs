//! The sort event record, version 1: what sortd tells the world about one parcel, as a
//! compact little-endian binary record ([`encode`], [`decode`]).
//!
//! Two kinds: a [`DecisionEvent`] (the SORT was sent, or the parcel was not actuated:
//! duplicate, undelivered, late) and an [`OutcomeEvent`] (the PLC's SORT_CONFIRM). Every
//! record is a 4-byte header (length, type, flags), a sequence number, a fixed body, the
//! variable fields of a decision, and a CRC-32C trailer over every byte before it.
//! PROTOCOL.md documents every byte; the constants here are the source of truth it is
//! written from. Pure: no I/O, no clock, no allocation in [`encode`] beyond the caller's
//! buffer, none in [`decode`] (records borrow from the input). The journal's segments and
//! files are `segment.rs` and `journal/`.

use std::fmt;

pub use crate::decision::Rule;
use crate::decision::{ChuteNumber, Reason};
use crate::plc::Outcome;
use crate::wire::{BARCODE_BYTES_MAX, BARCODES_MAX, Barcodes, DESTINATION_BYTES_MAX};

/// Record type byte of a decision event.
pub const RECORD_TYPE_DECISION: u8 = 1;
/// Record type byte of an outcome event.
pub const RECORD_TYPE_OUTCOME: u8 = 2;

/// Header: length (u16), type (u8), flags (u8).
pub const RECORD_HEADER_BYTES: usize = 4;
/// Trailer: CRC-32C of every byte before it.
pub const RECORD_TRAILER_BYTES: usize = 4;
/// Bytes every record has after the header: seq, parcel id, scanner id, first timestamp.
pub const RECORD_COMMON_BYTES: usize = 8 + 8 + 4 + 8;
/// A decision record with no barcode, no destination and an empty plan name.
pub const DECISION_BYTES_MIN: usize = RECORD_HEADER_BYTES + RECORD_COMMON_BYTES + 42 + 4;
/// An outcome record (always this long).
pub const OUTCOME_BYTES: usize = RECORD_HEADER_BYTES + RECORD_COMMON_BYTES + 15 + 4;
/// Longest plan name kept in a record; longer names are cut at a character boundary.
pub const PLAN_NAME_BYTES_MAX: usize = 255;
/// Length prefix of each barcode.
pub const RECORD_BARCODE_PREFIX_BYTES: usize = 2;
/// Longest record: eight longest barcodes, the longest destination and plan name.
pub const RECORD_BYTES_MAX: usize = DECISION_BYTES_MIN
    + BARCODES_MAX * (RECORD_BARCODE_PREFIX_BYTES + BARCODE_BYTES_MAX)
    + DESTINATION_BYTES_MAX
    + PLAN_NAME_BYTES_MAX;

const _: () = assert!(DECISION_BYTES_MIN == 78);
const _: () = assert!(OUTCOME_BYTES == 51);
const _: () = assert!(RECORD_BYTES_MAX == 8669, "PROTOCOL.md states it");
const _: () = assert!(RECORD_BYTES_MAX <= u16::MAX as usize, "length is a u16");
const _: () = assert!(DESTINATION_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(PLAN_NAME_BYTES_MAX <= u8::MAX as usize);

/// Decision flag: `weight_g` holds a measured weight.
pub const FLAG_WEIGHT_MEASURED: u8 = 0x01;
/// Decision flag: length, width and height hold measured values.
pub const FLAG_DIMENSIONS_MEASURED: u8 = 0x02;
/// Every decision flag this version defines; other bits are corrupt.
pub const DECISION_FLAGS_KNOWN: u8 = FLAG_WEIGHT_MEASURED | FLAG_DIMENSIONS_MEASURED;

/// What happened to a decided parcel at the PLC side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Action {
    /// The SORT telegram was handed to the PLC link (see `plc_seq`).
    Sent = 1,
    /// Not actuated: the same parcel was already decided inside the duplicate window.
    Duplicate = 2,
    /// Not actuated: the PLC link was down and the parcel's deadline passed.
    Undelivered = 3,
    /// Not actuated: the decision came too late for the parcel to be diverted.
    Late = 4,
}

impl Action {
    /// Every action, in code order.
    pub const ALL: [Action; 4] = [
        Action::Sent,
        Action::Duplicate,
        Action::Undelivered,
        Action::Late,
    ];

    /// The record code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The action for a record code.
    pub const fn from_code(code: u8) -> Option<Action> {
        match code {
            1 => Some(Action::Sent),
            2 => Some(Action::Duplicate),
            3 => Some(Action::Undelivered),
            4 => Some(Action::Late),
            _ => None,
        }
    }

    /// snake_case name for JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Sent => "sent",
            Action::Duplicate => "duplicate",
            Action::Undelivered => "undelivered",
            Action::Late => "late",
        }
    }
}

/// A parcel's decision: where it was sent and why, or why it was not actuated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionEvent<'a> {
    /// Sent, or why not.
    pub action: Action,
    /// Parcel or tray id.
    pub parcel_id: u64,
    /// The scanner that reported it.
    pub scanner_id: u32,
    /// Every barcode read (empty: no read).
    pub barcodes: Barcodes<'a>,
    /// The destination code the scanner sent (empty: none).
    pub destination: &'a [u8],
    /// The chute decided.
    pub chute: ChuteNumber,
    /// Why that chute.
    pub reason: Reason,
    /// Which kind of plan rule decided.
    pub rule: Rule,
    /// The deciding plan's name (at most [`PLAN_NAME_BYTES_MAX`] bytes are kept).
    pub plan_name: &'a str,
    /// The deciding plan's version.
    pub plan_version: u32,
    /// The pre-advice update the decision used; 0 = none.
    pub pre_advice_seq: u64,
    /// The SORT telegram's PLC link sequence number; 0 unless sent.
    pub plc_seq: u32,
    /// [`FLAG_WEIGHT_MEASURED`], [`FLAG_DIMENSIONS_MEASURED`].
    pub flags: u8,
    /// Weight in grams (when [`FLAG_WEIGHT_MEASURED`]).
    pub weight_g: u32,
    /// Length in millimetres (when [`FLAG_DIMENSIONS_MEASURED`]).
    pub length_mm: u16,
    /// Width in millimetres.
    pub width_mm: u16,
    /// Height in millimetres.
    pub height_mm: u16,
    /// When sortd received the scan, microseconds since the Unix epoch.
    pub received_us: u64,
    /// Microseconds from receipt to the decision.
    pub decided_after_us: u32,
    /// Microseconds from receipt to the SORT leaving for the PLC; 0 unless sent.
    pub sent_after_us: u32,
}

impl DecisionEvent<'_> {
    /// When the decision was made, microseconds since the Unix epoch.
    pub fn decided_us(&self) -> u64 {
        self.received_us + u64::from(self.decided_after_us)
    }

    /// When the SORT left, microseconds since the Unix epoch; `None` unless sent.
    pub fn sent_us(&self) -> Option<u64> {
        (self.action == Action::Sent).then(|| self.received_us + u64::from(self.sent_after_us))
    }

    /// The weight, if measured.
    pub fn weight_g(&self) -> Option<u32> {
        (self.flags & FLAG_WEIGHT_MEASURED != 0).then_some(self.weight_g)
    }

    /// Length, width, height, if measured.
    pub fn dimensions_mm(&self) -> Option<[u16; 3]> {
        (self.flags & FLAG_DIMENSIONS_MEASURED != 0).then_some([
            self.length_mm,
            self.width_mm,
            self.height_mm,
        ])
    }
}

/// The PLC's report on one parcel (SORT_CONFIRM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeEvent {
    /// Parcel id from the confirm.
    pub parcel_id: u64,
    /// Scanner id from the confirm.
    pub scanner_id: u32,
    /// The chute the PLC reports it acted on.
    pub chute: ChuteNumber,
    /// Diverted, missed, aborted or lost.
    pub outcome: Outcome,
    /// PLC link sequence number of the SORT it confirms; 0 if unknown.
    pub plc_seq: u32,
    /// Journal sequence of the matching decision event; 0 if unknown.
    pub decision_seq: u64,
    /// When sortd received the confirm, microseconds since the Unix epoch.
    pub confirmed_us: u64,
}

/// One sort event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A decision.
    Decision(DecisionEvent<'a>),
    /// A PLC outcome.
    Outcome(OutcomeEvent),
}

impl Event<'_> {
    /// The parcel id.
    pub fn parcel_id(&self) -> u64 {
        match self {
            Event::Decision(d) => d.parcel_id,
            Event::Outcome(o) => o.parcel_id,
        }
    }

    /// The scanner id.
    pub fn scanner_id(&self) -> u32 {
        match self {
            Event::Decision(d) => d.scanner_id,
            Event::Outcome(o) => o.scanner_id,
        }
    }
}

/// A decoded record: the journal sequence (the event id within its sorter) and the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Journal sequence, from 1, gap-free per sorter.
    pub seq: u64,
    /// The event.
    pub event: Event<'a>,
}

/// A field of a record, named in [`RecordError::BadField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordField {
    /// Flags with bits this version does not define.
    Flags,
    /// Sequence 0 (sequences start at 1).
    Seq,
    /// Unknown action code.
    Action,
    /// Unknown reason code.
    Reason,
    /// Unknown rule code.
    Rule,
    /// Unknown outcome code.
    Outcome,
    /// More than eight barcodes.
    BarcodeCount,
    /// A barcode length of 0 or above the maximum.
    BarcodeLength,
    /// Destination longer than the maximum.
    DestinationLength,
    /// Plan name not UTF-8, or too long.
    PlanName,
    /// The variable fields do not fill the record exactly.
    BodyLength,
}

impl RecordField {
    /// Stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordField::Flags => "flags",
            RecordField::Seq => "seq",
            RecordField::Action => "action",
            RecordField::Reason => "reason",
            RecordField::Rule => "rule",
            RecordField::Outcome => "outcome",
            RecordField::BarcodeCount => "barcode_count",
            RecordField::BarcodeLength => "barcode_length",
            RecordField::DestinationLength => "destination_length",
            RecordField::PlanName => "plan_name",
            RecordField::BodyLength => "body_length",
        }
    }
}

/// Why bytes are not a record (or an event cannot be encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The type byte is not a known record type.
    UnknownType {
        /// The byte found.
        got: u8,
    },
    /// The declared length is shorter than the type allows.
    TooShort {
        /// Declared length.
        declared: usize,
        /// Shortest valid length.
        min: usize,
    },
    /// The declared length is longer than the type allows.
    TooLong {
        /// Declared length.
        declared: usize,
        /// Longest valid length.
        max: usize,
    },
    /// The CRC-32C trailer does not match.
    BadCrc {
        /// The CRC the record carries.
        expected: u32,
        /// The CRC of the bytes.
        got: u32,
    },
    /// A field holds a value this version forbids.
    BadField {
        /// Which field.
        field: RecordField,
    },
}

impl RecordError {
    /// Stable snake_case label for counters and logs.
    pub const fn kind(&self) -> &'static str {
        match self {
            RecordError::UnknownType { .. } => "unknown_type",
            RecordError::TooShort { .. } => "too_short",
            RecordError::TooLong { .. } => "too_long",
            RecordError::BadCrc { .. } => "bad_crc",
            RecordError::BadField { .. } => "bad_field",
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordError::UnknownType { got } => write!(f, "unknown record type {got:#04x}"),
            RecordError::TooShort { declared, min } => {
                write!(f, "declared length {declared} below minimum {min}")
            }
            RecordError::TooLong { declared, max } => {
                write!(f, "declared length {declared} above maximum {max}")
            }
            RecordError::BadCrc { expected, got } => write!(
                f,
                "crc mismatch: record says {expected:#010x}, bytes give {got:#010x}"
            ),
            RecordError::BadField { field } => write!(f, "bad field {}", field.as_str()),
        }
    }
}

impl std::error::Error for RecordError {}

/// What [`decode`] found at the front of a buffer.
// Returned by value once per record and never stored: boxing would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDecoded<'a> {
    /// A complete, valid record occupies the first `consumed` bytes.
    Complete {
        /// The record, borrowing from the buffer.
        record: Record<'a>,
        /// Its length in bytes.
        consumed: usize,
    },
    /// The buffer holds the start of a record, not all of it (in a journal's last
    /// segment: a torn write, or one still arriving).
    NeedMore,
    /// The front of the buffer is not a valid record.
    Corrupt(RecordError),
}

/// Cuts `name` to at most [`PLAN_NAME_BYTES_MAX`] bytes at a character boundary.
pub fn plan_name_kept(name: &str) -> &str {
    if name.len() <= PLAN_NAME_BYTES_MAX {
        return name;
    }
    let mut end = PLAN_NAME_BYTES_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or_default()
}

/// The encoded length of `event`, or why it cannot be encoded.
pub fn encoded_len(event: &Event<'_>) -> Result<usize, RecordError> {
    match event {
        Event::Outcome(_) => Ok(OUTCOME_BYTES),
        Event::Decision(d) => {
            let mut bytes = DECISION_BYTES_MIN;
            for code in d.barcodes.iter() {
                if code.is_empty() || code.len() > BARCODE_BYTES_MAX {
                    return Err(RecordError::BadField {
                        field: RecordField::BarcodeLength,
                    });
                }
                bytes += RECORD_BARCODE_PREFIX_BYTES + code.len();
            }
            if d.destination.len() > DESTINATION_BYTES_MAX {
                return Err(RecordError::BadField {
                    field: RecordField::DestinationLength,
                });
            }
            if d.flags & !DECISION_FLAGS_KNOWN != 0 {
                return Err(RecordError::BadField {
                    field: RecordField::Flags,
                });
            }
            Ok(bytes + d.destination.len() + plan_name_kept(d.plan_name).len())
        }
    }
}

/// Appends the record for `event` with sequence `seq` to `out`; returns its length.
///
/// On error nothing is written. A plan name longer than [`PLAN_NAME_BYTES_MAX`] is cut
/// (at a character boundary); everything else that does not fit the format is an error.
pub fn encode(seq: u64, event: &Event<'_>, out: &mut Vec<u8>) -> Result<usize, RecordError> {
    if seq == 0 {
        return Err(RecordError::BadField {
            field: RecordField::Seq,
        });
    }
    let len = encoded_len(event)?;
    let start = out.len();
    out.reserve(len);
    match event {
        Event::Decision(d) => {
            let plan_name = plan_name_kept(d.plan_name);
            // The fixed part is assembled on the stack and copied once.
            let mut fixed = [0u8; DECISION_BYTES_MIN - RECORD_TRAILER_BYTES];
            // `len` fits a u16: checked against RECORD_BYTES_MAX at compile time.
            put(&mut fixed, 0, &(len as u16).to_le_bytes());
            fixed[2] = RECORD_TYPE_DECISION;
            fixed[3] = d.flags;
            put(&mut fixed, 4, &seq.to_le_bytes());
            put(&mut fixed, 12, &d.parcel_id.to_le_bytes());
            put(&mut fixed, 20, &d.scanner_id.to_le_bytes());
            put(&mut fixed, 24, &d.received_us.to_le_bytes());
            put(&mut fixed, 32, &d.decided_after_us.to_le_bytes());
            put(&mut fixed, 36, &d.sent_after_us.to_le_bytes());
            put(&mut fixed, 40, &d.plc_seq.to_le_bytes());
            put(&mut fixed, 44, &d.plan_version.to_le_bytes());
            put(&mut fixed, 48, &d.pre_advice_seq.to_le_bytes());
            put(&mut fixed, 56, &d.weight_g.to_le_bytes());
            put(&mut fixed, 60, &d.length_mm.to_le_bytes());
            put(&mut fixed, 62, &d.width_mm.to_le_bytes());
            put(&mut fixed, 64, &d.height_mm.to_le_bytes());
            put(&mut fixed, 66, &d.chute.to_le_bytes());
            put(
                &mut fixed,
                68,
                &[
                    d.action.code(),
                    d.reason.code(),
                    d.rule.code(),
                    d.barcodes.len() as u8,
                    d.destination.len() as u8,
                    plan_name.len() as u8,
                ],
            );
            out.extend_from_slice(&fixed);
            for code in d.barcodes.iter() {
                out.extend_from_slice(&(code.len() as u16).to_le_bytes());
                out.extend_from_slice(code);
            }
            out.extend_from_slice(d.destination);
            out.extend_from_slice(plan_name.as_bytes());
        }
        Event::Outcome(o) => {
            let mut fixed = [0u8; OUTCOME_BYTES - RECORD_TRAILER_BYTES];
            put(&mut fixed, 0, &(len as u16).to_le_bytes());
            fixed[2] = RECORD_TYPE_OUTCOME;
            put(&mut fixed, 4, &seq.to_le_bytes());
            put(&mut fixed, 12, &o.parcel_id.to_le_bytes());
            put(&mut fixed, 20, &o.scanner_id.to_le_bytes());
            put(&mut fixed, 24, &o.confirmed_us.to_le_bytes());
            put(&mut fixed, 32, &o.decision_seq.to_le_bytes());
            put(&mut fixed, 40, &o.plc_seq.to_le_bytes());
            put(&mut fixed, 44, &o.chute.to_le_bytes());
            fixed[46] = o.outcome.code();
            out.extend_from_slice(&fixed);
        }
    }
    let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, len);
    Ok(len)
}

/// Copies `bytes` into `fixed` at `at` (offsets are constants inside the array).
#[inline(always)]
fn put<const N: usize>(fixed: &mut [u8; N], at: usize, bytes: &[u8]) {
    if let Some(slot) = fixed.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// The declared length and type at the front of `buf`, checked against the limits, or
/// `Ok(None)` when fewer than 3 bytes are there. Lets a caller reject a record from its
/// header before reading the rest.
pub fn peek_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let [lo, hi, kind, ..] = *buf else {
        return Ok(None);
    };
    let declared = usize::from(u16::from_le_bytes([lo, hi]));
    let (min, max) = match kind {
        RECORD_TYPE_DECISION => (DECISION_BYTES_MIN, RECORD_BYTES_MAX),
        RECORD_TYPE_OUTCOME => (OUTCOME_BYTES, OUTCOME_BYTES),
        got => return Err(RecordError::UnknownType { got }),
    };
    if declared < min {
        return Err(RecordError::TooShort { declared, min });
    }
    if declared > max {
        return Err(RecordError::TooLong { declared, max });
    }
    Ok(Some(declared))
}

/// Decodes the record at the front of `buf`.
///
/// The length and type are checked before the rest is needed, so a bad header is
/// [`RecordDecoded::Corrupt`] at once, never a wait for bytes that will not come.
pub fn decode(buf: &[u8]) -> RecordDecoded<'_> {
    let declared = match peek_len(buf) {
        Ok(Some(declared)) => declared,
        Ok(None) => return RecordDecoded::NeedMore,
        Err(error) => return RecordDecoded::Corrupt(error),
    };
    let Some(bytes) = buf.get(..declared) else {
        return RecordDecoded::NeedMore;
    };
    let (covered, trailer) = bytes.split_at(declared - RECORD_TRAILER_BYTES);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let got = crc32c::crc32c(covered);
    if expected != got {
        return RecordDecoded::Corrupt(RecordError::BadCrc { expected, got });
    }
    match parse(covered) {
        Ok(record) => RecordDecoded::Complete {
            record,
            consumed: declared,
        },
        Err(field) => RecordDecoded::Corrupt(RecordError::BadField { field }),
    }
}

/// Reads fixed-width little-endian fields off the front of a slice.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, bytes: usize) -> Result<&'a [u8], RecordField> {
        let (taken, rest) = self
            .rest
            .split_at_checked(bytes)
            .ok_or(RecordField::BodyLength)?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordField> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(RecordField::BodyLength)?;
        self.rest = rest;
        Ok(*taken)
    }

    fn u8(&mut self) -> Result<u8, RecordField> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordField> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordField> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordField> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Parses a CRC-checked record (without its trailer).
fn parse(covered: &[u8]) -> Result<Record<'_>, RecordField> {
    let mut at = Cursor { rest: covered };
    let _len = at.u16()?;
    let kind = at.u8()?;
    let flags = at.u8()?;
    let seq = at.u64()?;
    if seq == 0 {
        return Err(RecordField::Seq);
    }
    let parcel_id = at.u64()?;
    let scanner_id = at.u32()?;
    let first_us = at.u64()?;
    let event = if kind == RECORD_TYPE_OUTCOME {
        if flags != 0 {
            return Err(RecordField::Flags);
        }
        let decision_seq = at.u64()?;
        let plc_seq = at.u32()?;
        let chute = at.u16()?;
        let outcome = Outcome::from_code(at.u8()?).ok_or(RecordField::Outcome)?;
        Event::Outcome(OutcomeEvent {
            parcel_id,
            scanner_id,
            chute,
            outcome,
            plc_seq,
            decision_seq,
            confirmed_us: first_us,
        })
    } else {
        if flags & !DECISION_FLAGS_KNOWN != 0 {
            return Err(RecordField::Flags);
        }
        let decided_after_us = at.u32()?;
        let sent_after_us = at.u32()?;
        let plc_seq = at.u32()?;
        let plan_version = at.u32()?;
        let pre_advice_seq = at.u64()?;
        let weight_g = at.u32()?;
        let length_mm = at.u16()?;
        let width_mm = at.u16()?;
        let height_mm = at.u16()?;
        let chute = at.u16()?;
        let action = Action::from_code(at.u8()?).ok_or(RecordField::Action)?;
        let reason = Reason::from_code(at.u8()?).ok_or(RecordField::Reason)?;
        let rule = Rule::from_code(at.u8()?).ok_or(RecordField::Rule)?;
        let barcode_count = usize::from(at.u8()?);
        let destination_bytes = usize::from(at.u8()?);
        let plan_name_bytes = usize::from(at.u8()?);
        if barcode_count > BARCODES_MAX {
            return Err(RecordField::BarcodeCount);
        }
        if destination_bytes > DESTINATION_BYTES_MAX {
            return Err(RecordField::DestinationLength);
        }
        let mut barcodes = Barcodes::new();
        for _ in 0..barcode_count {
            let code_bytes = usize::from(at.u16()?);
            if code_bytes == 0 || code_bytes > BARCODE_BYTES_MAX {
                return Err(RecordField::BarcodeLength);
            }
            barcodes
                .push(at.take(code_bytes)?)
                .map_err(|_| RecordField::BarcodeCount)?;
        }
        let destination = at.take(destination_bytes)?;
        let plan_name =
            std::str::from_utf8(at.take(plan_name_bytes)?).map_err(|_| RecordField::PlanName)?;
        Event::Decision(DecisionEvent {
            action,
            parcel_id,
            scanner_id,
            barcodes,
            destination,
            chute,
            reason,
            rule,
            plan_name,
            plan_version,
            pre_advice_seq,
            plc_seq,
            flags,
            weight_g,
            length_mm,
            width_mm,
            height_mm,
            received_us: first_us,
            decided_after_us,
            sent_after_us,
        })
    };
    if !at.rest.is_empty() {
        return Err(RecordField::BodyLength);
    }
    Ok(Record { seq, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example_decision() -> DecisionEvent<'static> {
        DecisionEvent {
            action: Action::Sent,
            parcel_id: 145,
            scanner_id: 7,
            barcodes: Barcodes::from_slice(&[b"JD0001234567"]).unwrap_or_default(),
            destination: b"330106",
            chute: 301,
            reason: Reason::SortedPrimary,
            rule: Rule::Prefix,
            plan_name: "hz-w3",
            plan_version: 12,
            pre_advice_seq: 0,
            plc_seq: 1042,
            flags: FLAG_WEIGHT_MEASURED | FLAG_DIMENSIONS_MEASURED,
            weight_g: 1250,
            length_mm: 321,
            width_mm: 150,
            height_mm: 87,
            received_us: 1_732_000_000_123_456,
            decided_after_us: 41,
            sent_after_us: 97,
        }
    }

    #[test]
    fn decision_and_outcome_round_trip() {
        let decision = Event::Decision(example_decision());
        let outcome = Event::Outcome(OutcomeEvent {
            parcel_id: 145,
            scanner_id: 7,
            chute: 301,
            outcome: Outcome::Diverted,
            plc_seq: 1042,
            decision_seq: 42,
            confirmed_us: 1_732_000_001_500_000,
        });
        for (seq, event) in [(42, decision), (43, outcome)] {
            let mut bytes = vec![0xEE]; // encode appends
            let len = encode(seq, &event, &mut bytes).unwrap();
            assert_eq!(len, bytes.len() - 1);
            match decode(&bytes[1..]) {
                RecordDecoded::Complete { record, consumed } => {
                    assert_eq!(consumed, len);
                    assert_eq!(record, Record { seq, event });
                }
                other => panic!("{other:?}"),
            }
            for cut in 0..len {
                assert_eq!(decode(&bytes[1..1 + cut]), RecordDecoded::NeedMore, "{cut}");
            }
        }
    }

    #[test]
    fn bad_headers_are_corrupt_before_the_body_arrives() {
        let cases: [(&[u8], RecordError); 4] = [
            (
                &[0, 0, 1],
                RecordError::TooShort {
                    declared: 0,
                    min: 78,
                },
            ),
            (
                &[0xff, 0xff, 1],
                RecordError::TooLong {
                    declared: 65535,
                    max: RECORD_BYTES_MAX,
                },
            ),
            (&[51, 0, 3], RecordError::UnknownType { got: 3 }),
            (
                &[52, 0, 2],
                RecordError::TooLong {
                    declared: 52,
                    max: 51,
                },
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(decode(bytes), RecordDecoded::Corrupt(error));
        }
    }

    #[test]
    fn encode_rejects_what_would_not_decode() {
        let mut out = Vec::new();
        let event = Event::Decision(example_decision());
        assert!(encode(0, &event, &mut out).is_err());
        let long = [b'x'; BARCODE_BYTES_MAX + 1];
        let bad = Event::Decision(DecisionEvent {
            barcodes: Barcodes::from_slice(&[&long]).unwrap_or_default(),
            ..example_decision()
        });
        assert!(encode(1, &bad, &mut out).is_err());
        assert!(out.is_empty());
        let name = "é".repeat(200);
        let named = Event::Decision(DecisionEvent {
            plan_name: &name,
            ..example_decision()
        });
        encode(1, &named, &mut out).unwrap();
        let RecordDecoded::Complete { record, .. } = decode(&out) else {
            panic!("long plan name");
        };
        let Event::Decision(d) = record.event else {
            panic!("kind");
        };
        assert_eq!(d.plan_name.len(), 254);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut bytes = Vec::new();
        encode(9, &Event::Decision(example_decision()), &mut bytes).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&flipped), RecordDecoded::Complete { .. }),
                "bit {bit}"
            );
        }
    }
}
