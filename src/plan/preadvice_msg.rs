//! The pre-advice message: JSON lines, one add or remove per line, parsed into a batch.
//! A bad line is reported with its line number and counted; the good lines still form
//! the batch. Pure: bytes in, entries and errors out; applying is
//! [`super::preadvice::PreAdvice::apply`]'s.
//!
//! ```text
//! {"op":"add","barcode":"YT1234567890123","chutes":[7,8]}
//! {"op":"add","barcode":"YT1234567890124","destination":"330106001"}
//! {"op":"remove","barcode":"YT1234567890125"}
//! ```
//!
//! Limits: a message at most [`MESSAGE_BYTES_MAX`], a line at most [`LINE_BYTES_MAX`],
//! at most [`BATCH_ENTRIES_MAX`] entries; barcodes and destination codes 1 to 128 bytes;
//! 1 to 4 distinct chutes 1..=65535. Blank lines are skipped. Unknown fields are errors
//! (a typo must not silently drop an entry's meaning).

use serde::Deserialize;

use super::format::KEY_BYTES_MAX;
use super::overlay::{PreAdviceEntry, PreAdviceValue};
pub use super::preadvice_log::BATCH_ENTRIES_MAX;
use super::types::{CHUTES_PER_RULE_MAX, Chutes};

/// The largest message accepted.
pub const MESSAGE_BYTES_MAX: usize = 8 << 20;
/// The longest line accepted.
pub const LINE_BYTES_MAX: usize = 1024;
/// Line errors kept with their text; more are only counted.
pub const LINE_ERRORS_KEPT_MAX: usize = 20;

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineErrorKind {
    /// Longer than [`LINE_BYTES_MAX`].
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// Not JSON of the expected shape (serde's message).
    Json(String),
    /// `op` is not `add` or `remove`.
    UnknownOp(String),
    /// An add without exactly one of `chutes` and `destination`, or a remove with one.
    Shape(&'static str),
    /// Barcode or destination length outside 1..=128 bytes.
    Length {
        /// `barcode` or `destination`.
        field: &'static str,
        /// Its length in bytes.
        bytes: usize,
    },
    /// Chutes not 1 to 4 distinct numbers 1..=65535.
    BadChutes,
    /// The batch already holds [`BATCH_ENTRIES_MAX`] entries.
    TooManyEntries,
}

impl std::fmt::Display for LineErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineErrorKind::TooLong { bytes } => {
                write!(f, "line is {bytes} bytes (at most {LINE_BYTES_MAX})")
            }
            LineErrorKind::Json(message) => write!(f, "bad JSON: {message}"),
            LineErrorKind::UnknownOp(op) => {
                write!(f, "unknown op {op:?} (expected \"add\" or \"remove\")")
            }
            LineErrorKind::Shape(what) => f.write_str(what),
            LineErrorKind::Length { field, bytes } => write!(
                f,
                "{field} is {bytes} bytes (expected 1 to {KEY_BYTES_MAX})"
            ),
            LineErrorKind::BadChutes => write!(
                f,
                "chutes must be 1 to {CHUTES_PER_RULE_MAX} distinct numbers 1..=65535"
            ),
            LineErrorKind::TooManyEntries => {
                write!(f, "more than {BATCH_ENTRIES_MAX} entries in one message")
            }
        }
    }
}

/// One bad line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the message.
    pub line: u32,
    /// What is wrong.
    pub kind: LineErrorKind,
}

/// A parsed message: the good entries in order, and the bad lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedBatch {
    /// Entries from the good lines, in message order.
    pub entries: Vec<PreAdviceEntry>,
    /// The first [`LINE_ERRORS_KEPT_MAX`] bad lines.
    pub errors: Vec<LineError>,
    /// Every bad line, kept or not.
    pub bad_lines: u64,
    /// True when the message was over [`MESSAGE_BYTES_MAX`] and nothing was parsed.
    pub too_large: bool,
}

impl ParsedBatch {
    fn error(&mut self, line: u32, kind: LineErrorKind) {
        self.bad_lines += 1;
        if self.errors.len() < LINE_ERRORS_KEPT_MAX {
            self.errors.push(LineError { line, kind });
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    op: String,
    barcode: String,
    #[serde(default)]
    chutes: Option<Vec<u32>>,
    #[serde(default)]
    destination: Option<String>,
}

fn check_length(field: &'static str, text: &str) -> Result<(), LineErrorKind> {
    let bytes = text.len();
    if bytes == 0 || bytes > KEY_BYTES_MAX {
        return Err(LineErrorKind::Length { field, bytes });
    }
    Ok(())
}

fn parse_line(line: &[u8]) -> Result<PreAdviceEntry, LineErrorKind> {
    let raw: RawLine =
        serde_json::from_slice(line).map_err(|error| LineErrorKind::Json(error.to_string()))?;
    check_length("barcode", &raw.barcode)?;
    let value = match (raw.op.as_str(), raw.chutes, raw.destination) {
        ("add", Some(chutes), None) => {
            let mut numbers = Vec::with_capacity(chutes.len());
            for chute in chutes {
                numbers.push(u16::try_from(chute).map_err(|_| LineErrorKind::BadChutes)?);
            }
            PreAdviceValue::Chutes(Chutes::new(&numbers).ok_or(LineErrorKind::BadChutes)?)
        }
        ("add", None, Some(destination)) => {
            check_length("destination", &destination)?;
            PreAdviceValue::Destination(destination.into_bytes().into_boxed_slice())
        }
        ("add", _, _) => {
            return Err(LineErrorKind::Shape(
                "an add needs exactly one of \"chutes\" and \"destination\"",
            ));
        }
        ("remove", None, None) => PreAdviceValue::Remove,
        ("remove", _, _) => {
            return Err(LineErrorKind::Shape(
                "a remove takes no \"chutes\" or \"destination\"",
            ));
        }
        (op, _, _) => return Err(LineErrorKind::UnknownOp(op.chars().take(32).collect())),
    };
    Ok(PreAdviceEntry {
        barcode: raw.barcode.into_bytes().into_boxed_slice(),
        value,
    })
}

/// Parse one message. Never panics; bad lines are reported and skipped.
pub fn parse_message(message: &[u8]) -> ParsedBatch {
    let mut parsed = ParsedBatch::default();
    if message.len() > MESSAGE_BYTES_MAX {
        parsed.too_large = true;
        parsed.bad_lines = 1;
        return parsed;
    }
    for (index, line) in message.split(|&byte| byte == b'\n').enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() > LINE_BYTES_MAX {
            parsed.error(number, LineErrorKind::TooLong { bytes: line.len() });
            continue;
        }
        if parsed.entries.len() >= BATCH_ENTRIES_MAX {
            parsed.error(number, LineErrorKind::TooManyEntries);
            continue;
        }
        match parse_line(line) {
            Ok(entry) => parsed.entries.push(entry),
            Err(kind) => parsed.error(number, kind),
        }
    }
    parsed
}

/// One entry as a JSON line (no newline): the inverse of the parser, for tools.
pub fn entry_to_json(entry: &PreAdviceEntry) -> String {
    let barcode = String::from_utf8_lossy(&entry.barcode);
    let value = match &entry.value {
        PreAdviceValue::Chutes(chutes) => serde_json::json!({
            "op": "add", "barcode": barcode, "chutes": chutes.as_slice(),
        }),
        PreAdviceValue::Destination(code) => serde_json::json!({
            "op": "add", "barcode": barcode, "destination": String::from_utf8_lossy(code),
        }),
        PreAdviceValue::Remove => serde_json::json!({"op": "remove", "barcode": barcode}),
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_apply_and_bad_lines_are_reported_with_their_number() {
        let message = concat!(
            "{\"op\":\"add\",\"barcode\":\"A1\",\"chutes\":[7,8]}\n",
            "\n",
            "{\"op\":\"add\",\"barcode\":\"A2\",\"destination\":\"3301\"}\r\n",
            "{\"op\":\"remove\",\"barcode\":\"A3\"}\n",
            "not json\n",
            "{\"op\":\"add\",\"barcode\":\"A4\"}\n",
            "{\"op\":\"add\",\"barcode\":\"A5\",\"chutes\":[0]}\n",
            "{\"op\":\"add\",\"barcode\":\"A6\",\"chutes\":[7],\"colour\":1}\n",
            "{\"op\":\"move\",\"barcode\":\"A7\"}\n",
            "{\"op\":\"add\",\"barcode\":\"\",\"chutes\":[7]}\n",
            "{\"op\":\"add\",\"barcode\":\"A8\",\"chutes\":[70000]}",
        );
        let parsed = parse_message(message.as_bytes());
        let barcodes: Vec<&[u8]> = parsed.entries.iter().map(|e| &e.barcode[..]).collect();
        assert_eq!(barcodes, [&b"A1"[..], b"A2", b"A3"]);
        let lines: Vec<u32> = parsed.errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, [5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(parsed.bad_lines, 7);
        assert_eq!(
            parsed.errors[4].kind,
            LineErrorKind::UnknownOp("move".into())
        );
        assert_eq!(
            parsed.errors[5].kind,
            LineErrorKind::Length {
                field: "barcode",
                bytes: 0
            }
        );
        for entry in &parsed.entries {
            let again = parse_message(entry_to_json(entry).as_bytes());
            assert_eq!(again.entries, std::slice::from_ref(entry));
        }
    }

    #[test]
    fn long_lines_and_huge_messages_are_refused() {
        let long = format!(
            "{{\"op\":\"remove\",\"barcode\":\"{}\"}}",
            "x".repeat(LINE_BYTES_MAX)
        );
        let parsed = parse_message(long.as_bytes());
        assert!(matches!(
            parsed.errors[0].kind,
            LineErrorKind::TooLong { .. }
        ));
        let huge = vec![b' '; MESSAGE_BYTES_MAX + 1];
        assert!(parse_message(&huge).too_large);
    }
}
