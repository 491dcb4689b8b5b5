//! A hub of three nodes on one nats-server: each node with its own simulated PLC and
//! scanner load, exporting its events and taking the group's pre-advice. Pre-advice
//! published once is resolved by all three; one node is killed with SIGKILL and
//! restarted, the broker is restarted, and `sortd events reconcile` still finds every
//! event once, no gap per sorter, every parcel decided once. A plan published once is
//! taken by all three (under the pre-advice), and the killed node restarts with it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::nats::NatsServer;
use crate::common::{
    BinaryScanner, DaemonProcess, Parcel, ScanLoad, TestPlc, scrape, start_daemon_with_plan,
    wait_until,
};
use crate::hub_preadvice::{hub_config, metric, publish, wait_applied};

const NODES: usize = 3;
/// Each node's load: 4 parcels every 2 ms.
const PAUSE: Duration = Duration::from_millis(2);
const PRE_ADVISED: &str = "YTHUB000000001";

struct Node {
    name: String,
    state: PathBuf,
    plc: TestPlc,
    daemon: Option<DaemonProcess>,
}

impl Node {
    fn start(&mut self, nats: &NatsServer) {
        let links = self.plc.counters.connections.load(Ordering::Relaxed);
        let daemon = start_daemon_with_plan(
            self.plc.address,
            &["protocol = \"binary\""],
            &hub_config(&nats.url(), &self.state, &self.name, true, true),
            &plan_csv(1, 9),
        );
        wait_until("the node's PLC link", || {
            self.plc.counters.connections.load(Ordering::Relaxed) > links
        });
        self.daemon = Some(daemon);
    }

    fn daemon(&self) -> &DaemonProcess {
        self.daemon.as_ref().expect("node running")
    }
}

/// The test plan at `version`, with the load's barcode going to `chute`.
fn plan_csv(version: u32, chute: u16) -> String {
    format!(
        "kind,key,chutes\nmeta,name,hub cluster\nmeta,version,{version}\n\
         exact,YT0000000000002,{chute}\nexact,{PRE_ADVISED},{chute}\nprefix,33,101\n\
         default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n"
    )
}

/// Sends one parcel with `barcode` to `node` from a scanner of its own; its chute.
fn sort_one(node: &Node, scanner_id: u32, parcel_id: u64, barcode: &str) -> u16 {
    let mut scanner = BinaryScanner::connect(node.daemon().scanner_addresses[0], scanner_id);
    scanner.send(&Parcel {
        parcel_id,
        barcodes: vec![barcode],
        destination: None,
    });
    node.plc.recorder.wait_for(scanner_id, parcel_id).chute
}

fn scanner_of(index: usize) -> u32 {
    10 + index as u32
}

fn reconcile(nats: &NatsServer, sorters: &str) -> (bool, Vec<serde_json::Value>) {
    let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["events", "reconcile", "--json", "--nats"])
        .arg(nats.url())
        .args(["--expect-sorters", sorters])
        .output()
        .expect("sortd runs");
    let reports = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (output.status.success(), reports)
}

#[test]
fn three_nodes_take_pre_advice_and_reconcile_exactly_through_kill_9_and_a_broker_restart() {
    let mut nats = NatsServer::start();
    let states = tempfile::tempdir().expect("temp dir");
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|index| Node {
            name: format!("n{}", index + 1),
            state: states.path().join(format!("n{}", index + 1)),
            plc: TestPlc::start(vec![], vec![]),
            daemon: None,
        })
        .collect();
    for node in &mut nodes {
        node.start(&nats);
    }
    let mut loads: Vec<Option<ScanLoad>> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            Some(ScanLoad::start(
                node.daemon().scanner_addresses[0],
                scanner_of(index),
                1,
                4,
                PAUSE,
            ))
        })
        .collect();

    // Pre-advice published once: every node resolves it.
    let seq = publish(
        &nats.url(),
        crate::hub_preadvice::GROUP,
        &format!("{{\"op\":\"add\",\"barcode\":\"{PRE_ADVISED}\",\"chutes\":[55]}}\n"),
    );
    for (index, node) in nodes.iter().enumerate() {
        wait_applied(node.daemon(), seq);
        let chute = sort_one(node, 100 + index as u32, 1, PRE_ADVISED);
        assert_eq!(chute, 55, "{}", node.name);
    }

    // A plan published once: every node swaps to it, under the pre-advice.
    let plan_dir = tempfile::tempdir().expect("temp dir");
    let csv = plan_dir.path().join("v2.csv");
    std::fs::write(&csv, plan_csv(2, 61)).expect("plan written");
    let compiled = plan_dir.path().join("v2.sortplan");
    sortd::plan::compile_file(&csv, &compiled).expect("plan compiles");
    let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(["plan", "publish"])
        .arg(&compiled)
        .args([
            "--nats",
            &nats.url(),
            "--group",
            crate::hub_preadvice::GROUP,
        ])
        .output()
        .expect("sortd runs");
    assert!(output.status.success(), "{output:?}");
    for (index, node) in nodes.iter().enumerate() {
        let daemon = node.daemon();
        wait_until(&format!("{} to swap to version 2", node.name), || {
            metric(daemon, "sortd_plan_version") == 2.0
        });
        let scanner_id = 100 + index as u32;
        assert_eq!(sort_one(node, scanner_id, 2, "YT0000000000002"), 61);
        assert_eq!(sort_one(node, scanner_id, 3, PRE_ADVISED), 55);
    }

    // kill -9 one node mid-load, restart the broker while it is down, restart the node.
    wait_until("load on every node", || {
        nodes.iter().all(|node| node.plc.recorder.count() > 200)
    });
    let killed = 1;
    drop(nodes[killed].daemon.take()); // SIGKILL
    let sent_before = loads[killed].take().expect("load").finish();
    nats.restart();
    nodes[killed].start(&nats);
    // The restarted node has the batch from its log and does not apply it again.
    let daemon = nodes[killed].daemon();
    wait_until("the restarted node's subscriber", || {
        metric(daemon, "sortd_hub_preadvice_connections_total") >= 1.0
    });
    assert_eq!(metric(daemon, "sortd_hub_preadvice_last_seq"), seq as f64);
    assert_eq!(metric(daemon, "sortd_hub_preadvice_batches_total"), 0.0);
    // It starts with the plan it took from the hub (from disk, before NATS answers).
    assert_eq!(metric(daemon, "sortd_plan_version"), 2.0);
    loads[killed] = Some(ScanLoad::start(
        nodes[killed].daemon().scanner_addresses[0],
        scanner_of(killed),
        sent_before + 1_000,
        4,
        PAUSE,
    ));
    wait_until("load after the restarts", || {
        nodes.iter().all(|node| node.plc.recorder.count() > 600)
    });
    for load in &mut loads {
        load.take().expect("load").finish();
    }
    for (index, node) in nodes.iter().enumerate() {
        let applied = if index == killed { 0.0 } else { 1.0 };
        assert_eq!(
            metric(node.daemon(), "sortd_hub_preadvice_batches_total"),
            applied,
            "{}",
            node.name
        );
    }

    // Every node's journal reaches the stream; then stop them (outcomes included).
    for node in &nodes {
        let daemon = node.daemon();
        wait_until(&format!("{} exported", node.name), || {
            let scrape = scrape(daemon.metrics_address());
            scrape.get("sortd_export_lag_events", &[]) == Some(0.0)
                && scrape.value("sortd_export_state", &[("state", "live")]) == 1.0
        });
    }
    for node in &mut nodes {
        let (code, _) = node.daemon.take().expect("running").terminate();
        assert_eq!(code, Some(0), "{}", node.name);
    }

    let (exact, reports) = reconcile(&nats, "n1,n2,n3");
    assert!(exact, "{reports:#?}");
    assert_eq!(reports.len(), NODES);
    for (node, report) in nodes.iter().zip(&reports) {
        assert_eq!(report["sorter"], node.name.as_str());
        assert_eq!(report["gap_events"], 0);
        assert_eq!(report["duplicate_events"], 0);
        assert_eq!(report["parcels_decided_more"], 0);
        assert_eq!(
            report["first_event_id"],
            format!("{}:1", node.name).as_str()
        );
        // Every parcel the PLC received a SORT for is in the stream (and more: those
        // the killed node decided before its SORT left).
        let sorted = {
            let sorts = node.plc.recorder.sorts.lock().expect("recorder");
            let mut keys: Vec<(u32, u64)> = sorts
                .iter()
                .map(|sort| (sort.scanner_id, sort.parcel_id))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len() as u64
        };
        let parcels = report["parcels"].as_u64().expect("parcels");
        assert!(parcels >= sorted, "{}: {parcels} < {sorted}", node.name);
    }
}
