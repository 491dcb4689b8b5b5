//! The decoded shapes of what a scanner sends: [`Frame`] and its three kinds, plus the
//! [`Decoded`] outcome every decoder returns.
//!
//! These types borrow barcodes and destination codes from the input buffer, so a decoded
//! frame costs no allocation. This module only defines the shapes and their limits;
//! reading and writing bytes is `binary.rs` and `text.rs`.

use std::fmt;

use super::error::FrameDecodeError;

/// Most barcodes one SCAN may carry.
pub const BARCODES_MAX: usize = 8;

/// Longest single barcode, in bytes (room for 2D codes such as PDF417 shipping labels).
pub const BARCODE_BYTES_MAX: usize = 1024;

/// Longest destination code, in bytes of UTF-8.
pub const DESTINATION_BYTES_MAX: usize = 128;

const _: () = assert!(BARCODES_MAX <= u8::MAX as usize);
const _: () = assert!(BARCODE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(DESTINATION_BYTES_MAX <= u8::MAX as usize);

/// One frame from a scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One parcel seen.
    Scan(ScanFrame<'a>),
    /// The scanner announces itself after connecting.
    Hello(Hello),
    /// The scanner is alive and has nothing to report.
    Heartbeat(Heartbeat),
}

/// One parcel seen by a scanner or DWS station.
///
/// Text telegrams carry no scanner id, sequence or time: those fields are 0 and the
/// caller fills them from the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFrame<'a> {
    /// The scanner that saw the parcel.
    pub scanner_id: u32,
    /// Per-scanner sequence number, incremented by one for every SCAN it sends.
    pub sequence: u32,
    /// Parcel or tray id the scanner assigned; 0 means the scanner gave none.
    pub parcel_id: u64,
    /// The scanner's own clock when it saw the parcel, in microseconds (epoch is the
    /// scanner's business; only differences matter).
    pub scanned_at_us: u64,
    /// Codes read, at most [`BARCODES_MAX`]; empty means a no-read.
    pub barcodes: Barcodes<'a>,
    /// Destination code the scanner resolved itself (UTF-8, 1 to
    /// [`DESTINATION_BYTES_MAX`] bytes), if any.
    pub destination: Option<&'a [u8]>,
    /// Weight in grams; meaningful when [`ScanFlags::WEIGHT_MEASURED`] is set.
    pub weight_g: u32,
    /// Length in millimetres; meaningful when [`ScanFlags::DIMENSIONS_MEASURED`] is set.
    pub length_mm: u16,
    /// Width in millimetres.
    pub width_mm: u16,
    /// Height in millimetres.
    pub height_mm: u16,
    /// What the scanner says about the read and the measurements.
    pub flags: ScanFlags,
}

/// First frame on a binary connection: who is talking and which protocol it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The scanner's id; every later frame on the connection carries the same.
    pub scanner_id: u32,
    /// Highest protocol version the scanner speaks (at least 1).
    pub protocol_version: u8,
    /// How often the scanner promises a HEARTBEAT when idle, in milliseconds (0: never).
    pub heartbeat_interval_ms: u16,
    /// The scanner's clock when it sent the frame, in microseconds.
    pub sent_at_us: u64,
}

/// Sent by an idle scanner so the link is known to be alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The scanner's id.
    pub scanner_id: u32,
    /// Heartbeat counter, incremented by one per heartbeat (independent of SCAN sequence).
    pub sequence: u32,
    /// The scanner's clock when it sent the frame, in microseconds.
    pub sent_at_us: u64,
}

/// What a decoder made of the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, valid frame occupies the first `consumed` bytes.
    Frame {
        /// The frame, borrowing from the buffer.
        frame: Frame<'a>,
        /// Bytes to drop from the front of the buffer before decoding the next frame.
        consumed: usize,
    },
    /// The buffer holds the start of a frame but not all of it: read more and call
    /// again with the same bytes plus the new ones. Incomplete is not invalid.
    NeedMore,
    /// The first `skip` bytes are not a valid frame: drop them (count them) and call
    /// again. `skip` is at least 1 and never more than the buffer holds.
    Skip {
        /// What was wrong.
        error: FrameDecodeError,
        /// Bytes to drop.
        skip: usize,
    },
}

/// Up to [`BARCODES_MAX`] barcodes borrowed from the input, kept inline (no allocation).
#[derive(Clone, Copy)]
pub struct Barcodes<'a> {
    codes: [&'a [u8]; BARCODES_MAX],
    count: u8,
}

impl<'a> Barcodes<'a> {
    /// No barcodes: a no-read.
    pub const fn new() -> Self {
        Barcodes {
            codes: [&[]; BARCODES_MAX],
            count: 0,
        }
    }

    /// The barcodes in `codes`, or `None` if there are more than [`BARCODES_MAX`].
    pub fn from_slice(codes: &[&'a [u8]]) -> Option<Self> {
        let mut barcodes = Barcodes::new();
        for code in codes {
            barcodes.push(code).ok()?;
        }
        Some(barcodes)
    }

    /// The first `count` of `codes` (`count` is capped at [`BARCODES_MAX`]).
    pub(super) fn from_array(codes: [&'a [u8]; BARCODES_MAX], count: u8) -> Self {
        Barcodes {
            codes,
            count: count.min(BARCODES_MAX as u8),
        }
    }

    /// Adds a barcode; gives it back if [`BARCODES_MAX`] are already held.
    pub fn push(&mut self, code: &'a [u8]) -> Result<(), &'a [u8]> {
        match self.codes.get_mut(usize::from(self.count)) {
            Some(slot) => {
                *slot = code;
                self.count += 1;
                Ok(())
            }
            None => Err(code),
        }
    }

    /// The barcodes as a slice.
    pub fn as_slice(&self) -> &[&'a [u8]] {
        self.codes
            .get(..usize::from(self.count))
            .unwrap_or_default()
    }

    /// How many barcodes are held.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// True for a no-read.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The barcodes in order.
    pub fn iter(&self) -> std::slice::Iter<'_, &'a [u8]> {
        self.as_slice().iter()
    }
}

impl Default for Barcodes<'_> {
    fn default() -> Self {
        Barcodes::new()
    }
}

impl PartialEq for Barcodes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Barcodes<'_> {}

impl fmt::Debug for Barcodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|code| String::from_utf8_lossy(code)))
            .finish()
    }
}

impl<'s, 'a> IntoIterator for &'s Barcodes<'a> {
    type Item = &'s &'a [u8];
    type IntoIter = std::slice::Iter<'s, &'a [u8]>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// What a scanner says about a SCAN, as bits of a `u16`.
///
/// Bits this version does not name are kept as they came (a receiver ignores them), so a
/// newer scanner can add flags without a new protocol version.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScanFlags(u16);

impl ScanFlags {
    /// No flag set.
    pub const EMPTY: ScanFlags = ScanFlags(0);
    /// The scanner read several different codes it could not reconcile.
    pub const MULTI_READ: ScanFlags = ScanFlags(0x0001);
    /// `weight_g` holds a measured weight.
    pub const WEIGHT_MEASURED: ScanFlags = ScanFlags(0x0002);
    /// `length_mm`, `width_mm` and `height_mm` hold measured dimensions.
    pub const DIMENSIONS_MEASURED: ScanFlags = ScanFlags(0x0004);
    /// Some code slots were no-reads while others were read.
    pub const PARTIAL_READ: ScanFlags = ScanFlags(0x0008);

    /// Every named flag with its snake_case name, in bit order.
    pub const NAMED: [(ScanFlags, &'static str); 4] = [
        (ScanFlags::MULTI_READ, "multi_read"),
        (ScanFlags::WEIGHT_MEASURED, "weight_measured"),
        (ScanFlags::DIMENSIONS_MEASURED, "dimensions_measured"),
        (ScanFlags::PARTIAL_READ, "partial_read"),
    ];

    /// The flags for raw bits, unknown bits included.
    pub const fn from_bits(bits: u16) -> ScanFlags {
        ScanFlags(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True if every bit of `other` is set here.
    pub const fn contains(self, other: ScanFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    pub const fn union(self, other: ScanFlags) -> ScanFlags {
        ScanFlags(self.0 | other.0)
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: ScanFlags) {
        self.0 |= other.0;
    }

    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: ScanFlags) {
        self.0 &= !other.0;
    }
}

impl fmt::Debug for ScanFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScanFlags({:#06x}", self.0)?;
        for (flag, name) in ScanFlags::NAMED {
            if self.contains(flag) {
                write!(f, " {name}")?;
            }
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barcodes_hold_at_most_eight_and_give_back_the_ninth() {
        let mut barcodes = Barcodes::new();
        for _ in 0..BARCODES_MAX {
            assert_eq!(barcodes.push(b"abc"), Ok(()));
        }
        assert_eq!(barcodes.push(b"ninth"), Err(&b"ninth"[..]));
        assert_eq!(barcodes.len(), BARCODES_MAX);
        assert!(Barcodes::from_slice(&[b"x".as_slice(); 9]).is_none());
        assert_eq!(
            Barcodes::from_slice(&[b"a".as_slice(), b"b"]).map(|b| b.as_slice().to_vec()),
            Some(vec![b"a".as_slice(), b"b"])
        );
    }

    #[test]
    fn flags_keep_unknown_bits() {
        let flags = ScanFlags::from_bits(0x8001);
        assert!(flags.contains(ScanFlags::MULTI_READ));
        assert!(!flags.contains(ScanFlags::WEIGHT_MEASURED));
        assert_eq!(flags.bits(), 0x8001);
        let mut flags = flags.union(ScanFlags::PARTIAL_READ);
        flags.remove(ScanFlags::MULTI_READ);
        assert_eq!(flags.bits(), 0x8008);
    }
}
