//! The pre-advice log record: one applied batch, CRC'd, so a restart can rebuild the
//! overlay. Pure encode and decode over bytes; the files (segments, fsync, torn-tail
//! cut) are [`super::preadvice`]'s.
//!
//! Record (little-endian, not aligned):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `PADV` |
//! | 4 | body length in bytes (at most [`RECORD_BODY_BYTES_MAX`]) |
//! | 4 | CRC-32C of the body |
//! | 8 | body: batch sequence (never 0) |
//! | 4 | body: entry count |
//! | ... | body: entries |
//!
//! Entry: `op: u8` (1 chutes, 2 destination, 3 remove), `key_len: u8` (1..=128), the
//! key; then for chutes four `u16` slots (the list then zeros), for a destination
//! `len: u8` (1..=128) and the code, for a removal nothing.

use super::format::KEY_BYTES_MAX;
use super::overlay::{PreAdviceEntry, PreAdviceValue};
use super::types::{CHUTES_PER_RULE_MAX, Chutes};

/// Record magic.
pub const RECORD_MAGIC: [u8; 4] = *b"PADV";
/// Bytes before the body: magic, length, CRC.
pub const RECORD_HEADER_BYTES: usize = 12;
/// The largest body accepted (a batch of 65 536 entries of 128-byte keys and codes fits).
pub const RECORD_BODY_BYTES_MAX: usize = 32 << 20;
/// The most entries in one batch.
pub const BATCH_ENTRIES_MAX: usize = 65_536;

const _: () = assert!(
    BATCH_ENTRIES_MAX * (2 + KEY_BYTES_MAX + 1 + KEY_BYTES_MAX) + 12 <= RECORD_BODY_BYTES_MAX
);

const OP_CHUTES: u8 = 1;
const OP_DESTINATION: u8 = 2;
const OP_REMOVE: u8 = 3;

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The record is not complete: a torn tail, or more bytes are coming.
    Incomplete,
    /// The magic is wrong.
    BadMagic,
    /// The length field is above [`RECORD_BODY_BYTES_MAX`] or too small.
    BadLength {
        /// The length read.
        body_bytes: u32,
    },
    /// The CRC does not match the body.
    BadCrc {
        /// CRC stored.
        expected: u32,
        /// CRC of the bytes.
        got: u32,
    },
    /// The CRC matched but a field is invalid (written by a different build?).
    BadField {
        /// Which field.
        what: &'static str,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Incomplete => write!(f, "incomplete record"),
            RecordError::BadMagic => write!(f, "bad record magic"),
            RecordError::BadLength { body_bytes } => {
                write!(f, "bad record length {body_bytes}")
            }
            RecordError::BadCrc { expected, got } => write!(
                f,
                "record crc mismatch: stored {expected:#010x}, bytes give {got:#010x}"
            ),
            RecordError::BadField { what } => write!(f, "bad record field: {what}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Append one record for `batch` at `seq` to `out`. Entries must be valid
/// ([`super::overlay::validate_entry`]) and at most [`BATCH_ENTRIES_MAX`]; the caller
/// checks both.
pub fn encode_record(seq: u64, batch: &[PreAdviceEntry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&[0; 8]);
    let body_start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for entry in batch {
        let op = match entry.value {
            PreAdviceValue::Chutes(_) => OP_CHUTES,
            PreAdviceValue::Destination(_) => OP_DESTINATION,
            PreAdviceValue::Remove => OP_REMOVE,
        };
        out.push(op);
        out.push(entry.barcode.len() as u8);
        out.extend_from_slice(&entry.barcode);
        match &entry.value {
            PreAdviceValue::Chutes(chutes) => {
                for chute in chutes.slots() {
                    out.extend_from_slice(&chute.to_le_bytes());
                }
            }
            PreAdviceValue::Destination(code) => {
                out.push(code.len() as u8);
                out.extend_from_slice(code);
            }
            PreAdviceValue::Remove => {}
        }
    }
    let body_bytes = (out.len() - body_start) as u32;
    let crc = crc32c::crc32c(out.get(body_start..).unwrap_or_default());
    if let Some(header) = out.get_mut(start + 4..start + RECORD_HEADER_BYTES) {
        header[..4].copy_from_slice(&body_bytes.to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A cursor over a record body.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if count > self.bytes.len() {
            return Err(RecordError::BadField { what });
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(1, what)?[0])
    }

    fn key(&mut self, what: &'static str) -> Result<&'a [u8], RecordError> {
        let len = usize::from(self.u8(what)?);
        if len == 0 || len > KEY_BYTES_MAX {
            return Err(RecordError::BadField { what });
        }
        self.take(len, what)
    }
}

/// Decode the record at the start of `bytes`: its sequence, entries and length.
pub fn decode_record(bytes: &[u8]) -> Result<(u64, Vec<PreAdviceEntry>, usize), RecordError> {
    let header = bytes
        .get(..RECORD_HEADER_BYTES)
        .ok_or(RecordError::Incomplete)?;
    if header[..4] != RECORD_MAGIC {
        return Err(RecordError::BadMagic);
    }
    let body_bytes = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let expected = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if (body_bytes as usize) < 12 || body_bytes as usize > RECORD_BODY_BYTES_MAX {
        return Err(RecordError::BadLength { body_bytes });
    }
    let end = RECORD_HEADER_BYTES + body_bytes as usize;
    let body = bytes
        .get(RECORD_HEADER_BYTES..end)
        .ok_or(RecordError::Incomplete)?;
    let got = crc32c::crc32c(body);
    if got != expected {
        return Err(RecordError::BadCrc { expected, got });
    }
    let mut reader = Reader { bytes: body };
    let seq = u64::from_le_bytes(
        reader
            .take(8, "sequence")?
            .try_into()
            .map_err(|_| RecordError::BadField { what: "sequence" })?,
    );
    if seq == 0 {
        return Err(RecordError::BadField { what: "sequence 0" });
    }
    let count = u32::from_le_bytes(reader.take(4, "entry count")?.try_into().map_err(|_| {
        RecordError::BadField {
            what: "entry count",
        }
    })?) as usize;
    if count > BATCH_ENTRIES_MAX {
        return Err(RecordError::BadField {
            what: "entry count",
        });
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let op = reader.u8("op")?;
        let barcode = Box::from(reader.key("barcode")?);
        let value = match op {
            OP_CHUTES => {
                let raw = reader.take(2 * CHUTES_PER_RULE_MAX, "chutes")?;
                let mut slots = [0u16; CHUTES_PER_RULE_MAX];
                for (slot, pair) in slots.iter_mut().zip(raw.chunks_exact(2)) {
                    *slot = u16::from_le_bytes([pair[0], pair[1]]);
                }
                PreAdviceValue::Chutes(
                    Chutes::from_slots(slots).ok_or(RecordError::BadField { what: "chutes" })?,
                )
            }
            OP_DESTINATION => PreAdviceValue::Destination(Box::from(reader.key("destination")?)),
            OP_REMOVE => PreAdviceValue::Remove,
            _ => return Err(RecordError::BadField { what: "op" }),
        };
        entries.push(PreAdviceEntry { barcode, value });
    }
    if !reader.bytes.is_empty() {
        return Err(RecordError::BadField {
            what: "trailing bytes",
        });
    }
    Ok((seq, entries, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<PreAdviceEntry> {
        vec![
            PreAdviceEntry {
                barcode: Box::from(&b"YT1"[..]),
                value: PreAdviceValue::Chutes(Chutes::new(&[7, 8]).expect("valid")),
            },
            PreAdviceEntry {
                barcode: Box::from(&b"YT2"[..]),
                value: PreAdviceValue::Destination(Box::from(&b"330106"[..])),
            },
            PreAdviceEntry {
                barcode: Box::from(&b"YT3"[..]),
                value: PreAdviceValue::Remove,
            },
        ]
    }

    #[test]
    fn round_trip_and_every_torn_prefix_is_incomplete() {
        let mut bytes = Vec::new();
        encode_record(42, &batch(), &mut bytes);
        let (seq, entries, used) = decode_record(&bytes).expect("decodes");
        assert_eq!((seq, entries, used), (42, batch(), bytes.len()));
        for cut in 0..bytes.len() {
            let result = decode_record(&bytes[..cut]);
            assert_eq!(result.err(), Some(RecordError::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode_record(1, &batch(), &mut bytes);
        for index in RECORD_HEADER_BYTES..bytes.len() {
            let mut copy = bytes.clone();
            copy[index] ^= 0x10;
            assert!(matches!(
                decode_record(&copy),
                Err(RecordError::BadCrc { .. })
            ));
        }
    }
}
