//! A journal segment's bytes: the header ([`SegmentHeader`]) and the scan that finds
//! where the intact records end ([`scan_records`]).
//!
//! A segment is a header followed by records back to back, sequences consecutive from the
//! header's `first_seq`. The scan is pure (bytes in, verdict out): it stops at the first
//! torn record, corrupt record or sequence break and says where, so the journal can cut a
//! torn tail and a reader can skip damage. Files, names and directories are `journal/`.

use std::fmt;

use super::record::{Record, RecordDecoded, RecordError, decode};

/// The eight bytes every segment starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SORTDEVJ";
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
/// Header bytes before the two ids: magic, version, header length, first seq, id lengths.
pub const SEGMENT_HEADER_FIXED_BYTES: usize = 8 + 2 + 2 + 8 + 1 + 1;
/// Longest hub or sorter id, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Longest segment header.
pub const SEGMENT_HEADER_BYTES_MAX: usize = SEGMENT_HEADER_FIXED_BYTES + 2 * ID_BYTES_MAX + 4;

const _: () = assert!(ID_BYTES_MAX <= u8::MAX as usize);

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader<'a> {
    /// Sequence of the segment's first record.
    pub first_seq: u64,
    /// The hub this journal belongs to.
    pub hub_id: &'a str,
    /// The sorter this journal belongs to (event ids are `sorter_id` + sequence).
    pub sorter_id: &'a str,
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header needs (an empty or cut-off file).
    Truncated,
    /// The file does not start with [`SEGMENT_MAGIC`].
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion {
        /// The version found.
        got: u16,
    },
    /// The header length does not match the id lengths.
    BadLength,
    /// An id is empty, too long or has characters outside `A-Z a-z 0-9 _ -`.
    BadId,
    /// First sequence 0 (sequences start at 1).
    BadFirstSeq,
    /// The header's CRC-32C does not match.
    BadCrc,
}

impl HeaderError {
    /// Stable snake_case label.
    pub const fn kind(&self) -> &'static str {
        match self {
            HeaderError::Truncated => "truncated",
            HeaderError::BadMagic => "bad_magic",
            HeaderError::UnsupportedVersion { .. } => "unsupported_version",
            HeaderError::BadLength => "bad_length",
            HeaderError::BadId => "bad_id",
            HeaderError::BadFirstSeq => "bad_first_seq",
            HeaderError::BadCrc => "bad_crc",
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::UnsupportedVersion { got } => {
                write!(f, "segment header: unsupported version {got}")
            }
            other => write!(f, "segment header: {}", other.kind()),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Checks a hub or sorter id: 1 to [`ID_BYTES_MAX`] bytes of `A-Z a-z 0-9 _ -`, so that it
/// can stand as one token of a NATS subject and in a file name.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err("must be 1 to 64 bytes");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may hold only A-Z, a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

impl SegmentHeader<'_> {
    /// Encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        SEGMENT_HEADER_FIXED_BYTES + self.hub_id.len() + self.sorter_id.len() + 4
    }

    /// Appends the header to `out`. The ids must pass [`check_id`] (the caller validated
    /// them from configuration).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if check_id(self.hub_id).is_err() || check_id(self.sorter_id).is_err() {
            return Err(HeaderError::BadId);
        }
        if self.first_seq == 0 {
            return Err(HeaderError::BadFirstSeq);
        }
        let start = out.len();
        out.extend_from_slice(&SEGMENT_MAGIC);
        out.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.encoded_len() as u16).to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.push(self.hub_id.len() as u8);
        out.push(self.sorter_id.len() as u8);
        out.extend_from_slice(self.hub_id.as_bytes());
        out.extend_from_slice(self.sorter_id.as_bytes());
        let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(())
    }
}

/// Decodes the header at the front of a segment; returns it and its length.
pub fn decode_header(buf: &[u8]) -> Result<(SegmentHeader<'_>, usize), HeaderError> {
    let Some(fixed) = buf.first_chunk::<SEGMENT_HEADER_FIXED_BYTES>() else {
        return Err(if buf.len() >= 8 && buf[..8] != SEGMENT_MAGIC {
            HeaderError::BadMagic
        } else {
            HeaderError::Truncated
        });
    };
    if fixed[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    if version != SEGMENT_VERSION {
        return Err(HeaderError::UnsupportedVersion { got: version });
    }
    let header_bytes = usize::from(u16::from_le_bytes([fixed[10], fixed[11]]));
    let mut first_seq = [0u8; 8];
    first_seq.copy_from_slice(&fixed[12..20]);
    let first_seq = u64::from_le_bytes(first_seq);
    let hub_bytes = usize::from(fixed[20]);
    let sorter_bytes = usize::from(fixed[21]);
    if header_bytes != SEGMENT_HEADER_FIXED_BYTES + hub_bytes + sorter_bytes + 4 {
        return Err(HeaderError::BadLength);
    }
    let Some(header) = buf.get(..header_bytes) else {
        return Err(HeaderError::Truncated);
    };
    let (covered, trailer) = header.split_at(header_bytes - 4);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32c::crc32c(covered) != expected {
        return Err(HeaderError::BadCrc);
    }
    let ids = &covered[SEGMENT_HEADER_FIXED_BYTES..];
    let (hub, sorter) = ids.split_at(hub_bytes);
    let hub_id = std::str::from_utf8(hub).map_err(|_| HeaderError::BadId)?;
    let sorter_id = std::str::from_utf8(sorter).map_err(|_| HeaderError::BadId)?;
    if check_id(hub_id).is_err() || check_id(sorter_id).is_err() {
        return Err(HeaderError::BadId);
    }
    if first_seq == 0 {
        return Err(HeaderError::BadFirstSeq);
    }
    Ok((
        SegmentHeader {
            first_seq,
            hub_id,
            sorter_id,
        },
        header_bytes,
    ))
}

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The bytes end inside a record (a torn write, or a write still arriving).
    Torn {
        /// Bytes of the incomplete record.
        bytes: usize,
    },
    /// A record is corrupt.
    Corrupt(RecordError),
    /// A valid record with the wrong sequence number.
    SeqBreak {
        /// The sequence expected.
        expected: u64,
        /// The sequence found.
        got: u64,
    },
}

impl Damage {
    /// Stable snake_case label for counters and logs.
    pub const fn kind(&self) -> &'static str {
        match self {
            Damage::Torn { .. } => "torn",
            Damage::Corrupt(_) => "corrupt",
            Damage::SeqBreak { .. } => "seq_break",
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Torn { bytes } => write!(f, "torn record ({bytes} bytes)"),
            Damage::Corrupt(error) => write!(f, "corrupt record: {error}"),
            Damage::SeqBreak { expected, got } => {
                write!(f, "sequence break: expected {expected}, found {got}")
            }
        }
    }
}

/// What [`scan_records`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Intact records, in order from the start.
    pub records: u64,
    /// Bytes of `body` they occupy; the intact part ends here.
    pub valid_bytes: usize,
    /// Sequence the next record must have.
    pub next_seq: u64,
    /// Why the scan stopped before the end, if it did.
    pub damage: Option<Damage>,
}

/// Walks the records in `body` (a segment's bytes after its header), expecting sequences
/// from `first_seq`, calling `each` for every intact one; stops at the first damage.
pub fn scan_records<'a>(
    body: &'a [u8],
    first_seq: u64,
    mut each: impl FnMut(&Record<'a>, &'a [u8]),
) -> Scan {
    let mut scan = Scan {
        records: 0,
        valid_bytes: 0,
        next_seq: first_seq,
        damage: None,
    };
    while let Some(rest) = body.get(scan.valid_bytes..) {
        if rest.is_empty() {
            break;
        }
        match decode(rest) {
            RecordDecoded::Complete { record, consumed } => {
                if record.seq != scan.next_seq {
                    scan.damage = Some(Damage::SeqBreak {
                        expected: scan.next_seq,
                        got: record.seq,
                    });
                    break;
                }
                each(&record, rest.get(..consumed).unwrap_or_default());
                scan.records += 1;
                scan.valid_bytes += consumed;
                scan.next_seq += 1;
            }
            RecordDecoded::NeedMore => {
                scan.damage = Some(Damage::Torn { bytes: rest.len() });
                break;
            }
            RecordDecoded::Corrupt(error) => {
                scan.damage = Some(Damage::Corrupt(error));
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = SegmentHeader {
            first_seq: 77,
            hub_id: "HZ1",
            sorter_id: "xb-2",
        };
        let mut bytes = Vec::new();
        header.encode(&mut bytes).unwrap();
        assert_eq!(bytes.len(), header.encoded_len());
        assert_eq!(decode_header(&bytes), Ok((header, bytes.len())));
        for cut in 0..bytes.len() {
            assert!(decode_header(&bytes[..cut]).is_err());
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn ids_are_subject_tokens() {
        for good in ["a", "HZ-1", "sorter_2", &"x".repeat(64)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a b", "*", ">", "é", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
