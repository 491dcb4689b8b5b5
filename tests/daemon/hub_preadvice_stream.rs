//! The pre-advice stream changing under a node (a real nats-server): a stream deleted and
//! created anew (found at start with no record of the old one, and while the node runs)
//! resets the node's pre-advice and is read from sequence 1; batches that left the
//! stream unread (removed by its limits, or purged) are reported as a gap and what was
//! applied is kept. Each is counted in `sortd_hub_preadvice_stream_anomalies_total`.

use std::path::PathBuf;

use async_nats::jetstream;
use sortd::export::hub_config::PREADVICE_STREAM_DEFAULT;
use sortd::export::preadvice_sub::{STREAM_ID_FILE, stream_config};

use crate::common::nats::NatsServer;
use crate::common::{TestPlc, scrape, wait_until};
use crate::hub_preadvice::{GROUP, metric, publish, sort_one, start_node, wait_applied};

fn add(barcode: &str, chute: u16) -> String {
    format!("{{\"op\":\"add\",\"barcode\":\"{barcode}\",\"chutes\":[{chute}]}}\n")
}

/// Runs `work` against the server's JetStream on a runtime of its own.
fn with_js<F, T>(nats: &NatsServer, work: impl FnOnce(jetstream::Context) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.expect("connects");
        let result = work(jetstream::new(client.clone())).await;
        client.flush().await.expect("flushed");
        result
    })
}

fn delete_stream(nats: &NatsServer) {
    with_js(nats, |js| async move {
        js.delete_stream(PREADVICE_STREAM_DEFAULT)
            .await
            .expect("stream deleted");
    });
}

fn anomalies(daemon: &crate::common::DaemonProcess, reason: &str) -> f64 {
    scrape(daemon.metrics_address())
        .get(
            "sortd_hub_preadvice_stream_anomalies_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
}

#[test]
fn a_stream_created_anew_resets_the_node_and_is_read_from_the_start() {
    let nats = NatsServer::start();
    let plc = TestPlc::start(vec![], vec![]);
    let state_dir = tempfile::tempdir().expect("temp dir");
    let state: PathBuf = state_dir.path().to_path_buf();
    publish(&nats.url(), GROUP, &add("PADVA", 41));
    let second = publish(&nats.url(), GROUP, &add("PADVB", 42));
    let node = start_node(&plc, &nats, &state);
    plc.wait_connected();
    wait_applied(&node, second);
    assert_eq!(sort_one(&node, &plc, 1, "PADVA"), 41);
    let (code, _) = node.terminate();
    assert_eq!(code, Some(0));

    // A log with no record of its stream (as sortd kept before) meets a stream whose
    // sequence is below the log's: the stream was created anew.
    std::fs::remove_file(state.join("preadvice").join(STREAM_ID_FILE)).expect("record removed");
    delete_stream(&nats);
    let first_anew = publish(&nats.url(), GROUP, &add("PADVC", 43));
    assert_eq!(first_anew, 1);
    let node = start_node(&plc, &nats, &state);
    wait_until("the rewound stream to be found", || {
        anomalies(&node, "rewound") == 1.0
    });
    wait_applied(&node, 1);
    assert_eq!(sort_one(&node, &plc, 2, "PADVA"), 999);
    assert_eq!(sort_one(&node, &plc, 3, "PADVC"), 43);
    assert_eq!(metric(&node, "sortd_hub_preadvice_last_seq"), 1.0);
    assert_eq!(node.log_lines("pre-advice reset").len(), 1);

    // Deleted and created anew while the node runs: the session breaks, and the next
    // one finds a stream created at another time.
    delete_stream(&nats);
    publish(&nats.url(), GROUP, &add("PADVD", 44));
    wait_until("the recreated stream to be found and read", || {
        anomalies(&node, "recreated") == 1.0
            && metric(&node, "sortd_hub_preadvice_batches_total") >= 2.0
    });
    assert_eq!(sort_one(&node, &plc, 4, "PADVC"), 999);
    assert_eq!(sort_one(&node, &plc, 5, "PADVD"), 44);
    assert_eq!(anomalies(&node, "gap"), 0.0);
    let (code, _) = node.terminate();
    assert_eq!(code, Some(0));

    // A restart replays only the new stream's batch, and finds nothing wrong.
    let node = start_node(&plc, &nats, &state);
    wait_until("the subscriber to connect", || {
        metric(&node, "sortd_hub_preadvice_connections_total") >= 1.0
    });
    assert_eq!(sort_one(&node, &plc, 6, "PADVD"), 44);
    assert_eq!(sort_one(&node, &plc, 7, "PADVA"), 999);
    for reason in ["recreated", "rewound", "gap"] {
        assert_eq!(anomalies(&node, reason), 0.0, "{reason}");
    }
}

#[test]
fn batches_gone_unread_are_reported_and_what_was_applied_is_kept() {
    let nats = NatsServer::start();
    // The stream keeps two messages: older ones leave it by its limits.
    with_js(&nats, |js| async move {
        let mut config = stream_config(PREADVICE_STREAM_DEFAULT);
        config.max_messages = 2;
        js.create_stream(config).await.expect("stream created");
    });
    let plc = TestPlc::start(vec![], vec![]);
    let state_dir = tempfile::tempdir().expect("temp dir");
    let state: PathBuf = state_dir.path().to_path_buf();
    let first = publish(&nats.url(), GROUP, &add("PADVA", 41));
    let node = start_node(&plc, &nats, &state);
    plc.wait_connected();
    wait_applied(&node, first);
    let (code, _) = node.terminate();
    assert_eq!(code, Some(0));

    // Three batches while the node is down: the first of them leaves the stream unread.
    let gone = publish(&nats.url(), GROUP, &add("PADVB", 42));
    publish(&nats.url(), GROUP, &add("PADVC", 43));
    let last = publish(&nats.url(), GROUP, &add("PADVD", 44));
    let node = start_node(&plc, &nats, &state);
    wait_applied(&node, last);
    assert_eq!(anomalies(&node, "gap"), 1.0);
    assert_eq!(
        metric(&node, "sortd_hub_preadvice_gap_sequences_total"),
        1.0
    );
    let warned = node.log_lines("aged out or purged");
    assert_eq!(warned.len(), 1);
    assert_eq!(
        crate::common::field(&warned[0], "first_missing_seq"),
        Some(gone.to_string())
    );
    assert_eq!(sort_one(&node, &plc, 1, "PADVA"), 41);
    assert_eq!(sort_one(&node, &plc, 2, "PADVB"), 999);
    assert_eq!(sort_one(&node, &plc, 3, "PADVD"), 44);
    let (code, _) = node.terminate();
    assert_eq!(code, Some(0));

    // Purged while the node is down, with a batch it never read.
    let purged = publish(&nats.url(), GROUP, &add("PADVE", 45));
    with_js(&nats, |js| async move {
        js.get_stream(PREADVICE_STREAM_DEFAULT)
            .await
            .expect("stream")
            .purge()
            .await
            .expect("purged");
    });
    let after = publish(&nats.url(), GROUP, &add("PADVF", 46));
    let node = start_node(&plc, &nats, &state);
    wait_applied(&node, after);
    assert_eq!(anomalies(&node, "gap"), 1.0);
    assert_eq!(anomalies(&node, "recreated"), 0.0);
    let warned = node.log_lines("aged out or purged");
    assert_eq!(
        crate::common::field(&warned[0], "first_missing_seq"),
        Some(purged.to_string())
    );
    assert_eq!(sort_one(&node, &plc, 4, "PADVE"), 999);
    assert_eq!(sort_one(&node, &plc, 5, "PADVF"), 46);
    assert_eq!(sort_one(&node, &plc, 6, "PADVA"), 41);
}
