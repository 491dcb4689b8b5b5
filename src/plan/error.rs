//! The plan layer's errors: [`PlanError`] for opening, verifying and swapping a compiled
//! plan, and [`CompileErrors`] for turning CSV into a compiled plan.
//!
//! `PlanError` is `Copy` and carries the numbers that explain the failure (offsets,
//! expected and actual sizes). Compile errors carry the CSV line and what is wrong with
//! it; compiling collects all of them up to [`COMPILE_ERRORS_MAX`]. Nothing here prints.

use std::fmt;
use std::io;

use super::types::{DefaultKind, KEY_BYTES_MAX, LINE_BYTES_MAX, NAME_BYTES_MAX};

/// How many compile errors are kept; the rest are only counted.
pub const COMPILE_ERRORS_MAX: usize = 100;

/// How many bytes of an offending field an error message quotes.
pub const QUOTED_FIELD_BYTES_MAX: usize = 64;

/// Why a compiled plan could not be opened, verified or swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// The operating system refused (open, stat, map or read).
    Io {
        /// The kind of I/O error.
        kind: io::ErrorKind,
    },
    /// The file does not start with the plan magic: it is not a compiled plan.
    BadMagic {
        /// The first bytes found (zero-padded when the file is shorter).
        got: [u8; 8],
    },
    /// The file is a compiled plan of a format version this build cannot read.
    UnsupportedVersion {
        /// The format version this build reads.
        expected: u32,
        /// The format version in the file.
        got: u32,
    },
    /// The file is shorter (or longer) than its header says.
    Truncated {
        /// Bytes the header (or the minimum layout) requires.
        expected_bytes: u64,
        /// Bytes actually present.
        got_bytes: u64,
    },
    /// The trailing checksum does not match the content.
    ChecksumMismatch {
        /// The checksum stored in the footer.
        expected: u64,
        /// The checksum computed over the content.
        got: u64,
    },
    /// A structural check failed: a field or table holds an impossible value.
    Corrupt {
        /// What is wrong.
        what: &'static str,
        /// Byte offset in the file where the bad value sits (0 when not applicable).
        offset: u64,
    },
}

impl From<io::Error> for PlanError {
    fn from(error: io::Error) -> Self {
        PlanError::Io { kind: error.kind() }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Io { kind } => write!(f, "I/O error: {kind}"),
            PlanError::BadMagic { got } => {
                write!(
                    f,
                    "not a compiled sort plan (bad magic {})",
                    got.escape_ascii()
                )
            }
            PlanError::UnsupportedVersion { expected, got } => write!(
                f,
                "unsupported plan format version {got} (this build reads version {expected})"
            ),
            PlanError::Truncated {
                expected_bytes,
                got_bytes,
            } => write!(
                f,
                "plan file has the wrong length: expected {expected_bytes} bytes, got {got_bytes}"
            ),
            PlanError::ChecksumMismatch { expected, got } => write!(
                f,
                "plan checksum mismatch: footer says {expected:#018x}, content hashes to {got:#018x}"
            ),
            PlanError::Corrupt { what, offset } => {
                write!(f, "corrupt plan: {what} (at byte {offset})")
            }
        }
    }
}

impl std::error::Error for PlanError {}

/// One thing wrong with a CSV plan source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// Reading the source or writing the compiled plan failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// The kind of I/O error.
        kind: io::ErrorKind,
    },
    /// The first non-comment line is not `kind,key,chutes`.
    MissingHeader,
    /// The line is not valid UTF-8.
    BadUtf8,
    /// The line is longer than [`LINE_BYTES_MAX`].
    LineTooLong,
    /// The line does not have three comma-separated columns.
    ColumnCount {
        /// Columns found.
        got: usize,
    },
    /// The first column is not `meta`, `prefix`, `exact` or `default`.
    UnknownKind {
        /// The first column, quoted.
        kind: String,
    },
    /// The key column is empty.
    EmptyKey,
    /// The key is longer than [`KEY_BYTES_MAX`].
    KeyTooLong {
        /// Length of the key in bytes.
        bytes: usize,
    },
    /// The chutes column is not 1 to 4 distinct chute numbers 1..=65535 separated by `|`.
    BadChute {
        /// The chutes column, quoted.
        field: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The same key appears twice for the same kind.
    DuplicateKey {
        /// `exact` or `prefix`.
        kind: &'static str,
        /// The key, quoted.
        key: String,
        /// The line of the first occurrence.
        first_line: u32,
    },
    /// A default is not one of `no_read`, `no_rule`, `multi_read`, `late`.
    UnknownDefault {
        /// The name found, quoted.
        name: String,
    },
    /// The same default is given twice.
    DuplicateDefault {
        /// Which default.
        which: DefaultKind,
        /// The line of the first occurrence.
        first_line: u32,
    },
    /// A default has more than one chute.
    DefaultNotSingle {
        /// Which default.
        which: DefaultKind,
    },
    /// One of the four defaults is missing (reported at line 0).
    MissingDefault {
        /// Which default.
        which: DefaultKind,
    },
    /// A `meta` line names something other than `name` or `version`.
    UnknownMeta {
        /// The name found, quoted.
        name: String,
    },
    /// The same `meta` item is given twice.
    DuplicateMeta {
        /// `name` or `version`.
        item: &'static str,
        /// The line of the first occurrence.
        first_line: u32,
    },
    /// `meta,version,N` where N is not 1..=4294967295.
    BadVersion {
        /// The value found, quoted.
        value: String,
    },
    /// `meta,name,...` is longer than [`NAME_BYTES_MAX`].
    NameTooLong {
        /// Length of the name in bytes.
        bytes: usize,
    },
    /// The plan exceeds a limit of the file format.
    TooLarge {
        /// Which limit.
        what: &'static str,
    },
}

impl CompileErrorKind {
    /// Quote a field for an error message: escaped, at most [`QUOTED_FIELD_BYTES_MAX`] bytes.
    pub fn quote(field: &[u8]) -> String {
        let shown = field.get(..QUOTED_FIELD_BYTES_MAX).unwrap_or(field);
        let mut quoted = String::from_utf8_lossy(shown).escape_debug().to_string();
        if shown.len() < field.len() {
            quoted.push_str("...");
        }
        quoted
    }
}

impl fmt::Display for CompileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileErrorKind::Io { doing, kind } => write!(f, "I/O error while {doing}: {kind}"),
            CompileErrorKind::MissingHeader => {
                write!(
                    f,
                    "missing header: the first line must be `kind,key,chutes`"
                )
            }
            CompileErrorKind::BadUtf8 => write!(f, "line is not valid UTF-8"),
            CompileErrorKind::LineTooLong => {
                write!(f, "line is longer than {LINE_BYTES_MAX} bytes")
            }
            CompileErrorKind::ColumnCount { got } => {
                write!(
                    f,
                    "wrong column count: expected 3 (kind,key,chutes), got {got}"
                )
            }
            CompileErrorKind::UnknownKind { kind } => write!(
                f,
                "unknown kind \"{kind}\" (expected meta, prefix, exact or default)"
            ),
            CompileErrorKind::EmptyKey => write!(f, "empty key"),
            CompileErrorKind::KeyTooLong { bytes } => {
                write!(f, "key too long: {bytes} bytes (at most {KEY_BYTES_MAX})")
            }
            CompileErrorKind::BadChute { field, why } => write!(f, "bad chute \"{field}\": {why}"),
            CompileErrorKind::DuplicateKey {
                kind,
                key,
                first_line,
            } => write!(
                f,
                "duplicate {kind} key \"{key}\" (first at line {first_line})"
            ),
            CompileErrorKind::UnknownDefault { name } => write!(
                f,
                "unknown default \"{name}\" (expected no_read, no_rule, multi_read or late)"
            ),
            CompileErrorKind::DuplicateDefault { which, first_line } => write!(
                f,
                "duplicate default {} (first at line {first_line})",
                which.as_str()
            ),
            CompileErrorKind::DefaultNotSingle { which } => {
                write!(f, "default {} takes exactly one chute", which.as_str())
            }
            CompileErrorKind::MissingDefault { which } => {
                write!(f, "missing default: add `default,{},CHUTE`", which.as_str())
            }
            CompileErrorKind::UnknownMeta { name } => {
                write!(f, "unknown meta item \"{name}\" (expected name or version)")
            }
            CompileErrorKind::DuplicateMeta { item, first_line } => {
                write!(f, "duplicate meta {item} (first at line {first_line})")
            }
            CompileErrorKind::BadVersion { value } => {
                write!(f, "bad version \"{value}\": expected 1 to 4294967295")
            }
            CompileErrorKind::NameTooLong { bytes } => {
                write!(f, "name too long: {bytes} bytes (at most {NAME_BYTES_MAX})")
            }
            CompileErrorKind::TooLarge { what } => write!(f, "plan too large: {what}"),
        }
    }
}

/// One CSV error with the line it came from (1-based; 0 for whole-file errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// 1-based CSV line, or 0 when the error concerns the whole file.
    pub line: u32,
    /// What is wrong.
    pub kind: CompileErrorKind,
}

/// Every error found while compiling (up to [`COMPILE_ERRORS_MAX`]), sorted by line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompileErrors {
    /// The source name used as the prefix of each message (usually the CSV path).
    pub source_name: String,
    /// The errors kept, sorted by line.
    pub errors: Vec<CompileError>,
    /// Errors found beyond [`COMPILE_ERRORS_MAX`] and not kept.
    pub errors_dropped: u64,
}

impl CompileErrors {
    /// An empty collection for the named source.
    pub fn new(source_name: &str) -> CompileErrors {
        CompileErrors {
            source_name: source_name.to_string(),
            errors: Vec::new(),
            errors_dropped: 0,
        }
    }

    /// Record an error, or only count it when the limit is reached.
    pub fn push(&mut self, line: u32, kind: CompileErrorKind) {
        if self.errors.len() < COMPILE_ERRORS_MAX {
            self.errors.push(CompileError { line, kind });
        } else {
            self.errors_dropped = self.errors_dropped.saturating_add(1);
        }
    }

    /// True when no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.errors_dropped == 0
    }

    /// Total errors found, kept or not.
    pub fn count(&self) -> u64 {
        (self.errors.len() as u64).saturating_add(self.errors_dropped)
    }

    /// Sort the kept errors by line (stable, so same-line errors keep their order).
    pub fn sort(&mut self) {
        self.errors.sort_by_key(|error| error.line);
    }

    /// One message per line, `source:line: what`, for printing to an operator.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let dropped = (self.errors_dropped > 0).then(|| {
            format!(
                "{}: {} more errors not shown",
                self.source_name, self.errors_dropped
            )
        });
        self.errors
            .iter()
            .map(|error| {
                if error.line == 0 {
                    format!("{}: {}", self.source_name, error.kind)
                } else {
                    format!("{}:{}: {}", self.source_name, error.line, error.kind)
                }
            })
            .chain(dropped)
    }
}

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, line) in self.lines().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}
