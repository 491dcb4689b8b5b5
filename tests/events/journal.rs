//! The journal on real files: multi-segment write and seek, torn tails at every byte,
//! bit flips, unreadable headers, retention with the cursor, crash states, a process
//! that dies without closing, and a disk that fills up.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sortd::decision::Reason;
use sortd::events::journal::{
    ExportCursor, JournalReader, JournalWriter, LossReason, RetentionPolicy, WriterConfig,
    list_segments, retention, segment_name, verify,
};
use sortd::events::record::{self, RecordDecoded};
use sortd::events::{Action, DecisionEvent, Event, OutcomeEvent, Rule};
use sortd::plc::Outcome;
use sortd::wire::Barcodes;

const CODES: [&[u8]; 3] = [b"JD0001234567", b"SF1234567890123", b"YT9876543210"];

fn decision(parcel_id: u64) -> Event<'static> {
    Event::Decision(DecisionEvent {
        action: Action::Sent,
        parcel_id,
        scanner_id: 7,
        barcodes: Barcodes::from_slice(&[CODES[(parcel_id % 3) as usize]]).unwrap(),
        destination: b"330106",
        chute: (parcel_id % 300) as u16 + 1,
        reason: Reason::SortedPrimary,
        rule: Rule::Prefix,
        plan_name: "hz-w3",
        plan_version: 12,
        pre_advice_seq: 0,
        plc_seq: parcel_id as u32,
        flags: 0,
        weight_g: 0,
        length_mm: 0,
        width_mm: 0,
        height_mm: 0,
        received_us: 1_732_000_000_000_000 + parcel_id * 1000,
        decided_after_us: 30,
        sent_after_us: 80,
    })
}

fn outcome(parcel_id: u64) -> Event<'static> {
    Event::Outcome(OutcomeEvent {
        parcel_id,
        scanner_id: 7,
        chute: (parcel_id % 300) as u16 + 1,
        outcome: Outcome::Diverted,
        plc_seq: parcel_id as u32,
        decision_seq: 0,
        confirmed_us: 1_732_000_000_000_000 + parcel_id * 1000 + 900_000,
    })
}

fn config(dir: &Path, segment_bytes: u64) -> WriterConfig {
    let mut config = WriterConfig::new(dir, "hz1", "xb-2");
    config.segment_bytes = segment_bytes;
    config.fsync_interval = Duration::from_millis(5);
    config.batch_bytes_max = 64 * 1024;
    config
}

/// Writes `count` events (decision, outcome alternately) in batches of `per_batch`.
fn write_events(writer: &mut JournalWriter, count: u64, per_batch: u64) {
    for i in 0..count {
        let parcel = writer.next_seq();
        let event = if i % 2 == 0 {
            decision(parcel)
        } else {
            outcome(parcel)
        };
        assert!(writer.append(&event).is_some());
        if (i + 1) % per_batch == 0 {
            let done = writer.write_batch();
            assert_eq!(done.lost, 0);
        }
    }
    writer.write_batch();
}

/// Every record from `from` on: (seq, bytes).
fn read_from(dir: &Path, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut reader = JournalReader::open(dir).unwrap();
    reader.seek(from).unwrap();
    let mut out = Vec::new();
    let mut records = Vec::new();
    loop {
        out.clear();
        let batch = reader.read_batch(&mut out, 7, 1000).unwrap();
        if batch.records == 0 {
            return records;
        }
        let mut rest = out.as_slice();
        while let RecordDecoded::Complete { record, consumed } = record::decode(rest) {
            records.push((record.seq, rest[..consumed].to_vec()));
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
    }
}

fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(seq, _)| *seq).collect()
}

#[test]
fn write_roll_read_and_seek_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 2048)).unwrap();
    write_events(&mut writer, 300, 5);
    let stats = writer.stats();
    writer.close();
    let counters = stats.snapshot();
    assert_eq!(counters.events_journaled, 300);
    assert_eq!(counters.written_seq, 300);
    assert_eq!(counters.durable_seq, 300, "close fsyncs");
    assert_eq!(counters.lost_total(), 0);

    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() > 10, "{} segments", segments.len());
    assert!(segments.iter().all(|s| s.bytes <= 2048 + 1000));
    let all = read_from(dir.path(), 0);
    assert_eq!(seqs(&all), (1..=300).collect::<Vec<_>>());
    for from in [
        1,
        2,
        57,
        150,
        segments[3].first_seq,
        segments[3].first_seq - 1,
        299,
        300,
    ] {
        assert_eq!(
            seqs(&read_from(dir.path(), from)),
            (from..=300).collect::<Vec<_>>()
        );
    }
    assert!(read_from(dir.path(), 301).is_empty());
    let mut reader = JournalReader::open(dir.path()).unwrap();
    assert_eq!(reader.last_seq().unwrap(), 300);
    assert!(verify(dir.path()).unwrap().is_clean());

    // Reopen: sequences continue, nothing reused.
    let mut writer = JournalWriter::open(config(dir.path(), 2048)).unwrap();
    assert_eq!(writer.next_seq(), 301);
    write_events(&mut writer, 10, 3);
    writer.close();
    assert_eq!(
        seqs(&read_from(dir.path(), 0)),
        (1..=310).collect::<Vec<_>>()
    );
    assert_eq!(reader.last_seq().unwrap(), 310);
}

#[test]
fn follow_mode_sees_new_records_and_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    let mut reader = JournalReader::open(dir.path()).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        reader.read_batch(&mut out, 100, 1 << 20).unwrap().records,
        0
    );
    let mut next = 1;
    for round in 0..20 {
        write_events(&mut writer, round % 4 + 1, 2);
        out.clear();
        let batch = reader.read_batch(&mut out, 1000, 1 << 20).unwrap();
        assert_eq!(batch.first_seq, next, "round {round}");
        assert_eq!(batch.last_seq, writer.next_seq() - 1);
        next = batch.last_seq + 1;
        out.clear();
        assert_eq!(
            reader.read_batch(&mut out, 1000, 1 << 20).unwrap().records,
            0
        );
    }
    assert!(list_segments(dir.path()).unwrap().len() > 2);
}

#[test]
fn a_killed_process_loses_nothing_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 4096)).unwrap();
    write_events(&mut writer, 50, 50);
    // Appended but never written: not promised (the SORTs never left).
    writer.append(&decision(999));
    // No close, no drop, no fsync: what `kill -9` leaves is the page cache.
    std::mem::forget(writer);
    assert_eq!(
        seqs(&read_from(dir.path(), 0)),
        (1..=50).collect::<Vec<_>>()
    );
}

/// The journal of 20 events in one segment, and each record's end offset.
fn one_segment(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let mut writer = JournalWriter::open(config(dir, 1 << 20)).unwrap();
    write_events(&mut writer, 20, 4);
    writer.close();
    let segment = list_segments(dir).unwrap().pop().unwrap();
    let bytes = fs::read(&segment.path).unwrap();
    let mut ends = Vec::new();
    let (_, mut at) = sortd::events::segment::decode_header(&bytes).unwrap();
    while at < bytes.len() {
        let RecordDecoded::Complete { consumed, .. } = record::decode(&bytes[at..]) else {
            panic!("fresh journal damaged");
        };
        at += consumed;
        ends.push(at as u64);
    }
    (segment.path, ends)
}

#[test]
fn a_torn_tail_is_cut_at_every_byte_of_the_last_record() {
    let template = tempfile::tempdir().unwrap();
    let (path, ends) = one_segment(template.path());
    let whole = fs::read(&path).unwrap();
    let last_start = ends[ends.len() - 2];
    for cut in last_start..*ends.last().unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(path.file_name().unwrap());
        fs::write(&copy, &whole[..cut as usize]).unwrap();
        // The reader never hands out the torn record.
        assert_eq!(
            seqs(&read_from(dir.path(), 0)),
            (1..=19).collect::<Vec<_>>()
        );
        let writer = JournalWriter::open(config(dir.path(), 1 << 20)).unwrap();
        let counters = writer.stats().snapshot();
        assert_eq!(
            counters.torn_tails_cut,
            u64::from(cut > last_start),
            "cut {cut}"
        );
        assert_eq!(
            writer.next_seq(),
            20,
            "cut {cut}: sequence 20 was never complete"
        );
        writer.close();
        assert_eq!(fs::metadata(&copy).unwrap().len(), last_start);
        let mut writer = JournalWriter::open(config(dir.path(), 1 << 20)).unwrap();
        write_events(&mut writer, 3, 3);
        writer.close();
        assert_eq!(
            seqs(&read_from(dir.path(), 0)),
            (1..=22).collect::<Vec<_>>()
        );
        assert!(verify(dir.path()).unwrap().is_clean());
    }
}

#[test]
fn bit_flips_keep_every_record_before_them() {
    let template = tempfile::tempdir().unwrap();
    let (path, ends) = one_segment(template.path());
    let whole = fs::read(&path).unwrap();
    // A flip inside record k (k from 1): records 1..k survive, the rest of the segment
    // is cut at open (it is the last segment).
    for (index, window) in ends.windows(2).enumerate().step_by(3) {
        let damaged_record = index as u64 + 2; // the record in window [end(k-1), end(k))
        for offset in [window[0], (window[0] + window[1]) / 2, window[1] - 1] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = whole.clone();
            bytes[offset as usize] ^= 0x10;
            fs::write(dir.path().join(path.file_name().unwrap()), &bytes).unwrap();
            let expected: Vec<u64> = (1..damaged_record).collect();
            assert_eq!(seqs(&read_from(dir.path(), 0)), expected, "offset {offset}");
            let report = verify(dir.path()).unwrap();
            assert!(!report.is_clean());
            assert_eq!(report.records, damaged_record - 1);
            let mut writer = JournalWriter::open(config(dir.path(), 1 << 20)).unwrap();
            assert_eq!(writer.next_seq(), damaged_record);
            write_events(&mut writer, 1, 1);
            writer.close();
            assert!(verify(dir.path()).unwrap().is_clean());
        }
    }
}

#[test]
fn damage_in_an_old_segment_is_stepped_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 512)).unwrap();
    write_events(&mut writer, 60, 2);
    writer.close();
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() >= 8, "{} segments", segments.len());
    let victim = &segments[2];
    let mut bytes = fs::read(&victim.path).unwrap();
    let at = bytes.len() - 30;
    bytes[at] ^= 0xFF;
    fs::write(&victim.path, &bytes).unwrap();
    let got = seqs(&read_from(dir.path(), 0));
    let next_first = segments[3].first_seq;
    // Everything but the damaged record(s) at the end of segment 2.
    assert!(got.contains(&(victim.first_seq)));
    assert!((next_first..=60).all(|seq| got.contains(&seq)));
    assert!(got.len() >= 58 && got.len() < 60, "{}", got.len());
    let report = verify(dir.path()).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.records, got.len() as u64);

    // An unreadable header in an old segment: skipped by the reader.
    let victim = &segments[4];
    let mut bytes = fs::read(&victim.path).unwrap();
    bytes[0] ^= 1;
    fs::write(&victim.path, &bytes).unwrap();
    let got = seqs(&read_from(dir.path(), 0));
    assert!(!got.contains(&victim.first_seq));
    assert!(got.contains(&segments[5].first_seq));
}

#[test]
fn an_unreadable_last_segment_is_set_aside_and_no_sequence_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    write_events(&mut writer, 30, 3);
    writer.close();
    let last = list_segments(dir.path()).unwrap().pop().unwrap();
    let mut bytes = fs::read(&last.path).unwrap();
    bytes[3] ^= 0x40;
    fs::write(&last.path, &bytes).unwrap();
    let writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    assert_eq!(writer.stats().snapshot().segments_set_aside, 1);
    assert!(writer.next_seq() > 30, "next {}", writer.next_seq());
    writer.close();
    let aside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains(".seg.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);

    // A header cut off by a crash during a roll: the same, and start-up goes on.
    let empty = dir.path().join(segment_name(1000));
    fs::write(&empty, b"SORTD").unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    write_events(&mut writer, 2, 2);
    writer.close();
    let got = seqs(&read_from(dir.path(), 0));
    assert_eq!(got.len(), 30 - (30 - last.first_seq + 1) as usize + 2);
}

#[test]
fn ids_must_match_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    write_events(&mut writer, 1, 1);
    writer.close();
    let mut other = config(dir.path(), 1024);
    other.sorter_id = "xb-3".into();
    let error = JournalWriter::open(other).unwrap_err();
    assert!(error.to_string().contains("hz1/xb-2"), "{error}");
}

#[test]
fn retention_waits_for_the_cursor_and_survives_a_crash_between_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    write_events(&mut writer, 100, 2);
    writer.close();
    let segments = list_segments(dir.path()).unwrap();
    let policy = RetentionPolicy {
        bytes_max: 0,
        age_max: Duration::MAX,
        cursor_required: true,
    };
    let now = SystemTime::now();
    // Nothing exported: nothing deleted, however far over budget.
    assert_eq!(retention::apply(dir.path(), &policy, now).unwrap().0, 0);

    // The exporter acknowledged through the end of segment 3, but crashed before the
    // cursor's rename: the old cursor (0) rules.
    let cursor = ExportCursor::new(dir.path());
    let acked = segments[4].first_seq - 1;
    cursor
        .store_until(acked, sortd::events::journal::CursorStep::Synced)
        .unwrap();
    assert_eq!(retention::apply(dir.path(), &policy, now).unwrap().0, 0);
    // Stored for real: segments 0..=3 go, oldest first, the rest stays.
    cursor.store(acked).unwrap();
    let (deleted, kept, _) = retention::apply(dir.path(), &policy, now).unwrap();
    assert_eq!(deleted, 4);
    assert_eq!(kept as usize, segments.len() - 4);
    let left = list_segments(dir.path()).unwrap();
    assert_eq!(left[0].first_seq, segments[4].first_seq);
    // The exporter resumes at its cursor: nothing it needs is gone.
    assert_eq!(read_from(dir.path(), acked + 1)[0].0, acked + 1);

    // A crash in the middle of deleting (only the oldest of two went): the next pass
    // finishes; the journal stays contiguous.
    cursor.store(segments[6].first_seq - 1).unwrap();
    fs::remove_file(&segments[4].path).unwrap();
    let (deleted, _, _) = retention::apply(dir.path(), &policy, now).unwrap();
    assert_eq!(deleted, 1);
    assert!(verify(dir.path()).unwrap().is_clean());
    assert_eq!(
        list_segments(dir.path()).unwrap()[0].first_seq,
        segments[6].first_seq
    );

    // The writer never reuses a sequence, even with every segment gone.
    for segment in list_segments(dir.path()).unwrap() {
        fs::remove_file(segment.path).unwrap();
    }
    cursor.store(100).unwrap();
    let writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    assert_eq!(writer.next_seq(), 101);
}

#[test]
fn seeded_damage_never_loses_an_intact_record() {
    // The fuzz invariant over seeded random inputs, beside the committed corpus.
    let mut rng = fastrand::Rng::with_seed(0x5eed_0010);
    for _ in 0..200 {
        let len = rng.usize(0..2000);
        let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        sortd::events::fuzzing::journal_read(&data);
    }
}

/// Runs `body` with a tmpfs of `bytes` mounted at a fresh directory (CI runs as root).
fn with_small_tmpfs(bytes: u64, body: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mounting a tmpfs needs root (CI runs as root): {status}"
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(dir.path())));
    let _ = std::process::Command::new("umount")
        .arg(dir.path())
        .status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_full_disk_loses_events_counted_and_sorting_goes_on() {
    with_small_tmpfs(64 * 1024, |dir| {
        let journal = dir.join("events");
        let mut writer = JournalWriter::open(config(&journal, 8 * 1024)).unwrap();
        let stats = writer.stats();
        let mut written = 0;
        let mut lost = 0;
        for _ in 0..400 {
            for _ in 0..8 {
                let parcel = writer.next_seq();
                writer.append(&decision(parcel));
            }
            let done = writer.write_batch();
            written += done.written;
            lost += done.lost;
        }
        let counters = stats.snapshot();
        assert!(lost > 0, "the disk never filled");
        assert_eq!(counters.lost(LossReason::DiskFull), lost);
        assert_eq!(counters.events_journaled, written);
        // Gap-free: what was written is 1..=written, and the next sequence follows it.
        assert_eq!(writer.next_seq(), written + 1);
        writer.close();
        assert_eq!(
            seqs(&read_from(&journal, 0)),
            (1..=written).collect::<Vec<_>>()
        );
        assert!(verify(&journal).unwrap().is_clean());
        // Space comes back (retention, an operator): journaling resumes.
        let segments = list_segments(&journal).unwrap();
        for segment in &segments[..segments.len() - 1] {
            fs::remove_file(&segment.path).unwrap();
        }
        let mut writer = JournalWriter::open(config(&journal, 8 * 1024)).unwrap();
        writer.append(&decision(1));
        assert_eq!(writer.write_batch().written, 1);
        assert_eq!(writer.next_seq(), written + 2);
        writer.close();
    });
}

/// Polls `done` for up to ten seconds (the fsync thread runs on its own schedule).
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn the_fsync_thread_makes_written_events_durable_and_runs_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JournalWriter::open(config(dir.path(), 1024)).unwrap();
    write_events(&mut writer, 100, 4);
    let stats = writer.stats();
    // Group commit without closing: durable_seq catches up with what was written.
    assert!(eventually(|| stats.durable_seq() == 100));
    writer.close();
    let before = list_segments(dir.path()).unwrap();
    let acked = before[5].first_seq - 1;
    ExportCursor::new(dir.path()).store(acked).unwrap();

    // Reopened with a tiny byte budget: the fsync thread's first retention pass deletes
    // the five exported segments and nothing the exporter still needs.
    let mut small = config(dir.path(), 1024);
    small.retention.bytes_max = 0;
    let writer = JournalWriter::open(small).unwrap();
    let stats = writer.stats();
    assert!(eventually(|| stats.snapshot().segments_deleted == 5));
    writer.close();
    let after = list_segments(dir.path()).unwrap();
    assert_eq!(after.len(), before.len() - 5);
    assert_eq!(read_from(dir.path(), 0)[0].0, acked + 1);
}

#[test]
fn a_sequence_break_inside_a_segment_ends_it_without_hanging_the_reader() {
    use sortd::events::segment::SegmentHeader;
    let dir = tempfile::tempdir().unwrap();
    let write_segment = |first: u64, seqs: &[u64]| {
        let mut bytes = Vec::new();
        SegmentHeader {
            first_seq: first,
            hub_id: "hz1",
            sorter_id: "xb-2",
        }
        .encode(&mut bytes)
        .unwrap();
        for &seq in seqs {
            record::encode(seq, &outcome(seq), &mut bytes).unwrap();
        }
        fs::write(dir.path().join(segment_name(first)), bytes).unwrap();
    };
    // Valid records whose sequences jump: 1, 2, then 4.
    write_segment(1, &[1, 2, 4, 5]);
    assert_eq!(seqs(&read_from(dir.path(), 0)), vec![1, 2]);
    let report = verify(dir.path()).unwrap();
    assert!(!report.is_clean());
    // With a newer segment, the reader steps over the break to it.
    write_segment(6, &[6, 7]);
    assert_eq!(seqs(&read_from(dir.path(), 0)), vec![1, 2, 6, 7]);
    // The writer cuts the break from the last segment at open; sequences go on.
    fs::remove_file(dir.path().join(segment_name(6))).unwrap();
    let writer = JournalWriter::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(writer.next_seq(), 3);
    writer.close();
}

#[test]
fn the_journal_directory_is_0750_and_its_segments_0640() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state/events");
    let mut writer = JournalWriter::open(config(&dir, 2048)).unwrap();
    write_events(&mut writer, 100, 5);
    writer.close();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o750);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 1);
    for segment in &segments {
        assert_eq!(mode(&segment.path), 0o640, "{}", segment.path.display());
    }
}
