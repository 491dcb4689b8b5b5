//! The sort-event journal in the running daemon: `kill -9` mid-load loses no decision
//! the PLC received a SORT for, a torn last record is cut at the next start while
//! sorting goes on, and every fact a scanner sent (barcodes, destination, weight and
//! dimensions) reaches the parcel's event with the rule and plan that decided it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sortd::events::journal::{JournalReader, verify};
use sortd::events::record::{self, Action, Event, RecordDecoded};

use crate::common::{
    BinaryScanner, DaemonProcess, Parcel, ScanLoad, TestPlc, start_daemon, wait_until,
};

const SCANNER: u32 = 7;

fn events_config(dir: &Path) -> String {
    format!(
        "[events]\nenabled = true\ndir = \"{}\"\nhub_id = \"hub1\"\nsorter_id = \"sorter1\"\n",
        dir.display()
    )
}

fn parcel(parcel_id: u64) -> Parcel<'static> {
    Parcel {
        parcel_id,
        barcodes: vec!["YT0000000000002"],
        destination: None,
    }
}

/// What the journal holds, read through the library's reader.
#[derive(Default)]
struct Journal {
    seqs: Vec<u64>,
    /// Decision action by (scanner, parcel).
    decisions: HashMap<(u32, u64), Vec<Action>>,
    /// Outcomes by (scanner, parcel), with the decision sequence they name.
    outcomes: HashMap<(u32, u64), u64>,
}

fn read_journal(dir: &Path) -> Journal {
    let mut journal = Journal::default();
    let Ok(mut reader) = JournalReader::open(dir) else {
        return journal;
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let Ok(batch) = reader.read_batch(&mut buf, 4096, 1 << 20) else {
            return journal;
        };
        if batch.records == 0 {
            return journal;
        }
        let mut rest = buf.as_slice();
        while let RecordDecoded::Complete { record, consumed } = record::decode(rest) {
            journal.seqs.push(record.seq);
            match record.event {
                Event::Decision(d) => journal
                    .decisions
                    .entry((d.scanner_id, d.parcel_id))
                    .or_default()
                    .push(d.action),
                Event::Outcome(o) => {
                    journal
                        .outcomes
                        .insert((o.scanner_id, o.parcel_id), o.decision_seq);
                }
            }
            rest = rest.get(consumed..).unwrap_or_default();
        }
    }
}

/// A daemon journaling into `dir`, its PLC link up (a new one after a restart).
fn start_journaling(plc: &TestPlc, dir: &Path) -> DaemonProcess {
    let links_before = plc.counters.connections.load(Ordering::Relaxed);
    let daemon = start_daemon(plc.address, &["protocol = \"binary\""], &events_config(dir));
    wait_until("the daemon's PLC link", || {
        plc.counters.connections.load(Ordering::Relaxed) > links_before
    });
    daemon
}

fn verify_with_the_binary(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["events", "verify", "--dir"])
        .arg(dir)
        .output()
        .expect("sortd events verify runs");
    assert!(
        output.status.success(),
        "sortd events verify failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn kill_9_mid_load_loses_no_decision_the_plc_received() {
    let journal_dir = tempfile::tempdir().expect("temp dir");
    let dir = journal_dir.path().join("journal");
    let plc = TestPlc::start(vec![], vec![]);
    let first = start_journaling(&plc, &dir);
    let load = ScanLoad::start(
        first.scanner_addresses[0],
        SCANNER,
        1,
        16,
        Duration::from_micros(500),
    );
    wait_until("load flowing", || plc.recorder.count() > 1_000);
    drop(first); // SIGKILL mid-load, then reaped.
    let written = load.finish();

    // Every parcel the PLC received a SORT for has its decision in the journal.
    let journal = read_journal(&dir);
    let sorted: HashSet<(u32, u64)> = plc
        .recorder
        .sorts
        .lock()
        .expect("recorder")
        .iter()
        .map(|sort| (sort.scanner_id, sort.parcel_id))
        .collect();
    assert!(!sorted.is_empty());
    for key in &sorted {
        assert_eq!(
            journal.decisions.get(key).map(Vec::as_slice),
            Some(&[Action::Sent][..]),
            "parcel {key:?} was sorted but its decision is not journaled once as sent"
        );
    }

    // The restarted daemon continues the sequence and records outcomes.
    let second = start_journaling(&plc, &dir);
    let mut scanner = BinaryScanner::connect(second.scanner_addresses[0], SCANNER);
    let resumed = written + 1..=written + 100;
    for parcel_id in resumed.clone() {
        scanner.send(&parcel(parcel_id));
    }
    let mut journal = Journal::default();
    wait_until("outcomes of the resumed parcels journaled", || {
        journal = read_journal(&dir);
        resumed
            .clone()
            .all(|id| journal.outcomes.contains_key(&(SCANNER, id)))
    });
    let (code, _) = second.terminate();
    assert_eq!(code, Some(0));
    let journal = read_journal(&dir);
    for id in resumed {
        assert_eq!(
            journal.decisions.get(&(SCANNER, id)).map(Vec::as_slice),
            Some(&[Action::Sent][..])
        );
        assert_ne!(journal.outcomes.get(&(SCANNER, id)), Some(&0));
    }
    let first_seq = journal.seqs.first().copied().expect("events journaled");
    for (index, seq) in journal.seqs.iter().enumerate() {
        assert_eq!(*seq, first_seq + index as u64, "a gap in the sequence");
    }
    let report = verify(&dir).expect("verifies");
    assert!(report.is_clean(), "{report:?}");
    verify_with_the_binary(&dir);
}

#[test]
fn a_torn_last_record_is_cut_at_start_and_sorting_goes_on() {
    let journal_dir = tempfile::tempdir().expect("temp dir");
    let dir = journal_dir.path().join("journal");
    let plc = TestPlc::start(vec![], vec![]);
    let first = start_journaling(&plc, &dir);
    let mut scanner = BinaryScanner::connect(first.scanner_addresses[0], SCANNER);
    for parcel_id in 1..=20 {
        scanner.send(&parcel(parcel_id));
    }
    wait_until("the first parcels journaled", || {
        read_journal(&dir).decisions.len() == 20
    });
    let (code, _) = first.terminate();
    assert_eq!(code, Some(0));

    // Tear the newest segment's last record while the daemon is down.
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("journal dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    let newest = segments.last().expect("a segment");
    let length = std::fs::metadata(newest).expect("segment").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .expect("segment opens");
    file.set_len(length - 3).expect("truncated");
    drop(file);
    assert!(!verify(&dir).expect("verifies").is_clean());

    let second = start_journaling(&plc, &dir);
    let mut scanner = BinaryScanner::connect(second.scanner_addresses[0], SCANNER);
    for parcel_id in 21..=40 {
        scanner.send(&parcel(parcel_id));
    }
    for parcel_id in 21..=40 {
        plc.recorder.wait_for(SCANNER, parcel_id);
    }
    let scrape = crate::common::scrape(second.metrics_address());
    assert_eq!(scrape.value("sortd_events_torn_tails_cut_total", &[]), 1.0);
    wait_until("the new parcels journaled", || {
        let journal = read_journal(&dir);
        (21..=40).all(|id| journal.decisions.contains_key(&(SCANNER, id)))
    });
    let (code, _) = second.terminate();
    assert_eq!(code, Some(0));
    assert!(verify(&dir).expect("verifies").is_clean());
    verify_with_the_binary(&dir);
}

/// `sortd events find --barcode CODE --json` over `dir`, one JSON value per line.
fn find_by_barcode(dir: &Path, code: &str) -> Vec<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["events", "find", "--json", "--barcode", code, "--dir"])
        .arg(dir)
        .output()
        .expect("sortd events find runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn every_fact_a_scanner_sent_reaches_the_parcels_events() {
    use sortd::wire::{self, Barcodes, Frame, ScanFlags, ScanFrame};
    use std::io::Write;
    let journal_dir = tempfile::tempdir().expect("temp dir");
    let dir = journal_dir.path().join("journal");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon(
        plc.address,
        &[
            "protocol = \"binary\"",
            "protocol = \"sick-dws\"\nscanner_id = 101",
        ],
        &events_config(&dir),
    );
    plc.wait_connected();
    // A binary SCAN: two barcodes (one pre-advised in the plan), a destination, weight
    // and dimensions.
    let codes: [&[u8]; 2] = [b"LG1234567890123", b"YT0000000000001"];
    let mut bytes = Vec::new();
    wire::encode(
        &Frame::Scan(ScanFrame {
            scanner_id: SCANNER,
            sequence: 1,
            parcel_id: 501,
            scanned_at_us: 0,
            barcodes: Barcodes::from_slice(&codes).expect("two"),
            destination: Some(b"330106001005"),
            weight_g: 2345,
            length_mm: 410,
            width_mm: 305,
            height_mm: 120,
            flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
        }),
        &mut bytes,
    )
    .expect("encodes");
    let mut binary = BinaryScanner::connect(daemon.scanner_addresses[0], SCANNER);
    binary.send_raw(&bytes);
    // A SICK DWS telegram: one code, 81212 g, 321 x 150 x 87 mm, no destination.
    let mut dws = std::net::TcpStream::connect(daemon.scanner_addresses[1]).expect("connects");
    dws.write_all(b"\x020145;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03")
        .expect("telegram sent");
    plc.recorder.wait_for(SCANNER, 501);
    plc.recorder.wait_for(101, 145);
    wait_until("both outcomes journaled", || {
        let journal = read_journal(&dir);
        journal.outcomes.contains_key(&(SCANNER, 501)) && journal.outcomes.contains_key(&(101, 145))
    });

    let story = find_by_barcode(&dir, "LG1234567890123");
    assert_eq!(story.len(), 2, "a decision and an outcome: {story:?}");
    let decision = &story[0];
    let expected = serde_json::json!({
        "kind": "decision",
        "parcel_id": 501,
        "scanner_id": SCANNER,
        "action": "sent",
        "chute": 7,
        "reason": "sorted_primary",
        "rule": "exact",
        "barcodes": ["LG1234567890123", "YT0000000000001"],
        "destination": "330106001005",
        "plan": {"name": "integration test plan", "version": decision["plan"]["version"]},
        "weight_g": 2345,
        "dimensions_mm": [410, 305, 120],
    });
    for (key, value) in expected.as_object().expect("an object") {
        assert_eq!(&decision[key], value, "{key} in {decision}");
    }
    assert!(decision["plan"]["version"].as_u64().is_some_and(|v| v > 0));
    assert!(decision["plc_seq"].as_u64().is_some_and(|seq| seq > 0));
    assert_eq!(story[1]["kind"], "outcome");
    assert_eq!(story[1]["parcel_id"], 501);
    assert_eq!(story[1]["decision_seq"], decision["seq"]);

    let story = find_by_barcode(&dir, "1JVGL0012345");
    assert_eq!(story.len(), 2, "a decision and an outcome: {story:?}");
    let expected = serde_json::json!({
        "parcel_id": 145,
        "scanner_id": 101,
        "chute": 999,
        "reason": "no_rule",
        "rule": "default",
        "barcodes": ["1JVGL0012345"],
        "plan": {"name": "integration test plan", "version": story[0]["plan"]["version"]},
        "weight_g": 81212,
        "dimensions_mm": [321, 150, 87],
    });
    for (key, value) in expected.as_object().expect("an object") {
        assert_eq!(&story[0][key], value, "{key} in {}", story[0]);
    }
    assert!(story[0].get("destination").is_none(), "none was sent");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

/// An exported record: its sequence and, for a decision, scanner, parcel and action.
type Exported = (u64, Option<(u32, u64, Action)>);

/// Decodes every record of the stream's messages for this sorter, in stream order.
fn exported(url: &str) -> Vec<Exported> {
    let mut records = Vec::new();
    for message in crate::export_nats::read_subject(url, "sortd.events.hub1.sorter1") {
        let mut rest = message.payload.as_slice();
        while let RecordDecoded::Complete { record, consumed } = record::decode(rest) {
            let decision = match record.event {
                Event::Decision(d) => Some((d.scanner_id, d.parcel_id, d.action)),
                Event::Outcome(_) => None,
            };
            records.push((record.seq, decision));
            rest = rest.get(consumed..).unwrap_or_default();
        }
        assert!(rest.is_empty(), "a message holds whole records only");
    }
    records
}

#[test]
fn the_daemon_exports_every_event_once_across_a_kill_9_and_a_broker_restart() {
    let mut nats = crate::common::nats::NatsServer::start();
    let journal_dir = tempfile::tempdir().expect("temp dir");
    let dir = journal_dir.path().join("journal");
    let config = format!(
        "{}[export]\nenabled = true\nurls = [\"{}\"]\nhub = \"hub1\"\nsorter = \"sorter1\"\n\
         reconnect_backoff_min_ms = 20\nreconnect_backoff_max_ms = 200\n",
        events_config(&dir),
        nats.url()
    );
    let plc = TestPlc::start(vec![], vec![]);
    let links_before = plc.counters.connections.load(Ordering::Relaxed);
    let first = start_daemon(plc.address, &["protocol = \"binary\""], &config);
    wait_until("the daemon's PLC link", || {
        plc.counters.connections.load(Ordering::Relaxed) > links_before
    });
    let load = ScanLoad::start(
        first.scanner_addresses[0],
        SCANNER,
        1,
        16,
        Duration::from_micros(500),
    );
    wait_until("load flowing", || plc.recorder.count() > 500);
    nats.kill();
    let during_outage = plc.recorder.count();
    wait_until("sorting goes on while the broker is down", || {
        plc.recorder.count() > during_outage + 500
    });
    nats.restart();
    let after_restart = plc.recorder.count();
    wait_until("load flowing after the broker restart", || {
        plc.recorder.count() > after_restart + 500
    });
    drop(first); // SIGKILL mid-load.
    let written = load.finish();

    let links_before = plc.counters.connections.load(Ordering::Relaxed);
    let second = start_daemon(plc.address, &["protocol = \"binary\""], &config);
    wait_until("the restarted daemon's PLC link", || {
        plc.counters.connections.load(Ordering::Relaxed) > links_before
    });
    let mut scanner = BinaryScanner::connect(second.scanner_addresses[0], SCANNER);
    for parcel_id in written + 1..=written + 100 {
        scanner.send(&parcel(parcel_id));
    }
    let metrics = second.metrics_address();
    wait_until("the stream to hold every journaled event", || {
        let scrape = crate::common::scrape(metrics);
        let journaled = scrape.value("sortd_events_written_sequence", &[]);
        let journal = read_journal(&dir);
        (written + 1..=written + 100).all(|id| journal.outcomes.contains_key(&(SCANNER, id)))
            && scrape.value("sortd_export_acked_sequence", &[]) >= journaled
    });
    // The operator page's snapshot shows the export connected and its cursor.
    let (status, body) =
        crate::common::http_exchange(metrics, b"GET /status.json HTTP/1.1\r\nHost: sortd\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let export = &status["journal"]["export"];
    assert_eq!(export["broker_connected"], true, "{status}");
    assert!(export["cursor_seq"].as_u64() > Some(written), "{export}");
    let (code, _) = second.terminate();
    assert_eq!(code, Some(0));

    let journal = read_journal(&dir);
    let records = exported(&nats.url());
    let seqs: Vec<u64> = records.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs, journal.seqs,
        "the stream holds every journaled event once, in order"
    );
    assert_eq!(seqs.first(), Some(&1));
    let sent: HashSet<(u32, u64)> = records
        .iter()
        .filter_map(|(_, decision)| *decision)
        .filter(|(_, _, action)| *action == Action::Sent)
        .map(|(scanner, parcel, _)| (scanner, parcel))
        .collect();
    for sort in plc.recorder.sorts.lock().expect("recorder").iter() {
        assert!(
            sent.contains(&(sort.scanner_id, sort.parcel_id)),
            "parcel {} was sorted but its decision is not in the stream",
            sort.parcel_id
        );
    }
}
