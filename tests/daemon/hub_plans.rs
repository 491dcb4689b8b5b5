//! Plans from the hub against a real nats-server: `sortd plan publish` -> the node swaps
//! (seen in `sortd plan status` and in the chutes it decides); a published plan that
//! does not verify is refused and counted while the old plan keeps sorting; an older
//! version is ignored unless published as a rollback; and a node restarted while the
//! broker is down sorts with the last good plan it downloaded.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use crate::common::nats::NatsServer;
use crate::common::{
    BinaryScanner, DaemonProcess, Parcel, TestPlc, scrape, start_daemon_in, wait_until,
};
use sortd::export::hub_plan::PublishedPlan;

/// A plan whose prefix `33` goes to `chute`, with an explicit version.
fn plan_csv(version: u32, chute: u16) -> String {
    format!(
        "kind,key,chutes\nmeta,name,hub wave\nmeta,version,{version}\nprefix,33,{chute}\n\
         default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n"
    )
}

/// Compiles `plan_csv(version, chute)` to `<dir>/v<version>.sortplan`.
fn compiled(dir: &Path, version: u32, chute: u16) -> std::path::PathBuf {
    let csv = dir.join(format!("v{version}.csv"));
    std::fs::write(&csv, plan_csv(version, chute)).expect("plan written");
    let out = dir.join(format!("v{version}.sortplan"));
    sortd::plan::compile_file(&csv, &out).expect("plan compiles");
    out
}

/// Version 2 (prefix 33 to chute 202) with `exact_entries` more exact entries, compiled
/// to `<dir>/big.sortplan`.
fn compiled_big(dir: &Path, exact_entries: u32) -> std::path::PathBuf {
    let mut csv = plan_csv(2, 202);
    for index in 0..exact_entries {
        csv.push_str(&format!("exact,YT{index:013},7\n"));
    }
    let source = dir.join("big.csv");
    std::fs::write(&source, csv).expect("plan written");
    let big = dir.join("big.sortplan");
    sortd::plan::compile_file(&source, &big).expect("plan compiles");
    big
}

fn sortd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .output()
        .expect("sortd runs")
}

fn publish(nats: &NatsServer, plan: &Path, extra: &[&str]) -> Output {
    let url = nats.url();
    let plan = plan.to_str().expect("utf-8 path");
    let mut args = vec!["plan", "publish", plan, "--nats", &url, "--group", "north"];
    args.extend_from_slice(extra);
    sortd(&args)
}

/// `sortd plan status --json` for group north.
fn status(nats: &NatsServer) -> serde_json::Value {
    let url = nats.url();
    let output = sortd(&[
        "plan", "status", "--nats", &url, "--group", "north", "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("status is JSON")
}

/// The version node `node` reports running, and its state against the published plan.
fn node_report(nats: &NatsServer, node: &str) -> Option<(u64, String)> {
    let status = status(nats);
    status["nodes"].as_array()?.iter().find_map(|entry| {
        (entry["node"] == node).then(|| {
            (
                entry["status"]["plan_version"].as_u64().unwrap_or(0),
                entry["state"].as_str().unwrap_or("-").to_string(),
            )
        })
    })
}

/// A node of group north whose configured plan is `configured` (version, chute) and
/// whose hub directory is `hub_dir`.
fn start_node(
    nats_url: &str,
    plc: &TestPlc,
    hub_dir: &Path,
    configured: (u32, u16),
) -> DaemonProcess {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        folder.path().join("plan.csv"),
        plan_csv(configured.0, configured.1),
    )
    .expect("plan written");
    start_node_in(folder, "plan.csv", "", nats_url, plc, hub_dir)
}

/// A node of group north over the plan `plan` in `folder`, with `extra` configuration
/// appended right after the `[hub]` keys (more `[hub]` keys, or further sections).
fn start_node_in(
    folder: tempfile::TempDir,
    plan: &str,
    extra: &str,
    nats_url: &str,
    plc: &TestPlc,
    hub_dir: &Path,
) -> DaemonProcess {
    let config = format!(
        "[plan]\npath = \"{plan}\"\n\
         [[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"binary\"\n\
         [plc]\naddress = \"{}\"\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n\
         [hub]\nenabled = true\nurls = [\"{nats_url}\"]\nnode = \"xb-1\"\ngroup = \"north\"\n\
         preadvice = false\ndir = \"{}\"\nconnect_timeout_ms = 500\n\
         reconnect_backoff_min_ms = 20\nreconnect_backoff_max_ms = 200\n{extra}",
        plc.address,
        hub_dir.display()
    );
    start_daemon_in(folder, &config, 1, &[])
}

/// Sends parcel `parcel_id` with destination 3301... and returns the chute decided.
fn decide(daemon: &DaemonProcess, plc: &TestPlc, parcel_id: u64) -> u16 {
    decide_barcode(daemon, plc, parcel_id, "YT1")
}

/// As [`decide`], with the parcel's barcode.
fn decide_barcode(daemon: &DaemonProcess, plc: &TestPlc, parcel_id: u64, barcode: &str) -> u16 {
    let mut scanner = BinaryScanner::connect(daemon.scanner_addresses[0], 5);
    scanner.send(&Parcel {
        parcel_id,
        barcodes: vec![barcode],
        destination: Some("330106"),
    });
    plc.recorder.wait_for(5, parcel_id).chute
}

fn wait_taken(daemon: &DaemonProcess, version: u32) {
    let needle = format!("version={version}");
    wait_until(&format!("the node to take version {version}"), || {
        daemon
            .log_lines("plan from the hub taken")
            .iter()
            .any(|line| line.contains(&needle))
    });
}

#[test]
fn a_published_plan_is_taken_reported_and_decides() {
    let mut nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_node(&nats.url(), &plc, hub_dir.path(), (1, 101));
    plc.wait_connected();
    assert_eq!(decide(&daemon, &plc, 1), 101);
    // With nothing published, the node reports its configured plan.
    wait_until("the node to report its plan", || {
        node_report(&nats, "xb-1").is_some_and(|(version, _)| version == 1)
    });

    let v2 = compiled(plans.path(), 2, 202);
    let published_at = Instant::now();
    let output = publish(&nats, &v2, &[]);
    assert!(output.status.success(), "{output:?}");
    wait_taken(&daemon, 2);
    eprintln!(
        "publish -> swap on loopback (debug build, including the CLI's start): {} ms",
        published_at.elapsed().as_millis()
    );
    assert_eq!(decide(&daemon, &plc, 2), 202);
    wait_until("the node to report version 2 as current", || {
        node_report(&nats, "xb-1") == Some((2, "current".into()))
    });
    let report = status(&nats);
    let node = &report["nodes"][0]["status"];
    eprintln!(
        "published -> swapped (metadata stamp to the node's since): {} ms",
        node["since_unix_ms"].as_u64().unwrap_or(0) as i64
            - report["published"]["published_unix_ms"]
                .as_u64()
                .unwrap_or(0) as i64
    );
    // The plan and its metadata are kept, private to sortd.
    let kept = hub_dir.path().join("plan.sortplan");
    assert_eq!(
        std::fs::read(&kept).expect("kept plan"),
        std::fs::read(&v2).expect("published plan")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let scrape = scrape(daemon.metrics_address());
    assert_eq!(scrape.value("sortd_hub_plans_taken_total", &[]), 1.0);
    assert_eq!(scrape.value("sortd_plan_version", &[]), 2.0);
    assert_eq!(
        scrape.value("sortd_hub_state", &[("state", "connected")]),
        1.0
    );

    // The broker restarts under the connected node: it reconnects and takes the next one.
    nats.restart();
    let v3 = compiled(plans.path(), 3, 303);
    assert!(publish(&nats, &v3, &[]).status.success());
    wait_taken(&daemon, 3);
    assert_eq!(decide(&daemon, &plc, 3), 303);
    let after = crate::common::scrape(daemon.metrics_address());
    assert!(after.value("sortd_hub_sessions_lost_total", &[]) >= 1.0);
}

/// Stores `bytes` as group north's plan with `published`'s metadata, bypassing `plan
/// publish` (which would refuse it): what a damaged or foreign object looks like.
fn put_raw(nats: &NatsServer, bytes: Vec<u8>, published: &PublishedPlan) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.expect("connects");
        let js = async_nats::jetstream::new(client);
        let store = js.get_object_store("sortd-plans").await.expect("bucket");
        let meta = async_nats::jetstream::object_store::ObjectMetadata {
            name: "north".into(),
            metadata: published.to_metadata(),
            ..Default::default()
        };
        store
            .put(meta, &mut bytes.as_slice())
            .await
            .expect("object stored");
    });
}

/// Publishes `compiled(dir, version, chute)` with one byte flipped inside its tables:
/// the header, name and footer still match the metadata, only the full verification
/// finds it. Returns the intact plan's path and the metadata published.
fn put_damaged(
    nats: &NatsServer,
    dir: &Path,
    version: u32,
    chute: u16,
) -> (std::path::PathBuf, PublishedPlan) {
    let plan = compiled(dir, version, chute);
    let identity = sortd::export::hub_admin::verified_identity(&plan).expect("plan verifies");
    let mut bytes = std::fs::read(&plan).expect("plan read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let published = PublishedPlan {
        identity,
        published_unix_ms: 1,
        rollback: false,
    };
    put_raw(nats, bytes, &published);
    (plan, published)
}

#[test]
fn a_plan_that_does_not_verify_is_refused_and_the_old_one_keeps_sorting() {
    let nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_node(&nats.url(), &plc, hub_dir.path(), (1, 101));
    plc.wait_connected();
    let v2 = compiled(plans.path(), 2, 202);
    assert!(publish(&nats, &v2, &[]).status.success());
    wait_taken(&daemon, 2);

    let (v3, published) = put_damaged(&nats, plans.path(), 3, 303);
    wait_until("the refusal to be counted", || {
        scrape(daemon.metrics_address())
            .value("sortd_hub_plans_refused_total", &[("reason", "verify")])
            == 1.0
    });
    assert_eq!(decide(&daemon, &plc, 1), 202, "the old plan keeps sorting");
    assert_eq!(daemon.log_lines("plan from the hub refused").len(), 1);
    // The last good plan on disk is still version 2.
    assert_eq!(
        std::fs::read(hub_dir.path().join("plan.sortplan")).expect("kept plan"),
        std::fs::read(&v2).expect("v2")
    );
    assert!(!hub_dir.path().join("plan.sortplan.part").exists());

    // Metadata that does not describe the object: refused before any download.
    let mut wrong = published.clone();
    wrong.identity.version = 4;
    put_raw(&nats, std::fs::read(&v3).expect("v3"), &wrong);
    wait_until("the second refusal", || {
        scrape(daemon.metrics_address())
            .value("sortd_hub_plans_refused_total", &[("reason", "verify")])
            == 2.0
    });
    assert_eq!(decide(&daemon, &plc, 2), 202);
    assert_eq!(
        node_report(&nats, "xb-1").map(|(version, _)| version),
        Some(2)
    );
}

#[test]
fn an_older_version_is_ignored_unless_published_as_a_rollback() {
    let nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    // The node's own plan is version 5: newer than what the hub will publish.
    let daemon = start_node(&nats.url(), &plc, hub_dir.path(), (5, 505));
    plc.wait_connected();
    let v2 = compiled(plans.path(), 2, 202);
    assert!(publish(&nats, &v2, &[]).status.success());
    wait_until("the node to ignore version 2", || {
        scrape(daemon.metrics_address()).value("sortd_hub_plans_ignored_total", &[]) == 1.0
    });
    assert_eq!(decide(&daemon, &plc, 1), 505);
    wait_until("plan status to flag the node", || {
        node_report(&nats, "xb-1") == Some((5, "differs".into()))
    });

    // plan publish refuses to go back without --rollback...
    let v1 = compiled(plans.path(), 1, 101);
    let refused = publish(&nats, &v1, &[]);
    assert_eq!(refused.status.code(), Some(64), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rollback"));
    // ...and with it, every node goes back, even one running a newer local plan.
    assert!(publish(&nats, &v1, &["--rollback"]).status.success());
    wait_taken(&daemon, 1);
    assert_eq!(decide(&daemon, &plc, 2), 101);
    wait_until("the node to report the rollback as current", || {
        node_report(&nats, "xb-1") == Some((1, "current".into()))
    });
}

#[test]
fn a_node_restarted_while_nats_is_down_sorts_with_the_last_good_plan_then_catches_up() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let first = start_node(&url, &plc, hub_dir.path(), (1, 101));
    plc.wait_connected();
    let v2 = compiled(plans.path(), 2, 202);
    assert!(publish(&nats, &v2, &[]).status.success());
    wait_taken(&first, 2);
    let (code, _) = first.terminate();
    assert_eq!(code, Some(0));

    nats.kill();
    let second = start_node(&url, &plc, hub_dir.path(), (1, 101));
    assert!(
        second.log_lines("sort plan loaded")[0].contains("origin=\"hub\""),
        "{:?}",
        second.log()
    );
    assert_eq!(decide(&second, &plc, 7), 202);
    let before = scrape(second.metrics_address());
    assert_eq!(before.value("sortd_plan_version", &[]), 2.0);
    assert_eq!(before.value("sortd_hub_connections_total", &[]), 0.0);

    // The broker comes back (same store): the node connects, reports, and takes what is
    // published next.
    nats.restart();
    wait_until("the node to report after the broker is back", || {
        node_report(&nats, "xb-1") == Some((2, "current".into()))
    });
    let v3 = compiled(plans.path(), 3, 303);
    assert!(publish(&nats, &v3, &[]).status.success());
    wait_taken(&second, 3);
    assert_eq!(decide(&second, &plc, 8), 303);
}

#[test]
fn a_plan_from_the_hub_goes_under_the_pre_advice_overlay() {
    let nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path();
    let v1 = compiled(path, 1, 101);
    std::fs::write(
        path.join("batch.jsonl"),
        "{\"op\":\"add\",\"barcode\":\"YT0000000000009\",\"chutes\":[42]}\n",
    )
    .expect("batch written");
    let padv = path.join("padv");
    let output = sortd(&[
        "plan",
        "preadvice",
        "append",
        "--dir",
        padv.to_str().expect("utf-8"),
        "--plan",
        v1.to_str().expect("utf-8"),
        path.join("batch.jsonl").to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{output:?}");
    let daemon = start_node_in(
        folder,
        "v1.sortplan",
        "[preadvice]\nenabled = true\ndir = \"padv\"\n",
        &nats.url(),
        &plc,
        hub_dir.path(),
    );
    plc.wait_connected();
    assert_eq!(decide_barcode(&daemon, &plc, 1, "YT0000000000009"), 42);
    assert_eq!(decide(&daemon, &plc, 2), 101);
    let v2 = compiled(plans.path(), 2, 202);
    assert!(publish(&nats, &v2, &[]).status.success());
    wait_taken(&daemon, 2);
    assert_eq!(
        decide_barcode(&daemon, &plc, 3, "YT0000000000009"),
        42,
        "the pre-advised parcel keeps its chute"
    );
    assert_eq!(
        decide(&daemon, &plc, 4),
        202,
        "the others follow the new plan"
    );
}

#[test]
fn sighup_picks_between_the_configured_plan_and_the_hubs_by_the_start_rule() {
    let nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_node(&nats.url(), &plc, hub_dir.path(), (1, 101));
    plc.wait_connected();
    let v2 = compiled(plans.path(), 2, 202);
    assert!(publish(&nats, &v2, &[]).status.success());
    wait_taken(&daemon, 2);
    let reloads = |daemon: &DaemonProcess| daemon.log_lines("sort plan reloaded").len();

    // The configured plan is older than the hub's: SIGHUP keeps the hub's.
    let before = reloads(&daemon);
    daemon.signal("HUP");
    wait_until("the reload", || reloads(&daemon) > before);
    assert_eq!(decide(&daemon, &plc, 1), 202);

    // An operator installs a newer local plan: SIGHUP takes it.
    crate::common::replace_file(
        &daemon.folder().join("plan.csv"),
        plan_csv(3, 303).as_bytes(),
    );
    let before = reloads(&daemon);
    daemon.signal("HUP");
    wait_until("the reload", || reloads(&daemon) > before);
    assert_eq!(decide(&daemon, &plc, 2), 303);
    wait_until("the node to report its local plan", || {
        node_report(&nats, "xb-1") == Some((3, "differs".into()))
    });
}

#[test]
fn a_plan_larger_than_plan_bytes_max_is_refused_before_download() {
    let nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("plan.csv"), plan_csv(1, 101)).expect("plan written");
    let daemon = start_node_in(
        folder,
        "plan.csv",
        "plan_bytes_max = 4096\n",
        &nats.url(),
        &plc,
        hub_dir.path(),
    );
    plc.wait_connected();
    // Version 2 with enough exact entries to pass 4 KiB.
    let big = compiled_big(plans.path(), 400);
    assert!(std::fs::metadata(&big).expect("meta").len() > 4096);
    assert!(publish(&nats, &big, &[]).status.success());
    wait_until("the refusal", || {
        scrape(daemon.metrics_address())
            .value("sortd_hub_plans_refused_total", &[("reason", "too_large")])
            == 1.0
    });
    assert_eq!(decide(&daemon, &plc, 1), 101);
    assert!(!hub_dir.path().join("plan.sortplan").exists());
}

#[test]
fn a_plan_the_node_cannot_write_is_retried_and_taken_once_the_disk_is_writable_again() {
    let nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    // The download's file cannot be created (a directory stands in its place: a write
    // error in the state directory that no permission bit can undo, even for root).
    let part = hub_dir.path().join("plan.sortplan.part");
    std::fs::create_dir(&part).expect("blocking directory");
    std::fs::write(part.join("keep"), b"x").expect("file in it");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_node(&nats.url(), &plc, hub_dir.path(), (1, 101));
    plc.wait_connected();
    let v2 = compiled(plans.path(), 2, 202);
    assert!(publish(&nats, &v2, &[]).status.success());
    let retries = |daemon: &DaemonProcess| {
        scrape(daemon.metrics_address())
            .value("sortd_hub_plan_retries_total", &[("reason", "write")])
    };
    wait_until("failed writes to be retried", || retries(&daemon) >= 3.0);
    assert_eq!(decide(&daemon, &plc, 1), 101, "the old plan keeps sorting");
    let scraped = scrape(daemon.metrics_address());
    assert_eq!(scraped.value("sortd_hub_plans_taken_total", &[]), 0.0);
    assert_eq!(
        scraped.value("sortd_hub_plans_refused_total", &[("reason", "download")]),
        0.0,
        "a disk that cannot be written is not the plan's fault"
    );
    assert_eq!(
        daemon
            .log_lines("cannot take the plan from the hub (not the plan's fault)")
            .len(),
        1,
        "logged once per run of failures"
    );

    // The disk is writable again: the node takes the plan without a restart.
    std::fs::remove_dir_all(&part).expect("unblock");
    wait_taken(&daemon, 2);
    assert_eq!(decide(&daemon, &plc, 2), 202);
    assert_eq!(
        std::fs::read(hub_dir.path().join("plan.sortplan")).expect("kept plan"),
        std::fs::read(&v2).expect("v2")
    );
    assert_eq!(
        scrape(daemon.metrics_address()).value("sortd_hub_sessions_lost_total", &[]),
        0.0,
        "retried within the session"
    );
}

#[test]
fn a_plan_that_does_not_verify_is_downloaded_once_even_across_reconnects() {
    let mut nats = NatsServer::start();
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_node(&nats.url(), &plc, hub_dir.path(), (1, 101));
    plc.wait_connected();
    wait_until("the node to report its plan", || {
        node_report(&nats, "xb-1").is_some()
    });
    put_damaged(&nats, plans.path(), 2, 202);
    let metric =
        |name: &str, labels: &[(&str, &str)]| scrape(daemon.metrics_address()).value(name, labels);
    wait_until("the refusal", || {
        metric("sortd_hub_plans_refused_total", &[("reason", "verify")]) == 1.0
    });
    assert_eq!(metric("sortd_hub_plan_downloads_total", &[]), 1.0);

    // A new session sees the same revision again (the watch starts with the newest one):
    // it is not downloaded again.
    let reports = metric("sortd_hub_status_reports_total", &[]);
    nats.restart();
    wait_until("the node to reconnect and report", || {
        metric("sortd_hub_connections_total", &[]) >= 2.0
            && metric("sortd_hub_status_reports_total", &[]) > reports
    });
    // A good version 3 after it is taken: the watcher went past the bad one.
    let v3 = compiled(plans.path(), 3, 303);
    assert!(publish(&nats, &v3, &[]).status.success());
    wait_taken(&daemon, 3);
    assert_eq!(decide(&daemon, &plc, 1), 303);
    assert_eq!(metric("sortd_hub_plan_downloads_total", &[]), 2.0);
    assert_eq!(
        metric("sortd_hub_plans_refused_total", &[("reason", "verify")]),
        1.0
    );
    assert_eq!(daemon.log_lines("plan from the hub refused").len(), 1);
    assert_eq!(
        metric("sortd_hub_plan_retries_total", &[("reason", "write")]),
        0.0
    );
}

#[test]
fn a_download_cut_off_by_the_broker_is_counted_and_downloaded_again_after_the_reconnect() {
    let nats = NatsServer::start();
    let proxy = crate::common::proxy::Proxy::start(nats.address(), 8);
    let plans = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_node(
        &format!("nats://{}", proxy.address),
        &plc,
        hub_dir.path(),
        (1, 101),
    );
    plc.wait_connected();
    let metric =
        |name: &str, labels: &[(&str, &str)]| scrape(daemon.metrics_address()).value(name, labels);
    wait_until("the node to connect", || {
        metric("sortd_hub_connections_total", &[]) == 1.0
    });
    // Version 2 with enough exact entries to take seconds at 64 KB/s.
    let v2 = compiled_big(plans.path(), 20_000);
    assert!(std::fs::metadata(&v2).expect("meta").len() > 256 * 1024);
    proxy.set(|toxics| toxics.downstream.bytes_per_s = Some(64 * 1024));
    assert!(publish(&nats, &v2, &[]).status.success());
    wait_until("the download to start", || {
        metric("sortd_hub_plan_downloads_total", &[]) == 1.0
    });
    // The broker drops the node mid-download.
    proxy.reset_all();
    proxy.heal();
    wait_taken(&daemon, 2);
    assert_eq!(decide(&daemon, &plc, 1), 202);
    let scraped = scrape(daemon.metrics_address());
    assert_eq!(
        scraped.value("sortd_hub_plan_retries_total", &[("reason", "interrupted")]),
        1.0
    );
    assert_eq!(scraped.value("sortd_hub_plan_downloads_total", &[]), 2.0);
    assert_eq!(scraped.value("sortd_hub_plans_taken_total", &[]), 1.0);
    assert_eq!(
        scraped.value("sortd_hub_plans_refused_total", &[("reason", "download")]),
        0.0
    );
}
