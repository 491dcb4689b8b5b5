//! The demo, the load generator and the PLC simulator as real processes: short smoke runs
//! (the full benchmark never runs in CI).

use std::process::{Command, Stdio};

use crate::common::start_daemon;

#[test]
fn demo_runs_from_nothing_and_accounts_for_every_parcel() {
    let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["demo", "--seconds", "2", "--rate", "20000"])
        .stdin(Stdio::null())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Phase 1"), "{stdout}");
    assert!(stdout.contains("sorted_primary"), "{stdout}");
    assert!(
        stdout.contains("Every parcel sent got exactly one decision"),
        "{stdout}"
    );
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    // The first phase journals its sort events and tells one parcel's story.
    assert!(stdout.contains("sort events journaled: "), "{stdout}");
    assert!(stdout.contains("one parcel's story"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.contains(" decision parcel=") && line.contains(" sent chute=")),
        "{stdout}"
    );
    assert!(stdout.contains(" outcome parcel="), "{stdout}");
}

#[test]
fn loadgen_against_a_running_daemon_writes_json_and_svg() {
    // The load generator plays the PLC on a port the daemon dials: find a free one.
    let plc_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let plc_address = format!("127.0.0.1:{plc_port}");
    let daemon = start_daemon(plc_address.parse().unwrap(), &["protocol = \"binary\""], "");
    let folder = tempfile::tempdir().unwrap();
    let plan = folder.path().join("plan.csv");
    std::fs::write(&plan, crate::common::TEST_PLAN_CSV).unwrap();
    let json = folder.path().join("report.json");
    let svg = folder.path().join("latency.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .arg("loadgen")
        .arg("--target")
        .arg(daemon.scanner_addresses[0].to_string())
        .arg("--plan")
        .arg(&plan)
        .args([
            "--connections",
            "4",
            "--frames-per-write",
            "4",
            "--rate",
            "20000",
        ])
        .args(["--count", "20000", "--duration-s", "10"])
        .arg("--plc-listen")
        .arg(&plc_address)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .stdin(Stdio::null())
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("JSON report");
    assert_eq!(report["sent"], 20_000);
    assert_eq!(report["decided"], 20_000);
    assert_eq!(report["missing"], 0);
    assert!(report["throughput_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["p999"].as_u64().unwrap());
    assert!(latency["p999"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
    let reasons = report["reasons"].as_object().unwrap();
    let total: u64 = reasons.values().map(|count| count.as_u64().unwrap()).sum();
    assert_eq!(
        total, 20_000,
        "reasons add up to what was sent: {reasons:?}"
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("<polyline"));
    drop(daemon);
}

#[test]
fn plc_sim_command_counts_what_it_received() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let sim = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["plc-sim", "--listen", &address, "--confirm-delay-ms", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("plc-sim starts");
    let daemon = start_daemon(address.parse().unwrap(), &["protocol = \"binary\""], "");
    crate::common::wait_until("sortd to connect to plc-sim", || {
        daemon.log().iter().any(|line| line.contains("PLC link up"))
    });
    let mut scanner = crate::common::BinaryScanner::connect(daemon.scanner_addresses[0], 3);
    for parcel_id in 1..=50 {
        scanner.send(&crate::common::Parcel {
            parcel_id,
            barcodes: vec![],
            destination: Some("3301"),
        });
    }
    // The daemon's drain waits for plc-sim to acknowledge every SORT.
    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(
        crate::common::field(&stopped, "sent_to_plc").as_deref(),
        Some("50"),
        "{stopped}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status();
    let output = sim.wait_with_output().expect("plc-sim exits");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("plc-sim: 50 SORTs received"), "{stdout}");
    assert!(stdout.contains("sorted_primary     50"), "{stdout}");
}
