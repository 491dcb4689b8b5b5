//! `sortd plan ...` as real processes: compile, verify, lookup, stats, diff, generate,
//! and CSV errors printed one per line with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sortd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .output()
        .expect("run sortd")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-plan.csv")
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn compile_verify_stats_and_lookup_the_example_plan() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("example.sortplan");
    let output = sortd(&["plan", "compile", path(&example_csv()), "-o", path(&plan)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("\"Hangzhou hub example plan\" version 1: 300 exact"));

    let output = sortd(&["plan", "verify", path(&plan)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(": ok: plan"));

    let output = sortd(&["plan", "stats", path(&plan)]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("exact: 300 keys"), "{text}");
    assert!(text.contains("prefix lengths: 2,4,9"), "{text}");
    assert!(text.contains("default no_rule: 999"), "{text}");

    // A Beijing city code goes to its province's line-haul chute, explained by rule.
    let output = sortd(&["plan", "lookup", path(&plan), "--code", "110101001"]);
    let text = stdout(&output);
    assert!(output.status.success());
    assert!(text.contains("decision: prefix -> chute 301"), "{text}");
    assert!(text.contains("rule: prefix \"1101\" at line"), "{text}");

    // A pre-advised parcel wins over its destination code.
    let csv = std::fs::read_to_string(example_csv()).unwrap();
    let (line_index, line) = csv
        .lines()
        .enumerate()
        .find(|(_, line)| line.starts_with("exact,"))
        .unwrap();
    let barcode = line.split(',').nth(1).unwrap();
    let output = sortd(&[
        "plan",
        "lookup",
        path(&plan),
        "--barcode",
        barcode,
        "--code",
        "110101",
    ]);
    let text = stdout(&output);
    assert!(text.contains("decision: exact -> chute 901"), "{text}");
    assert!(
        text.contains(&format!(
            "rule: exact \"{barcode}\" at line {}",
            line_index + 1
        )),
        "{text}"
    );

    let output = sortd(&["plan", "lookup", path(&plan)]);
    assert!(stdout(&output).contains("decision: no_read -> chute 998"));
    let output = sortd(&["plan", "lookup", path(&plan), "--barcode", "UNKNOWN"]);
    assert!(stdout(&output).contains("decision: no_rule -> chute 999"));
}

#[test]
fn csv_errors_print_one_line_each_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("plan.csv");
    let out = dir.path().join("plan.sortplan");
    std::fs::write(
        &csv,
        "kind,key,chutes\ndefault,no_read,998\ndefault,no_rule,999\ndefault,late,996\n\
         exact,A,1\nexact,A,2\nprefix,33,0\n",
    )
    .unwrap();
    let output = sortd(&["plan", "compile", path(&csv), "-o", path(&out)]);
    assert_eq!(output.status.code(), Some(64));
    let text = stderr(&output);
    let source = path(&csv);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{source}: missing default: add `default,multi_read,CHUTE`"),
            format!("{source}:6: duplicate exact key \"A\" (first at line 5)"),
            format!("{source}:7: bad chute \"0\": out of range 1..=65535"),
            format!("sortd: 3 error(s); {} not written", path(&out)),
        ]
    );
    assert!(!out.exists());
}

#[test]
fn verify_and_lookup_reject_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sortplan");
    std::fs::write(&bad, b"").unwrap();
    let output = sortd(&["plan", "verify", path(&bad)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("wrong length: expected at least 144 bytes, got 0")
            || stderr(&output).contains("expected 144 bytes, got 0"),
        "{}",
        stderr(&output)
    );

    let plan = dir.path().join("plan.sortplan");
    let output = sortd(&["plan", "compile", path(&example_csv()), "-o", path(&plan)]);
    assert!(output.status.success());
    let mut bytes = std::fs::read(&plan).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&bad, &bytes).unwrap();
    let output = sortd(&["plan", "verify", path(&bad)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("checksum mismatch"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn diff_reports_changes_with_bounded_output() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.sortplan");
    let new_csv = dir.path().join("new.csv");
    let new = dir.path().join("new.sortplan");
    assert!(
        sortd(&["plan", "compile", path(&example_csv()), "-o", path(&old)])
            .status
            .success()
    );
    let csv = std::fs::read_to_string(example_csv()).unwrap();
    let changed: String = csv
        .lines()
        .filter(|line| !line.starts_with("prefix,11"))
        .map(|line| match line {
            "prefix,3301,291|292" => "prefix,3301,5".to_string(),
            "default,late,996" => "default,late,995".to_string(),
            other => other.to_string(),
        })
        .chain((0..30).map(|index| format!("exact,NEW{index},3")))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&new_csv, changed).unwrap();
    assert!(
        sortd(&["plan", "compile", path(&new_csv), "-o", path(&new)])
            .status
            .success()
    );
    let output = sortd(&["plan", "diff", path(&old), path(&new), "--limit", "5"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("exact: 30 added, 0 removed, 0 changed, 300 unchanged"),
        "{text}"
    );
    assert!(
        text.contains("prefix: 0 added, 1 removed, 1 changed,"),
        "{text}"
    );
    assert!(text.contains("default late: 996 -> 995"), "{text}");
    assert_eq!(
        text.lines().filter(|line| line.starts_with("  ")).count(),
        6,
        "{text}"
    );
    assert!(text.contains("... 27 more not listed"), "{text}");

    let output = sortd(&["plan", "diff", path(&old), path(&old)]);
    assert!(stdout(&output).contains("no differences"));
}

#[test]
fn generate_then_compile_a_synthetic_plan() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    let plan = dir.path().join("big.sortplan");
    let output = sortd(&[
        "plan",
        "generate",
        "--exact",
        "20000",
        "--seed",
        "9",
        "-o",
        path(&csv),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = sortd(&["plan", "compile", path(&csv), "-o", path(&plan)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("20000 exact, 0 prefix keys"),
        "{}",
        stdout(&output)
    );
    let key = String::from_utf8(sortd::plan::generate::tracking_number(9, 123).to_vec()).unwrap();
    let output = sortd(&["plan", "lookup", path(&plan), "--barcode", &key]);
    assert!(
        stdout(&output).contains("decision: exact"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn every_subcommand_that_reads_a_plan_accepts_the_csv_as_run_does() {
    // Issue 15: `plan lookup` said "bad magic" for a CSV plan that `run` accepts.
    let csv = example_csv();
    let dir = tempfile::tempdir().unwrap();
    let compiled = dir.path().join("example.sortplan");
    let output = sortd(&["plan", "compile", path(&csv), "-o", path(&compiled)]);
    assert!(output.status.success(), "{}", stderr(&output));
    for args in [
        vec!["lookup", "--code", "110101001"],
        vec!["verify"],
        vec!["stats"],
    ] {
        let run = |plan: &Path| {
            let mut full = vec!["plan", args[0], path(plan)];
            full.extend_from_slice(&args[1..]);
            sortd(&full)
        };
        let from_csv = run(&csv);
        assert!(from_csv.status.success(), "{args:?}: {}", stderr(&from_csv));
        if args[0] == "lookup" {
            assert_eq!(stdout(&from_csv), stdout(&run(&compiled)));
        }
    }
    let output = sortd(&["plan", "diff", path(&csv), path(&compiled)]);
    assert!(output.status.success(), "{}", stderr(&output));
    // A CSV that does not compile is an error naming the line.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "kind,key,chutes\nexact,A,notachute\n").unwrap();
    let output = sortd(&["plan", "lookup", path(&bad), "--code", "1"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("bad.csv:2"), "{}", stderr(&output));
}
