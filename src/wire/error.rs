//! The wire layer's errors: why bytes were not a frame ([`FrameDecodeError`], `Copy`, on the hot
//! path) and why a frame could not be written ([`EncodeError`]).
//!
//! Each decode error has a stable snake_case [`FrameDecodeError::kind`] for metrics and logs.
//! How many bytes to skip is not part of the error; it travels beside it in
//! [`super::Decoded::Skip`].

use std::fmt;

/// A field of a frame or telegram, named in [`FrameDecodeError::BadField`] and
/// [`EncodeError::BadField`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// A reserved byte that must be zero.
    Reserved,
    /// HELLO's protocol version (must be at least 1).
    ProtocolVersion,
    /// A barcode's length prefix (must be 1 to `BARCODE_BYTES_MAX`), or an empty code.
    BarcodeLength,
    /// The destination length (must be 0 to `DESTINATION_BYTES_MAX`).
    DestinationLength,
    /// The destination code is not UTF-8.
    DestinationUtf8,
    /// The barcodes and destination do not fill the SCAN body exactly.
    BodyLength,
    /// A text parcel id is not decimal digits, or exceeds `u64`.
    ParcelId,
    /// A text weight is not decimal digits, or exceeds `u32` grams.
    Weight,
    /// A text weight unit is not `g` or `kg`.
    WeightUnit,
    /// A text length is not decimal digits, or exceeds `u16` millimetres.
    Length,
    /// A text width is not decimal digits, or exceeds `u16` millimetres.
    Width,
    /// A text height is not decimal digits, or exceeds `u16` millimetres.
    Height,
    /// A text length unit is not `mm` or `cm`.
    LengthUnit,
    /// A text read-status field is not `ST=` followed by digits.
    ReadStatus,
}

impl Field {
    /// Stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Field::Reserved => "reserved",
            Field::ProtocolVersion => "protocol_version",
            Field::BarcodeLength => "barcode_length",
            Field::DestinationLength => "destination_length",
            Field::DestinationUtf8 => "destination_utf8",
            Field::BodyLength => "body_length",
            Field::ParcelId => "parcel_id",
            Field::Weight => "weight",
            Field::WeightUnit => "weight_unit",
            Field::Length => "length",
            Field::Width => "width",
            Field::Height => "height",
            Field::LengthUnit => "length_unit",
            Field::ReadStatus => "read_status",
        }
    }
}

/// Why the front of a buffer is not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameDecodeError {
    /// Binary: the bytes do not start with the frame magic (garbage before a frame).
    BadMagic,
    /// Binary: a protocol version this build does not speak.
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// Binary: a frame type this version does not define.
    UnknownFrameType {
        /// The type byte received.
        got: u8,
    },
    /// Binary: the declared frame length is shorter than that frame type allows.
    FrameTooShort {
        /// Declared total length in bytes.
        declared: usize,
        /// Smallest valid length for the frame type.
        min: usize,
    },
    /// Binary: the declared frame length is longer than that frame type (or
    /// `FRAME_BYTES_MAX`) allows; rejected before buffering the rest.
    FrameTooLong {
        /// Declared total length in bytes.
        declared: usize,
        /// Largest valid length.
        max: usize,
    },
    /// Binary: the CRC-32C trailer does not match the frame's bytes.
    BadCrc {
        /// The CRC the frame carries.
        expected: u32,
        /// The CRC computed over the bytes received.
        got: u32,
    },
    /// A field holds a value the protocol forbids.
    BadField {
        /// Which field.
        field: Field,
    },
    /// More than `BARCODES_MAX` barcodes.
    TooManyBarcodes {
        /// How many the frame or telegram carries.
        count: usize,
    },
    /// Text: bytes outside any telegram (before the start byte).
    Garbage,
    /// Text: a telegram was cut short by the start of the next one, or the stream ended
    /// inside it.
    Truncated {
        /// Bytes of the cut-short telegram.
        available: usize,
    },
    /// Text: no telegram end within the profile's maximum; rejected before buffering more.
    TelegramTooLong {
        /// The profile's maximum telegram length in bytes.
        max: usize,
    },
    /// Text: a telegram with no content (for example a bare CR LF).
    EmptyTelegram,
    /// Text: the telegram has fewer or more fields than the profile allows.
    FieldCount {
        /// Fields in the telegram (counted up to one past `max`).
        got: usize,
        /// Fewest fields the profile accepts.
        min: usize,
        /// Most fields the profile accepts.
        max: usize,
    },
}

impl FrameDecodeError {
    /// Stable snake_case label for metrics and logs.
    pub const fn kind(&self) -> &'static str {
        match self {
            FrameDecodeError::BadMagic => "bad_magic",
            FrameDecodeError::UnsupportedVersion { .. } => "unsupported_version",
            FrameDecodeError::UnknownFrameType { .. } => "unknown_frame_type",
            FrameDecodeError::FrameTooShort { .. } => "frame_too_short",
            FrameDecodeError::FrameTooLong { .. } => "frame_too_long",
            FrameDecodeError::BadCrc { .. } => "bad_crc",
            FrameDecodeError::BadField { .. } => "bad_field",
            FrameDecodeError::TooManyBarcodes { .. } => "too_many_barcodes",
            FrameDecodeError::Garbage => "garbage",
            FrameDecodeError::Truncated { .. } => "truncated",
            FrameDecodeError::TelegramTooLong { .. } => "telegram_too_long",
            FrameDecodeError::EmptyTelegram => "empty_telegram",
            FrameDecodeError::FieldCount { .. } => "field_count",
        }
    }
}

impl fmt::Display for FrameDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameDecodeError::BadMagic => write!(f, "no frame magic"),
            FrameDecodeError::UnsupportedVersion { got } => {
                write!(f, "unsupported protocol version {got}")
            }
            FrameDecodeError::UnknownFrameType { got } => {
                write!(f, "unknown frame type {got:#04x}")
            }
            FrameDecodeError::FrameTooShort { declared, min } => {
                write!(f, "declared length {declared} below minimum {min}")
            }
            FrameDecodeError::FrameTooLong { declared, max } => {
                write!(f, "declared length {declared} above maximum {max}")
            }
            FrameDecodeError::BadCrc { expected, got } => {
                write!(
                    f,
                    "crc mismatch: frame says {expected:#010x}, bytes give {got:#010x}"
                )
            }
            FrameDecodeError::BadField { field } => write!(f, "bad field {}", field.as_str()),
            FrameDecodeError::TooManyBarcodes { count } => write!(f, "{count} barcodes, at most 8"),
            FrameDecodeError::Garbage => write!(f, "bytes outside any telegram"),
            FrameDecodeError::Truncated { available } => {
                write!(f, "telegram cut short after {available} bytes")
            }
            FrameDecodeError::TelegramTooLong { max } => {
                write!(f, "no telegram end within {max} bytes")
            }
            FrameDecodeError::EmptyTelegram => write!(f, "empty telegram"),
            FrameDecodeError::FieldCount { got, min, max } => {
                write!(f, "{got} fields, expected {min} to {max}")
            }
        }
    }
}

impl std::error::Error for FrameDecodeError {}

/// Why a frame cannot be encoded (it would not decode back to itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A field holds a value the protocol forbids (empty or too long barcode, destination
    /// too long or not UTF-8, protocol version 0).
    BadField {
        /// Which field.
        field: Field,
    },
    /// The frame would be longer than `FRAME_BYTES_MAX`.
    FrameTooLong {
        /// Bytes the frame would need.
        bytes: usize,
        /// The maximum.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BadField { field } => write!(f, "bad field {}", field.as_str()),
            EncodeError::FrameTooLong { bytes, max } => {
                write!(f, "frame would take {bytes} bytes, maximum {max}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}
