//! A full check of a journal directory: every segment's header and every record's CRC,
//! sequences consecutive within and across segments. What `sortd events verify` prints.
//!
//! Read-only; it reports damage and leaves repairs to the writer's open.

use std::path::{Path, PathBuf};

use super::super::segment::{Damage, decode_header, scan_records};
use super::{JournalError, list_segments, read_file};

/// One segment's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// First sequence (from its name).
    pub first_seq: u64,
    /// Intact records.
    pub records: u64,
    /// Sequence of the last intact record (`first_seq - 1` when none).
    pub last_seq: u64,
    /// The header is unreadable (why).
    pub bad_header: Option<String>,
    /// Where the intact records stop, and why, if before the end.
    pub damage: Option<(u64, Damage)>,
    /// Bytes after the intact records.
    pub damaged_bytes: u64,
}

/// The whole journal's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every segment, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Intact records in all.
    pub records: u64,
    /// Gaps between segments: (last sequence before, first sequence after).
    pub gaps: Vec<(u64, u64)>,
}

impl VerifyReport {
    /// True when no segment is damaged and no sequence is missing. A torn tail in the
    /// newest segment counts: the writer cuts it at its next open.
    pub fn is_clean(&self) -> bool {
        self.gaps.is_empty()
            && self
                .segments
                .iter()
                .all(|s| s.bad_header.is_none() && s.damage.is_none())
    }
}

/// Checks every segment in `dir`.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    let mut report = VerifyReport::default();
    let mut previous_last: Option<u64> = None;
    for segment in list_segments(dir)? {
        let bytes = read_file(&segment.path)?;
        let mut entry = SegmentReport {
            path: segment.path.clone(),
            first_seq: segment.first_seq,
            records: 0,
            last_seq: segment.first_seq - 1,
            bad_header: None,
            damage: None,
            damaged_bytes: 0,
        };
        match decode_header(&bytes) {
            Err(error) => {
                entry.bad_header = Some(error.to_string());
                entry.damaged_bytes = bytes.len() as u64;
            }
            Ok((header, header_bytes)) => {
                if header.first_seq != segment.first_seq {
                    entry.bad_header = Some(format!(
                        "header says first sequence {}, name says {}",
                        header.first_seq, segment.first_seq
                    ));
                }
                let body = bytes.get(header_bytes..).unwrap_or_default();
                let scan = scan_records(body, header.first_seq, |_, _| {});
                entry.records = scan.records;
                entry.last_seq = scan.next_seq - 1;
                if let Some(damage) = scan.damage {
                    entry.damage = Some(((header_bytes + scan.valid_bytes) as u64, damage));
                    entry.damaged_bytes = (body.len() - scan.valid_bytes) as u64;
                }
            }
        }
        if let Some(last) = previous_last {
            if segment.first_seq != last + 1 {
                report.gaps.push((last, segment.first_seq));
            }
        }
        previous_last = Some(entry.last_seq.max(segment.first_seq - 1));
        report.records += entry.records;
        report.segments.push(entry);
    }
    Ok(report)
}
