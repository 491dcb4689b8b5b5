//! The binary scanner frame, version 1: layout constants, the zero-copy decoder
//! [`decode_binary`] and the encoder [`encode`].
//!
//! Every frame is an 8-byte little-endian header (magic, version, type, total length,
//! reserved), a body whose layout depends on the type, and a CRC-32C trailer over all the
//! bytes before it. PROTOCOL.md documents every byte; the constants here are the source of
//! truth it is written from. This module does no I/O and keeps no state between calls:
//! buffering and counting skipped bytes are the caller's job.

use super::error::{EncodeError, Field, FrameDecodeError};
use super::frame::{
    BARCODE_BYTES_MAX, BARCODES_MAX, Barcodes, DESTINATION_BYTES_MAX, Decoded, Frame, Heartbeat,
    Hello, ScanFlags, ScanFrame,
};

/// Hard maximum length of one binary frame, header and trailer included.
pub const FRAME_BYTES_MAX: usize = 4096;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = [0xA5, 0x5D];

/// The protocol version this build speaks (header byte 2).
pub const PROTOCOL_VERSION: u8 = 1;

/// Header length: magic (2), version (1), type (1), total length (2), reserved (2).
pub const HEADER_BYTES: usize = 8;

/// Trailer length: CRC-32C (Castagnoli) of every byte before it, little-endian.
pub const TRAILER_BYTES: usize = 4;

/// Frame type byte of a HELLO.
pub const FRAME_TYPE_HELLO: u8 = 0x01;
/// Frame type byte of a HEARTBEAT.
pub const FRAME_TYPE_HEARTBEAT: u8 = 0x02;
/// Frame type byte of a SCAN.
pub const FRAME_TYPE_SCAN: u8 = 0x03;

/// Total length of a HELLO: header, 16-byte body, trailer.
pub const HELLO_BYTES: usize = HEADER_BYTES + 16 + TRAILER_BYTES;
/// Total length of a HEARTBEAT: header, 16-byte body, trailer.
pub const HEARTBEAT_BYTES: usize = HEADER_BYTES + 16 + TRAILER_BYTES;
/// Bytes of a SCAN before its barcodes: header plus the 38-byte fixed body.
pub const SCAN_FIXED_BYTES: usize = HEADER_BYTES + 38;
/// Shortest SCAN: no barcode, no destination.
pub const SCAN_BYTES_MIN: usize = SCAN_FIXED_BYTES + TRAILER_BYTES;
/// Length prefix of each barcode.
pub const BARCODE_PREFIX_BYTES: usize = 2;

const _: () = assert!(
    FRAME_BYTES_MAX <= u16::MAX as usize,
    "length field is a u16"
);
const _: () = assert!(HEADER_BYTES + TRAILER_BYTES < SCAN_BYTES_MIN);
const _: () = assert!(HELLO_BYTES <= FRAME_BYTES_MAX && HEARTBEAT_BYTES <= FRAME_BYTES_MAX);
// The longest barcode and the longest destination fit in one frame together.
const _: () = assert!(
    SCAN_BYTES_MIN + BARCODE_PREFIX_BYTES + BARCODE_BYTES_MAX + DESTINATION_BYTES_MAX
        <= FRAME_BYTES_MAX
);
// Eight barcodes of a typical size (64 bytes) always fit.
const _: () = assert!(
    SCAN_BYTES_MIN + BARCODES_MAX * (BARCODE_PREFIX_BYTES + 64) + DESTINATION_BYTES_MAX
        <= FRAME_BYTES_MAX
);

/// Decodes the binary frame at the front of `buf`.
///
/// Returns the frame and the bytes it took, [`Decoded::NeedMore`] if `buf` holds only the
/// start of one, or [`Decoded::Skip`] with the reason and the bytes to drop. A declared
/// length above [`FRAME_BYTES_MAX`] is rejected from the header alone. A frame with a good
/// CRC but a bad field is skipped whole; anything else resynchronises at the next magic.
pub fn decode_binary(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.first_chunk::<HEADER_BYTES>() else {
        return decode_short_header(buf);
    };
    if [header[0], header[1]] != MAGIC {
        return skip_to_next_magic(buf, FrameDecodeError::BadMagic);
    }
    if header[2] != PROTOCOL_VERSION {
        return skip_to_next_magic(buf, FrameDecodeError::UnsupportedVersion { got: header[2] });
    }
    let frame_type = header[3];
    let declared = usize::from(u16::from_le_bytes([header[4], header[5]]));
    let (min, max) = match frame_type {
        FRAME_TYPE_HELLO => (HELLO_BYTES, HELLO_BYTES),
        FRAME_TYPE_HEARTBEAT => (HEARTBEAT_BYTES, HEARTBEAT_BYTES),
        FRAME_TYPE_SCAN => (SCAN_BYTES_MIN, FRAME_BYTES_MAX),
        got => return skip_to_next_magic(buf, FrameDecodeError::UnknownFrameType { got }),
    };
    if declared < min {
        return skip_to_next_magic(buf, FrameDecodeError::FrameTooShort { declared, min });
    }
    if declared > max {
        return skip_to_next_magic(buf, FrameDecodeError::FrameTooLong { declared, max });
    }
    if header[6] != 0 || header[7] != 0 {
        return skip_to_next_magic(
            buf,
            FrameDecodeError::BadField {
                field: Field::Reserved,
            },
        );
    }
    let Some((covered, rest)) = buf.split_at_checked(declared - TRAILER_BYTES) else {
        return Decoded::NeedMore;
    };
    let Some(trailer) = rest.first_chunk::<TRAILER_BYTES>() else {
        return Decoded::NeedMore;
    };
    let expected = u32::from_le_bytes(*trailer);
    let got = crc32c::crc32c(covered);
    if expected != got {
        return skip_to_next_magic(buf, FrameDecodeError::BadCrc { expected, got });
    }
    // The CRC vouches for the length: from here on a bad field skips the whole frame.
    match frame_type {
        FRAME_TYPE_HELLO => parse_hello(covered, declared),
        FRAME_TYPE_HEARTBEAT => parse_heartbeat(covered, declared),
        _ => parse_scan(covered, declared),
    }
}

/// Bytes to drop from the front of `buf` to reach the next place a binary frame could
/// start (at least 1, at most `buf.len()`; 0 only for an empty buffer).
///
/// A caller whose stream ended with [`Decoded::NeedMore`] drops this many bytes and
/// decodes again, so frames behind a cut-off one are not lost.
pub fn resync_offset(buf: &[u8]) -> usize {
    let rest = buf.get(1..).unwrap_or_default();
    let mut at = 0;
    while let Some(found) = rest
        .get(at..)
        .and_then(|tail| tail.iter().position(|&byte| byte == MAGIC[0]))
    {
        let candidate = at + found;
        match rest.get(candidate + 1) {
            Some(&second) if second != MAGIC[1] => at = candidate + 1,
            // Either the magic, or its first byte at the very end: wait for more there.
            _ => return candidate + 1,
        }
    }
    buf.len()
}

fn decode_short_header(buf: &[u8]) -> Decoded<'_> {
    // Fewer than HEADER_BYTES: decide as much as the bytes allow, so garbage is dropped
    // early and a partial header waits.
    let prefix_ok = match buf {
        [] => true,
        [first] => *first == MAGIC[0],
        [first, second, rest @ ..] => {
            [*first, *second] == MAGIC && rest.first().is_none_or(|&v| v == PROTOCOL_VERSION)
        }
    };
    if prefix_ok {
        return Decoded::NeedMore;
    }
    match buf {
        [first, second, version, ..] if [*first, *second] == MAGIC => {
            skip_to_next_magic(buf, FrameDecodeError::UnsupportedVersion { got: *version })
        }
        _ => skip_to_next_magic(buf, FrameDecodeError::BadMagic),
    }
}

fn skip_to_next_magic(buf: &[u8], error: FrameDecodeError) -> Decoded<'_> {
    Decoded::Skip {
        error,
        skip: resync_offset(buf),
    }
}

fn u16_at<const N: usize>(bytes: &[u8; N], at: usize) -> u16 {
    let mut value = [0u8; 2];
    if let Some(source) = bytes.get(at..at + 2) {
        value.copy_from_slice(source);
    }
    u16::from_le_bytes(value)
}

fn u32_at<const N: usize>(bytes: &[u8; N], at: usize) -> u32 {
    let mut value = [0u8; 4];
    if let Some(source) = bytes.get(at..at + 4) {
        value.copy_from_slice(source);
    }
    u32::from_le_bytes(value)
}

fn u64_at<const N: usize>(bytes: &[u8; N], at: usize) -> u64 {
    let mut value = [0u8; 8];
    if let Some(source) = bytes.get(at..at + 8) {
        value.copy_from_slice(source);
    }
    u64::from_le_bytes(value)
}

const fn bad(field: Field, declared: usize) -> Decoded<'static> {
    Decoded::Skip {
        error: FrameDecodeError::BadField { field },
        skip: declared,
    }
}

/// True for valid UTF-8, with a fast path for the usual all-ASCII code.
pub(super) fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

#[inline(always)]
fn parse_hello(covered: &[u8], declared: usize) -> Decoded<'_> {
    let Some(bytes) = covered.first_chunk::<{ HELLO_BYTES - TRAILER_BYTES }>() else {
        return bad(Field::BodyLength, declared);
    };
    let protocol_version = bytes[12];
    if protocol_version == 0 {
        return bad(Field::ProtocolVersion, declared);
    }
    if bytes[13] != 0 {
        return bad(Field::Reserved, declared);
    }
    Decoded::Frame {
        frame: Frame::Hello(Hello {
            scanner_id: u32_at(bytes, 8),
            protocol_version,
            heartbeat_interval_ms: u16_at(bytes, 14),
            sent_at_us: u64_at(bytes, 16),
        }),
        consumed: declared,
    }
}

#[inline(always)]
fn parse_heartbeat(covered: &[u8], declared: usize) -> Decoded<'_> {
    let Some(bytes) = covered.first_chunk::<{ HEARTBEAT_BYTES - TRAILER_BYTES }>() else {
        return bad(Field::BodyLength, declared);
    };
    Decoded::Frame {
        frame: Frame::Heartbeat(Heartbeat {
            scanner_id: u32_at(bytes, 8),
            sequence: u32_at(bytes, 12),
            sent_at_us: u64_at(bytes, 16),
        }),
        consumed: declared,
    }
}

/// Builds the SCAN straight into the returned value: the frame is about 200 bytes, and
/// moving it between helpers cost more than the CRC.
#[inline(always)]
fn parse_scan(covered: &[u8], declared: usize) -> Decoded<'_> {
    let Some((fixed, mut variable)) = covered.split_first_chunk::<SCAN_FIXED_BYTES>() else {
        return bad(Field::BodyLength, declared);
    };
    let barcode_count = fixed[44];
    let destination_bytes = usize::from(fixed[45]);
    if usize::from(barcode_count) > BARCODES_MAX {
        return Decoded::Skip {
            error: FrameDecodeError::TooManyBarcodes {
                count: usize::from(barcode_count),
            },
            skip: declared,
        };
    }
    if destination_bytes > DESTINATION_BYTES_MAX {
        return bad(Field::DestinationLength, declared);
    }
    let mut codes: [&[u8]; BARCODES_MAX] = [&[]; BARCODES_MAX];
    for slot in codes.iter_mut().take(usize::from(barcode_count)) {
        let Some((prefix, rest)) = variable.split_first_chunk::<BARCODE_PREFIX_BYTES>() else {
            return bad(Field::BodyLength, declared);
        };
        let code_bytes = usize::from(u16::from_le_bytes(*prefix));
        if code_bytes == 0 || code_bytes > BARCODE_BYTES_MAX {
            return bad(Field::BarcodeLength, declared);
        }
        let Some((code, rest)) = rest.split_at_checked(code_bytes) else {
            return bad(Field::BodyLength, declared);
        };
        *slot = code;
        variable = rest;
    }
    if variable.len() != destination_bytes {
        return bad(Field::BodyLength, declared);
    }
    let destination = if destination_bytes == 0 {
        None
    } else {
        if !is_utf8(variable) {
            return bad(Field::DestinationUtf8, declared);
        }
        Some(variable)
    };
    Decoded::Frame {
        frame: Frame::Scan(ScanFrame {
            scanner_id: u32_at(fixed, 8),
            sequence: u32_at(fixed, 12),
            parcel_id: u64_at(fixed, 16),
            scanned_at_us: u64_at(fixed, 24),
            weight_g: u32_at(fixed, 32),
            length_mm: u16_at(fixed, 36),
            width_mm: u16_at(fixed, 38),
            height_mm: u16_at(fixed, 40),
            flags: ScanFlags::from_bits(u16_at(fixed, 42)),
            barcodes: Barcodes::from_array(codes, barcode_count),
            destination,
        }),
        consumed: declared,
    }
}

/// Appends one binary frame for `frame` to `out`.
///
/// Rejects (leaving `out` as it was) anything the decoder would reject: an empty or
/// over-long barcode, a destination that is empty, over-long or not UTF-8, a HELLO with
/// protocol version 0, or a frame longer than [`FRAME_BYTES_MAX`].
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    match frame {
        Frame::Hello(hello) => {
            if hello.protocol_version == 0 {
                return Err(EncodeError::BadField {
                    field: Field::ProtocolVersion,
                });
            }
            put_header(out, FRAME_TYPE_HELLO, HELLO_BYTES);
            out.extend_from_slice(&hello.scanner_id.to_le_bytes());
            out.push(hello.protocol_version);
            out.push(0);
            out.extend_from_slice(&hello.heartbeat_interval_ms.to_le_bytes());
            out.extend_from_slice(&hello.sent_at_us.to_le_bytes());
        }
        Frame::Heartbeat(heartbeat) => {
            put_header(out, FRAME_TYPE_HEARTBEAT, HEARTBEAT_BYTES);
            out.extend_from_slice(&heartbeat.scanner_id.to_le_bytes());
            out.extend_from_slice(&heartbeat.sequence.to_le_bytes());
            out.extend_from_slice(&heartbeat.sent_at_us.to_le_bytes());
        }
        Frame::Scan(scan) => {
            let bytes = scan_bytes(scan)?;
            put_header(out, FRAME_TYPE_SCAN, bytes);
            put_scan_body(out, scan);
        }
    }
    let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Total length the SCAN will take, after checking every field the decoder checks.
fn scan_bytes(scan: &ScanFrame<'_>) -> Result<usize, EncodeError> {
    let mut bytes = SCAN_BYTES_MIN;
    for code in scan.barcodes.iter() {
        if code.is_empty() || code.len() > BARCODE_BYTES_MAX {
            return Err(EncodeError::BadField {
                field: Field::BarcodeLength,
            });
        }
        bytes += BARCODE_PREFIX_BYTES + code.len();
    }
    if let Some(destination) = scan.destination {
        if destination.is_empty() || destination.len() > DESTINATION_BYTES_MAX {
            return Err(EncodeError::BadField {
                field: Field::DestinationLength,
            });
        }
        if std::str::from_utf8(destination).is_err() {
            return Err(EncodeError::BadField {
                field: Field::DestinationUtf8,
            });
        }
        bytes += destination.len();
    }
    if bytes > FRAME_BYTES_MAX {
        return Err(EncodeError::FrameTooLong {
            bytes,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(bytes)
}

fn put_header(out: &mut Vec<u8>, frame_type: u8, frame_bytes: usize) {
    out.reserve(frame_bytes);
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(frame_type);
    // frame_bytes <= FRAME_BYTES_MAX <= u16::MAX, checked by the caller and a const assert.
    out.extend_from_slice(&u16::try_from(frame_bytes).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
}

fn put_scan_body(out: &mut Vec<u8>, scan: &ScanFrame<'_>) {
    out.extend_from_slice(&scan.scanner_id.to_le_bytes());
    out.extend_from_slice(&scan.sequence.to_le_bytes());
    out.extend_from_slice(&scan.parcel_id.to_le_bytes());
    out.extend_from_slice(&scan.scanned_at_us.to_le_bytes());
    out.extend_from_slice(&scan.weight_g.to_le_bytes());
    out.extend_from_slice(&scan.length_mm.to_le_bytes());
    out.extend_from_slice(&scan.width_mm.to_le_bytes());
    out.extend_from_slice(&scan.height_mm.to_le_bytes());
    out.extend_from_slice(&scan.flags.bits().to_le_bytes());
    // Both fit a u8: Barcodes holds at most 8, the destination was checked <= 128.
    out.push(u8::try_from(scan.barcodes.len()).unwrap_or(u8::MAX));
    out.push(u8::try_from(scan.destination.map_or(0, <[u8]>::len)).unwrap_or(u8::MAX));
    for code in scan.barcodes.iter() {
        out.extend_from_slice(&u16::try_from(code.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(code);
    }
    if let Some(destination) = scan.destination {
        out.extend_from_slice(destination);
    }
}
