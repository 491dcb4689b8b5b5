//! The text telegram decoder: finds one telegram at the front of a buffer using a
//! [`TextProfile`]'s framing and turns its fields into the same [`ScanFrame`] a binary
//! SCAN gives.
//!
//! Zero-copy and allocation-free: barcodes and destination borrow from the buffer. Text
//! telegrams carry no scanner id, sequence or time; those stay 0 for the caller to fill
//! from the connection. This module does not buffer, read sockets or pick profiles.

use super::error::{DecodeError, Field};
use super::frame::{
    BARCODE_BYTES_MAX, Barcodes, DESTINATION_BYTES_MAX, Decoded, Frame, ScanFlags, ScanFrame,
};
use super::profile::{ETX, FieldRole, STX, TextFraming, TextProfile};

/// Decimal digits accepted in a numeric field (enough for any `u64`).
const DIGITS_MAX: usize = 20;

/// Decodes the text telegram at the front of `buf` with `profile`.
///
/// Bytes before a telegram start are skipped as [`DecodeError::Garbage`]; a telegram cut
/// short by the next `STX` is skipped as [`DecodeError::Truncated`]; no end within the
/// profile's maximum is [`DecodeError::TelegramTooLong`], decided before buffering more.
/// A telegram whose fields do not parse is skipped whole.
pub fn decode_text<'a>(profile: &TextProfile, buf: &'a [u8]) -> Decoded<'a> {
    let Some(&first) = buf.first() else {
        return Decoded::NeedMore;
    };
    let (terminator, start_required) = match profile.framing {
        TextFraming::StxEtx => (ETX, true),
        TextFraming::Line { terminator } => (terminator, false),
    };
    if first != STX && start_required {
        let skip = buf.iter().position(|&b| b == STX).unwrap_or(buf.len());
        return Decoded::Skip {
            error: DecodeError::Garbage,
            skip,
        };
    }
    let content_start = usize::from(first == STX);
    let max = profile.telegram_bytes_max;
    let window_end = buf.len().min(content_start + max + 1);
    let window = buf.get(content_start..window_end).unwrap_or_default();
    let Some(found) = window.iter().position(|&b| b == terminator || b == STX) else {
        if window.len() > max {
            return Decoded::Skip {
                error: DecodeError::TelegramTooLong { max },
                skip: window_end,
            };
        }
        return Decoded::NeedMore;
    };
    let end = content_start + found;
    if window.get(found) == Some(&STX) {
        // `end` >= 1: position 0 is either the STX that started this telegram (so the
        // search began at 1) or not an STX.
        let error = if content_start == 1 {
            DecodeError::Truncated { available: end }
        } else {
            DecodeError::Garbage
        };
        return Decoded::Skip { error, skip: end };
    }
    let consumed = end + 1;
    let content = window.get(..found).unwrap_or_default();
    match parse_telegram(profile, content) {
        Ok(scan) => Decoded::Frame {
            frame: Frame::Scan(scan),
            consumed,
        },
        Err(error) => Decoded::Skip {
            error,
            skip: consumed,
        },
    }
}

/// Fields that carry a unit until the unit field (which may come later) is seen.
#[derive(Default)]
struct Measures {
    weight: Option<u64>,
    weight_scale: u64,
    dimensions: [Option<u64>; 3],
    length_scale: u64,
}

fn parse_telegram<'a>(
    profile: &TextProfile,
    content: &'a [u8],
) -> Result<ScanFrame<'a>, DecodeError> {
    let content = content.trim_ascii();
    if content.is_empty() {
        return Err(DecodeError::EmptyTelegram);
    }
    let mut scan = ScanFrame {
        scanner_id: 0,
        sequence: 0,
        parcel_id: 0,
        scanned_at_us: 0,
        barcodes: Barcodes::new(),
        destination: None,
        weight_g: 0,
        length_mm: 0,
        width_mm: 0,
        height_mm: 0,
        flags: ScanFlags::EMPTY,
    };
    let mut measures = Measures {
        weight_scale: 1,
        length_scale: 1,
        ..Measures::default()
    };
    let separator = profile.field_separator;
    let mut count = 0;
    for field in content.split(|&b| Some(b) == separator) {
        let Some(&role) = profile.fields.get(count) else {
            return Err(DecodeError::FieldCount {
                got: count + 1,
                min: profile.fields_min,
                max: profile.fields.len(),
            });
        };
        count += 1;
        let field = field.trim_ascii();
        match role {
            FieldRole::ParcelId => {
                scan.parcel_id = decimal(field, Field::ParcelId)?.unwrap_or(0);
            }
            FieldRole::Barcodes => parse_barcodes(profile, field, &mut scan)?,
            FieldRole::Weight => measures.weight = decimal(field, Field::Weight)?,
            FieldRole::WeightUnit => {
                measures.weight_scale =
                    unit(field, &[(b"g", 1), (b"kg", 1000)], Field::WeightUnit)?;
            }
            FieldRole::Length => measures.dimensions[0] = decimal(field, Field::Length)?,
            FieldRole::Width => measures.dimensions[1] = decimal(field, Field::Width)?,
            FieldRole::Height => measures.dimensions[2] = decimal(field, Field::Height)?,
            FieldRole::LengthUnit => {
                measures.length_scale = unit(field, &[(b"mm", 1), (b"cm", 10)], Field::LengthUnit)?;
            }
            FieldRole::Destination => scan.destination = destination(field)?,
            FieldRole::ReadStatus => read_status(field, &mut scan.flags)?,
            FieldRole::Ignore => {}
        }
    }
    if count < profile.fields_min {
        return Err(DecodeError::FieldCount {
            got: count,
            min: profile.fields_min,
            max: profile.fields.len(),
        });
    }
    apply_measures(&measures, &mut scan)?;
    Ok(scan)
}

fn parse_barcodes<'a>(
    profile: &TextProfile,
    field: &'a [u8],
    scan: &mut ScanFrame<'a>,
) -> Result<(), DecodeError> {
    let code_separator = profile.code_separator;
    let mut missing = false;
    for code in field.split(|&b| Some(b) == code_separator) {
        let code = code.trim_ascii();
        if code.is_empty() || profile.is_no_read(code) {
            missing = true;
            continue;
        }
        if code.len() > BARCODE_BYTES_MAX {
            return Err(DecodeError::BadField {
                field: Field::BarcodeLength,
            });
        }
        if scan.barcodes.push(code).is_err() {
            let count = field
                .split(|&b| Some(b) == code_separator)
                .map(<[u8]>::trim_ascii)
                .filter(|code| !code.is_empty() && !profile.is_no_read(code))
                .count();
            return Err(DecodeError::TooManyBarcodes { count });
        }
    }
    if missing && !scan.barcodes.is_empty() {
        scan.flags.insert(ScanFlags::PARTIAL_READ);
    }
    Ok(())
}

/// An unsigned decimal, or `None` for an empty field.
fn decimal(field: &[u8], name: Field) -> Result<Option<u64>, DecodeError> {
    if field.is_empty() {
        return Ok(None);
    }
    if field.len() > DIGITS_MAX {
        return Err(DecodeError::BadField { field: name });
    }
    let mut value: u64 = 0;
    for &byte in field {
        if !byte.is_ascii_digit() {
            return Err(DecodeError::BadField { field: name });
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(byte - b'0')))
            .ok_or(DecodeError::BadField { field: name })?;
    }
    Ok(Some(value))
}

fn unit(field: &[u8], units: &[(&[u8], u64)], name: Field) -> Result<u64, DecodeError> {
    if field.is_empty() {
        return Ok(1);
    }
    units
        .iter()
        .find(|(unit, _)| unit.eq_ignore_ascii_case(field))
        .map(|&(_, scale)| scale)
        .ok_or(DecodeError::BadField { field: name })
}

fn destination(field: &[u8]) -> Result<Option<&[u8]>, DecodeError> {
    if field.is_empty() {
        return Ok(None);
    }
    if field.len() > DESTINATION_BYTES_MAX {
        return Err(DecodeError::BadField {
            field: Field::DestinationLength,
        });
    }
    if std::str::from_utf8(field).is_err() {
        return Err(DecodeError::BadField {
            field: Field::DestinationUtf8,
        });
    }
    Ok(Some(field))
}

fn read_status(field: &[u8], flags: &mut ScanFlags) -> Result<(), DecodeError> {
    if field.is_empty() {
        return Ok(());
    }
    let status = field
        .strip_prefix(b"ST=")
        .ok_or(DecodeError::BadField {
            field: Field::ReadStatus,
        })
        .and_then(|digits| decimal(digits, Field::ReadStatus))?;
    match status {
        Some(5) => flags.insert(ScanFlags::MULTI_READ),
        Some(_) => {}
        None => {
            return Err(DecodeError::BadField {
                field: Field::ReadStatus,
            });
        }
    }
    Ok(())
}

fn apply_measures(measures: &Measures, scan: &mut ScanFrame<'_>) -> Result<(), DecodeError> {
    if let Some(weight) = measures.weight {
        scan.weight_g = weight
            .checked_mul(measures.weight_scale)
            .and_then(|grams| u32::try_from(grams).ok())
            .ok_or(DecodeError::BadField {
                field: Field::Weight,
            })?;
        scan.flags.insert(ScanFlags::WEIGHT_MEASURED);
    }
    let [length, width, height] = measures.dimensions;
    let outputs = [
        (length, &mut scan.length_mm, Field::Length),
        (width, &mut scan.width_mm, Field::Width),
        (height, &mut scan.height_mm, Field::Height),
    ];
    let mut measured = false;
    for (value, out, field) in outputs {
        if let Some(value) = value {
            *out = value
                .checked_mul(measures.length_scale)
                .and_then(|mm| u16::try_from(mm).ok())
                .ok_or(DecodeError::BadField { field })?;
            measured = true;
        }
    }
    if measured {
        scan.flags.insert(ScanFlags::DIMENSIONS_MEASURED);
    }
    Ok(())
}
