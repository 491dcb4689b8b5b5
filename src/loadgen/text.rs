//! The load generator's text scanners: encodes a SCAN as the ASCII telegram of a text
//! profile (`sick-dws`, `sick-clv`, `datalogic` or any validated [`TextProfile`]), so
//! `sortd loadgen --profile NAME` can play those scanners against a text listener.
//!
//! One encoder serves every profile: it walks the profile's field layout, the same one
//! the decoder in [`crate::wire`] reads, so a telegram encoded here decodes back to the
//! same scan for whatever the layout carries. What the layout has no field for (the
//! parcel id for `sick-clv` and `datalogic`, the destination for all three built-ins) is
//! left out. It does not send, pace or choose parcels.

use std::fmt;
use std::io::Write;

use crate::wire::{ETX, FieldRole, STX, ScanFlags, ScanFrame, TextFraming, TextProfile};

/// Why a scan cannot be written as a telegram of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncodeError {
    /// A value holds a separator, a control byte or a framing byte of the profile.
    Unencodable {
        /// The field's role name.
        field: &'static str,
    },
    /// The telegram would exceed the profile's `telegram_bytes_max`.
    TooLong {
        /// Bytes of content the telegram would have.
        bytes: usize,
        /// The profile's limit.
        max: usize,
    },
}

impl fmt::Display for TextEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextEncodeError::Unencodable { field } => {
                write!(f, "the {field} value cannot be written in this profile")
            }
            TextEncodeError::TooLong { bytes, max } => {
                write!(f, "telegram of {bytes} bytes, the profile allows {max}")
            }
        }
    }
}

impl std::error::Error for TextEncodeError {}

/// Whether the profile's layout carries a parcel id (else the daemon gives each
/// telegram a synthetic one, and a repeat cannot be told from a new parcel).
pub fn carries_parcel_id(profile: &TextProfile) -> bool {
    profile.fields().contains(&FieldRole::ParcelId)
}

/// Appends `scan` to `out` as one telegram of `profile`. On error `out` is unchanged.
pub fn encode_text(
    profile: &TextProfile,
    scan: &ScanFrame<'_>,
    out: &mut Vec<u8>,
) -> Result<(), TextEncodeError> {
    let start = out.len();
    let result = encode_into(profile, scan, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_into(
    profile: &TextProfile,
    scan: &ScanFrame<'_>,
    out: &mut Vec<u8>,
) -> Result<(), TextEncodeError> {
    let terminator = match profile.framing() {
        TextFraming::StxEtx => {
            out.push(STX);
            ETX
        }
        TextFraming::Line { terminator } => terminator,
    };
    let content_start = out.len();
    // Bytes a value may not hold: they would end or split the telegram.
    let reserved = [
        Some(STX),
        Some(ETX),
        Some(terminator),
        profile.field_separator(),
        profile.code_separator(),
    ];
    let check = |value: &[u8], field: &'static str| {
        let bad = value
            .iter()
            .any(|byte| byte.is_ascii_control() || reserved.contains(&Some(*byte)));
        if bad {
            Err(TextEncodeError::Unencodable { field })
        } else {
            Ok(())
        }
    };
    for (index, role) in profile.fields().iter().enumerate() {
        if index > 0 {
            if let Some(separator) = profile.field_separator() {
                out.push(separator);
            }
        }
        match role {
            FieldRole::ParcelId => write_number(out, scan.parcel_id),
            FieldRole::Barcodes => {
                if scan.barcodes.is_empty() {
                    let marker = profile.no_read_markers().next().unwrap_or_default();
                    out.extend_from_slice(marker);
                }
                for (code_index, code) in scan.barcodes.iter().enumerate() {
                    check(code, "barcodes")?;
                    if code_index > 0 {
                        let separator = profile
                            .code_separator()
                            .ok_or(TextEncodeError::Unencodable { field: "barcodes" })?;
                        out.push(separator);
                    }
                    out.extend_from_slice(code);
                }
            }
            FieldRole::Weight => write_number(out, u64::from(scan.weight_g)),
            FieldRole::WeightUnit => out.push(b'g'),
            FieldRole::Length => write_number(out, u64::from(scan.length_mm)),
            FieldRole::Width => write_number(out, u64::from(scan.width_mm)),
            FieldRole::Height => write_number(out, u64::from(scan.height_mm)),
            FieldRole::LengthUnit => out.extend_from_slice(b"mm"),
            FieldRole::Destination => {
                if let Some(destination) = scan.destination {
                    check(destination, "destination")?;
                    out.extend_from_slice(destination);
                }
            }
            FieldRole::ReadStatus => {
                let status = if scan.flags.contains(ScanFlags::MULTI_READ) {
                    b"ST=5"
                } else {
                    b"ST=0"
                };
                out.extend_from_slice(status);
            }
            FieldRole::Ignore => out.push(b'0'),
        }
    }
    let bytes = out.len() - content_start;
    if bytes > profile.telegram_bytes_max() {
        return Err(TextEncodeError::TooLong {
            bytes,
            max: profile.telegram_bytes_max(),
        });
    }
    if terminator == b'\n' {
        // Line scanners end a telegram with CR LF.
        out.push(b'\r');
    }
    out.push(terminator);
    Ok(())
}

fn write_number(out: &mut Vec<u8>, value: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Barcodes, Decoded, Frame, decode_text};

    fn scan<'a>(codes: &'a [&'a [u8]], destination: Option<&'a [u8]>) -> ScanFrame<'a> {
        ScanFrame {
            scanner_id: 0,
            sequence: 0,
            parcel_id: 123_456_789,
            scanned_at_us: 0,
            barcodes: Barcodes::from_slice(codes).unwrap_or_default(),
            destination,
            weight_g: 1250,
            length_mm: 400,
            width_mm: 300,
            height_mm: 150,
            flags: ScanFlags::default(),
        }
    }

    /// Every built-in profile: what the layout carries comes back through the decoder.
    #[test]
    fn loadgen_telegrams_decode_back_to_the_same_scan() {
        let one: &[&[u8]] = &[b"YT0000000000001"];
        let two: &[&[u8]] = &[b"YT0000000000001", b"JT1234567890"];
        let none: &[&[u8]] = &[];
        for name in TextProfile::builtin_names() {
            let profile = TextProfile::builtin(name).expect("built-in profile");
            let roles = profile.fields();
            for codes in [one, two, none] {
                let sent = scan(codes, Some(b"330106"));
                let mut bytes = Vec::new();
                encode_text(&profile, &sent, &mut bytes).expect("encodes");
                let Decoded::Frame {
                    frame: Frame::Scan(got),
                    consumed,
                } = decode_text(&profile, &bytes)
                else {
                    panic!(
                        "{name}: {:?} did not decode",
                        String::from_utf8_lossy(&bytes)
                    );
                };
                assert_eq!(consumed, bytes.len(), "{name}: one whole telegram");
                assert_eq!(got.barcodes, sent.barcodes, "{name}");
                if roles.contains(&FieldRole::ParcelId) {
                    assert_eq!(got.parcel_id, sent.parcel_id, "{name}");
                }
                if roles.contains(&FieldRole::Destination) {
                    assert_eq!(got.destination, sent.destination, "{name}");
                }
                if roles.contains(&FieldRole::Weight) {
                    assert_eq!(got.weight_g, sent.weight_g, "{name}");
                }
                if roles.contains(&FieldRole::Height) {
                    let dimensions = (got.length_mm, got.width_mm, got.height_mm);
                    assert_eq!(dimensions, (400, 300, 150), "{name}");
                }
            }
        }
    }

    #[test]
    fn a_code_holding_a_separator_is_refused_and_nothing_is_written() {
        let profile = TextProfile::builtin("sick-clv").expect("built-in profile");
        let codes: &[&[u8]] = &[b"AB;CD"];
        let mut out = b"kept".to_vec();
        assert_eq!(
            encode_text(&profile, &scan(codes, None), &mut out),
            Err(TextEncodeError::Unencodable { field: "barcodes" })
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn only_the_dws_layout_carries_a_parcel_id() {
        let carries = |name| carries_parcel_id(&TextProfile::builtin(name).expect("built-in"));
        assert!(carries("sick-dws"));
        assert!(!carries("sick-clv"));
        assert!(!carries("datalogic"));
    }
}
