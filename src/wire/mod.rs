//! The scanner wire layer: what a scanner sends over TCP, decoded into [`Frame`]s.
//!
//! Two kinds of input arrive: sortd's own binary frame (version 1, documented byte by byte
//! in PROTOCOL.md; [`decode_binary`] and [`encode`]) and the ASCII telegrams real scanners
//! send, described by a [`TextProfile`] ([`decode_text`]). Both decode to the same
//! [`ScanFrame`], borrowing from the caller's buffer, without allocation, I/O, clocks or
//! panics. Every decoder returns [`Decoded`]: a frame and the bytes it took, "need more
//! bytes", or an error with the bytes to skip, so a stream resynchronises after garbage.
//! Sockets, buffering, scanner sessions and counting are other layers' work.

mod binary;
mod bytes;
mod error;
mod frame;
pub mod fuzzing;
mod profile;
mod text;

pub use binary::{
    BARCODE_PREFIX_BYTES, FRAME_BYTES_MAX, FRAME_TYPE_HEARTBEAT, FRAME_TYPE_HELLO, FRAME_TYPE_SCAN,
    HEADER_BYTES, HEARTBEAT_BYTES, HELLO_BYTES, MAGIC, PROTOCOL_VERSION, SCAN_BYTES_MIN,
    SCAN_FIXED_BYTES, TRAILER_BYTES, decode_binary, encode, resync_offset,
};
pub use error::{EncodeError, Field, FrameDecodeError};
pub use frame::{
    BARCODE_BYTES_MAX, BARCODES_MAX, Barcodes, DESTINATION_BYTES_MAX, Decoded, Frame, Heartbeat,
    Hello, ScanFlags, ScanFrame,
};
pub use profile::{
    ETX, FieldRole, NO_READ_MARKER_BYTES_MAX, NO_READ_MARKERS_MAX, ProfileError, STX,
    TELEGRAM_BYTES_DEFAULT, TELEGRAM_BYTES_MAX, TEXT_FIELDS_MAX, TextFraming, TextProfile,
    TextProfileSpec,
};
pub use text::decode_text;

/// Which decoder a connection's bytes go through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// sortd's binary frame.
    Binary,
    /// ASCII telegrams laid out by a profile.
    Text(TextProfile),
}

impl Framing {
    /// Decodes the frame or telegram at the front of `buf`.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Decoded<'a> {
        match self {
            Framing::Binary => decode_binary(buf),
            Framing::Text(profile) => decode_text(profile, buf),
        }
    }

    /// Bytes to drop from a buffer that ended (end of stream) in [`Decoded::NeedMore`], so
    /// that any frame behind the cut-off one is still found: at least 1 unless `buf` is
    /// empty, at most `buf.len()`.
    pub fn resync_offset(&self, buf: &[u8]) -> usize {
        match self {
            Framing::Binary => resync_offset(buf),
            Framing::Text(_) => buf
                .get(1..)
                .and_then(|rest| rest.iter().position(|&b| b == STX))
                .map_or(buf.len(), |at| at + 1),
        }
    }
}
