//! The gap a power loss can leave across a segment roll, found and cut at open.
//!
//! When the journal rolls to a new segment between two group commits, the kernel writes
//! the page cache of each file back on its own: after a power loss a later segment may
//! have kept its records while an earlier one lost its last ones. The later records were
//! never durable (a group commit fsyncs every segment before it calls anything durable,
//! so durability is a prefix of the sequences) and were never exported (the exporter
//! ships durable events only). [`cut_power_loss_gap`] sets aside every segment after the
//! first such gap, so the writer gives those sequences again and event ids stay
//! gap-free. It looks only at segments the exporter's cursor has not passed (below it
//! everything was durable), reads a segment's last record only unless that fails, and
//! steps over damage that is not a truncation (a flipped bit in an old, durable segment
//! leaves a gap the reader counts; cutting there would throw durable records away). It
//! does not cut the torn tail of the segment it keeps: the writer's recovery does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::super::record::{self, RECORD_BYTES_MAX, RecordDecoded, decode};
use super::super::segment::{self, Damage, HeaderError, decode_header};
use super::{ExportCursor, JournalError, SegmentFile, read_file};

/// What to do with the segments after a gap.
pub(super) type SetAside<'a> = &'a mut dyn FnMut(&SegmentFile) -> Result<(), JournalError>;

/// Finds the first power-loss gap in `segments` (oldest first) and sets aside every
/// segment after it (with `set_aside`), removing them from `segments`. Returns how many
/// were set aside.
pub(super) fn cut_power_loss_gap(
    dir: &std::path::Path,
    segments: &mut Vec<SegmentFile>,
    set_aside: SetAside<'_>,
) -> Result<usize, JournalError> {
    // A cursor that cannot be read bounds nothing: check every segment.
    let acked = ExportCursor::new(dir).load().unwrap_or(0);
    let start = segments
        .iter()
        .rposition(|s| s.first_seq <= acked.saturating_add(1))
        .unwrap_or(0);
    let mut cut_from = None;
    for index in start..segments.len().saturating_sub(1) {
        let (segment, next) = (&segments[index], &segments[index + 1]);
        if ends_before(segment, next.first_seq)? {
            // The gap is after this segment's records (this segment itself is kept,
            // unless a power loss cut it inside its header).
            cut_from = Some(if header_truncated(segment)? {
                index
            } else {
                index + 1
            });
            break;
        }
    }
    let Some(cut_from) = cut_from else {
        return Ok(0);
    };
    let cut: Vec<SegmentFile> = segments.drain(cut_from..).collect();
    tracing::warn!(
        segments = cut.len(),
        first_seq = cut.first().map_or(0, |s| s.first_seq),
        "events: the journal lost records before newer ones (a power loss across a segment \
         roll); the newer, never durable, records are set aside and their sequences given \
         again"
    );
    for segment in &cut {
        set_aside(segment)?;
    }
    Ok(cut.len())
}

/// Whether `segment` lost records a power loss took: its intact records end before
/// `next_first_seq`, and what follows them is a truncation (nothing, a torn record,
/// zeros), not corruption.
fn ends_before(segment: &SegmentFile, next_first_seq: u64) -> Result<bool, JournalError> {
    if last_record_is(segment, next_first_seq.saturating_sub(1))? {
        return Ok(false);
    }
    let bytes = read_file(&segment.path)?;
    let (header, header_bytes) = match decode_header(&bytes) {
        Ok(found) => found,
        // Cut inside its header: nothing of it was durable.
        Err(HeaderError::Truncated) => return Ok(true),
        // A damaged header is not a power loss's doing: the reader skips the segment.
        Err(_) => return Ok(false),
    };
    let body = bytes.get(header_bytes..).unwrap_or_default();
    let scan = segment::scan_records(body, header.first_seq, |_, _| {});
    if scan.next_seq >= next_first_seq {
        return Ok(false);
    }
    Ok(match scan.damage {
        None | Some(Damage::Torn { .. }) => true,
        Some(Damage::Corrupt(_)) => body
            .get(scan.valid_bytes..)
            .is_some_and(|rest| rest.iter().all(|&byte| byte == 0)),
        Some(Damage::SeqBreak { .. }) => false,
    })
}

fn header_truncated(segment: &SegmentFile) -> Result<bool, JournalError> {
    let bytes = read_file(&segment.path)?;
    Ok(matches!(decode_header(&bytes), Err(HeaderError::Truncated)))
}

/// Whether the file ends with an intact record of sequence `seq`: one read of its last
/// bytes instead of a scan of the whole segment.
fn last_record_is(segment: &SegmentFile, seq: u64) -> Result<bool, JournalError> {
    let io = |error| JournalError::io("read tail", &segment.path, error);
    let mut file = File::open(&segment.path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let tail_bytes = length.min(RECORD_BYTES_MAX as u64);
    file.seek(SeekFrom::Start(length - tail_bytes))
        .map_err(io)?;
    let mut tail = Vec::with_capacity(tail_bytes as usize);
    file.take(tail_bytes).read_to_end(&mut tail).map_err(io)?;
    Ok((0..tail.len()).any(|offset| {
        let rest = &tail[offset..];
        matches!(record::peek_len(rest), Ok(Some(len)) if len == rest.len())
            && matches!(decode(rest), RecordDecoded::Complete { record, consumed }
                if consumed == rest.len() && record.seq == seq)
    }))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::super::{JournalReader, JournalWriter, WriterConfig, list_segments};
    use super::{RecordDecoded, decode};
    use crate::events::{Event, OutcomeEvent};
    use crate::plc::Outcome;

    fn writer(dir: &Path) -> JournalWriter {
        let mut config = WriterConfig::new(dir, "hz1", "s1");
        config.segment_bytes = 512;
        config.sync_thread = false;
        config.batch_bytes_max = 64 * 1024;
        JournalWriter::open(config).unwrap()
    }

    fn write(writer: &mut JournalWriter, count: u64) {
        for _ in 0..count {
            let parcel_id = writer.next_seq();
            let event = Event::Outcome(OutcomeEvent {
                parcel_id,
                scanner_id: 1,
                chute: 3,
                outcome: Outcome::Diverted,
                plc_seq: parcel_id as u32,
                decision_seq: 0,
                confirmed_us: 1_000_000 + parcel_id,
            });
            assert!(writer.append(&event).is_some());
            writer.write_batch();
        }
    }

    fn seqs(dir: &Path) -> Vec<u64> {
        let mut reader = JournalReader::open(dir).unwrap();
        let mut out = Vec::new();
        while reader
            .read_batch(&mut out, usize::MAX, usize::MAX)
            .unwrap()
            .records
            > 0
        {}
        let mut rest = out.as_slice();
        let mut seqs = Vec::new();
        while let RecordDecoded::Complete { record, consumed } = decode(rest) {
            seqs.push(record.seq);
            rest = &rest[consumed..];
        }
        seqs
    }

    fn set_aside_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.contains(".seg.corrupt-"))
            .count()
    }

    #[test]
    fn records_after_a_segment_that_lost_its_tail_are_cut_and_their_sequences_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = writer(dir.path());
        write(&mut journal, 40);
        journal.crash();
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 4, "{} segments", segments.len());
        // Power loss: segment 1 lost its last record and a half; 2 and later kept theirs.
        let victim = &segments[1];
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&victim.path)
            .unwrap();
        file.set_len(victim.bytes - 51 - 20).unwrap();
        let gap_at = segments[2].first_seq - 2;

        let mut journal = writer(dir.path());
        assert_eq!(
            journal.next_seq(),
            gap_at,
            "the lost sequences are given again"
        );
        assert_eq!(set_aside_files(dir.path()), segments.len() - 2);
        write(&mut journal, 5);
        journal.close();
        assert_eq!(seqs(dir.path()), (1..gap_at + 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_flipped_bit_in_an_old_segment_or_a_cursor_past_it_cuts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = writer(dir.path());
        write(&mut journal, 40);
        journal.close();
        let segments = list_segments(dir.path()).unwrap();
        let mut bytes = fs::read(&segments[1].path).unwrap();
        let at = bytes.len() - 30;
        bytes[at] ^= 0xFF;
        fs::write(&segments[1].path, &bytes).unwrap();
        let journal = writer(dir.path());
        assert_eq!(journal.next_seq(), 41);
        journal.close();
        assert_eq!(set_aside_files(dir.path()), 0);

        // Truncated, but the exporter's cursor is past it: it was durable once.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&segments[1].path)
            .unwrap();
        file.set_len(segments[1].bytes - 60).unwrap();
        super::ExportCursor::new(dir.path())
            .store(segments[2].first_seq + 1)
            .unwrap();
        let journal = writer(dir.path());
        assert_eq!(journal.next_seq(), 41);
        journal.close();
        assert_eq!(set_aside_files(dir.path()), 0);
    }
}
