//! The journal on disk: a directory of append-only segment files, the writer that fills
//! them ([`JournalWriter`]), the reader the exporter and the tools follow
//! ([`JournalReader`]), the exporter's durable cursor ([`ExportCursor`]) and retention.
//!
//! Files: `<first_seq, 20 digits>.seg` segments (header, then records; see
//! `segment.rs`), `export.cursor` (the exporter's acknowledged sequence), and segments set
//! aside as `*.seg.corrupt-<µs>` when their header is unreadable or they follow a power
//! loss's gap (`power_gap.rs`). The record and segment
//! formats are pure (`record.rs`, `segment.rs`); this module owns the files. It does not
//! decide when to write (the PLC thread calls [`JournalWriter::write_batch`] once per
//! turn) nor talk to NATS (the exporter does, through the reader).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod power_gap;
mod reader;
pub mod retention;
mod stats;
mod verify;
mod writer;

pub use reader::{JournalReader, ReadBatch, ReaderDamage};
pub use retention::RetentionPolicy;
pub use stats::{JournalCounters, JournalStats, LossReason};
pub use verify::{SegmentReport, VerifyReport, verify};
pub use writer::{BatchOutcome, JournalWriter, WriterConfig};

/// File name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// The exporter's cursor file.
pub const CURSOR_FILE: &str = "export.cursor";
/// Where a new cursor is written before it is renamed over [`CURSOR_FILE`].
pub const CURSOR_TMP_FILE: &str = "export.cursor.tmp";
/// Default journal directory.
pub const DIR_DEFAULT: &str = "/var/lib/sortd/events";

/// A journal failure, with the file it happened on.
#[derive(Debug)]
pub enum JournalError {
    /// A file system call failed.
    Io {
        /// What was being done (`"open segment"`, `"read"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The journal directory belongs to another hub or sorter.
    IdMismatch {
        /// The segment that says so.
        path: PathBuf,
        /// `hub/sorter` configured.
        expected: String,
        /// `hub/sorter` found.
        found: String,
    },
    /// The cursor file is damaged (it is only ever replaced whole, so this is disk damage).
    BadCursor {
        /// The cursor file.
        path: PathBuf,
    },
    /// The writer's settings are unusable.
    BadConfig {
        /// What is wrong.
        message: &'static str,
    },
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> JournalError {
        JournalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { op, path, source } => {
                write!(f, "journal: {op} {}: {source}", path.display())
            }
            JournalError::IdMismatch {
                path,
                expected,
                found,
            } => write!(
                f,
                "journal: {} belongs to {found}, configured {expected}",
                path.display()
            ),
            JournalError::BadCursor { path } => {
                write!(f, "journal: cursor {} is damaged", path.display())
            }
            JournalError::BadConfig { message } => write!(f, "journal: {message}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The file name of the segment whose first record has sequence `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence a segment file name stands for, `None` if it is not a segment name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

/// A segment file as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Sequence of its first record (from the name).
    pub first_seq: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// The segments in `dir`, oldest first. A missing directory has none.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(JournalError::io("list", dir, error)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| JournalError::io("list", dir, error))?;
        let Some(first_seq) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        // A segment deleted between listing and stat is simply gone.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        segments.push(SegmentFile {
            first_seq,
            path: entry.path(),
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    segments.sort_by_key(|segment| segment.first_seq);
    Ok(segments)
}

/// Reads a whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|error| JournalError::io("read", path, error))?;
    Ok(bytes)
}

/// fsyncs a directory, so that files created, renamed or deleted in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| JournalError::io("fsync dir", dir, error))
}

/// Cursor file: magic, acknowledged sequence (u64 LE), CRC-32C of the 16 bytes before.
const CURSOR_MAGIC: [u8; 8] = *b"SORTDCUR";
const CURSOR_BYTES: usize = 8 + 8 + 4;

/// The exporter's durable cursor: the highest sequence the broker acknowledged. Retention
/// deletes a segment only once the cursor has passed it.
///
/// [`ExportCursor::store`] writes a temporary file, fsyncs it, renames it over the cursor
/// and fsyncs the directory, so after a crash at any point the cursor is either the old
/// value or the new one, never damaged.
#[derive(Debug, Clone)]
pub struct ExportCursor {
    dir: PathBuf,
}

/// The steps of [`ExportCursor::store`], for crash tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CursorStep {
    /// Half of the temporary file written.
    HalfWritten,
    /// The temporary file written and fsynced, not yet renamed.
    Synced,
    /// Renamed, the directory not yet fsynced.
    Renamed,
    /// Done.
    Done,
}

impl ExportCursor {
    /// The cursor of the journal in `dir`.
    pub fn new(dir: &Path) -> ExportCursor {
        ExportCursor {
            dir: dir.to_path_buf(),
        }
    }

    /// The path of the cursor file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(CURSOR_FILE)
    }

    /// The acknowledged sequence; 0 when nothing was acknowledged yet (no file).
    pub fn load(&self) -> Result<u64, JournalError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(JournalError::io("read cursor", &path, error)),
        };
        let bad = || JournalError::BadCursor { path: path.clone() };
        let Ok(whole) = <[u8; CURSOR_BYTES]>::try_from(bytes.as_slice()) else {
            return Err(bad());
        };
        let (covered, crc) = whole.split_at(16);
        if covered[..8] != CURSOR_MAGIC
            || crc32c::crc32c(covered).to_le_bytes() != [crc[0], crc[1], crc[2], crc[3]]
        {
            return Err(bad());
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&covered[8..16]);
        Ok(u64::from_le_bytes(seq))
    }

    /// Durably records `acked_seq` (write, fsync, rename, fsync directory).
    pub fn store(&self, acked_seq: u64) -> Result<(), JournalError> {
        self.store_until(acked_seq, CursorStep::Done)
    }

    /// [`ExportCursor::store`] stopped after `step`, as a crash there would leave it.
    #[doc(hidden)]
    pub fn store_until(&self, acked_seq: u64, step: CursorStep) -> Result<(), JournalError> {
        let tmp = self.dir.join(CURSOR_TMP_FILE);
        let mut bytes = Vec::with_capacity(CURSOR_BYTES);
        bytes.extend_from_slice(&CURSOR_MAGIC);
        bytes.extend_from_slice(&acked_seq.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let mut file = crate::util::fs::create_private_file(&tmp)
            .map_err(|e| JournalError::io("create", &tmp, e))?;
        if step == CursorStep::HalfWritten {
            return file
                .write_all(&bytes[..CURSOR_BYTES / 2])
                .map_err(|e| JournalError::io("write", &tmp, e));
        }
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| JournalError::io("write", &tmp, e))?;
        if step == CursorStep::Synced {
            return Ok(());
        }
        let path = self.path();
        fs::rename(&tmp, &path).map_err(|e| JournalError::io("rename", &path, e))?;
        if step == CursorStep::Renamed {
            return Ok(());
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "42.seg",
            "00000000000000000000.seg",
            "0000000000000000004x.seg",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        assert_eq!(
            parse_segment_name("00000000000000000042.seg.corrupt-1"),
            None
        );
    }

    #[test]
    fn cursor_survives_a_crash_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = ExportCursor::new(dir.path());
        assert_eq!(cursor.load().unwrap(), 0);
        cursor.store(10).unwrap();
        for (step, after) in [
            (CursorStep::HalfWritten, 10),
            (CursorStep::Synced, 10),
            (CursorStep::Renamed, 20),
            (CursorStep::Done, 20),
        ] {
            cursor.store(10).unwrap();
            cursor.store_until(20, step).unwrap();
            // The "restart": only what is on disk counts.
            assert_eq!(
                ExportCursor::new(dir.path()).load().unwrap(),
                after,
                "{step:?}"
            );
            // And the next store after the crash works.
            cursor.store(30).unwrap();
            assert_eq!(cursor.load().unwrap(), 30);
        }
        fs::write(cursor.path(), b"garbage").unwrap();
        assert!(matches!(cursor.load(), Err(JournalError::BadCursor { .. })));
    }
}
