//! sortd as a service, over the real binary and real sockets: plan reloads on SIGHUP under
//! traffic (CSV and compiled plans, good and corrupt), the drain on SIGTERM under traffic,
//! the Prometheus endpoint against what the test sent, the sd_notify conversation with a
//! fake service manager, and the systemd unit file.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{
    BinaryScanner, Parcel, TestPlc, closed_by_peer, encode_scan, field, http_exchange,
    parse_openmetrics, replace_file, scrape, start_daemon_in, start_daemon_with_plan, wait_until,
};
use sortd::plc::SortCommand;

/// A plan whose version is `version` and whose prefix `33` goes to `chute_33`.
fn plan_csv(version: u32, chute_33: u16) -> String {
    format!(
        "kind,key,chutes
meta,name,service test plan {version}
meta,version,{version}
prefix,33,{chute_33}
exact,YT0000000000001,7|8
exact,YT0000000000002,9
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
"
    )
}

/// The chute prefix `33` goes to in each version the tests use.
fn chute_33(version: u32) -> u16 {
    match version {
        1 => 101,
        2 => 201,
        other => panic!("no plan version {other} in these tests"),
    }
}

/// A compiled plan's bytes.
fn compiled_plan(version: u32) -> Vec<u8> {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("plan.csv");
    let compiled = folder.path().join("plan.sortplan");
    std::fs::write(&csv, plan_csv(version, chute_33(version))).unwrap();
    sortd::plan::compile_file(&csv, &compiled).expect("test plan compiles");
    std::fs::read(&compiled).unwrap()
}

const METRICS_ON_A_FREE_PORT: &str = "[metrics]\naddress = \"127.0.0.1:0\"\n";

/// A configuration with one binary listener, the test PLC and metrics on a free port.
fn service_config(plan_file: &str, plc: SocketAddr) -> String {
    format!(
        "[plan]\npath = \"{plan_file}\"\n\
         [[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"binary\"\n\
         [plc]\naddress = \"{plc}\"\nreconnect_backoff_min_ms = 20\nreconnect_backoff_max_ms = 200\n\
         {METRICS_ON_A_FREE_PORT}"
    )
}

/// A parcel for prefix `33`.
fn parcel_33(parcel_id: u64) -> Parcel<'static> {
    Parcel {
        parcel_id,
        barcodes: vec![],
        destination: Some("3302"),
    }
}

/// A scanner sending parcels 1, 2, 3... for prefix 33 from its own thread until told to
/// stop, the daemon closes the connection, or the bound is reached.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

/// At most this many parcels per traffic thread.
const TRAFFIC_PARCELS_MAX: u64 = 2_000_000;

impl Traffic {
    fn start(address: SocketAddr, scanner_id: u32) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut scanner = BinaryScanner::connect(address, scanner_id);
                let mut bytes = Vec::new();
                let mut sent = 0;
                while !stop.load(Ordering::Acquire) && sent < TRAFFIC_PARCELS_MAX {
                    bytes.clear();
                    encode_scan(scanner_id, &parcel_33(sent + 1), &mut bytes);
                    if scanner.stream.write_all(&bytes).is_err() {
                        break;
                    }
                    sent += 1;
                    if sent % 64 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                sent
            })
        };
        Traffic { stop, thread }
    }

    /// Stops sending; returns how many parcels were written.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("traffic thread")
    }
}

/// The SORTs of `scanner_id` by parcel id; fails on a parcel sorted twice.
fn sorts_by_parcel(plc: &TestPlc, scanner_id: u32) -> HashMap<u64, SortCommand> {
    let sorts = plc.recorder.sorts.lock().unwrap().clone();
    let mut by_parcel = HashMap::new();
    for sort in sorts
        .into_iter()
        .filter(|sort| sort.scanner_id == scanner_id)
    {
        assert!(
            by_parcel.insert(sort.parcel_id, sort).is_none(),
            "parcel {} sorted twice",
            sort.parcel_id
        );
    }
    by_parcel
}

fn number(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn reloads(daemon_metrics: SocketAddr, result: &str) -> f64 {
    scrape(daemon_metrics).value("sortd_plan_reloads_total", &[("result", result)])
}

/// Every parcel 1..=count got exactly one SORT, and the plan versions never go back.
/// Returns how many were decided under each version.
fn assert_each_parcel_once_versions_forward(
    plc: &TestPlc,
    scanner_id: u32,
    count: u64,
) -> HashMap<u32, u64> {
    let by_parcel = sorts_by_parcel(plc, scanner_id);
    assert_eq!(by_parcel.len() as u64, count, "a parcel was not decided");
    let mut per_version = HashMap::new();
    let mut previous_version = 0;
    for parcel_id in 1..=count {
        let sort = by_parcel
            .get(&parcel_id)
            .unwrap_or_else(|| panic!("parcel {parcel_id} has no SORT"));
        assert!(
            sort.plan_version >= previous_version,
            "parcel {parcel_id} decided by plan {} after plan {previous_version}",
            sort.plan_version
        );
        assert_eq!(
            sort.chute,
            chute_33(sort.plan_version),
            "parcel {parcel_id}"
        );
        previous_version = sort.plan_version;
        *per_version.entry(sort.plan_version).or_insert(0) += 1;
    }
    per_version
}

#[test]
fn sighup_under_traffic_swaps_a_csv_plan_and_no_parcel_goes_undecided() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon_with_plan(
        plc.address,
        &["protocol = \"binary\""],
        METRICS_ON_A_FREE_PORT,
        &plan_csv(1, chute_33(1)),
    );
    let metrics = daemon.metrics_address();
    plc.wait_connected();
    let traffic = Traffic::start(daemon.scanner_addresses[0], 40);
    wait_until("300 parcels under plan 1", || plc.recorder.count() >= 300);

    replace_file(
        &daemon.folder().join("plan.csv"),
        plan_csv(2, chute_33(2)).as_bytes(),
    );
    daemon.signal("HUP");
    wait_until("the reload to be counted", || reloads(metrics, "ok") == 1.0);
    wait_until("300 parcels under plan 2", || {
        let sorts = plc.recorder.sorts.lock().unwrap();
        sorts.iter().filter(|sort| sort.plan_version == 2).count() >= 300
    });
    let sent = traffic.finish();
    wait_until("every parcel sent to be sorted", || {
        plc.recorder.count() as u64 >= sent
    });

    let per_version = assert_each_parcel_once_versions_forward(&plc, 40, sent);
    assert!(
        per_version[&1] >= 300 && per_version[&2] >= 300,
        "{per_version:?}"
    );

    let exposition = scrape(metrics);
    let decided = exposition.value(
        "sortd_parcels_decided_total",
        &[("reason", "sorted_primary"), ("delivery", "sent")],
    );
    assert_eq!(decided as u64, sent);
    assert_eq!(exposition.value("sortd_plan_version", &[]), 2.0);
    assert_eq!(
        exposition.value(
            "sortd_plan_info",
            &[("name", "service test plan 2"), ("version", "2")]
        ),
        1.0
    );
    assert_eq!(reloads(metrics, "failed"), 0.0);
    for (version, count) in &per_version {
        let chute = chute_33(*version).to_string();
        assert_eq!(
            exposition.value("sortd_parcels_by_chute_total", &[("chute", &chute)]) as u64,
            *count
        );
    }

    let reloaded = daemon.log_lines("sort plan reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(field(&reloaded[0], "old_version").as_deref(), Some("1"));
    assert_eq!(field(&reloaded[0], "version").as_deref(), Some("2"));
    assert_eq!(
        field(&reloaded[0], "plan").as_deref(),
        Some("service test plan 2")
    );

    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(number(&stopped, "scans"), sent, "{stopped}");
    assert_eq!(number(&stopped, "decided"), sent, "{stopped}");
    assert_eq!(number(&stopped, "sent_to_plc"), sent, "{stopped}");
}

/// Sends parcels `ids` and returns the plan version each was decided by.
fn versions_of(
    scanner: &mut BinaryScanner,
    plc: &TestPlc,
    ids: std::ops::RangeInclusive<u64>,
) -> Vec<u32> {
    for parcel_id in ids.clone() {
        scanner.send(&parcel_33(parcel_id));
    }
    ids.map(|parcel_id| {
        let sort = plc.recorder.wait_for(scanner.scanner_id, parcel_id);
        assert_eq!(sort.chute, chute_33(sort.plan_version));
        sort.plan_version
    })
    .collect()
}

#[test]
fn a_corrupt_truncated_or_missing_compiled_plan_on_sighup_keeps_the_old_one() {
    let plc = TestPlc::start(vec![], vec![]);
    let folder = tempfile::tempdir().unwrap();
    let plan_path = folder.path().join("plan.sortplan");
    std::fs::write(&plan_path, compiled_plan(1)).unwrap();
    let daemon = start_daemon_in(
        folder,
        &service_config("plan.sortplan", plc.address),
        1,
        &[],
    );
    let metrics = daemon.metrics_address();
    plc.wait_connected();
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 41);
    assert!(
        versions_of(&mut scanner, &plc, 1..=50)
            .iter()
            .all(|v| *v == 1)
    );

    let good = compiled_plan(2);
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x5a;
    let truncated = good[..good.len() / 2].to_vec();
    let bad_plans: [(&str, Option<Vec<u8>>); 3] = [
        ("a flipped byte", Some(flipped)),
        ("half the file", Some(truncated)),
        ("no file", None),
    ];
    let mut next_parcel = 51;
    for (failures, (what, bytes)) in bad_plans.into_iter().enumerate() {
        match bytes {
            Some(bytes) => replace_file(&plan_path, &bytes),
            None => std::fs::remove_file(&plan_path).unwrap(),
        }
        daemon.signal("HUP");
        wait_until(
            &format!("the failed reload of {what} to be counted"),
            || reloads(metrics, "failed") == (failures + 1) as f64,
        );
        let versions = versions_of(&mut scanner, &plc, next_parcel..=next_parcel + 49);
        assert!(versions.iter().all(|v| *v == 1), "{what}: {versions:?}");
        next_parcel += 50;
    }
    assert_eq!(reloads(metrics, "ok"), 0.0);
    assert_eq!(scrape(metrics).value("sortd_plan_version", &[]), 1.0);
    let failed = daemon.log_lines("sort plan reload failed");
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|line| field(line, "version").as_deref() == Some("1")),
        "{failed:?}"
    );

    replace_file(&plan_path, &good);
    daemon.signal("HUP");
    wait_until("the good reload", || reloads(metrics, "ok") == 1.0);
    let versions = versions_of(&mut scanner, &plc, next_parcel..=next_parcel + 49);
    assert!(versions.iter().all(|v| *v == 2), "{versions:?}");
    assert_eq!(scrape(metrics).value("sortd_plan_version", &[]), 2.0);

    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(number(&stopped, "decided"), next_parcel + 49, "{stopped}");
}

#[test]
fn sigterm_under_traffic_drains_every_received_parcel_before_exit() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon_with_plan(
        plc.address,
        &["protocol = \"binary\""],
        "",
        &plan_csv(1, chute_33(1)),
    );
    plc.wait_connected();
    let traffic = Traffic::start(daemon.scanner_addresses[0], 42);
    wait_until("traffic to flow", || plc.recorder.count() >= 2_000);
    // The scanner is still sending when the signal lands.
    let (code, stopped) = daemon.terminate();
    let written = traffic.finish();
    assert_eq!(code, Some(0), "{stopped}");

    let scans = number(&stopped, "scans");
    assert!(scans >= 2_000 && scans <= written, "{stopped}");
    assert_eq!(number(&stopped, "decided"), scans, "{stopped}");
    assert_eq!(number(&stopped, "undelivered"), 0, "{stopped}");
    assert_eq!(number(&stopped, "sent_to_plc"), scans, "{stopped}");
    // The PLC has every parcel the daemon read: the first `scans` the scanner wrote.
    assert_eq!(plc.recorder.count() as u64, scans);
    let by_parcel = sorts_by_parcel(&plc, 42);
    assert!((1..=scans).all(|parcel_id| by_parcel.contains_key(&parcel_id)));
}

#[test]
fn the_metrics_endpoint_serves_openmetrics_that_agrees_with_the_traffic() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon_with_plan(
        plc.address,
        &["protocol = \"binary\""],
        METRICS_ON_A_FREE_PORT,
        &plan_csv(1, chute_33(1)),
    );
    let metrics = daemon.metrics_address();
    plc.wait_connected();
    let address = daemon.scanner_addresses[0];

    // Every byte the scanners write is counted here, hellos included.
    let mut bytes_written = 0u64;
    let mut frame = Vec::new();
    let mut send = |scanner: &mut BinaryScanner, parcel: &Parcel<'_>, total: &mut u64| {
        frame.clear();
        encode_scan(scanner.scanner_id, parcel, &mut frame);
        scanner.send_raw(&frame);
        *total += frame.len() as u64;
    };
    let hello_bytes = {
        let mut hello = Vec::new();
        sortd::wire::encode(
            &sortd::wire::Frame::Hello(sortd::wire::Hello {
                scanner_id: 0,
                protocol_version: sortd::wire::PROTOCOL_VERSION,
                heartbeat_interval_ms: 0,
                sent_at_us: 0,
            }),
            &mut hello,
        )
        .unwrap();
        hello.len() as u64
    };

    let mut first = BinaryScanner::connect(address, 51);
    bytes_written += hello_bytes;
    for parcel_id in 1..=20 {
        send(&mut first, &parcel_33(parcel_id), &mut bytes_written);
    }
    for parcel_id in 21..=23 {
        let no_read = Parcel {
            parcel_id,
            ..Parcel::default()
        };
        send(&mut first, &no_read, &mut bytes_written);
    }
    for parcel_id in 24..=25 {
        let no_rule = Parcel {
            parcel_id,
            barcodes: vec![],
            destination: Some("4400"),
        };
        send(&mut first, &no_rule, &mut bytes_written);
    }
    let multi_read = Parcel {
        parcel_id: 26,
        barcodes: vec!["YT0000000000001", "YT0000000000002"],
        destination: None,
    };
    send(&mut first, &multi_read, &mut bytes_written);
    send(&mut first, &parcel_33(1), &mut bytes_written); // a duplicate
    let garbage = [b'x'; 512];
    first.send_raw(&garbage);
    bytes_written += garbage.len() as u64;
    send(&mut first, &parcel_33(27), &mut bytes_written);

    let mut second = BinaryScanner::connect(address, 52);
    bytes_written += hello_bytes;
    for parcel_id in 1..=5 {
        send(&mut second, &parcel_33(parcel_id), &mut bytes_written);
    }
    let scans = 20 + 3 + 2 + 1 + 1 + 1 + 5;
    let sorts = scans - 1; // the duplicate is not actuated
    wait_until("every SORT at the PLC", || plc.recorder.count() >= sorts);
    drop(second);

    // Counters are published once per turn, the latency histogram once per second.
    let mut exposition = scrape(metrics);
    wait_until("the counters and the histogram to catch up", || {
        exposition = scrape(metrics);
        exposition.get("sortd_decision_latency_seconds_count", &[]) == Some(scans as f64)
            // Every decision passed every stage, each counted with its batch.
            && ["decide", "handoff", "send"].iter().all(|stage| {
                exposition.get("sortd_stage_latency_seconds_count", &[("stage", stage)])
                    == Some(scans as f64)
            })
            && exposition.get("sortd_scanner_connections_closed_total", &[]) == Some(1.0)
            && exposition.get("sortd_plc_sorts_acked_total", &[]) == Some(sorts as f64)
            // Gauges are separate loads, so wait for them too rather than race them.
            && exposition.get("sortd_scanner_connections_open", &[]) == Some(1.0)
            && exposition.get("sortd_plc_in_flight_telegrams", &[]) == Some(0.0)
    });
    let e = &exposition;
    let value = |name: &str| e.value(name, &[]) as u64;
    assert_eq!(value("sortd_scanner_read_bytes_total"), bytes_written);
    assert_eq!(value("sortd_scanner_scans_total"), scans as u64);
    assert_eq!(value("sortd_scanner_frames_total"), scans as u64 + 2);
    let skipped = value("sortd_scanner_skipped_bytes_total");
    assert!(skipped > 0 && skipped <= garbage.len() as u64, "{skipped}");
    assert!(e.sum("sortd_scanner_decode_errors_total") >= 1.0);
    assert_eq!(value("sortd_scanner_connections_accepted_total"), 2);
    assert_eq!(value("sortd_scanner_connections_open"), 1);

    let decided = |reason: &str, delivery: &str| {
        e.value(
            "sortd_parcels_decided_total",
            &[("reason", reason), ("delivery", delivery)],
        ) as u64
    };
    let expected_decisions = [
        ("sorted_primary", "sent", 26),
        ("no_read", "sent", 3),
        ("no_rule", "sent", 2),
        ("multi_read", "sent", 1),
        ("duplicate", "not_actuated", 1),
        ("sorted_primary", "undelivered", 0),
    ];
    for (reason, delivery, count) in expected_decisions {
        assert_eq!(decided(reason, delivery), count, "{reason} {delivery}");
    }
    assert_eq!(e.sum("sortd_parcels_decided_total") as usize, scans);
    let by_chute = [("101", 26), ("998", 3), ("999", 2), ("997", 1)];
    for (chute, count) in by_chute {
        assert_eq!(
            e.value("sortd_parcels_by_chute_total", &[("chute", chute)]) as u64,
            count,
            "chute {chute}"
        );
    }
    assert_eq!(
        e.series("sortd_parcels_by_chute_total").len(),
        by_chute.len()
    );
    assert_eq!(e.sum("sortd_parcels_by_chute_total") as usize, sorts);
    assert_eq!(value("sortd_plc_link_up"), 1);
    assert_eq!(value("sortd_plc_sorts_sent_total"), sorts as u64);
    assert_eq!(value("sortd_plc_in_flight_telegrams"), 0);
    assert_eq!(value("sortd_plc_retransmissions_total"), 0);
    assert_eq!(
        e.value("sortd_plc_link_transitions_total", &[("to", "up")]),
        1.0
    );
    assert_eq!(
        e.value(
            "sortd_plan_info",
            &[("name", "service test plan 1"), ("version", "1")]
        ),
        1.0
    );
    assert_eq!(e.sum("sortd_plan_reloads_total"), 0.0);
    assert!(e.value("sortd_thread_loop_turns_total", &[("thread", "plc")]) > 0.0);
    assert!(e.value("sortd_thread_loop_turns_total", &[("thread", "ingress-0")]) > 0.0);
    assert_eq!(e.types["sortd_decision_latency_seconds"], "histogram");
    assert_eq!(e.types["sortd_stage_latency_seconds"], "histogram");

    // Without an Accept header asking for OpenMetrics, the classic text format (0.0.4).
    let (status, classic) = http_exchange(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        !classic.contains("# EOF") && !classic.contains("# UNIT"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE sortd_scanner_scans_total counter\n"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE sortd_plan_info gauge\n"),
        "{classic}"
    );

    // Read-only: GET of the endpoint's few paths only (the operator page is at /).
    let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 16 * 1024));
    oversized.extend_from_slice(b"\r\n\r\n");
    let refusals: [(&[u8], u16); 6] = [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /admin HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics/../admin HTTP/1.1\r\n\r\n", 404),
        (b"hello\r\n\r\n", 400),
        (&oversized, 431),
    ];
    for (request, status) in refusals {
        let (got, body) = http_exchange(metrics, request);
        assert_eq!(
            got,
            status,
            "{:?}: {body}",
            String::from_utf8_lossy(request)
        );
    }
    // A client that says nothing is dropped, and the endpoint serves the next one.
    let mut silent = std::net::TcpStream::connect(metrics).unwrap();
    assert!(
        closed_by_peer(&mut silent),
        "a silent client is kept forever"
    );
    let after = scrape(metrics);
    assert_eq!(
        after.value("sortd_scanner_scans_total", &[]),
        scans as f64,
        "scraping changed nothing"
    );

    let (code, stopped) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(number(&stopped, "scans"), scans as u64, "{stopped}");
    assert_eq!(number(&stopped, "decided"), scans as u64, "{stopped}");
    assert_eq!(number(&stopped, "sent_to_plc"), sorts as u64, "{stopped}");
}

/// Collects what the daemon tells its service manager.
struct FakeServiceManager {
    messages: Arc<Mutex<Vec<String>>>,
}

impl FakeServiceManager {
    fn bind(path: &Path) -> FakeServiceManager {
        let socket = UnixDatagram::bind(path).expect("notify socket binds");
        let messages = Arc::new(Mutex::new(Vec::new()));
        {
            let messages = messages.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(count) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..count]).into_owned();
                    messages.lock().unwrap().push(text);
                }
            });
        }
        FakeServiceManager { messages }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Index of the first message at or after `from` that has every line in `lines`.
    fn wait_for(&self, from: usize, lines: &[&str]) -> usize {
        let mut found = None;
        wait_until(&format!("sd_notify {lines:?}"), || {
            found = self
                .messages()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, message)| {
                    lines
                        .iter()
                        .all(|line| message.lines().any(|got| got.starts_with(line)))
                })
                .map(|(index, _)| index);
            found.is_some()
        });
        found.expect("waited for it")
    }
}

#[test]
fn systemd_hears_ready_status_watchdog_reloading_and_stopping() {
    let plc = TestPlc::start(vec![], vec![]);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("plan.csv"), plan_csv(1, chute_33(1))).unwrap();
    let notify_path = folder.path().join("notify.sock");
    let manager = FakeServiceManager::bind(&notify_path);
    let notify_socket = notify_path.to_str().expect("UTF-8 path").to_string();
    let daemon = start_daemon_in(
        folder,
        &service_config("plan.csv", plc.address),
        1,
        &[
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let metrics = daemon.metrics_address();
    plc.wait_connected();

    let ready = manager.wait_for(0, &["READY=1", "STATUS=decided 0 "]);
    assert_eq!(ready, 0, "READY=1 is the first message");
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 43);
    versions_of(&mut scanner, &plc, 1..=10);
    let status = manager.wait_for(ready, &["STATUS=decided 10 ("]);
    let status_line = &manager.messages()[status];
    assert!(status_line.contains("PLC up"), "{status_line}");
    assert!(
        status_line.contains("plan \"service test plan 1\" v1"),
        "{status_line}"
    );
    // Every thread turns, so the watchdog is fed (every 250 ms for a 1 s watchdog).
    let first_ping = manager.wait_for(ready, &["WATCHDOG=1"]);
    manager.wait_for(first_ping + 1, &["WATCHDOG=1"]);

    // A reload that fails still ends with READY=1: the old plan keeps serving.
    replace_file(
        &daemon.folder().join("plan.csv"),
        b"kind,key,chutes\nnonsense\n",
    );
    daemon.signal("HUP");
    let reloading = manager.wait_for(ready + 1, &["RELOADING=1", "MONOTONIC_USEC="]);
    let monotonic_us: u64 = manager.messages()[reloading]
        .lines()
        .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
        .and_then(|value| value.parse().ok())
        .expect("MONOTONIC_USEC is a number");
    assert!(monotonic_us > 0);
    manager.wait_for(reloading + 1, &["READY=1"]);
    assert_eq!(reloads(metrics, "failed"), 1.0);

    replace_file(
        &daemon.folder().join("plan.csv"),
        plan_csv(2, chute_33(2)).as_bytes(),
    );
    daemon.signal("HUP");
    let reloading = manager.wait_for(reloading + 1, &["RELOADING=1"]);
    manager.wait_for(reloading + 1, &["READY=1", "STATUS="]);
    assert_eq!(reloads(metrics, "ok"), 1.0);
    assert!(
        versions_of(&mut scanner, &plc, 11..=20)
            .iter()
            .all(|v| *v == 2)
    );

    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    manager.wait_for(reloading, &["STOPPING=1"]);
}

#[test]
fn without_notify_socket_the_daemon_runs_and_says_so() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon_with_plan(
        plc.address,
        &["protocol = \"binary\""],
        "[metrics]\nenabled = false\n",
        &plan_csv(1, chute_33(1)),
    );
    plc.wait_connected();
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 44);
    assert_eq!(versions_of(&mut scanner, &plc, 1..=3), vec![1, 1, 1]);
    let running = daemon.log_lines("sortd running");
    assert_eq!(field(&running[0], "systemd").as_deref(), Some("false"));
    assert!(daemon.log_lines("metrics endpoint").is_empty());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn the_metrics_parser_rejects_what_a_scraper_would() {
    let cases = [
        ("# TYPE a counter\na_total 1\n# EOF\n", true),
        ("# TYPE a counter\na_total 1\n", false),
        ("# TYPE a counter\na 1\n# EOF\n", false),
        ("# TYPE a counter\na_total -1\n# EOF\n", false),
        ("# TYPE a counter\na_total one\n# EOF\n", false),
        (
            "# TYPE a counter\na_total{k=\"v\"} 1\na_total{k=\"v\"} 2\n# EOF\n",
            false,
        ),
        ("# TYPE a counter\na_total{k=\"v} 1\n# EOF\n", false),
        ("a_total 1\n# EOF\n", false),
        ("# TYPE a gauge\n# TYPE a gauge\na 1\n# EOF\n", false),
        (
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n",
            false,
        ),
        (
            "# TYPE a_seconds gauge\n# UNIT a_seconds bytes\na_seconds 1\n# EOF\n",
            false,
        ),
        (
            "# TYPE h histogram\nh_sum 3\nh_count 2\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n# EOF\n",
            true,
        ),
        (
            "# TYPE h histogram\nh_sum 3\nh_count 2\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\n# EOF\n",
            false,
        ),
        (
            "# TYPE h histogram\nh_sum 3\nh_count 3\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n# EOF\n",
            false,
        ),
        (
            "# TYPE i info\ni_info{name=\"a \\\"b\\\"\"} 1\n# EOF\n",
            true,
        ),
    ];
    for (text, valid) in cases {
        assert_eq!(parse_openmetrics(text).is_ok(), valid, "{text}");
    }
}

/// Directives the unit must carry, whatever systemd-analyze says.
const UNIT_MUST_HAVE: &[&str] = &[
    "Type=notify",
    "WatchdogSec=",
    "Restart=on-failure",
    "ExecReload=/bin/kill -HUP $MAINPID",
    "DynamicUser=yes",
    "ProtectSystem=strict",
    "ReadOnlyPaths=/etc/sortd",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=\n",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "SystemCallFilter=@system-service",
    "SystemCallArchitectures=native",
    "MemoryDenyWriteExecute=yes",
    "LockPersonality=yes",
    "MemoryMax=",
    "StateDirectory=sortd",
    "StateDirectoryMode=0750",
    "UMask=0027",
    "LimitNOFILE=",
];

/// The exposure level `systemd-analyze security` must not exceed.
const EXPOSURE_MAX: f64 = 2.0;

#[test]
fn the_unit_file_verifies_and_is_rated_at_most_2_0() {
    let unit =
        std::fs::read_to_string(crate::common::project_path("config/sortd.service")).unwrap();
    for directive in UNIT_MUST_HAVE {
        assert!(
            unit.lines()
                .any(|line| format!("{line}\n").starts_with(directive)),
            "config/sortd.service lacks {directive:?}"
        );
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: systemd-analyze not found; unit file checked for its directives only");
        return;
    }
    // The unit names the installed binary; check a copy that names the one just built.
    let folder = tempfile::tempdir().unwrap();
    let copy = folder.path().join("sortd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sortd", env!("CARGO_BIN_EXE_sortd")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {complaints}"
    );
    assert!(
        !complaints.contains("sortd.service"),
        "systemd-analyze verify complains: {complaints}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for sortd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {report}{}",
                String::from_utf8_lossy(&security.stderr)
            )
        });
    println!("systemd-analyze security: exposure level {level}");
    assert!(level <= EXPOSURE_MAX, "exposure {level}: {report}");
}
