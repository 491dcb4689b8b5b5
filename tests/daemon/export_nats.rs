//! The sort-event exporter against a real nats-server over real sockets: every record
//! reaches the stream exactly once, in order, with no gap, across exporter restarts,
//! broker restarts, a cut link longer than the duplicate window and a broker that is
//! not there at start; and with credentials and TLS. The source is an in-memory stand-in
//! for the journal; NATS is always the real server (`tests/common/nats.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::nats::{NatsServer, free_port};
use crate::common::proxy::Proxy;
use crate::common::wait_until;
use sortd::export::config::STREAM_NAME_DEFAULT;
use sortd::export::exporter::{HEADER_FIRST_SEQ, HEADER_LAST_SEQ, HEADER_RECORDS, message_id};
use sortd::export::{
    ExportCounters, ExportErrorKind, ExportSection, ExportSettings, Exporter, MemoryCursor,
    MemoryLog,
};

const SUBJECT: &str = "sortd.events.test.s1";
const RECORD_BYTES: usize = 64;

/// A record as the stand-in journal holds it: length, sequence, filler.
fn record(seq: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_BYTES);
    record.extend_from_slice(&((RECORD_BYTES - 4) as u32).to_le_bytes());
    record.extend_from_slice(&seq.to_le_bytes());
    record.resize(RECORD_BYTES, (seq % 251) as u8);
    record
}

fn append(log: &MemoryLog, count: u64) {
    for _ in 0..count {
        let seq = log.last_seq() + 1;
        assert_eq!(log.append(&record(seq)), seq);
    }
}

/// Appends `per_tick` records every millisecond until stopped, like a sorter at work.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(log: &MemoryLog, per_tick: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (log.clone(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                append(&log, per_tick);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("writer thread");
        }
    }
}

fn section(url: &str) -> ExportSection {
    ExportSection {
        enabled: true,
        urls: vec![url.into()],
        hub: "test".into(),
        sorter: "s1".into(),
        message_records_max: 100,
        publish_window_max: 8,
        ack_timeout_ms: 1_000,
        connect_timeout_ms: 1_000,
        reconnect_backoff_min_ms: 20,
        reconnect_backoff_max_ms: 200,
        ..ExportSection::default()
    }
}

fn settings(section: ExportSection) -> ExportSettings {
    section.validate().expect("valid").expect("enabled")
}

fn start(settings: ExportSettings, log: &MemoryLog, cursor: &MemoryCursor) -> Exporter {
    // The exporter's log lines show in a failing test's output (RUST_LOG=... for more).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sortd=info".into()),
        )
        .with_test_writer()
        .try_init();
    Exporter::start(
        settings,
        log.source(),
        cursor.clone(),
        Arc::new(ExportCounters::default()),
    )
    .expect("exporter starts")
}

fn wait_acked(exporter: &Exporter, seq: u64) {
    let counters = exporter.counters();
    wait_until(&format!("the stream to acknowledge event {seq}"), || {
        counters.acked_seq.load(Ordering::Relaxed) >= seq
    });
}

/// One message of the subject as a consumer sees it.
pub(crate) struct Stored {
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) records: u64,
    pub(crate) msg_id: String,
    pub(crate) payload: Vec<u8>,
}

/// Every message on `subject`, in stream order, read by direct gets.
pub(crate) fn read_subject(url: &str, subject: &str) -> Vec<Stored> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("consumer connects");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(STREAM_NAME_DEFAULT).await.expect("stream");
        let last = stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let mut stored = Vec::new();
        for seq in 1..=last {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            if message.subject.as_str() != subject {
                continue;
            }
            let header = |name: &str| -> u64 {
                message
                    .headers
                    .get(name)
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or_else(|| panic!("message {seq} lacks {name}"))
            };
            stored.push(Stored {
                first_seq: header(HEADER_FIRST_SEQ),
                last_seq: header(HEADER_LAST_SEQ),
                records: header(HEADER_RECORDS),
                msg_id: message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                payload: message.payload.to_vec(),
            });
        }
        stored
    })
}

/// The subject holds events 1..=n, each exactly once, in order, and every message's
/// headers describe its payload.
fn assert_exactly_once(url: &str, n: u64) {
    let messages = read_subject(url, SUBJECT);
    let mut next = 1u64;
    for message in &messages {
        assert_eq!(message.payload.len() % RECORD_BYTES, 0);
        let seqs: Vec<u64> = message
            .payload
            .chunks(RECORD_BYTES)
            .map(|r| u64::from_le_bytes(r[4..12].try_into().expect("8 bytes")))
            .collect();
        assert_eq!(
            message.first_seq, next,
            "gap or duplicate: expected a message starting at {next}, got {}..={}",
            message.first_seq, message.last_seq
        );
        let expected: Vec<u64> = (message.first_seq..=message.last_seq).collect();
        assert_eq!(seqs, expected, "payload matches the headers");
        assert_eq!(message.records, seqs.len() as u64);
        assert_eq!(
            message.msg_id,
            message_id("s1", message.first_seq, message.last_seq)
        );
        next = message.last_seq + 1;
    }
    assert_eq!(next - 1, n, "every event up to {n} is in the stream");
}

/// Stops the writer, lets the exporter catch up, stops it and checks the stream.
fn finish(
    writer: Writer,
    exporter: Exporter,
    log: &MemoryLog,
    server: &NatsServer,
) -> Arc<ExportCounters> {
    writer.stop();
    let n = log.last_seq();
    wait_acked(&exporter, n);
    let counters = Arc::clone(exporter.counters());
    drop(exporter);
    assert_exactly_once(&server.url(), n);
    counters
}

#[test]
fn every_record_reaches_the_stream_once_in_order_in_many_events_per_message() {
    let server = NatsServer::start();
    let log = MemoryLog::new();
    append(&log, 3_000);
    let cursor = MemoryCursor::default();
    let exporter = start(settings(section(&server.url())), &log, &cursor);
    wait_acked(&exporter, 3_000);
    append(&log, 2_345); // live events after the catch-up
    wait_acked(&exporter, 5_345);
    let counters = Arc::clone(exporter.counters());
    exporter.stop();
    assert_exactly_once(&server.url(), 5_345);
    assert_eq!(cursor.get(), 5_345, "the cursor is stored on stop");
    assert_eq!(counters.events_exported.load(Ordering::Relaxed), 5_345);
    assert!(counters.messages_acked.load(Ordering::Relaxed) >= 54);
    assert_eq!(counters.lag_events(), 0);
}

#[test]
fn an_exporter_restarted_mid_stream_without_its_cursor_neither_doubles_nor_skips() {
    let server = NatsServer::start();
    let log = MemoryLog::new();
    let writer = Writer::start(&log, 20);
    for round in 1..=3u64 {
        // A fresh cursor each time: the stream, not the local cursor, says where to go on.
        let exporter = start(
            settings(section(&server.url())),
            &log,
            &MemoryCursor::default(),
        );
        wait_acked(&exporter, round * 1_000);
        drop(exporter);
    }
    writer.stop();
    let n = log.last_seq();
    let exporter = start(
        settings(section(&server.url())),
        &log,
        &MemoryCursor::default(),
    );
    wait_acked(&exporter, n);
    drop(exporter);
    assert_exactly_once(&server.url(), n);
}

#[test]
fn a_broker_killed_and_restarted_mid_stream_gets_every_event_exactly_once() {
    let mut server = NatsServer::start();
    let log = MemoryLog::new();
    let writer = Writer::start(&log, 20);
    let exporter = start(
        settings(section(&server.url())),
        &log,
        &MemoryCursor::default(),
    );
    wait_acked(&exporter, 1_000);
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    wait_acked(&exporter, log.last_seq() + 500);
    let counters = finish(writer, exporter, &log, &server);
    assert!(counters.connections.load(Ordering::Relaxed) >= 2);
}

#[test]
fn a_link_cut_longer_than_the_duplicate_window_neither_doubles_nor_skips() {
    let server = NatsServer::start();
    let proxy = Proxy::start(server.address(), 16);
    let mut section = section(&format!("nats://{}", proxy.address));
    section.duplicate_window_ms = 1_000;
    section.stream_max_age_s = 0;
    section.ack_timeout_ms = 500;
    let log = MemoryLog::new();
    let writer = Writer::start(&log, 20);
    let exporter = start(settings(section), &log, &MemoryCursor::default());
    for acks_lost in [true, false] {
        wait_acked(&exporter, log.last_seq() + 1_000);
        let connections = exporter.counters().connections.load(Ordering::Relaxed);
        // First the broker stores what arrives but its acknowledgements are lost (the
        // stream holds batches the exporter thinks may be missing), then the messages
        // are lost on the way (the exporter must publish them again). No new connection
        // gets through for longer than the duplicate window.
        proxy.set(|t| {
            if acks_lost {
                t.downstream.blackhole = true;
            } else {
                t.upstream.blackhole = true;
            }
            t.refuse_new = true;
        });
        std::thread::sleep(Duration::from_millis(1_600));
        proxy.reset_all();
        proxy.heal();
        wait_until("a reconnect after the cut", || {
            exporter.counters().connections.load(Ordering::Relaxed) > connections
        });
    }
    let counters = finish(writer, exporter, &log, &server);
    assert!(
        counters.errors(ExportErrorKind::AckTimeout)
            + counters.errors(ExportErrorKind::Disconnected)
            >= 2
    );
}

#[test]
fn a_broker_absent_at_start_is_retried_and_caught_up_with_when_it_comes() {
    let port = free_port();
    let log = MemoryLog::new();
    append(&log, 2_000);
    let exporter = start(
        settings(section(&format!("nats://127.0.0.1:{port}"))),
        &log,
        &MemoryCursor::default(),
    );
    wait_until("a few failed connection attempts", || {
        exporter.counters().errors(ExportErrorKind::Connect) >= 3
    });
    assert_eq!(exporter.counters().lag_events(), 2_000);
    let server = NatsServer::start_on(port, None);
    wait_acked(&exporter, 2_000);
    drop(exporter);
    assert_exactly_once(&server.url(), 2_000);
}

#[test]
fn a_broker_that_requires_a_password_gets_it_from_a_file_and_refuses_a_wrong_one() {
    let server = NatsServer::start_with_config(
        "authorization {\n  user: sortd\n  password: \"s3cret-pass\"\n}\n",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("nats-password");
    std::fs::write(&password_file, "wrong\n").expect("write password");
    let mut with_password = section(&server.url());
    with_password.auth.user = Some("sortd".into());
    with_password.auth.password_file = Some(password_file.clone());
    let log = MemoryLog::new();
    append(&log, 500);
    let exporter = start(settings(with_password), &log, &MemoryCursor::default());
    wait_until("refused connection attempts", || {
        exporter.counters().errors(ExportErrorKind::Connect) >= 2
    });
    assert_eq!(exporter.counters().acked_seq.load(Ordering::Relaxed), 0);
    // Rotating the secret is replacing the file: the next attempt reads it.
    std::fs::write(&password_file, "s3cret-pass\n").expect("write password");
    wait_acked(&exporter, 500);
}

/// A CA, and a server certificate for `names` signed by it, as PEM files in `dir`.
pub(crate) fn make_certificates(
    dir: &std::path::Path,
    names: &[&str],
) -> (std::path::PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let server_params = CertificateParams::new(names).expect("server params");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write cert");
    std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).expect("write key");
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        dir.join("server.pem").display(),
        dir.join("server-key.pem").display()
    );
    (ca_file, config)
}

#[test]
fn tls_with_a_ca_file_exports_and_a_certificate_for_another_name_is_refused() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (ca_file, tls_config) = make_certificates(certs.path(), &["127.0.0.1", "localhost"]);
    let server = NatsServer::start_with_config(&tls_config);
    let mut tls = section(&format!("tls://127.0.0.1:{}", server.port));
    tls.tls.ca_file = Some(ca_file);
    let log = MemoryLog::new();
    append(&log, 300);
    let exporter = start(settings(tls), &log, &MemoryCursor::default());
    wait_acked(&exporter, 300);
    drop(exporter);

    // Same CA, but the server's certificate names another host: refused.
    let other = tempfile::tempdir().expect("temp dir");
    let (ca_file, tls_config) = make_certificates(other.path(), &["nats.other.example"]);
    let server = NatsServer::start_with_config(&tls_config);
    let mut tls = section(&format!("tls://127.0.0.1:{}", server.port));
    tls.tls.ca_file = Some(ca_file);
    let exporter = start(settings(tls), &log, &MemoryCursor::default());
    wait_until("refused TLS handshakes", || {
        exporter.counters().errors(ExportErrorKind::Connect) >= 2
    });
    assert_eq!(exporter.counters().acked_seq.load(Ordering::Relaxed), 0);
}

#[test]
fn the_daemon_warns_at_start_when_its_configuration_holds_a_nats_password_others_can_read() {
    let plc = crate::common::TestPlc::start(vec![], vec![]);
    let daemon = crate::common::start_daemon(
        plc.address,
        &["protocol = \"binary\""],
        "[export]\nenabled = true\n[export.auth]\nuser = \"sortd\"\npassword = \"inline\"\n",
    );
    // The test's configuration file is written with the default umask (0644).
    wait_until("the secret warning", || {
        !daemon
            .log_lines("holds a NATS secret inline and is readable")
            .is_empty()
    });
    assert!(
        daemon.log_lines("inline\"").is_empty(),
        "the secret is never logged"
    );
}

/// Events per second into JetStream through the exporter, against a plain core-NATS
/// publish of the same batches (same bytes, same message count) in the same run.
/// Run: `cargo test --release --test export_nats measure -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_export_rate_against_core_nats_publish() {
    const EVENTS: u64 = 1_000_000;
    let server = NatsServer::start();
    let log = MemoryLog::new();
    append(&log, EVENTS);
    let section = ExportSection {
        message_records_max: 4096,
        publish_window_max: 32,
        ..section(&server.url())
    };
    let records_per_message = section.message_records_max as u64;

    // Baseline: the same payloads, published on a subject no stream holds, then flushed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let payload = bytes::Bytes::from(
        (1..=records_per_message)
            .flat_map(record)
            .collect::<Vec<u8>>(),
    );
    let messages = EVENTS / records_per_message;
    let core_s = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let started = std::time::Instant::now();
        for _ in 0..messages {
            client
                .publish("bench.core", payload.clone())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
        started.elapsed().as_secs_f64()
    });
    let core_rate = (messages * records_per_message) as f64 / core_s;

    let started = std::time::Instant::now();
    let exporter = start(settings(section), &log, &MemoryCursor::default());
    wait_acked(&exporter, EVENTS);
    let export_s = started.elapsed().as_secs_f64();
    drop(exporter);
    let export_rate = EVENTS as f64 / export_s;
    println!(
        "export into JetStream (file store, connect included): {EVENTS} events of \
         {RECORD_BYTES} B in {export_s:.3} s = {export_rate:.0} events/s; core NATS publish \
         of the same batches: {core_rate:.0} events/s; ratio {:.2}",
        export_rate / core_rate
    );
}

#[test]
fn a_broker_that_knows_only_an_nkey_accepts_the_seed_from_a_file() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
        user.public_key()
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let seed_file = dir.path().join("sortd.nk");
    std::fs::write(&seed_file, user.seed().expect("seed") + "\n").expect("write seed");
    let mut with_nkey = section(&server.url());
    with_nkey.auth.nkey_seed_file = Some(seed_file);
    let log = MemoryLog::new();
    append(&log, 200);
    let exporter = start(settings(with_nkey), &log, &MemoryCursor::default());
    wait_acked(&exporter, 200);
}

#[test]
fn a_message_on_the_subject_that_sortd_did_not_write_stops_the_export_instead_of_a_guess() {
    let server = NatsServer::start();
    let log = MemoryLog::new();
    append(&log, 100);
    let exporter = start(
        settings(section(&server.url())),
        &log,
        &MemoryCursor::default(),
    );
    wait_acked(&exporter, 100);
    drop(exporter);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let js = async_nats::jetstream::new(client);
        js.publish(SUBJECT, "not a sortd batch".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    });
    append(&log, 100);
    let exporter = start(
        settings(section(&server.url())),
        &log,
        &MemoryCursor::default(),
    );
    wait_until("the foreign message to be reported", || {
        exporter.counters().errors(ExportErrorKind::ForeignMessage) >= 2
    });
    assert_eq!(exporter.counters().acked_seq.load(Ordering::Relaxed), 0);
}
