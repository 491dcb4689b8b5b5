//! The web endpoint against real clients: Prometheus' `promtool` on a live scrape, the
//! operator page in a real headless Chromium while the daemon sorts under load with a
//! chute made full by the PLC, and a scrape over TLS with basic auth (certificate made
//! here). Chromium and promtool are installed by `.ci/run`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{
    BinaryScanner, PATIENCE, Parcel, TestPlc, http_exchange, start_daemon, start_daemon_in,
    wait_until,
};
use sortd::plc::ChuteState;
use sortd::sim::plc::ChuteEvent;

/// Scanners sending parcels until stopped: one well-behaved, one that also sends garbage.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(address: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [(61u32, false), (62u32, true)]
            .into_iter()
            .map(|(scanner_id, garbage)| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut scanner = BinaryScanner::connect(address, scanner_id);
                    let mut parcel_id = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        for _ in 0..5 {
                            parcel_id += 1;
                            // Prefix 33 (chutes 101, then 102); every tenth is a no-read.
                            let destination = (parcel_id % 10 != 0).then_some("3302");
                            scanner.send(&Parcel {
                                parcel_id,
                                barcodes: vec![],
                                destination,
                            });
                        }
                        if garbage && parcel_id % 100 == 0 {
                            scanner.send_raw(&[b'x'; 64]);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn status_json(address: SocketAddr) -> serde_json::Value {
    let (status, body) =
        http_exchange(address, b"GET /status.json HTTP/1.1\r\nHost: sortd\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"))
}

fn chute(status: &serde_json::Value, number: u64) -> Option<&serde_json::Value> {
    status["chutes"]
        .as_array()?
        .iter()
        .find(|chute| chute["chute"].as_u64() == Some(number))
}

#[test]
fn promtool_accepts_a_live_scrape_in_the_default_format() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon(plc.address, &["protocol = \"binary\""], "");
    let metrics = daemon.metrics_address();
    plc.wait_connected();
    let load = Load::start(daemon.scanner_addresses[0]);
    wait_until("decisions to be counted", || {
        let (_, body) = http_exchange(metrics, b"GET /metrics HTTP/1.1\r\n\r\n");
        body.contains("sortd_decision_latency_seconds_count") && !body.contains("_count 0\n")
    });
    drop(load);
    let (status, body) = http_exchange(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (installed by .ci/run: apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("scrape piped");
    let output = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{body}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs headless Chromium on `url` with `arguments` (a dump or a screenshot).
fn chromium(url: &str, arguments: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(arguments)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .expect("chromium runs (installed by .ci/run: apt-get install chromium)");
    let output = child.wait_with_output().expect("chromium finishes");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The opening tag of the first element whose opening tag contains `needle`.
fn tag_with<'a>(dom: &'a str, needle: &str) -> Option<&'a str> {
    let at = dom.find(needle)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

fn attribute(tag: &str, name: &str) -> Option<f64> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    tag[start..].split('"').next()?.parse().ok()
}

fn artefact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn the_operator_page_shows_a_chute_the_plc_made_full_and_live_rates_in_chromium() {
    // The PLC reports chute 101 full as soon as the link is up; 33-prefixed parcels then
    // go to their alternate, 102.
    let plc = TestPlc::start(
        vec![],
        vec![ChuteEvent {
            at: Duration::ZERO,
            chute: 101,
            state: ChuteState::Full,
        }],
    );
    let journal = tempfile::tempdir().expect("temp dir");
    let events = format!(
        "[events]\nenabled = true\ndir = \"{}\"\nhub_id = \"hub1\"\nsorter_id = \"sorter1\"\n",
        journal.path().join("journal").display()
    );
    let daemon = start_daemon(plc.address, &["protocol = \"binary\""], &events);
    let web = daemon.metrics_address();
    plc.wait_connected();
    // Load only once the full chute is known, so no parcel goes to 101 at all.
    wait_until("the PLC's report of chute 101 full", || {
        chute(&status_json(web), 101).is_some_and(|c| c["state"] == "full")
    });
    let _load = Load::start(daemon.scanner_addresses[0]);

    // The snapshot first, over plain HTTP: the page shows what it says.
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        let status = status_json(web);
        let scanners = status["scanners"].as_array().cloned().unwrap_or_default();
        if chute(&status, 101).is_some_and(|c| c["state"] == "full")
            && chute(&status, 102).is_some_and(|c| c["per_min"].as_f64() > Some(0.0))
            && status["decided_per_s"].as_f64() > Some(0.0)
            && scanners.len() == 2
            && scanners.iter().any(|s| s["bad_inputs"].as_u64() > Some(0))
            && status["plc"]["last_ack_age_ms"].is_u64()
            && status["journal"]["events"].as_u64() > Some(0)
            && status["journal"]["last_fsync_age_ms"].is_u64()
        {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for chute 101 full, rates and both scanners: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["plc"]["link_up"], true);
    assert_eq!(status["plan"]["name"], "integration test plan");
    assert!(status["plan"]["since_unix_ms"].as_u64() > Some(0));
    let lost = status["journal"]["lost"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !lost.is_empty() && lost.iter().all(|loss| loss["total"] == 0),
        "{lost:?}"
    );
    assert!(status["journal"]["bytes"].as_u64() > Some(0));
    assert!(status["journal"]["export"].is_null(), "export is off");
    let reason = |name: &str| {
        status["reasons"]
            .as_array()
            .and_then(|reasons| reasons.iter().find(|r| r["reason"] == name))
            .and_then(|r| r["per_s"].as_f64())
            .unwrap_or_default()
    };
    assert!(reason("sorted_alternate") > 0.0 && reason("no_read") > 0.0);
    assert_eq!(reason("sorted_primary"), 0.0, "chute 101 is full");
    assert_eq!(
        chute(&status, 101).map(|c| c["total"].clone()),
        Some(0.into())
    );

    let url = format!("http://{web}/");
    let dom = chromium(&url, &["--dump-dom"]);
    let full =
        tag_with(&dom, "data-chute=\"101\"").unwrap_or_else(|| panic!("no chute 101: {dom}"));
    assert!(full.contains("data-state=\"full\""), "{full}");
    let alternate = tag_with(&dom, "data-chute=\"102\"").expect("chute 102 shown");
    assert!(
        alternate.contains("data-state=\"available\""),
        "{alternate}"
    );
    assert!(attribute(alternate, "data-rate") > Some(0.0), "{alternate}");
    let decided = tag_with(&dom, "id=\"decided-rate\"").expect("the rate is shown");
    assert!(attribute(decided, "data-value") > Some(0.0), "{decided}");
    let scanner = tag_with(&dom, "data-scanner=\"61\"").expect("scanner 61 shown");
    assert!(attribute(scanner, "data-rate") > Some(0.0), "{scanner}");
    assert!(tag_with(&dom, "data-scanner=\"62\"").is_some(), "{dom}");
    assert!(
        tag_with(&dom, "id=\"link\"").is_some_and(|tag| tag.contains("data-state=\"up\"")),
        "{dom}"
    );
    assert!(dom.contains("Event journal and export lag"));
    let journaled = tag_with(&dom, "id=\"journal-events\"").expect("the journal is shown");
    assert!(
        attribute(journaled, "data-value") > Some(0.0),
        "{journaled}"
    );
    assert!(
        tag_with(&dom, "id=\"export-state\"").is_some_and(|tag| tag.contains("data-state=\"off\"")),
        "{dom}"
    );

    for (name, size) in [
        ("operator-page-1366x768.png", "1366,768"),
        ("operator-page-phone-390x844.png", "390,844"),
    ] {
        let path = artefact(name);
        let _ = std::fs::remove_file(&path);
        chromium(
            &url,
            &[
                &format!("--screenshot={}", path.display()),
                &format!("--window-size={size}"),
            ],
        );
        let png = std::fs::read(&path).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}");
    }
}

/// `sortd_web_refusals_total{cause}` in a classic-format scrape.
fn refusals(scrape: &str, cause: &str) -> u64 {
    let prefix = format!("sortd_web_refusals_total{{cause=\"{cause}\"}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in {scrape}"))
}

#[test]
fn connections_beyond_the_limit_are_closed_and_silent_ones_time_out() {
    let plc = TestPlc::start(vec![], vec![]);
    let daemon = start_daemon(plc.address, &["protocol = \"binary\""], "");
    let web = daemon.metrics_address();
    let connections_max = sortd::web::server::CONNECTIONS_MAX;
    let mut silent: Vec<TcpStream> = (0..=connections_max)
        .map(|_| TcpStream::connect(web).expect("connects"))
        .collect();
    for stream in &mut silent {
        assert!(
            crate::common::closed_by_peer(stream),
            "a silent client is kept"
        );
    }
    let (status, body) = http_exchange(web, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    // Each silent client was either refused at the limit or dropped at the time limit.
    let (limit, timeout) = (refusals(&body, "limit"), refusals(&body, "timeout"));
    assert!(limit >= 1, "{body}");
    assert_eq!(limit + timeout, connections_max as u64 + 1, "{body}");
}

// ---------------------------------------------------------------------------------------
// TLS and basic auth.

/// A rustls client that trusts `ca_pem` only.
fn tls_client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.expect("PEM")).expect("root added");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// `GET path` over TLS with optional credentials; the status code and body.
fn https_get(
    address: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    path: &str,
    credentials: Option<(&str, &str)>,
) -> (u16, String) {
    use base64::Engine;
    let server_name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(client.clone(), server_name).expect("client");
    let socket = TcpStream::connect(address).expect("connects");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some((user, password)) = credentials {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(error) => panic!("TLS read failed: {error}"),
    }
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    (status, body.to_string())
}

fn web_config_folder(password: &str) -> (tempfile::TempDir, String) {
    let folder = tempfile::tempdir().expect("temp dir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("certificate made");
    let ca_pem = certified.cert.pem();
    std::fs::write(folder.path().join("web.crt"), &ca_pem).expect("cert written");
    std::fs::write(
        folder.path().join("web.key"),
        certified.signing_key.serialize_pem(),
    )
    .expect("key written");
    // Cost 4 keeps the test quick; sites use 10 or more.
    let hash = bcrypt::hash(password, 4).expect("hashed");
    std::fs::write(
        folder.path().join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: web.crt\n  key_file: web.key\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .expect("web-config written");
    std::fs::write(folder.path().join("plan.csv"), crate::common::TEST_PLAN_CSV).expect("plan");
    (folder, ca_pem)
}

fn config_text(plc: SocketAddr, web_config: &str) -> String {
    format!(
        "[plan]\npath = \"plan.csv\"\n[[scanners.listeners]]\naddress = \"127.0.0.1:0\"\n\
         protocol = \"binary\"\n[plc]\naddress = \"{plc}\"\n\
         [metrics]\naddress = \"127.0.0.1:0\"\nweb_config = \"{web_config}\"\n"
    )
}

#[test]
fn over_tls_only_the_right_password_gets_in_and_refusals_are_counted() {
    let plc = TestPlc::start(vec![], vec![]);
    let (folder, ca_pem) = web_config_folder("correct horse");
    let daemon = start_daemon_in(folder, &config_text(plc.address, "web.yml"), 1, &[]);
    let web = daemon.metrics_address();
    let log = daemon.log_lines("metrics endpoint listening");
    assert!(
        log[0].contains("tls=true") && log[0].contains("basic_auth=true"),
        "{log:?}"
    );
    let client = tls_client(&ca_pem);
    let good = Some(("prometheus", "correct horse"));

    let (status, body) = https_get(web, &client, "/metrics", good);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("# TYPE sortd_scanner_scans_total counter"),
        "{body}"
    );
    let (status, _) = https_get(web, &client, "/metrics", Some(("prometheus", "wrong")));
    assert_eq!(status, 401);
    let (status, _) = https_get(web, &client, "/metrics", Some(("mallory", "correct horse")));
    assert_eq!(status, 401);
    let (status, _) = https_get(web, &client, "/status.json", None);
    assert_eq!(status, 401);
    let (status, page) = https_get(web, &client, "/", good);
    assert_eq!(status, 200);
    assert!(page.contains("<title>sortd</title>"));

    // Plain HTTP to the TLS port gets no answer, and counts as a failed handshake.
    let mut plain = TcpStream::connect(web).expect("connects");
    plain.set_read_timeout(Some(PATIENCE)).expect("timeout");
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("sent");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));

    let (_, body) = https_get(web, &client, "/metrics", good);
    assert_eq!(refusals(&body, "unauthorized"), 3, "{body}");
    assert_eq!(refusals(&body, "tls"), 1, "{body}");

    // Rotating the password: a new hash in the file and SIGHUP; no restart.
    let hash = bcrypt::hash("battery staple", 4).expect("hashed");
    let web_yml = daemon.folder().join("web.yml");
    let rotated = std::fs::read_to_string(&web_yml)
        .expect("web-config")
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("prometheus:") {
                format!("  prometheus: {hash}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    crate::common::replace_file(&web_yml, rotated.as_bytes());
    daemon.signal("HUP");
    let new = Some(("prometheus", "battery staple"));
    wait_until("the new password to work", || {
        https_get(web, &client, "/metrics", new).0 == 200
    });
    assert_eq!(https_get(web, &client, "/metrics", good).0, 401);
    // A broken file on the next SIGHUP keeps the settings in force.
    crate::common::replace_file(&web_yml, b"basic_auth_users:\n  prometheus: nope\n");
    daemon.signal("HUP");
    wait_until("the failed reload to be logged", || {
        !daemon.log_lines("web-config reload failed").is_empty()
    });
    assert_eq!(https_get(web, &client, "/metrics", new).0, 200);
}

#[test]
fn a_bad_web_config_stops_the_start_with_exit_64_and_says_why() {
    let cases = [
        (
            "basic_auth_users:\n  prometheus: not-a-hash\n",
            "not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "missing.crt",
        ),
        ("tls_server_config: [\n", "web.yml"),
    ];
    for (web_config, expected) in cases {
        let folder = tempfile::tempdir().expect("temp dir");
        std::fs::write(folder.path().join("plan.csv"), crate::common::TEST_PLAN_CSV).expect("plan");
        std::fs::write(folder.path().join("web.yml"), web_config).expect("web-config");
        let config = folder.path().join("sortd.toml");
        std::fs::write(
            &config,
            config_text("127.0.0.1:9".parse().expect("address"), "web.yml"),
        )
        .expect("config");
        let output = Command::new(env!("CARGO_BIN_EXE_sortd"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .expect("sortd runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains("metrics.web_config") && stderr.contains(expected),
            "{web_config}: {stderr}"
        );
    }
}
