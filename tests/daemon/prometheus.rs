//! The shipped Prometheus rules and Grafana dashboard against the real tools: `promtool`
//! checks and unit-tests every alert, and Debian's `prometheus` server scrapes a live
//! daemon under load and evaluates every alert and every dashboard expression.
//!
//! Needs `promtool` and `prometheus` on PATH (Debian's `prometheus` package; `.ci/run`
//! installs it). The tests fail, not skip, without them: these files ship to operators.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{BinaryScanner, Parcel, TestPlc, encode_scan, http_exchange, start_daemon};
use sortd::plc::ChuteState;
use sortd::sim::plc::ChuteEvent;

const ALERTS: &str = "config/prometheus/alerts.yml";
const ALERTS_TEST: &str = "config/prometheus/alerts_test.yml";
const DASHBOARD: &str = "config/grafana/sortd.json";

/// What the dashboard's Grafana variables become in a query sent to Prometheus.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "10s"),
    ("$__interval", "1s"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

/// Alert conditions the live test's load and PLC make true.
const ALERTS_TRUE_UNDER_THIS_LOAD: &[&str] = &[
    "SortdNoReadShareHigh",
    "SortdNoRuleShareHigh",
    "SortdChuteFullTooLong",
    "SortdChuteDisabledTooLong",
];

/// Alert conditions that must be false while sortd runs with scanners and the PLC
/// connected. (Latency and stalled threads are left out: a loaded 2-core CI box may make
/// them true for a moment, and that is not what this test is about.)
const ALERTS_FALSE_WHILE_RUNNING: &[&str] = &[
    "SortdDown",
    "SortdNotScraped",
    "SortdRestarting",
    "SortdPlcLinkDown",
    "SortdPlcLinkFlapping",
    "SortdPlanReloadFailed",
    "SortdScannersDisconnected",
];

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(crate::common::project_path(""))
        .output()
        .unwrap_or_else(|error| {
            panic!("promtool not found ({error}); install Debian's `prometheus` (.ci/run does)")
        });
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "promtool {}: {text}",
        args.join(" ")
    );
    text
}

/// The alert names in alerts.yml, in order (`- alert: Name` lines).
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(crate::common::project_path(ALERTS))
        .expect("alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_every_alert_has_passing_unit_tests() {
    let checked = promtool(&["check", "rules", ALERTS]);
    let names = alert_names();
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{checked}"
    );
    let tests = std::fs::read_to_string(crate::common::project_path(ALERTS_TEST)).expect("tests");
    for name in &names {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no case in {ALERTS_TEST}"
        );
    }
    let tested = promtool(&["test", "rules", ALERTS_TEST]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// A Prometheus server on a free loopback port with its own storage, killed on drop.
struct PrometheusServer {
    child: Child,
    address: SocketAddr,
    _folder: tempfile::TempDir,
}

impl PrometheusServer {
    /// Scrapes `target` every second and loads the shipped alert rules, evaluated every
    /// second.
    fn start(target: SocketAddr) -> PrometheusServer {
        let folder = tempfile::tempdir().expect("temp dir");
        let rules = crate::common::project_path(ALERTS);
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: sortd\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        );
        let config_path = folder.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("config written");
        let address = free_loopback_address();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                folder.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("prometheus not found ({error}); install Debian's `prometheus`")
            });
        let server = PrometheusServer {
            child,
            address,
            _folder: folder,
        };
        crate::common::wait_until("Prometheus to be ready", || {
            TcpStream::connect(address).is_ok()
                && http_exchange(address, b"GET /-/ready HTTP/1.0\r\n\r\n").0 == 200
        });
        server
    }

    /// `GET path` and the JSON answer; fails on anything but a 200 with status success.
    fn api(&self, path_and_query: &str) -> serde_json::Value {
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
        let (status, body) = http_exchange(self.address, request.as_bytes());
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("{path_and_query}: {error}: {body}"));
        assert!(
            status == 200 && json["status"] == "success",
            "{path_and_query}: {status} {body}"
        );
        json
    }

    /// An instant query's result vector (or scalar, as one element).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let json = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)));
        match &json["data"]["result"] {
            serde_json::Value::Array(series) => series.clone(),
            scalar => vec![scalar.clone()],
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A scanner sending a mix of parcels (sorted, alternate, no-read, no-rule) and now and
/// then a burst of garbage, paced at a few thousand per second, until stopped.
struct MixedLoad {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl MixedLoad {
    fn start(address: SocketAddr) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let scanner = BinaryScanner::connect(address, 31);
                let mut stream = scanner.stream;
                let mut bytes = Vec::new();
                let mut sent = 0u64;
                while !stop.load(Ordering::Acquire) {
                    bytes.clear();
                    for _ in 0..16 {
                        sent += 1;
                        let parcel = Parcel {
                            parcel_id: sent,
                            barcodes: vec![],
                            destination: match sent % 10 {
                                0 => None,             // no-read
                                1 => Some("7700"),     // no rule in the test plan
                                2 | 3 => Some("3301"), // chute 12 (full), so alternate 13
                                _ => Some("3302"),     // chutes 101|102
                            },
                        };
                        encode_scan(31, &parcel, &mut bytes);
                    }
                    if sent % 4096 == 0 {
                        bytes.extend_from_slice(b"\x00garbage that is no frame\xff\xff");
                    }
                    if stream.write_all(&bytes).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(4));
                }
                sent
            })
        };
        MixedLoad { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("load thread")
    }
}

/// Every query in the dashboard (panel targets, nested panels, variable queries).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(value: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                let title = map
                    .get("title")
                    .and_then(|title| title.as_str())
                    .unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|expr| expr.as_str()) {
                    out.push((title.to_string(), expr.to_string()));
                }
                for (key, child) in map {
                    if key != "expr" {
                        walk(child, title, out);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, title, out);
                }
            }
            _ => {}
        }
    }
    let mut queries = Vec::new();
    walk(&dashboard["panels"], "", &mut queries);
    // Grafana's `label_values(metric, label)` is not PromQL: ask for the metric itself.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["definition"].as_str() {
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            queries.push((format!("variable {}", variable["name"]), metric.to_string()));
        }
    }
    queries
}

fn substitute_grafana_variables(expr: &str) -> String {
    let mut expr = expr.to_string();
    for (variable, value) in GRAFANA_VARIABLES {
        expr = expr.replace(variable, value);
    }
    assert!(!expr.contains('$'), "unknown Grafana variable in {expr}");
    expr
}

#[test]
fn a_real_prometheus_scraping_a_loaded_daemon_evaluates_every_alert_and_dashboard_query() {
    let started = Instant::now();
    let plc = TestPlc::start(
        vec![],
        vec![
            ChuteEvent {
                at: Duration::from_millis(50),
                chute: 12,
                state: ChuteState::Full,
            },
            ChuteEvent {
                at: Duration::from_millis(50),
                chute: 14,
                state: ChuteState::Disabled,
            },
        ],
    );
    // The journal and an exporter whose broker is not there: their series exist too.
    let journal = tempfile::tempdir().expect("temp dir");
    let extra = format!(
        "[events]\nenabled = true\ndir = \"{}\"\nhub_id = \"hub1\"\nsorter_id = \"sorter1\"\n\
         [export]\nenabled = true\nurls = [\"nats://127.0.0.1:{}\"]\nhub = \"hub1\"\nsorter = \"sorter1\"\n",
        journal.path().display(),
        crate::common::nats::free_port()
    );
    let daemon = start_daemon(plc.address, &["protocol = \"binary\""], &extra);
    plc.wait_connected();
    let load = MixedLoad::start(daemon.scanner_addresses[0]);
    let prometheus = PrometheusServer::start(daemon.metrics_address());

    // Enough scrapes for every rate window (10 s) to hold several samples, and every rule
    // evaluated at least once without an error.
    crate::common::wait_until("Prometheus to scrape sortd a dozen times", || {
        prometheus
            .query("count_over_time(up{job=\"sortd\"}[30s]) >= 12")
            .len()
            == 1
    });
    assert_eq!(
        prometheus.query("up{job=\"sortd\"} == 1").len(),
        1,
        "the last scrape failed"
    );
    let alert_names = alert_names();
    let mut rules = Vec::new();
    crate::common::wait_until("every rule to be evaluated", || {
        let json = prometheus.api("/api/v1/rules");
        rules = json["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.len() == alert_names.len()
            && rules
                .iter()
                .all(|rule| rule["health"] == "ok" && !rule["lastEvaluation"].is_null())
    });
    for rule in &rules {
        let name = rule["name"].as_str().unwrap_or_default();
        assert!(alert_names.iter().any(|known| known == name), "{name}");
        let expr = rule["query"].as_str().expect("a query");
        // Every expression parses and evaluates. The load sends 10 % no-reads and 10 %
        // no-rules and the PLC made a chute full and one disabled: those conditions hold
        // (their `for` has not run out yet); a running, connected daemon trips no other.
        let result = prometheus.query(expr);
        println!("alert {name}: {} series", result.len());
        if ALERTS_TRUE_UNDER_THIS_LOAD.contains(&name) {
            assert_eq!(result.len(), 1, "{name}: {expr}: {result:?}");
        } else if ALERTS_FALSE_WHILE_RUNNING.contains(&name) {
            assert!(result.is_empty(), "{name}: {expr}: {result:?}");
        }
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::common::project_path(DASHBOARD)).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 30, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let expr = substitute_grafana_variables(expr);
        if prometheus.query(&expr).is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data under load:\n{}",
        empty.join("\n")
    );
    // The chute table shows the full chute the PLC reported.
    let full = prometheus.query("sortd_chute_state{chute=\"12\",state=\"full\"} == 1");
    assert_eq!(full.len(), 1, "{full:?}");

    let sent = load.finish();
    assert!(sent > 0);
    drop(prometheus);
    drop(daemon);
    println!(
        "{} alert rules and {} dashboard queries evaluated; {sent} parcels sent in {:?}",
        rules.len(),
        queries.len(),
        started.elapsed()
    );
}
