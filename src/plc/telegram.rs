//! The PLC link's telegrams: one fixed length for every type, big-endian, CRC-16 at the
//! end. Pure encode and decode; no state, no sequencing rules (those are in
//! [`super::host`] and [`super::peer`]), no stream framing (see `plc::reader`).
//!
//! Layout (PROTOCOL.md, "PLC link", has every byte): `magic(2) version(1) type(1)
//! seq(4) body(30) crc16(2)`. Reserved bytes must be zero, enumerations must hold a
//! known code and chute numbers must not be zero, so every byte string decodes to at most
//! one telegram and re-encodes to the same bytes.

use crate::decision::{ChuteNumber, Reason};

use super::checksum::crc16;
use super::error::TelegramDecodeError;

/// Bytes in every telegram, whatever its type.
pub const TELEGRAM_BYTES: usize = 40;
/// The sync word at offset 0 (ASCII `SD`).
pub const MAGIC: u16 = 0x5344;
/// The protocol version at offset 2.
pub const VERSION: u8 = 1;
/// Offset of the CRC-16; it covers bytes `0..CRC_OFFSET`.
pub const CRC_OFFSET: usize = TELEGRAM_BYTES - 2;
const HEADER_BYTES: usize = 8;

const _: () = assert!(HEADER_BYTES + 30 + 2 == TELEGRAM_BYTES);
const _: () = assert!(TELEGRAM_BYTES % 4 == 0, "S7 blocks stay word aligned");

/// Telegram type codes (byte 3).
pub mod kind {
    /// HELLO: resynchronisation on every (re)connect, both directions.
    pub const HELLO: u8 = 0x01;
    /// HEARTBEAT: liveness, both directions.
    pub const HEARTBEAT: u8 = 0x02;
    /// ACK: cumulative acknowledgement, both directions.
    pub const ACK: u8 = 0x03;
    /// SORT: host to PLC, one per parcel.
    pub const SORT: u8 = 0x10;
    /// SORT_CONFIRM: PLC to host, what happened to a parcel.
    pub const SORT_CONFIRM: u8 = 0x20;
    /// CHUTE_STATUS: PLC to host, a chute became available, full or disabled.
    pub const CHUTE_STATUS: u8 = 0x21;
}

/// One parcel's decision as the host sends it to the PLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortCommand {
    /// The parcel (or tray) id the scanner reported.
    pub parcel_id: u64,
    /// The scanner that reported the parcel.
    pub scanner_id: u32,
    /// The chute to divert to (never 0).
    pub chute: ChuteNumber,
    /// Why this chute.
    pub reason: Reason,
    /// Version of the sort plan the decision used.
    pub plan_version: u32,
    /// When the host decided, in microseconds on the host's clock; lets a simulator
    /// measure decision-to-PLC latency. The PLC treats it as opaque.
    pub decided_at_us: u64,
}

/// What the PLC reports happened to a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Outcome {
    /// Diverted into the commanded chute.
    Diverted = 1,
    /// Passed the chute without being diverted (e.g. too close to the previous parcel).
    Missed = 2,
    /// The PLC refused the divert (chute full or disabled).
    Aborted = 3,
    /// The parcel's position was lost (tracking error).
    Lost = 4,
}

impl Outcome {
    /// Every outcome, in code order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Diverted,
        Outcome::Missed,
        Outcome::Aborted,
        Outcome::Lost,
    ];

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// This outcome's position in [`Outcome::ALL`]: the slot of a table with one entry
    /// per outcome (`[T; Outcome::ALL.len()]`), always in range.
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// The outcome for a wire code, `None` if unknown.
    pub const fn from_code(code: u8) -> Option<Outcome> {
        match code {
            1 => Some(Outcome::Diverted),
            2 => Some(Outcome::Missed),
            3 => Some(Outcome::Aborted),
            4 => Some(Outcome::Lost),
            _ => None,
        }
    }

    /// snake_case name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Diverted => "diverted",
            Outcome::Missed => "missed",
            Outcome::Aborted => "aborted",
            Outcome::Lost => "lost",
        }
    }
}

const _: () = {
    let mut index = 0;
    while index < Outcome::ALL.len() {
        assert!(Outcome::ALL[index].index() == index);
        index += 1;
    }
};

/// The state of one chute as the PLC reports it. Code 0 is `Available` so that a
/// zero-initialised table means "every chute available".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ChuteState {
    /// Parcels may be diverted here.
    #[default]
    Available = 0,
    /// The chute is full; divert elsewhere until it is emptied.
    Full = 1,
    /// The chute is switched off (maintenance, fault, closed destination).
    Disabled = 2,
}

impl ChuteState {
    /// Every state, in code order.
    pub const ALL: [ChuteState; 3] = [
        ChuteState::Available,
        ChuteState::Full,
        ChuteState::Disabled,
    ];

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The state for a wire code, `None` if unknown.
    pub const fn from_code(code: u8) -> Option<ChuteState> {
        match code {
            0 => Some(ChuteState::Available),
            1 => Some(ChuteState::Full),
            2 => Some(ChuteState::Disabled),
            _ => None,
        }
    }

    /// snake_case name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChuteState::Available => "available",
            ChuteState::Full => "full",
            ChuteState::Disabled => "disabled",
        }
    }
}

/// A PLC's report on one parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortConfirm {
    /// The parcel id from the SORT.
    pub parcel_id: u64,
    /// The scanner id from the SORT.
    pub scanner_id: u32,
    /// The chute the PLC acted on (never 0).
    pub chute: ChuteNumber,
    /// What happened.
    pub outcome: Outcome,
}

/// Which end of the link sent a HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// sortd.
    Host = 1,
    /// The PLC (or its simulator).
    Plc = 2,
}

impl Role {
    /// The role for a wire code, `None` if unknown.
    pub const fn from_code(code: u8) -> Option<Role> {
        match code {
            1 => Some(Role::Host),
            2 => Some(Role::Plc),
            _ => None,
        }
    }
}

/// The resynchronisation telegram each side sends first on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    /// Who sends it.
    pub role: Role,
    /// The sender's session id: fixed for the life of its process, never 0. A new
    /// value tells the receiver the sender forgot everything.
    pub session: u64,
    /// The receiver's session that `acked_through_seq` refers to; 0 if the sender has
    /// never heard from the receiver.
    pub ack_session: u64,
    /// Cumulative: the sender received every numbered telegram of `ack_session` up to
    /// and including this sequence number. Meaningless when `ack_session` is 0.
    pub acked_through_seq: u32,
    /// The oldest of the sender's numbered telegrams it still holds unacknowledged
    /// (equal to `next_seq` when it holds none). Everything before it was acknowledged.
    pub window_first_seq: u32,
    /// The sequence number the sender will give its next new numbered telegram.
    pub next_seq: u32,
}

/// One decoded telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Telegram {
    /// Resynchronisation after a (re)connect.
    Hello(Hello),
    /// Liveness: the sender's counter and the last counter it received.
    Heartbeat {
        /// Incremented by one per heartbeat sent (wrapping).
        counter: u32,
        /// The last counter received from the other side (0 if none yet).
        echo: u32,
    },
    /// Cumulative acknowledgement of the other side's numbered telegrams.
    Ack {
        /// Every numbered telegram up to and including this one was received.
        through_seq: u32,
    },
    /// A parcel's decision (host to PLC), numbered by the host.
    Sort {
        /// Host sequence number.
        seq: u32,
        /// The decision.
        sort: SortCommand,
    },
    /// What happened to a parcel (PLC to host), numbered by the PLC.
    SortConfirm {
        /// PLC sequence number.
        seq: u32,
        /// The report.
        confirm: SortConfirm,
    },
    /// A chute's state changed (PLC to host), numbered by the PLC.
    ChuteStatus {
        /// PLC sequence number.
        seq: u32,
        /// The chute (never 0).
        chute: ChuteNumber,
        /// Its new state.
        state: ChuteState,
    },
}

impl Telegram {
    /// The type code of this telegram.
    pub const fn kind(&self) -> u8 {
        match self {
            Telegram::Hello(_) => kind::HELLO,
            Telegram::Heartbeat { .. } => kind::HEARTBEAT,
            Telegram::Ack { .. } => kind::ACK,
            Telegram::Sort { .. } => kind::SORT,
            Telegram::SortConfirm { .. } => kind::SORT_CONFIRM,
            Telegram::ChuteStatus { .. } => kind::CHUTE_STATUS,
        }
    }

    /// Encode into exactly [`TELEGRAM_BYTES`] bytes.
    pub fn encode(&self) -> [u8; TELEGRAM_BYTES] {
        let mut writer = Writer {
            bytes: [0u8; TELEGRAM_BYTES],
        };
        writer.put_u16(0, MAGIC);
        writer.put_u8(2, VERSION);
        writer.put_u8(3, self.kind());
        match *self {
            Telegram::Hello(hello) => {
                writer.put_u32(4, hello.acked_through_seq);
                writer.put_u64(8, hello.session);
                writer.put_u64(16, hello.ack_session);
                writer.put_u32(24, hello.window_first_seq);
                writer.put_u32(28, hello.next_seq);
                writer.put_u8(32, hello.role as u8);
            }
            Telegram::Heartbeat { counter, echo } => {
                writer.put_u32(4, counter);
                writer.put_u32(8, echo);
            }
            Telegram::Ack { through_seq } => writer.put_u32(4, through_seq),
            Telegram::Sort { seq, sort } => {
                writer.put_u32(4, seq);
                writer.put_u64(8, sort.parcel_id);
                writer.put_u64(16, sort.decided_at_us);
                writer.put_u32(24, sort.scanner_id);
                writer.put_u32(28, sort.plan_version);
                writer.put_u16(32, sort.chute);
                writer.put_u8(34, sort.reason.code());
            }
            Telegram::SortConfirm { seq, confirm } => {
                writer.put_u32(4, seq);
                writer.put_u64(8, confirm.parcel_id);
                writer.put_u32(16, confirm.scanner_id);
                writer.put_u16(20, confirm.chute);
                writer.put_u8(22, confirm.outcome.code());
            }
            Telegram::ChuteStatus { seq, chute, state } => {
                writer.put_u32(4, seq);
                writer.put_u16(8, chute);
                writer.put_u8(10, state.code());
            }
        }
        let crc = crc16(writer.bytes.get(..CRC_OFFSET).unwrap_or(&[]));
        writer.put_u16(CRC_OFFSET, crc);
        writer.bytes
    }

    /// Append the encoded telegram to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }

    /// Decode the first [`TELEGRAM_BYTES`] bytes of `bytes` (the rest is ignored).
    pub fn decode(bytes: &[u8]) -> Result<Telegram, TelegramDecodeError> {
        let Some(block) = bytes.get(..TELEGRAM_BYTES) else {
            return Err(TelegramDecodeError::TooShort {
                got_bytes: bytes.len(),
            });
        };
        let reader = Reader { bytes: block };
        let magic = reader.u16(0);
        if magic != MAGIC {
            return Err(TelegramDecodeError::BadMagic { got: magic });
        }
        let version = reader.u8(2);
        if version != VERSION {
            return Err(TelegramDecodeError::UnsupportedVersion { got: version });
        }
        let kind = reader.u8(3);
        // The body layout is known once the type is known; an unknown type is reported
        // before the CRC so a newer peer's telegram is named as such.
        let used_bytes = match kind {
            kind::HELLO => 33,
            kind::HEARTBEAT => 12,
            kind::ACK => 8,
            kind::SORT => 35,
            kind::SORT_CONFIRM => 23,
            kind::CHUTE_STATUS => 11,
            got => return Err(TelegramDecodeError::UnknownType { got }),
        };
        let computed = crc16(block.get(..CRC_OFFSET).unwrap_or(&[]));
        let carried = reader.u16(CRC_OFFSET);
        if computed != carried {
            return Err(TelegramDecodeError::ChecksumMismatch { computed, carried });
        }
        if let Some(offset) = (used_bytes..CRC_OFFSET).find(|&offset| reader.u8(offset) != 0) {
            return Err(TelegramDecodeError::ReservedNotZero { offset });
        }
        let seq = reader.u32(4);
        let telegram = match kind {
            kind::HELLO => Telegram::Hello(Hello {
                role: decode_role(reader.u8(32))?,
                session: nonzero_session("session", reader.u64(8))?,
                ack_session: reader.u64(16),
                acked_through_seq: seq,
                window_first_seq: reader.u32(24),
                next_seq: reader.u32(28),
            }),
            kind::HEARTBEAT => Telegram::Heartbeat {
                counter: seq,
                echo: reader.u32(8),
            },
            kind::ACK => Telegram::Ack { through_seq: seq },
            kind::SORT => Telegram::Sort {
                seq,
                sort: SortCommand {
                    parcel_id: reader.u64(8),
                    decided_at_us: reader.u64(16),
                    scanner_id: reader.u32(24),
                    plan_version: reader.u32(28),
                    chute: nonzero_chute(reader.u16(32))?,
                    reason: decode_reason(reader.u8(34))?,
                },
            },
            kind::SORT_CONFIRM => Telegram::SortConfirm {
                seq,
                confirm: SortConfirm {
                    parcel_id: reader.u64(8),
                    scanner_id: reader.u32(16),
                    chute: nonzero_chute(reader.u16(20))?,
                    outcome: decode_outcome(reader.u8(22))?,
                },
            },
            _ => Telegram::ChuteStatus {
                seq,
                chute: nonzero_chute(reader.u16(8))?,
                state: decode_chute_state(reader.u8(10))?,
            },
        };
        Ok(telegram)
    }
}

fn decode_role(code: u8) -> Result<Role, TelegramDecodeError> {
    Role::from_code(code).ok_or(TelegramDecodeError::InvalidField {
        field: "role",
        value: u64::from(code),
    })
}

fn decode_reason(code: u8) -> Result<Reason, TelegramDecodeError> {
    Reason::from_code(code).ok_or(TelegramDecodeError::InvalidField {
        field: "reason",
        value: u64::from(code),
    })
}

fn decode_outcome(code: u8) -> Result<Outcome, TelegramDecodeError> {
    Outcome::from_code(code).ok_or(TelegramDecodeError::InvalidField {
        field: "outcome",
        value: u64::from(code),
    })
}

fn decode_chute_state(code: u8) -> Result<ChuteState, TelegramDecodeError> {
    ChuteState::from_code(code).ok_or(TelegramDecodeError::InvalidField {
        field: "state",
        value: u64::from(code),
    })
}

fn nonzero_chute(chute: u16) -> Result<ChuteNumber, TelegramDecodeError> {
    if chute == 0 {
        return Err(TelegramDecodeError::InvalidField {
            field: "chute",
            value: 0,
        });
    }
    Ok(chute)
}

fn nonzero_session(field: &'static str, session: u64) -> Result<u64, TelegramDecodeError> {
    if session == 0 {
        return Err(TelegramDecodeError::InvalidField { field, value: 0 });
    }
    Ok(session)
}

/// Big-endian field writes into a telegram; offsets are compile-time constants of the
/// layout, so an out-of-range offset is a bug caught by the round-trip tests.
struct Writer {
    bytes: [u8; TELEGRAM_BYTES],
}

impl Writer {
    fn put(&mut self, offset: usize, value: &[u8]) {
        if let Some(slot) = self.bytes.get_mut(offset..offset + value.len()) {
            slot.copy_from_slice(value);
        }
    }
    fn put_u8(&mut self, offset: usize, value: u8) {
        self.put(offset, &[value]);
    }
    fn put_u16(&mut self, offset: usize, value: u16) {
        self.put(offset, &value.to_be_bytes());
    }
    fn put_u32(&mut self, offset: usize, value: u32) {
        self.put(offset, &value.to_be_bytes());
    }
    fn put_u64(&mut self, offset: usize, value: u64) {
        self.put(offset, &value.to_be_bytes());
    }
}

/// Big-endian field reads from a block already checked to be [`TELEGRAM_BYTES`] long.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(field) = self.bytes.get(offset..offset + N) {
            out.copy_from_slice(field);
        }
        out
    }
    fn u8(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0)
    }
    fn u16(&self, offset: usize) -> u16 {
        u16::from_be_bytes(self.array(offset))
    }
    fn u32(&self, offset: usize) -> u32 {
        u32::from_be_bytes(self.array(offset))
    }
    fn u64(&self, offset: usize) -> u64 {
        u64::from_be_bytes(self.array(offset))
    }
}
