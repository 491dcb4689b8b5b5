//! `sortd events ...` as real processes over a journal written by the journal writer:
//! tail (text, JSON, follow), find by parcel and by barcode, verify (clean, damaged,
//! gap), decode of binary records from stdin.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sortd::decision::Reason;
use sortd::events::journal::{JournalWriter, WriterConfig, list_segments};
use sortd::events::record;
use sortd::events::{Action, DecisionEvent, Event, OutcomeEvent, Rule};
use sortd::plc::Outcome;
use sortd::wire::Barcodes;

fn sortd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .output()
        .expect("run sortd")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn decision(parcel_id: u64, code: &'static [u8], action: Action) -> Event<'static> {
    Event::Decision(DecisionEvent {
        action,
        parcel_id,
        scanner_id: 7,
        barcodes: Barcodes::from_slice(&[code]).unwrap(),
        destination: b"330106",
        chute: 301,
        reason: Reason::SortedPrimary,
        rule: Rule::Prefix,
        plan_name: "hz-w3",
        plan_version: 12,
        pre_advice_seq: 0,
        plc_seq: if action == Action::Sent {
            parcel_id as u32
        } else {
            0
        },
        flags: 1,
        weight_g: 1250,
        length_mm: 0,
        width_mm: 0,
        height_mm: 0,
        received_us: 1_732_000_000_000_000 + parcel_id,
        decided_after_us: 40,
        sent_after_us: if action == Action::Sent { 90 } else { 0 },
    })
}

fn outcome(parcel_id: u64, decision_seq: u64, outcome: Outcome) -> Event<'static> {
    Event::Outcome(OutcomeEvent {
        parcel_id,
        scanner_id: 7,
        chute: 301,
        outcome,
        plc_seq: parcel_id as u32,
        decision_seq,
        confirmed_us: 1_732_000_001_000_000 + parcel_id,
    })
}

fn writer(dir: &Path) -> JournalWriter {
    let mut config = WriterConfig::new(dir, "hz1", "xb-2");
    config.segment_bytes = 1024;
    JournalWriter::open(config).unwrap()
}

/// 40 parcels: decisions 1..=40 (parcel 13 a duplicate), outcomes for the even ones.
fn journal(dir: &Path) {
    let mut writer = writer(dir);
    let mut decision_seqs = Vec::new();
    for parcel in 1..=40u64 {
        let action = if parcel == 13 {
            Action::Duplicate
        } else {
            Action::Sent
        };
        let code: &'static [u8] = if parcel == 21 { b"SF777" } else { b"JD0001" };
        decision_seqs.push(writer.append(&decision(parcel, code, action)).unwrap());
        if parcel % 2 == 0 {
            let seq = decision_seqs[parcel as usize - 1];
            let kind = if parcel == 20 {
                Outcome::Missed
            } else {
                Outcome::Diverted
            };
            writer.append(&outcome(parcel, seq, kind));
        }
        writer.write_batch();
    }
    writer.close();
}

#[test]
fn tail_prints_the_newest_events_as_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    journal(dir.path());
    let d = dir.path().to_str().unwrap();
    let output = sortd(&["events", "tail", "--dir", d, "-n", "3"]);
    assert!(output.status.success());
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("58 2024-11-19T07:06:40.000039Z decision parcel=39"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(
            "60 2024-11-19T07:06:41.000040Z outcome parcel=40 scanner=7 diverted chute=301"
        ),
        "{text}"
    );

    let output = sortd(&["events", "tail", "--dir", d, "-n", "2", "--json"]);
    let text = stdout(&output);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["event_id"], "xb-2:59");
    assert_eq!(first["hub_id"], "hz1");
    assert_eq!(first["kind"], "decision");
    assert_eq!(first["action"], "sent");
    assert_eq!(first["barcodes"][0], "JD0001");
    assert_eq!(first["plan"]["name"], "hz-w3");
    assert_eq!(first["weight_g"], 1250);
    assert_eq!(first["sent_us"], 1_732_000_000_000_040u64 + 90);
    assert!(first.get("dimensions_mm").is_none());
}

#[test]
fn tail_follow_prints_new_events_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    journal(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["events", "tail", "--follow", "--json", "-n", "0", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(300));
    let mut writer = writer(dir.path());
    for parcel in 41..=43 {
        writer.append(&decision(parcel, b"JD0001", Action::Sent));
        writer.write_batch();
    }
    for expected in 61..=63u64 {
        let line = lines.next().unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["seq"], expected);
    }
    writer.close();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn find_tells_where_a_parcel_went_and_whether_it_was_diverted() {
    let dir = tempfile::tempdir().unwrap();
    journal(dir.path());
    let d = dir.path().to_str().unwrap();
    let text = stdout(&sortd(&["events", "find", "--dir", d, "--parcel", "20"]));
    assert!(text.contains("decision parcel=20"), "{text}");
    assert!(
        text.contains("outcome parcel=20 scanner=7 missed"),
        "{text}"
    );
    assert!(text.contains("=> parcel 20 (scanner 7): sent to chute 301 (sorted_primary, prefix rule, plan hz-w3 v12); missed at chute 301"), "{text}");

    let text = stdout(&sortd(&[
        "events",
        "find",
        "--dir",
        d,
        "--barcode",
        "SF777",
    ]));
    assert!(
        text.contains("=> parcel 21 (scanner 7): sent to chute 301"),
        "{text}"
    );
    assert!(text.contains("no outcome from the PLC yet"), "{text}");

    let text = stdout(&sortd(&["events", "find", "--dir", d, "--parcel", "13"]));
    assert!(text.contains("not actuated: duplicate"), "{text}");

    let output = sortd(&["events", "find", "--dir", d, "--parcel", "99"]);
    assert_eq!(output.status.code(), Some(1));

    let output = sortd(&["events", "find", "--dir", d, "--parcel", "40", "--json"]);
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["outcome"], "diverted");
    assert_eq!(lines[1]["decision_seq"], lines[0]["seq"]);
}

#[test]
fn verify_reports_damage_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    journal(dir.path());
    let d = dir.path().to_str().unwrap();
    let output = sortd(&["events", "verify", "--dir", d]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("ok: ") && text.contains("60 records, 0 gaps"),
        "{text}"
    );

    let segments = list_segments(dir.path()).unwrap();
    let mut bytes = std::fs::read(&segments[1].path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 4;
    std::fs::write(&segments[1].path, &bytes).unwrap();
    std::fs::remove_file(&segments[3].path).unwrap();
    let output = sortd(&["events", "verify", "--dir", d]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("DAMAGED at byte"), "{text}");
    assert!(text.contains("corrupt record: crc mismatch"), "{text}");
    assert!(text.contains("GAP: sequences"), "{text}");
}

#[test]
fn decode_turns_binary_records_into_json_lines() {
    let mut bytes = Vec::new();
    record::encode(5, &decision(1, b"JD0001", Action::Sent), &mut bytes).unwrap();
    record::encode(6, &outcome(1, 5, Outcome::Aborted), &mut bytes).unwrap();
    let mut damaged = bytes.clone();
    damaged.splice(0..0, [0xFFu8, 0x00, 0x07]);
    for (input, ok) in [(bytes, true), (damaged, false)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sortd"))
            .args(["events", "decode", "--hub", "hz1", "--sorter", "xb-2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.success(), ok);
        let text = stdout(&output);
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("seq").is_some())
            .collect();
        assert_eq!(events.len(), 2, "{text}");
        assert_eq!(events[0]["event_id"], "xb-2:5");
        assert_eq!(events[1]["outcome"], "aborted");
        assert_eq!(text.contains("\"error\""), !ok);
    }
}
