//! The text telegram decoder: finds one telegram at the front of a buffer using a
//! [`TextProfile`]'s framing and turns its fields into the same [`ScanFrame`] a binary
//! SCAN gives.
//!
//! Zero-copy and allocation-free: barcodes and destination borrow from the buffer. Text
//! telegrams carry no scanner id, sequence or time; those stay 0 for the caller to fill
//! from the connection. This module does not buffer, read sockets or pick profiles.

use super::binary::is_utf8;
use super::bytes::{Pieces, find, find_either};
use super::error::{Field, FrameDecodeError};
use super::frame::{
    BARCODE_BYTES_MAX, BARCODES_MAX, Barcodes, DESTINATION_BYTES_MAX, Decoded, Frame, ScanFlags,
    ScanFrame,
};
use super::profile::{ETX, FieldRole, STX, TextFraming, TextProfile};

/// Decimal digits accepted in a numeric field (enough for any `u64`).
const DIGITS_MAX: usize = 20;

const _: () = assert!(10u128.pow(DIGITS_MAX as u32 - 1) <= u64::MAX as u128 + 1);

/// Decodes the text telegram at the front of `buf` with `profile`.
///
/// Bytes before a telegram start are skipped as [`FrameDecodeError::Garbage`]; a telegram cut
/// short by the next `STX` is skipped as [`FrameDecodeError::Truncated`]; no end within the
/// profile's maximum is [`FrameDecodeError::TelegramTooLong`], decided before buffering more.
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
        let skip = find(buf, STX).unwrap_or(buf.len());
        return Decoded::Skip {
            error: FrameDecodeError::Garbage,
            skip,
        };
    }
    let content_start = usize::from(first == STX);
    let max = profile.telegram_bytes_max;
    let window_end = buf.len().min(content_start + max + 1);
    let window = buf.get(content_start..window_end).unwrap_or_default();
    let Some(found) = find_either(window, terminator, STX) else {
        if window.len() > max {
            return Decoded::Skip {
                error: FrameDecodeError::TelegramTooLong { max },
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
            FrameDecodeError::Truncated { available: end }
        } else {
            FrameDecodeError::Garbage
        };
        return Decoded::Skip { error, skip: end };
    }
    let content = window.get(..found).unwrap_or_default();
    parse_telegram(profile, content, end + 1)
}

/// Fields that carry a unit until the unit field (which may come later) is seen.
struct Measures {
    weight: Option<u64>,
    weight_scale: u64,
    dimensions: [Option<u64>; 3],
    length_scale: u64,
}

/// Parses the telegram's fields into locals and builds the frame once, in the returned
/// value (a SCAN is about 200 bytes; moving it around cost more than parsing it).
#[inline(always)]
fn parse_telegram<'a>(profile: &TextProfile, content: &'a [u8], consumed: usize) -> Decoded<'a> {
    let skip = |error| Decoded::Skip {
        error,
        skip: consumed,
    };
    let content = content.trim_ascii();
    if content.is_empty() {
        return skip(FrameDecodeError::EmptyTelegram);
    }
    let mut parcel_id = 0;
    let mut codes: [&[u8]; BARCODES_MAX] = [&[]; BARCODES_MAX];
    let mut code_count = 0u8;
    let mut destination = None;
    let mut flags = ScanFlags::EMPTY;
    let mut measures = Measures {
        weight: None,
        weight_scale: 1,
        dimensions: [None; 3],
        length_scale: 1,
    };
    let mut count = 0;
    for field in Pieces::new(content, profile.field_separator) {
        let Some(&role) = profile.fields.get(count) else {
            return skip(FrameDecodeError::FieldCount {
                got: count + 1,
                min: profile.fields_min,
                max: profile.fields.len(),
            });
        };
        count += 1;
        let field = field.trim_ascii();
        let parsed = match role {
            FieldRole::ParcelId => {
                decimal(field, Field::ParcelId).map(|value| parcel_id = value.unwrap_or(0))
            }
            FieldRole::Barcodes => {
                parse_barcodes(profile, field, &mut codes, &mut code_count, &mut flags)
            }
            FieldRole::Weight => decimal(field, Field::Weight).map(|v| measures.weight = v),
            FieldRole::WeightUnit => unit(field, &[(b"g", 1), (b"kg", 1000)], Field::WeightUnit)
                .map(|scale| measures.weight_scale = scale),
            FieldRole::Length => decimal(field, Field::Length).map(|v| measures.dimensions[0] = v),
            FieldRole::Width => decimal(field, Field::Width).map(|v| measures.dimensions[1] = v),
            FieldRole::Height => decimal(field, Field::Height).map(|v| measures.dimensions[2] = v),
            FieldRole::LengthUnit => unit(field, &[(b"mm", 1), (b"cm", 10)], Field::LengthUnit)
                .map(|scale| measures.length_scale = scale),
            FieldRole::Destination => parse_destination(field).map(|v| destination = v),
            FieldRole::ReadStatus => read_status(field, &mut flags),
            FieldRole::Ignore => Ok(()),
        };
        if let Err(error) = parsed {
            return skip(error);
        }
    }
    if count < profile.fields_min {
        return skip(FrameDecodeError::FieldCount {
            got: count,
            min: profile.fields_min,
            max: profile.fields.len(),
        });
    }
    let (weight_g, [length_mm, width_mm, height_mm]) = match apply_measures(&measures, &mut flags) {
        Ok(values) => values,
        Err(error) => return skip(error),
    };
    Decoded::Frame {
        frame: Frame::Scan(ScanFrame {
            scanner_id: 0,
            sequence: 0,
            parcel_id,
            scanned_at_us: 0,
            barcodes: Barcodes::from_array(codes, code_count),
            destination,
            weight_g,
            length_mm,
            width_mm,
            height_mm,
            flags,
        }),
        consumed,
    }
}

fn parse_barcodes<'a>(
    profile: &TextProfile,
    field: &'a [u8],
    codes: &mut [&'a [u8]; BARCODES_MAX],
    code_count: &mut u8,
    flags: &mut ScanFlags,
) -> Result<(), FrameDecodeError> {
    let mut missing = false;
    for code in Pieces::new(field, profile.code_separator) {
        let code = code.trim_ascii();
        if code.is_empty() || profile.is_no_read(code) {
            missing = true;
            continue;
        }
        if code.len() > BARCODE_BYTES_MAX {
            return Err(FrameDecodeError::BadField {
                field: Field::BarcodeLength,
            });
        }
        let Some(slot) = codes.get_mut(usize::from(*code_count)) else {
            let count = Pieces::new(field, profile.code_separator)
                .map(<[u8]>::trim_ascii)
                .filter(|code| !code.is_empty() && !profile.is_no_read(code))
                .count();
            return Err(FrameDecodeError::TooManyBarcodes { count });
        };
        *slot = code;
        *code_count += 1;
    }
    if missing && *code_count > 0 {
        flags.insert(ScanFlags::PARTIAL_READ);
    }
    Ok(())
}

/// An unsigned decimal, or `None` for an empty field.
fn decimal(field: &[u8], name: Field) -> Result<Option<u64>, FrameDecodeError> {
    if field.is_empty() {
        return Ok(None);
    }
    if field.len() > DIGITS_MAX {
        return Err(FrameDecodeError::BadField { field: name });
    }
    // Up to 19 digits cannot overflow a u64, so only the 20th needs a checked step.
    let (head, last) = field.split_at(field.len().min(DIGITS_MAX - 1));
    let mut value: u64 = 0;
    let mut digits_ok = true;
    for &byte in head {
        let digit = byte.wrapping_sub(b'0');
        digits_ok &= digit <= 9;
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    if !digits_ok {
        return Err(FrameDecodeError::BadField { field: name });
    }
    for &byte in last {
        let digit = byte.wrapping_sub(b'0');
        value = (digit <= 9)
            .then_some(value)
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(FrameDecodeError::BadField { field: name })?;
    }
    Ok(Some(value))
}

fn unit(field: &[u8], units: &[(&[u8], u64)], name: Field) -> Result<u64, FrameDecodeError> {
    if field.is_empty() {
        return Ok(1);
    }
    units
        .iter()
        .find(|(unit, _)| unit.eq_ignore_ascii_case(field))
        .map(|&(_, scale)| scale)
        .ok_or(FrameDecodeError::BadField { field: name })
}

fn parse_destination(field: &[u8]) -> Result<Option<&[u8]>, FrameDecodeError> {
    if field.is_empty() {
        return Ok(None);
    }
    if field.len() > DESTINATION_BYTES_MAX {
        return Err(FrameDecodeError::BadField {
            field: Field::DestinationLength,
        });
    }
    if !is_utf8(field) {
        return Err(FrameDecodeError::BadField {
            field: Field::DestinationUtf8,
        });
    }
    Ok(Some(field))
}

fn read_status(field: &[u8], flags: &mut ScanFlags) -> Result<(), FrameDecodeError> {
    if field.is_empty() {
        return Ok(());
    }
    let status = field
        .strip_prefix(b"ST=")
        .ok_or(FrameDecodeError::BadField {
            field: Field::ReadStatus,
        })
        .and_then(|digits| decimal(digits, Field::ReadStatus))?;
    match status {
        Some(5) => flags.insert(ScanFlags::MULTI_READ),
        Some(_) => {}
        None => {
            return Err(FrameDecodeError::BadField {
                field: Field::ReadStatus,
            });
        }
    }
    Ok(())
}

/// Weight in grams and length, width, height in millimetres, with their flags set.
fn apply_measures(
    measures: &Measures,
    flags: &mut ScanFlags,
) -> Result<(u32, [u16; 3]), FrameDecodeError> {
    let mut weight_g = 0;
    if let Some(weight) = measures.weight {
        weight_g = weight
            .checked_mul(measures.weight_scale)
            .and_then(|grams| u32::try_from(grams).ok())
            .ok_or(FrameDecodeError::BadField {
                field: Field::Weight,
            })?;
        flags.insert(ScanFlags::WEIGHT_MEASURED);
    }
    let mut millimetres = [0u16; 3];
    let names = [Field::Length, Field::Width, Field::Height];
    let mut measured = false;
    for ((value, out), field) in measures.dimensions.iter().zip(&mut millimetres).zip(names) {
        if let Some(value) = value {
            *out = value
                .checked_mul(measures.length_scale)
                .and_then(|mm| u16::try_from(mm).ok())
                .ok_or(FrameDecodeError::BadField { field })?;
            measured = true;
        }
    }
    if measured {
        flags.insert(ScanFlags::DIMENSIONS_MEASURED);
    }
    Ok((weight_g, millimetres))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_accepts_every_u64_and_nothing_else() {
        let max = u64::MAX.to_string();
        let over = "18446744073709551616";
        let cases: [(&str, Result<Option<u64>, ()>); 9] = [
            ("", Ok(None)),
            ("0", Ok(Some(0))),
            ("000081212", Ok(Some(81212))),
            ("9999999999999999999", Ok(Some(9_999_999_999_999_999_999))),
            (&max, Ok(Some(u64::MAX))),
            (over, Err(())),
            ("123456789012345678901", Err(())),
            ("12x", Err(())),
            ("1234567890123456789/", Err(())),
        ];
        for (text, expected) in cases {
            let got = decimal(text.as_bytes(), Field::Weight).map_err(|_| ());
            assert_eq!(got, expected, "{text}");
        }
    }
}
