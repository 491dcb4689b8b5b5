//! Invariant checks for the journal over arbitrary and damaged segments, shared by the
//! cargo-fuzz target `events_journal_read` and the stable corpus replay
//! (`tests/events_fuzz_corpus.rs`). A panic here is a bug. Not for production use.
//!
//! The promise checked: whatever the bytes, reading never panics, every record the reader
//! hands out is intact and in sequence order, and every intact record before the first
//! damaged byte is recovered, by the reader and by the writer's recovery at open.

use std::path::Path;

use super::journal::{JournalReader, JournalWriter, WriterConfig, segment_name};
use super::record::{
    self, Action, DecisionEvent, Event, FLAG_DIMENSIONS_MEASURED, FLAG_WEIGHT_MEASURED,
    OutcomeEvent, RecordDecoded, Rule,
};
use super::segment::SegmentHeader;
use crate::decision::Reason;
use crate::plc::Outcome;
use crate::wire::Barcodes;

/// Reads bytes off the front of a slice, giving zeros once it is used up.
#[derive(Debug)]
pub struct ByteReader<'a> {
    data: &'a [u8],
}

impl<'a> ByteReader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> ByteReader<'a> {
        ByteReader { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for slot in &mut out {
            *slot = self.byte();
        }
        out
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to `bytes` bytes.
    pub fn slice(&mut self, bytes: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(bytes.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// An event built from bytes; always encodable.
pub fn event_from<'a>(reader: &mut ByteReader<'a>) -> Event<'a> {
    if reader.byte() % 3 == 0 {
        return Event::Outcome(OutcomeEvent {
            parcel_id: reader.u64(),
            scanner_id: reader.u32(),
            chute: reader.u16(),
            outcome: Outcome::ALL[usize::from(reader.byte()) % Outcome::ALL.len()],
            plc_seq: reader.u32(),
            decision_seq: reader.u64(),
            confirmed_us: reader.u64(),
        });
    }
    let mut barcodes = Barcodes::new();
    for _ in 0..reader.byte() % 4 {
        let code_bytes = usize::from(reader.byte() % 40);
        let code = reader.slice(code_bytes);
        if !code.is_empty() {
            let _ = barcodes.push(code);
        }
    }
    let destination_bytes = usize::from(reader.byte() % 20);
    let destination = reader.slice(destination_bytes);
    let name_len = usize::from(reader.byte() % 12);
    let name_bytes = reader.slice(name_len);
    let plan_name = std::str::from_utf8(name_bytes).unwrap_or("plan");
    Event::Decision(DecisionEvent {
        action: Action::ALL[usize::from(reader.byte()) % Action::ALL.len()],
        parcel_id: reader.u64(),
        scanner_id: reader.u32(),
        barcodes,
        destination,
        chute: reader.u16(),
        reason: Reason::ALL[usize::from(reader.byte()) % Reason::ALL.len()],
        rule: Rule::ALL[usize::from(reader.byte()) % Rule::ALL.len()],
        plan_name,
        plan_version: reader.u32(),
        pre_advice_seq: reader.u64(),
        plc_seq: reader.u32(),
        flags: reader.byte() & (FLAG_WEIGHT_MEASURED | FLAG_DIMENSIONS_MEASURED),
        weight_g: reader.u32(),
        length_mm: reader.u16(),
        width_mm: reader.u16(),
        height_mm: reader.u16(),
        received_us: reader.u64(),
        decided_after_us: reader.u32(),
        sent_after_us: reader.u32(),
    })
}

/// A segment's bytes, header length, and each record's (sequence, byte range).
type BuiltSegment = (Vec<u8>, usize, Vec<(u64, std::ops::Range<usize>)>);

/// A segment built from `reader`: its bytes, header length, and each record's
/// (sequence, byte range).
fn build_segment(
    reader: &mut ByteReader<'_>,
    first_seq: u64,
    break_at: Option<usize>,
) -> BuiltSegment {
    let mut bytes = Vec::new();
    let header = SegmentHeader {
        first_seq,
        hub_id: "hub",
        sorter_id: "s1",
    };
    if let Err(error) = header.encode(&mut bytes) {
        panic!("fuzz header: {error}");
    }
    let header_bytes = bytes.len();
    let mut records = Vec::new();
    let count = usize::from(reader.byte() % 24);
    for index in 0..count {
        if reader.is_empty() && index > 0 {
            break;
        }
        let event = event_from(reader);
        // A sequence break (one number skipped) from `break_at` on, if asked for.
        let skipped = u64::from(break_at.is_some_and(|at| index >= at));
        let seq = first_seq + records.len() as u64 + skipped;
        let start = bytes.len();
        if let Err(error) = record::encode(seq, &event, &mut bytes) {
            panic!("fuzz event does not encode: {error}");
        }
        records.push((seq, start..bytes.len()));
    }
    (bytes, header_bytes, records)
}

/// Reads the whole journal in `dir` from sequence `from` in batches of the given limits;
/// checks every record handed out is intact and in order; returns (seq, bytes) of each.
fn read_all(dir: &Path, from: u64, records_max: usize, bytes_max: usize) -> Vec<(u64, Vec<u8>)> {
    let mut reader = match JournalReader::open(dir) {
        Ok(reader) => reader,
        Err(error) => panic!("reader open: {error}"),
    };
    if let Err(error) = reader.seek(from) {
        panic!("seek: {error}");
    }
    let mut out = Vec::new();
    let mut records = Vec::new();
    for _ in 0..10_000 {
        out.clear();
        let batch = match reader.read_batch(&mut out, records_max, bytes_max) {
            Ok(batch) => batch,
            Err(error) => panic!("read_batch: {error}"),
        };
        if batch.records == 0 {
            return records;
        }
        assert!(batch.records <= records_max);
        assert!(
            batch.records == 1 || out.len() <= bytes_max,
            "bytes_max exceeded"
        );
        let mut rest = out.as_slice();
        let mut seen = 0;
        while !rest.is_empty() {
            let RecordDecoded::Complete { record, consumed } = record::decode(rest) else {
                panic!("reader handed out a damaged record");
            };
            if let Some((last, _)) = records.last() {
                assert!(
                    record.seq > *last,
                    "out of order: {} after {last}",
                    record.seq
                );
            }
            assert!(record.seq >= from, "below the seek position");
            records.push((
                record.seq,
                rest.get(..consumed).unwrap_or_default().to_vec(),
            ));
            rest = rest.get(consumed..).unwrap_or_default();
            seen += 1;
        }
        assert_eq!(seen, batch.records);
        assert_eq!(records.last().map(|(seq, _)| *seq), Some(batch.last_seq));
    }
    panic!("the reader never ran dry");
}

/// The fuzz target: a segment (valid and then damaged, or raw bytes), optionally followed
/// by a valid segment; the reader and the writer's recovery must keep every intact record
/// before the damage.
pub fn journal_read(data: &[u8]) {
    let mut reader = ByteReader::new(data);
    let mode = reader.byte();
    let first_seq = u64::from(reader.u16()) + 1;
    let records_max = usize::from(reader.byte() % 8) + 1;
    let bytes_max = usize::from(reader.u16());
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("tempdir: {error}"),
    };
    let first_path = dir.path().join(segment_name(first_seq));

    let (mut bytes, header_bytes, records, raw) = if mode & 1 == 1 {
        let raw = reader.slice(4096).to_vec();
        (raw, 0, Vec::new(), true)
    } else {
        let break_at = (mode & 16 == 16).then(|| usize::from(reader.byte() % 24));
        let (bytes, header_bytes, records) = build_segment(&mut reader, first_seq, break_at);
        (bytes, header_bytes, records, false)
    };
    // Damage: a sequence break, a cut and up to three bit flips; `intact_end` is the
    // first damaged byte.
    let mut intact_end = records
        .iter()
        .enumerate()
        .find(|(index, (seq, _))| *seq != first_seq + *index as u64)
        .map_or(bytes.len(), |(_, (_, range))| range.start);
    if !raw {
        let cut = usize::from(reader.u16()) % (bytes.len() + 1);
        if mode & 2 == 2 {
            bytes.truncate(cut);
            intact_end = intact_end.min(cut);
        }
        for _ in 0..reader.byte() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = usize::from(reader.u16()) % bytes.len();
            bytes[at] ^= 1 << (reader.byte() % 8);
            intact_end = intact_end.min(at);
        }
    }
    let intact: Vec<(u64, Vec<u8>)> = if intact_end < header_bytes {
        Vec::new()
    } else {
        records
            .iter()
            .filter(|(_, range)| range.end <= intact_end)
            .map(|(seq, range)| (*seq, bytes.get(range.clone()).unwrap_or_default().to_vec()))
            .collect()
    };
    write(&first_path, &bytes);

    // Optionally a second, valid segment after the damaged one.
    let second: Vec<(u64, Vec<u8>)> = if mode & 4 == 4 {
        let after_first = records.last().map_or(first_seq, |(seq, _)| seq + 1);
        let second_first = after_first + u64::from(reader.byte() % 3);
        let (second_bytes, _, second_records) = build_segment(&mut reader, second_first, None);
        write(&dir.path().join(segment_name(second_first)), &second_bytes);
        second_records
            .into_iter()
            .map(|(seq, range)| (seq, second_bytes.get(range).unwrap_or_default().to_vec()))
            .collect()
    } else {
        Vec::new()
    };

    let got = read_all(dir.path(), 0, records_max, bytes_max);
    // Every intact record before the damage, in order, first.
    assert!(
        got.len() >= intact.len(),
        "lost intact records: {} of {}",
        got.len(),
        intact.len()
    );
    assert_eq!(
        got.get(..intact.len()).unwrap_or_default(),
        intact.as_slice()
    );
    // Everything in an undamaged later segment too.
    for record in &second {
        assert!(
            got.contains(record),
            "lost record {} of the later segment",
            record.0
        );
    }
    // Seeking into the journal gives the same records from there.
    if let Some((middle, _)) = got.get(got.len() / 2) {
        let from_middle = read_all(dir.path(), *middle, 3, 512);
        let expected: Vec<_> = got
            .iter()
            .filter(|(seq, _)| seq >= middle)
            .cloned()
            .collect();
        assert_eq!(from_middle, expected);
    }

    if mode & 8 == 8 {
        check_writer_recovery(dir.path(), &got, &intact);
    }
}

/// Opens a writer on the damaged journal (it must start), appends one event, and checks
/// that the records before it are kept and the new one is read after them.
fn check_writer_recovery(dir: &Path, before: &[(u64, Vec<u8>)], intact: &[(u64, Vec<u8>)]) {
    let mut config = WriterConfig::new(dir, "hub", "s1");
    config.fsync_interval = std::time::Duration::from_secs(3600);
    let mut writer = match JournalWriter::open(config) {
        Ok(writer) => writer,
        Err(error) => panic!("writer did not start on a damaged journal: {error}"),
    };
    let max_before = before.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
    let event = Event::Outcome(OutcomeEvent {
        parcel_id: 1,
        scanner_id: 1,
        chute: 1,
        outcome: Outcome::Diverted,
        plc_seq: 0,
        decision_seq: 0,
        confirmed_us: 0,
    });
    let seq = writer.append(&event);
    let outcome = writer.write_batch();
    assert_eq!(outcome.written, 1, "write failed");
    writer.close();
    let Some(seq) = seq else {
        panic!("a valid event was refused");
    };
    let after = read_all(dir, 0, 16, 1 << 16);
    assert_eq!(after.get(..intact.len()).unwrap_or_default(), intact);
    assert_eq!(after.last().map(|(s, _)| *s), Some(seq));
    if seq <= max_before {
        // Only after a truncation gap before a later segment (a power loss across a
        // roll; `journal/power_gap.rs`) are sequences given again: the later segment is
        // set aside, and what is left runs on without a gap.
        let max_intact = intact.last().map_or(0, |(s, _)| *s);
        assert!(
            seq > max_intact,
            "sequence {seq} reused (had {max_intact} intact)"
        );
        assert!(
            after.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1),
            "sequence {seq} reused (had {max_before}) and the journal has a gap"
        );
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(error) = std::fs::write(path, bytes) {
        panic!("write {}: {error}", path.display());
    }
}
