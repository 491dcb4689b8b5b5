//! The PLC layer's errors: why a telegram did not decode, and the window's
//! backpressure signal.
//!
//! Both are `Copy` and carry the offending values, so the hot path can count them and a
//! log line can name them. Configuration errors live here too. Nothing here allocates.

use std::fmt;

/// Why 40 bytes are not a valid telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelegramDecodeError {
    /// Fewer bytes than one telegram were given to the fixed-size decoder.
    TooShort {
        /// Bytes given.
        got_bytes: usize,
    },
    /// The first two bytes are not the sync word.
    BadMagic {
        /// The two bytes found, big-endian.
        got: u16,
    },
    /// The protocol version byte is not one this build speaks.
    UnsupportedVersion {
        /// The version byte found.
        got: u8,
    },
    /// The type byte names no telegram type.
    UnknownType {
        /// The type byte found.
        got: u8,
    },
    /// The CRC-16 in the last two bytes does not match the other 38.
    ChecksumMismatch {
        /// CRC computed over bytes 0..38.
        computed: u16,
        /// CRC carried in bytes 38..40.
        carried: u16,
    },
    /// A reserved byte is not zero.
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte.
        offset: usize,
    },
    /// A field holds a value outside its domain (unknown code, chute 0, session 0).
    InvalidField {
        /// The field's name as PROTOCOL.md spells it.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

impl fmt::Display for TelegramDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TelegramDecodeError::TooShort { got_bytes } => {
                write!(f, "telegram too short: {got_bytes} bytes")
            }
            TelegramDecodeError::BadMagic { got } => write!(f, "bad sync word 0x{got:04x}"),
            TelegramDecodeError::UnsupportedVersion { got } => {
                write!(f, "unsupported version {got}")
            }
            TelegramDecodeError::UnknownType { got } => {
                write!(f, "unknown telegram type 0x{got:02x}")
            }
            TelegramDecodeError::ChecksumMismatch { computed, carried } => write!(
                f,
                "CRC mismatch: computed 0x{computed:04x}, carried 0x{carried:04x}"
            ),
            TelegramDecodeError::ReservedNotZero { offset } => {
                write!(f, "reserved byte at offset {offset} is not zero")
            }
            TelegramDecodeError::InvalidField { field, value } => {
                write!(f, "invalid value {value} in field {field}")
            }
        }
    }
}

impl std::error::Error for TelegramDecodeError {}

/// The window of unacknowledged telegrams is full: the caller keeps the item and stops
/// pulling work until acknowledgements free room (see `window_free`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull {
    /// The window's size, in telegrams.
    pub window_max: usize,
}

impl fmt::Display for WindowFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "window of {} unacknowledged telegrams is full",
            self.window_max
        )
    }
}

impl std::error::Error for WindowFull {}

/// A link configuration value outside its allowed range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlcConfigError {
    /// The configuration key, as the config file spells it.
    pub key: &'static str,
    /// The value given.
    pub value: u64,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
}

impl fmt::Display for PlcConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} is outside {}..={}",
            self.key, self.value, self.min, self.max
        )
    }
}

impl std::error::Error for PlcConfigError {}
