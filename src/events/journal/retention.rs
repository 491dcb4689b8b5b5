//! Retention: which old segments may go, and deleting them in a crash-safe order.
//!
//! A segment is deleted only when both hold: the exporter's durable cursor has passed its
//! last record (unless no exporter runs), and its retention ran out (the journal is over
//! its byte budget, or the segment is older than the age limit). Oldest first, never the
//! segment being written, only a prefix of the journal, so the journal stays contiguous.
//! The cursor is read from its file, which the exporter replaces whole and fsyncs before
//! retention can see it: a crash at any point leaves a cursor that never points before a
//! deleted segment. [`plan`] is pure; [`apply`] lists, reads the cursor and deletes.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{ExportCursor, JournalError, SegmentFile, list_segments, sync_dir};

/// How long segments are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the journal under this many bytes (oldest exported segments go first).
    pub bytes_max: u64,
    /// Delete exported segments last written longer ago than this.
    pub age_max: Duration,
    /// Only delete what the exporter's cursor has passed. False when no exporter runs, so
    /// the journal cannot fill the disk.
    pub cursor_required: bool,
}

/// How many of the oldest `segments` (sorted by first sequence) may be deleted now.
pub fn plan(
    segments: &[SegmentFile],
    acked_seq: u64,
    now: SystemTime,
    policy: &RetentionPolicy,
) -> usize {
    let mut remaining_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut deletable = 0;
    for pair in segments.windows(2) {
        let (segment, next) = (&pair[0], &pair[1]);
        let last_seq = next.first_seq.saturating_sub(1);
        let exported = !policy.cursor_required || last_seq <= acked_seq;
        let age = now.duration_since(segment.modified).unwrap_or_default();
        let expired = remaining_bytes > policy.bytes_max || age >= policy.age_max;
        if !(exported && expired) {
            break;
        }
        remaining_bytes -= segment.bytes;
        deletable += 1;
    }
    deletable
}

/// Deletes what [`plan`] allows in `dir`, oldest first, then fsyncs the directory; also
/// deletes set-aside corrupt segments older than the age limit. Returns the segments
/// deleted and what is left (segments, bytes).
pub fn apply(
    dir: &Path,
    policy: &RetentionPolicy,
    now: SystemTime,
) -> Result<(u64, u64, u64), JournalError> {
    let segments = list_segments(dir)?;
    let acked_seq = if policy.cursor_required {
        ExportCursor::new(dir).load()?
    } else {
        0
    };
    let deletable = plan(&segments, acked_seq, now, policy);
    for segment in segments.iter().take(deletable) {
        fs::remove_file(&segment.path)
            .map_err(|error| JournalError::io("delete", &segment.path, error))?;
    }
    remove_old_set_aside(dir, now, policy.age_max);
    if deletable > 0 {
        sync_dir(dir)?;
    }
    let kept = segments.get(deletable..).unwrap_or_default();
    Ok((
        deletable as u64,
        kept.len() as u64,
        kept.iter().map(|s| s.bytes).sum(),
    ))
}

fn remove_old_set_aside(dir: &Path, now: SystemTime, age_max: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.contains(".seg.corrupt-") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .map(|modified| now.duration_since(modified).unwrap_or_default() >= age_max)
            .unwrap_or(false);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn segment(first_seq: u64, bytes: u64, age_s: u64, now: SystemTime) -> SegmentFile {
        SegmentFile {
            first_seq,
            path: PathBuf::from(super::super::segment_name(first_seq)),
            bytes,
            modified: now - Duration::from_secs(age_s),
        }
    }

    #[test]
    fn deletes_only_exported_and_expired_prefixes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Segments of 100 bytes holding 1-10, 11-20, 21-30, and the current 31-.
        let segments = [
            segment(1, 100, 5000, now),
            segment(11, 100, 4000, now),
            segment(21, 100, 10, now),
            segment(31, 100, 0, now),
        ];
        let by_age = RetentionPolicy {
            bytes_max: u64::MAX,
            age_max: Duration::from_secs(3600),
            cursor_required: true,
        };
        let by_bytes = RetentionPolicy {
            bytes_max: 250,
            age_max: Duration::MAX,
            cursor_required: true,
        };
        let cases = [
            // (policy, acked, deletable)
            (by_age, 0, 0),    // nothing exported
            (by_age, 9, 0),    // first segment not wholly exported
            (by_age, 10, 1),   // first exported and old
            (by_age, 30, 2),   // the third is exported but young
            (by_bytes, 30, 2), // 400 bytes -> keep 2 segments (200 <= 250)
            (by_bytes, 10, 1), // the cursor holds the rest
            (
                RetentionPolicy {
                    cursor_required: false,
                    ..by_bytes
                },
                0,
                2,
            ),
            (
                RetentionPolicy {
                    age_max: Duration::ZERO,
                    ..by_age
                },
                u64::MAX,
                3, // never the current segment
            ),
        ];
        for (index, (policy, acked, deletable)) in cases.into_iter().enumerate() {
            assert_eq!(
                plan(&segments, acked, now, &policy),
                deletable,
                "case {index}"
            );
        }
    }
}
