//! Pre-advice: resolution order, removal, the bound, restart from the log (torn tail
//! included), compaction (durable, verified, named) and compaction under concurrent
//! lookups. Deterministic: fixed keys, seeded randomness, no clock assertions.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sortd::plan::overlay::OverlaySnapshot;
use sortd::plan::preadvice::{COMPACTED_FILE, parse_compacted_name};
use sortd::plan::preadvice_msg::parse_message;
use sortd::plan::{
    Chutes, Outcome, Plan, PreAdvice, PreAdviceEntry, PreAdviceSettings, PreAdviceValue,
    compile_str, resolve_with_overlay,
};
use sortd::wire::ScanFlags;

const CSV: &str = "kind,key,chutes
meta,name,Hangzhou hub wave 2
meta,version,12
prefix,33,101|102
prefix,3301,12|13
prefix,330106001,14
exact,YT1,7
exact,YT2,8
exact,YT3,9
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
";

fn plan() -> Plan {
    Plan::from_bytes(compile_str("plan.csv", CSV).expect("compiles")).expect("opens")
}

fn chutes(list: &[u16]) -> Chutes {
    Chutes::new(list).expect("valid chutes")
}

fn add(barcode: &str, list: &[u16]) -> PreAdviceEntry {
    PreAdviceEntry {
        barcode: barcode.as_bytes().into(),
        value: PreAdviceValue::Chutes(chutes(list)),
    }
}

fn to(barcode: &str, destination: &str) -> PreAdviceEntry {
    PreAdviceEntry {
        barcode: barcode.as_bytes().into(),
        value: PreAdviceValue::Destination(destination.as_bytes().into()),
    }
}

fn remove(barcode: &str) -> PreAdviceEntry {
    PreAdviceEntry {
        barcode: barcode.as_bytes().into(),
        value: PreAdviceValue::Remove,
    }
}

/// (primary chute, outcome, pre-advice seq) for one barcode and an optional code.
fn answer(preadvice: &PreAdvice, barcode: &str, code: Option<&str>) -> (u16, Outcome, u64) {
    let view = preadvice.view();
    let resolved = view.resolve(&[barcode.as_bytes()], code.map(str::as_bytes));
    (
        resolved.resolution.chutes.primary(),
        resolved.resolution.outcome,
        resolved.preadvice_seq,
    )
}

fn open(dir: &Path) -> PreAdvice {
    PreAdvice::open(dir, plan(), PreAdviceSettings::default())
        .expect("opens")
        .0
}

/// (barcodes, code, outcome, primary chute, pre-advice seq)
type Case<'a> = (&'a [&'a str], Option<&'a str>, Outcome, u16, u64);

#[test]
fn resolution_order_table() {
    let plan = plan();
    let batch = [
        add("YT1", &[50]),     // over the plan's exact entry
        add("NEW", &[51, 52]), // a new tracking number
        to("DST", "3301069"),  // a destination code, through the prefixes
        to("DST2", "44"),      // a destination no prefix matches: contributes nothing
        remove("YT2"),         // hides the plan's exact entry
        add("SAME", &[7]),     // agrees with YT3? no: YT3 is 9
        add("AGREE", &[9]),    // agrees with YT3
    ];
    let (overlay, counts) = OverlaySnapshot::empty().with_batch(&batch, 5, 100);
    assert_eq!(counts.stored, 7);
    let cases: &[Case] = &[
        (&["YT1"], None, Outcome::Exact, 50, 5),
        (&["NEW"], None, Outcome::Exact, 51, 5),
        (&["DST"], None, Outcome::Exact, 12, 5),
        (&["DST2"], Some("330106001"), Outcome::Prefix, 14, 0),
        (&["DST2"], None, Outcome::NoRule, 999, 0),
        (&["YT2"], None, Outcome::NoRule, 999, 0),
        (&["YT2"], Some("3301"), Outcome::Prefix, 12, 0),
        (&["YT3"], None, Outcome::Exact, 9, 0),
        (&["YT3", "AGREE"], None, Outcome::Exact, 9, 0),
        (&["AGREE", "YT3"], None, Outcome::Exact, 9, 5),
        (&["YT3", "SAME"], None, Outcome::MultiRead, 997, 0),
        (&["YT1"], Some("3301"), Outcome::Exact, 50, 5),
        (&["UNKNOWN"], Some("33"), Outcome::Prefix, 101, 0),
        (&[], None, Outcome::NoRead, 998, 0),
    ];
    for (barcodes, code, outcome, primary, seq) in cases {
        let barcodes: Vec<&[u8]> = barcodes.iter().map(|b| b.as_bytes()).collect();
        let got = resolve_with_overlay(&plan, &overlay, &barcodes, code.map(str::as_bytes));
        assert_eq!(
            (
                got.resolution.outcome,
                got.resolution.chutes.primary(),
                got.preadvice_seq
            ),
            (*outcome, *primary, *seq),
            "case {barcodes:?} {code:?}"
        );
        assert_eq!(got.plan_version, 12);
    }
    // Warming reads without changing anything.
    sortd::plan::overlay::warm_with_overlay(&plan, &overlay, &[b"YT1"], Some(b"33"));
    // With an empty overlay the answer is the plan's, exactly.
    let empty = OverlaySnapshot::empty();
    let base = plan.resolve(&[b"YT2"], None);
    let through = resolve_with_overlay(&plan, &empty, &[b"YT2"], None);
    assert_eq!(through.resolution.chutes, base.chutes);
    assert_eq!(through.preadvice_seq, 0);
}

#[test]
fn later_batches_replace_and_removal_hides_the_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    preadvice.apply(&[add("NEW", &[40])], 1).expect("applies");
    assert_eq!(answer(&preadvice, "NEW", None), (40, Outcome::Exact, 1));
    preadvice.apply(&[add("NEW", &[41])], 2).expect("applies");
    assert_eq!(answer(&preadvice, "NEW", None), (41, Outcome::Exact, 2));
    preadvice
        .apply(&[remove("NEW"), remove("YT1")], 3)
        .expect("applies");
    assert_eq!(answer(&preadvice, "NEW", None), (999, Outcome::NoRule, 0));
    assert_eq!(answer(&preadvice, "YT1", None), (999, Outcome::NoRule, 0));
    // A redelivered batch is ignored.
    let again = preadvice.apply(&[add("NEW", &[42])], 2).expect("applies");
    assert!(again.duplicate);
    assert_eq!(answer(&preadvice, "NEW", None), (999, Outcome::NoRule, 0));
}

#[test]
fn entries_beyond_the_maximum_are_refused_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = PreAdviceSettings {
        entries_max: 3,
        ..PreAdviceSettings::default()
    };
    let (preadvice, _) = PreAdvice::open(dir.path(), plan(), settings).expect("opens");
    let batch = [
        add("A", &[1]),
        add("B", &[2]),
        add("C", &[3]),
        add("D", &[4]),
    ];
    let applied = preadvice.apply(&batch, 1).expect("applies");
    assert_eq!((applied.counts.stored, applied.counts.refused_full), (3, 1));
    assert_eq!(applied.overlay_entries, 3);
    // Replacing a known key is still allowed when full.
    let applied = preadvice
        .apply(&[add("A", &[9]), remove("E")], 2)
        .expect("applies");
    assert_eq!((applied.counts.stored, applied.counts.refused_full), (1, 1));
    assert_eq!(answer(&preadvice, "A", None).0, 9);
    assert_eq!(answer(&preadvice, "D", None).1, Outcome::NoRule);
}

#[test]
fn many_batches_merge_the_delta_without_losing_entries() {
    let overlay = (0..40u64).fold(OverlaySnapshot::empty(), |overlay, batch| {
        let entries: Vec<PreAdviceEntry> = (0..500u64)
            .map(|index| {
                add(
                    &format!("K{}", batch * 500 + index),
                    &[(index % 90 + 1) as u16],
                )
            })
            .collect();
        let next = overlay.with_batch(&entries, batch + 1, 1_000_000).0;
        if next.needs_merge() {
            next.merged()
        } else {
            next
        }
    });
    assert_eq!(overlay.len(), 20_000);
    let plan = plan();
    for key in (0..20_000u64).step_by(97) {
        let barcode = format!("K{key}");
        let got = resolve_with_overlay(&plan, &overlay, &[barcode.as_bytes()], None);
        assert_eq!(got.resolution.chutes.primary(), (key % 500 % 90 + 1) as u16);
        assert_eq!(got.preadvice_seq, key / 500 + 1);
    }
}

#[test]
fn restart_rebuilds_the_overlay_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let preadvice = open(dir.path());
        preadvice.apply(&[add("NEW", &[40])], 7).expect("applies");
        preadvice
            .apply(&[to("DST", "330106001"), remove("YT1")], 9)
            .expect("applies");
    }
    // A torn record at the end: half a header.
    let segment = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "padv"))
        .expect("a segment");
    let good_bytes = std::fs::metadata(&segment).expect("stat").len();
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .and_then(|mut file| file.write_all(b"PADV\x10\x00"))
        .expect("tears");
    let (preadvice, recovery) =
        PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("reopens");
    assert_eq!((recovery.records, recovery.tail_cut_bytes), (2, 6));
    assert_eq!(std::fs::metadata(&segment).expect("stat").len(), good_bytes);
    assert_eq!(answer(&preadvice, "NEW", None), (40, Outcome::Exact, 7));
    assert_eq!(answer(&preadvice, "DST", None), (14, Outcome::Exact, 9));
    assert_eq!(answer(&preadvice, "YT1", None).1, Outcome::NoRule);
    assert_eq!(preadvice.last_seq(), 9);
    // Appending after the cut works and survives another restart.
    preadvice.apply(&[add("LATER", &[3])], 10).expect("applies");
    drop(preadvice);
    let preadvice = open(dir.path());
    assert_eq!(answer(&preadvice, "LATER", None), (3, Outcome::Exact, 10));
}

#[test]
fn compaction_folds_into_a_verified_named_plan_and_cuts_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    preadvice
        .apply(&[add("NEW", &[40]), to("DST", "3301"), to("LOST", "44")], 1)
        .expect("applies");
    preadvice
        .apply(&[remove("YT1"), add("YT2", &[41, 42])], 2)
        .expect("applies");
    let before: Vec<_> = ["NEW", "DST", "LOST", "YT1", "YT2", "YT3"]
        .iter()
        .map(|barcode| answer(&preadvice, barcode, None).0)
        .collect();
    let report = preadvice.compact().expect("compacts").expect("had work");
    assert_eq!(report.through_seq, 2);
    assert_eq!(
        (report.folded, report.unresolved, report.overlay_left),
        (5, 1, 0)
    );
    assert_eq!(
        report.plan_name,
        "Hangzhou hub wave 2 +preadvice(base v12 through 2)"
    );
    assert_eq!(
        parse_compacted_name(&report.plan_name),
        Some(("Hangzhou hub wave 2", 12, 2))
    );
    let after: Vec<_> = ["NEW", "DST", "LOST", "YT1", "YT2", "YT3"]
        .iter()
        .map(|barcode| answer(&preadvice, barcode, None).0)
        .collect();
    assert_eq!(before, after);
    // Answers now come from the plan: sequence 0, the new version.
    let view = preadvice.view();
    assert!(view.overlay.is_empty());
    assert_eq!(view.plan.version(), report.plan_version);
    drop(view);
    assert_eq!(answer(&preadvice, "NEW", None), (40, Outcome::Exact, 0));
    let compacted = Plan::open(&dir.path().join(COMPACTED_FILE)).expect("opens");
    compacted.verify().expect("verifies");
    assert_eq!(compacted.stats().exact_keys, 4); // YT2, YT3, NEW, DST
    // Later pre-advice goes on top; a restart uses the compacted plan plus the rest.
    preadvice.apply(&[add("NEW", &[43])], 3).expect("applies");
    drop(preadvice);
    let (preadvice, recovery) =
        PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("reopens");
    assert_eq!(recovery.compacted_through, Some(2));
    assert_eq!(recovery.records, 1);
    assert_eq!(answer(&preadvice, "NEW", None), (43, Outcome::Exact, 3));
    assert_eq!(answer(&preadvice, "DST", None), (12, Outcome::Exact, 0));
    // A second compaction keeps the original base version in the name.
    let report = preadvice.compact().expect("compacts").expect("had work");
    assert_eq!(
        report.plan_name,
        "Hangzhou hub wave 2 +preadvice(base v12 through 3)"
    );
}

#[test]
fn reset_forgets_log_and_compacted_plan_and_starts_again_at_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    preadvice
        .apply(&[add("OLD", &[40]), remove("YT1")], 1)
        .expect("applies");
    preadvice.compact().expect("compacts").expect("had work");
    preadvice.apply(&[add("LATER", &[41])], 2).expect("applies");
    assert_eq!(preadvice.reset().expect("resets"), 2);
    assert_eq!(preadvice.last_seq(), 0);
    // The base plan answers again, with nothing of the old batches.
    assert_eq!(answer(&preadvice, "OLD", None), (999, Outcome::NoRule, 0));
    assert_eq!(answer(&preadvice, "LATER", None), (999, Outcome::NoRule, 0));
    assert_eq!(answer(&preadvice, "YT1", None), (7, Outcome::Exact, 0));
    assert!(!dir.path().join(COMPACTED_FILE).exists());
    // Sequence 1 is new again, and a restart replays only what came after the reset.
    preadvice.apply(&[add("NEW", &[42])], 1).expect("applies");
    drop(preadvice);
    let (preadvice, recovery) =
        PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("reopens");
    assert_eq!((recovery.records, recovery.compacted_through), (1, None));
    assert_eq!(answer(&preadvice, "NEW", None), (42, Outcome::Exact, 1));
    assert_eq!(answer(&preadvice, "OLD", None), (999, Outcome::NoRule, 0));
}

#[test]
fn a_crash_between_plan_rename_and_log_cut_replays_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    preadvice.apply(&[add("NEW", &[40])], 1).expect("applies");
    preadvice.apply(&[add("OTHER", &[41])], 2).expect("applies");
    // Keep a copy of the log as it was before compaction, then put it back: the state a
    // crash after the rename and before the segment deletion leaves.
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "padv"))
        .map(|path| {
            let bytes = std::fs::read(&path).expect("reads");
            (path, bytes)
        })
        .collect();
    preadvice.compact().expect("compacts");
    drop(preadvice);
    for (path, bytes) in &saved {
        std::fs::write(path, bytes).expect("restores");
    }
    let (preadvice, recovery) =
        PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("reopens");
    assert_eq!((recovery.records, recovery.records_folded), (0, 2));
    assert!(preadvice.view().overlay.is_empty());
    assert_eq!(answer(&preadvice, "OTHER", None), (41, Outcome::Exact, 0));
}

#[test]
fn compaction_under_concurrent_lookups_never_loses_an_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = Arc::new(open(dir.path()));
    const KEYS: u64 = 2_000;
    let key = |index: u64| format!("PA{index:08}");
    // Key i is pre-advised to chute i % 500 + 1 and never changes afterwards, so every
    // snapshot (old plan + overlay, or new plan + rest) must give that chute.
    let batch: Vec<PreAdviceEntry> = (0..KEYS)
        .map(|index| add(&key(index), &[(index % 500 + 1) as u16]))
        .collect();
    preadvice.apply(&batch, 1).expect("applies");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|reader| {
            let preadvice = Arc::clone(&preadvice);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(reader);
                let mut lookups = 0u64;
                while !stop.load(Ordering::Relaxed) || lookups < 10_000 {
                    let index = rng.u64(0..KEYS);
                    let barcode = format!("PA{index:08}");
                    let view = preadvice.view();
                    let got = view.resolve(&[barcode.as_bytes()], None);
                    assert_eq!(got.resolution.outcome, Outcome::Exact, "{barcode}");
                    assert_eq!(
                        got.resolution.chutes.primary(),
                        (index % 500 + 1) as u16,
                        "{barcode}"
                    );
                    // In a compacted view the answer is the plan's, else the overlay's.
                    let compacted = view.plan.version() != 12;
                    assert_eq!(got.preadvice_seq == 0, compacted, "{barcode}");
                    lookups += 1;
                }
                lookups
            })
        })
        .collect();
    // Batches applied while compactions run land in the rest of the overlay.
    for round in 0..4u64 {
        let extra: Vec<PreAdviceEntry> = (0..100u64)
            .map(|index| add(&format!("EXTRA{round}-{index}"), &[7]))
            .collect();
        preadvice.apply(&extra, 2 + round).expect("applies");
        preadvice.compact().expect("compacts");
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader did not panic") >= 10_000);
    }
    assert_eq!(answer(&preadvice, "EXTRA3-5", None), (7, Outcome::Exact, 0));
}

#[test]
fn a_parsed_message_applies_its_good_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    let message = b"{\"op\":\"add\",\"barcode\":\"M1\",\"chutes\":[5]}\nbad\n{\"op\":\"remove\",\"barcode\":\"YT3\"}\n";
    let parsed = parse_message(message);
    assert_eq!((parsed.entries.len(), parsed.bad_lines), (2, 1));
    preadvice.apply(&parsed.entries, 1).expect("applies");
    assert_eq!(answer(&preadvice, "M1", None), (5, Outcome::Exact, 1));
    assert_eq!(answer(&preadvice, "YT3", None).1, Outcome::NoRule);
}

fn sortd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .output()
        .expect("run sortd")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_command_line_appends_lists_looks_up_and_compacts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan_path = dir.path().join("plan.sortplan");
    std::fs::write(&plan_path, compile_str("plan.csv", CSV).expect("compiles")).expect("writes");
    let state = dir.path().join("preadvice");
    let lines = dir.path().join("batch.jsonl");
    std::fs::write(
        &lines,
        "{\"op\":\"add\",\"barcode\":\"NEW\",\"chutes\":[40,41]}\n{\"op\":\"add\",\"barcode\":\"X\"}\n{\"op\":\"remove\",\"barcode\":\"YT1\"}\n",
    )
    .expect("writes");
    let (plan_arg, state_arg, lines_arg) = (
        plan_path.to_str().expect("utf-8"),
        state.to_str().expect("utf-8"),
        lines.to_str().expect("utf-8"),
    );
    let output = sortd(&[
        "plan",
        "preadvice",
        "append",
        "--dir",
        state_arg,
        "--plan",
        plan_arg,
        lines_arg,
    ]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(64), "{shown}");
    assert!(
        shown.contains("batch.jsonl:2: an add needs exactly one of"),
        "{shown}"
    );
    assert!(shown.contains("seq 1: 2 stored, 0 refused"), "{shown}");

    let output = sortd(&[
        "plan",
        "lookup",
        plan_arg,
        "--preadvice",
        state_arg,
        "--barcode",
        "NEW",
    ]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("decision: exact -> chute 40 (chutes 40|41)"),
        "{shown}"
    );
    assert!(shown.contains("pre-advice seq 1"), "{shown}");

    let output = sortd(&[
        "plan",
        "preadvice",
        "list",
        "--dir",
        state_arg,
        "--plan",
        plan_arg,
    ]);
    let shown = text(&output);
    assert!(shown.contains("overlay 2 entries through seq 1"), "{shown}");
    assert!(
        shown.contains("1 {\"barcode\":\"YT1\",\"op\":\"remove\"}"),
        "{shown}"
    );

    let output = sortd(&[
        "plan",
        "preadvice",
        "compact",
        "--dir",
        state_arg,
        "--plan",
        plan_arg,
    ]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("+preadvice(base v12 through 1)"), "{shown}");

    let output = sortd(&[
        "plan",
        "lookup",
        plan_arg,
        "--preadvice",
        state_arg,
        "--barcode",
        "YT1",
    ]);
    let shown = text(&output);
    assert!(shown.contains("decision: no_rule -> chute 999"), "{shown}");
    assert!(shown.contains("pre-advice seq 0"), "{shown}");
}

#[test]
fn replacing_one_key_over_and_over_keeps_the_delta_bounded() {
    let mut overlay = OverlaySnapshot::empty();
    let mut merges = 0;
    for seq in 1..=20_000u64 {
        let (next, _) = overlay.with_batch(&[add("SAME", &[(seq % 9 + 1) as u16])], seq, 10);
        overlay = if next.needs_merge() {
            merges += 1;
            next.merged()
        } else {
            next
        };
    }
    assert!(merges >= 2, "{merges}");
    assert_eq!(overlay.len(), 1);
    assert_eq!(overlay.get(b"SAME").map(|(_, seq)| seq), Some(20_000));
}

#[test]
fn a_background_merge_keeps_batches_applied_meanwhile() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    let batch: Vec<PreAdviceEntry> = (0..9_000u64)
        .map(|index| add(&format!("B{index}"), &[(index % 50 + 1) as u16]))
        .collect();
    preadvice.apply(&batch, 1).expect("applies");
    assert!(preadvice.merge_due());
    assert!(preadvice.merge_delta());
    assert!(!preadvice.merge_due());
    assert_eq!(answer(&preadvice, "B8999", None), (50, Outcome::Exact, 1));

    // Entries applied between the merge's snapshot and its store are rebased on top.
    let from = preadvice.view().overlay.clone();
    let (grown, _) = from.with_batch(&batch, 2, usize::MAX);
    let merged = grown.merged();
    let (later, _) = grown.with_batch(&[add("B1", &[77]), add("LATE", &[78])], 3, usize::MAX);
    let rebased = later.rebase(&grown, &merged).expect("descends by applies");
    assert_eq!(rebased.len(), 9_001);
    assert_eq!(rebased.get(b"B1").map(|(_, seq)| seq), Some(3));
    assert_eq!(rebased.get(b"B2").map(|(_, seq)| seq), Some(2));
    assert_eq!(rebased.get(b"LATE").map(|(_, seq)| seq), Some(3));
    // Not from the same base: refused.
    assert!(merged.rebase(&from, &merged).is_none());
}

#[test]
fn a_restart_replays_many_batches_within_the_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = PreAdviceSettings {
        entries_max: 25_000,
        ..PreAdviceSettings::default()
    };
    {
        let (preadvice, _) = PreAdvice::open(dir.path(), plan(), settings).expect("opens");
        for batch in 0..30u64 {
            let entries: Vec<PreAdviceEntry> = (0..1_000u64)
                .map(|index| {
                    add(
                        &format!("R{}", batch * 1_000 + index),
                        &[(batch + 1) as u16],
                    )
                })
                .collect();
            preadvice.apply(&entries, batch + 1).expect("applies");
        }
        assert_eq!(preadvice.view().overlay.len(), 25_000);
    }
    let (preadvice, recovery) = PreAdvice::open(dir.path(), plan(), settings).expect("reopens");
    assert_eq!((recovery.records, recovery.refused_full), (30, 5_000));
    assert_eq!(preadvice.view().overlay.len(), 25_000);
    assert_eq!(answer(&preadvice, "R24999", None), (25, Outcome::Exact, 25));
    assert_eq!(answer(&preadvice, "R25000", None).1, Outcome::NoRule);
}

#[test]
fn the_plan_handle_decides_through_the_overlay_and_a_swap_keeps_it() {
    use sortd::decision::Reason;
    use sortd::pipeline::decide::decide;
    use sortd::plan::PlanHandle;
    use sortd::plc::ChuteStateTable;

    let dir = tempfile::tempdir().expect("temp dir");
    let (preadvice, _) =
        PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("opens");
    let handle = PlanHandle::with_preadvice(Arc::new(preadvice));
    let states = ChuteStateTable::new();
    let decided = |barcode: &str| {
        let view = handle.view();
        let decided = decide(
            &view,
            &states,
            ScanFlags::EMPTY,
            &[barcode.as_bytes()],
            None,
        );
        (decided.chute, decided.reason, decided.preadvice_seq)
    };
    assert_eq!(decided("YT9"), (999, Reason::NoRule, 0));
    let preadvice = handle.preadvice().expect("pre-advice on");
    preadvice.apply(&[add("YT9", &[42])], 5).expect("applies");
    assert_eq!(decided("YT9"), (42, Reason::SortedPrimary, 5));
    assert_eq!(decided("YT1"), (7, Reason::SortedPrimary, 0));
    let report = handle.swap(plan());
    assert_eq!(report.new_version, 12);
    assert_eq!(decided("YT9"), (42, Reason::SortedPrimary, 5));

    let plain = PlanHandle::new(plan());
    assert!(plain.preadvice().is_none());
    let view = plain.view();
    let decided = decide(&view, &states, ScanFlags::EMPTY, &[b"YT1".as_slice()], None);
    assert_eq!((decided.chute, decided.preadvice_seq), (7, 0));
}

/// A seeded plan of `exact_keys` tracking numbers `P<i>` and a few prefixes, and a
/// seeded overlay over it: chutes, destination codes (some matching no prefix) and
/// removals, on new tracking numbers and on the plan's own, in several batches so that
/// both the base and the delta layer hold entries.
fn seeded_plan_and_overlay(seed: u64, exact_keys: u64) -> (Plan, OverlaySnapshot) {
    let mut csv = String::from("kind,key,chutes\nmeta,name,joint\nmeta,version,3\n");
    csv.push_str("prefix,33,101\nprefix,3301,102\nprefix,5,103\n");
    for index in 0..exact_keys {
        csv.push_str(&format!("exact,P{index},{}\n", index % 200 + 1));
    }
    csv.push_str("default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\n");
    csv.push_str("default,late,996\n");
    let plan = Plan::from_bytes(compile_str("joint.csv", &csv).expect("compiles")).expect("opens");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut overlay = OverlaySnapshot::empty();
    for batch in 1..=6u64 {
        let entries: Vec<PreAdviceEntry> = (0..rng.usize(200..2_000))
            .map(|_| {
                let barcode = if rng.bool() {
                    format!("P{}", rng.u64(0..exact_keys))
                } else {
                    format!("N{}", rng.u64(0..exact_keys))
                };
                match rng.u8(0..4) {
                    0 => to(&barcode, ["3301", "33", "77"][rng.usize(0..3)]),
                    1 => remove(&barcode),
                    _ => add(&barcode, &[rng.u16(1..300), rng.u16(300..600)]),
                }
            })
            .collect();
        overlay = overlay.with_batch(&entries, batch * 10, 1_000_000).0;
        if batch == 4 {
            overlay = overlay.merged();
        }
    }
    (plan, overlay)
}

/// Every field a decision carries, for comparing two resolutions.
fn decided(
    plan: &Plan,
    overlay: &OverlaySnapshot,
    barcodes: &[&[u8]],
    code: Option<&[u8]>,
) -> String {
    let got = resolve_with_overlay(plan, overlay, barcodes, code);
    format!(
        "{:?} {:?} {:?} {}",
        got.resolution.outcome,
        got.resolution.chutes.as_slice(),
        got.resolution.rule,
        got.preadvice_seq
    )
}

#[test]
fn the_joint_index_answers_exactly_as_the_filter_and_the_plan_do() {
    for seed in [1u64, 2, 3] {
        let (plan, overlay) = seeded_plan_and_overlay(seed, 5_000);
        let indexed = overlay.indexed(&plan);
        assert!(indexed.index_bytes() > 0, "seed {seed}: an index was built");
        assert!(overlay.needs_index(&plan) && !indexed.needs_index(&plan));
        let mut rng = fastrand::Rng::with_seed(seed + 100);
        for _ in 0..20_000 {
            let mut barcode = || match rng.u8(0..3) {
                0 => format!("P{}", rng.u64(0..6_000)),
                1 => format!("N{}", rng.u64(0..6_000)),
                _ => String::new(),
            };
            let (first, second) = (barcode(), barcode());
            let code = ["33011", "5", "9", ""][rng.usize(0..4)];
            let barcodes: [&[u8]; 2] = [first.as_bytes(), second.as_bytes()];
            let code = (!code.is_empty()).then_some(code.as_bytes());
            for barcodes in [&barcodes[..1], &barcodes[..]] {
                assert_eq!(
                    decided(&plan, &indexed, barcodes, code),
                    decided(&plan, &overlay, barcodes, code),
                    "seed {seed}: {first} {second} {code:?}"
                );
            }
        }
        // Applies after the index was built land in the delta layer, which still
        // answers first.
        let later = [add("P7", &[555]), remove("P8"), add("N5999", &[556])];
        let (with_later, _) = indexed.with_batch(&later, 1_000, 1_000_000);
        let (without, _) = overlay.with_batch(&later, 1_000, 1_000_000);
        for barcode in ["P7", "P8", "N5999", "P9"] {
            let barcodes: [&[u8]; 1] = [barcode.as_bytes()];
            assert_eq!(
                decided(&plan, &with_later, &barcodes, None),
                decided(&plan, &without, &barcodes, None)
            );
        }
        assert_eq!(
            decided(&plan, &with_later, &[b"P7"], None),
            "Exact [555] None 1000"
        );
    }
}

#[test]
fn a_joint_index_is_not_used_with_another_plan() {
    let (plan, overlay) = seeded_plan_and_overlay(7, 3_000);
    let (other_plan, _) = seeded_plan_and_overlay(7, 4_000);
    let indexed = overlay.indexed(&plan);
    assert!(indexed.needs_index(&other_plan));
    for index in (0..4_000u64).step_by(7) {
        let barcode = format!("P{index}");
        let barcodes: [&[u8]; 1] = [barcode.as_bytes()];
        assert_eq!(
            decided(&other_plan, &indexed, &barcodes, None),
            decided(&other_plan, &overlay, &barcodes, None),
            "{barcode}"
        );
    }
}

#[test]
fn the_background_merge_builds_the_joint_index_and_a_plan_swap_asks_for_another() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preadvice = open(dir.path());
    let many: Vec<PreAdviceEntry> = (0..9_000u32)
        .map(|index| add(&format!("NEW{index}"), &[(index % 90 + 1) as u16]))
        .chain([add("YT1", &[32])])
        .collect();
    preadvice.apply(&many, 1).expect("applies");
    assert_eq!(preadvice.view().overlay.index_bytes(), 0);
    assert!(preadvice.merge_due());
    assert!(preadvice.merge_delta());
    assert!(
        preadvice.view().overlay.index_bytes() > 0,
        "merged and indexed"
    );
    assert!(!preadvice.merge_due());
    assert_eq!(answer(&preadvice, "YT1", None), (32, Outcome::Exact, 1));
    assert_eq!(answer(&preadvice, "NEW91", None), (2, Outcome::Exact, 1));
    assert_eq!(answer(&preadvice, "YT2", None), (8, Outcome::Exact, 0));
    // A new base plan: the index no longer serves it, and the next merge builds one.
    let swapped = CSV.replace("exact,YT2,8", "exact,YT2,18");
    preadvice.swap_plan(
        Plan::from_bytes(compile_str("plan.csv", &swapped).expect("compiles")).expect("opens"),
    );
    assert!(
        preadvice.merge_due(),
        "the index was built for the old plan"
    );
    assert_eq!(answer(&preadvice, "YT2", None), (18, Outcome::Exact, 0));
    assert!(preadvice.merge_delta());
    assert!(!preadvice.merge_due());
    assert_eq!(answer(&preadvice, "YT2", None), (18, Outcome::Exact, 0));
    assert_eq!(answer(&preadvice, "YT1", None), (32, Outcome::Exact, 1));
    assert_eq!(answer(&preadvice, "NEW91", None), (2, Outcome::Exact, 1));
}
