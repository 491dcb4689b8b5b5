//! Test harness for driving the real `sortd` binary over real sockets: a daemon process
//! started from a configuration text, a recording PLC (the library's PLC simulator), and
//! scripted scanners.

#![allow(dead_code)]

pub mod nats;
pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sortd::plc::{PeerConfig, SortCommand};
use sortd::sim::plc::{
    ChuteEvent, LinkFault, PlcSim, PlcSimCounters, PlcSimOptions, SimMode, SortObserver,
};
use sortd::wire::{self, Barcodes, Frame, Hello, ScanFlags, ScanFrame};

/// Generous upper bound for anything a test waits for; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The plan every daemon test uses unless it writes its own.
pub const TEST_PLAN_CSV: &str = "kind,key,chutes
meta,name,integration test plan
prefix,33,101|102
prefix,3301,12|13
prefix,330106001,14
exact,YT0000000000001,7|8
exact,YT0000000000002,9
exact,YT0000000000003,7|8
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
";

/// Polls `condition` until it holds or [`PATIENCE`] runs out.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Records every SORT the PLC receives.
#[derive(Default)]
pub struct Recorder {
    pub sorts: Mutex<Vec<SortCommand>>,
}

impl SortObserver for Recorder {
    fn on_sort(&self, sort: &SortCommand, _arrived_at: Instant) {
        if let Ok(mut sorts) = self.sorts.lock() {
            sorts.push(*sort);
        }
    }
}

impl Recorder {
    pub fn count(&self) -> usize {
        self.sorts.lock().map(|sorts| sorts.len()).unwrap_or(0)
    }

    pub fn find(&self, scanner_id: u32, parcel_id: u64) -> Vec<SortCommand> {
        self.sorts
            .lock()
            .map(|sorts| {
                sorts
                    .iter()
                    .filter(|s| s.scanner_id == scanner_id && s.parcel_id == parcel_id)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for the SORT of one parcel and returns it.
    pub fn wait_for(&self, scanner_id: u32, parcel_id: u64) -> SortCommand {
        let mut found = Vec::new();
        wait_until(
            &format!("SORT of parcel {parcel_id} from scanner {scanner_id}"),
            || {
                found = self.find(scanner_id, parcel_id);
                !found.is_empty()
            },
        );
        found[0]
    }
}

/// A PLC simulator listening on a free loopback port, recording what it receives.
pub struct TestPlc {
    pub address: SocketAddr,
    pub counters: Arc<PlcSimCounters>,
    pub recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestPlc {
    pub fn start(link_faults: Vec<LinkFault>, chute_events: Vec<ChuteEvent>) -> TestPlc {
        TestPlc::start_in(
            SimMode::Listen("127.0.0.1:0".parse().unwrap()),
            link_faults,
            chute_events,
        )
    }

    /// A simulator that dials sortd at `sortd_plc_address` (sortd's `plc.mode = "listen"`).
    pub fn dialling(sortd_plc_address: SocketAddr) -> TestPlc {
        TestPlc::start_in(SimMode::Connect(sortd_plc_address), vec![], vec![])
    }

    fn start_in(
        mode: SimMode,
        link_faults: Vec<LinkFault>,
        chute_events: Vec<ChuteEvent>,
    ) -> TestPlc {
        let counters = Arc::new(PlcSimCounters::default());
        let recorder = Arc::new(Recorder::default());
        let sim = PlcSim::new(
            PlcSimOptions {
                mode,
                link: PeerConfig::default(),
                confirm_delay: Some(Duration::from_millis(20)),
                chute_faults: None,
                link_faults,
                chute_events,
            },
            counters.clone(),
            Some(recorder.clone() as Arc<dyn SortObserver>),
        )
        .expect("PLC simulator binds");
        let address = match mode {
            SimMode::Listen(_) => sim.local_address().expect("listening"),
            SimMode::Connect(address) => address,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || sim.run(&stop))
        };
        TestPlc {
            address,
            counters,
            recorder,
            stop,
            thread: Some(thread),
        }
    }

    pub fn wait_connected(&self) {
        wait_until("sortd to connect to the PLC", || {
            self.counters.connections.load(Ordering::Relaxed) > 0
        });
    }
}

impl Drop for TestPlc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `sortd run` process.
pub struct DaemonProcess {
    child: Child,
    pub scanner_addresses: Vec<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    _folder: tempfile::TempDir,
}

/// Writes `plan_csv` and a configuration (`extra` appended to a minimal one whose
/// listeners bind free loopback ports) and starts the daemon, waiting for its listeners.
pub fn start_daemon(plc: SocketAddr, listeners: &[&str], extra: &str) -> DaemonProcess {
    start_daemon_with_plan(plc, listeners, extra, TEST_PLAN_CSV)
}

/// As [`start_daemon`], with a plan of the test's own.
pub fn start_daemon_with_plan(
    plc: SocketAddr,
    listeners: &[&str],
    extra: &str,
    plan_csv: &str,
) -> DaemonProcess {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("plan.csv"), plan_csv).expect("plan written");
    let mut config = String::from("[plan]\npath = \"plan.csv\"\n");
    for listener in listeners {
        config.push_str(&format!(
            "[[scanners.listeners]]\naddress = \"127.0.0.1:0\"\n{listener}\n"
        ));
    }
    config.push_str(&format!(
        "[plc]\naddress = \"{plc}\"\nreconnect_backoff_min_ms = 20\nreconnect_backoff_max_ms = 200\n"
    ));
    config.push_str(extra);
    if !extra.contains("[metrics]") {
        // Tests run in parallel: never compete for the default metrics port.
        config.push_str("[metrics]\naddress = \"127.0.0.1:0\"\n");
    }
    start_daemon_in(folder, &config, listeners.len(), &[])
}

/// How the daemon lays its pipeline on threads (`pipeline.threads`): tests of the
/// hand-off run in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The ingress worker and the PLC side on one thread (the default with one worker).
    Single,
    /// The ingress worker and the PLC side on threads of their own.
    Split,
}

impl Threads {
    /// `extra` configuration with `pipeline.threads` set to this mode.
    pub fn config(self, extra: &str) -> String {
        let mode = match self {
            Threads::Single => "single",
            Threads::Split => "split",
        };
        let key = format!("[pipeline]\nthreads = \"{mode}\"\n");
        if extra.contains("[pipeline]\n") {
            extra.replacen("[pipeline]\n", &key, 1)
        } else {
            format!("{extra}\n{key}")
        }
    }
}

/// [`start_daemon`] with the pipeline laid on threads as `threads` says.
pub fn start_daemon_threads(
    plc: SocketAddr,
    listeners: &[&str],
    extra: &str,
    threads: Threads,
) -> DaemonProcess {
    start_daemon(plc, listeners, &threads.config(extra))
}

/// The value of `key=value` in a log line (quotes removed).
pub fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = line.get(start..)?;
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()?
    } else {
        rest.split_whitespace().next()?
    };
    Some(value.to_string())
}

impl DaemonProcess {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM, waits for exit, and returns the exit code and the final count line.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "sortd did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stopped = String::new();
        wait_until("the final count line", || {
            stopped = self
                .log()
                .into_iter()
                .find(|line| line.contains("sortd stopped"))
                .unwrap_or_default();
            !stopped.is_empty()
        });
        (status.code(), stopped)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scanner speaking the binary protocol.
pub struct BinaryScanner {
    pub stream: TcpStream,
    pub scanner_id: u32,
}

/// One parcel as a test describes it.
#[derive(Clone, Debug, Default)]
pub struct Parcel<'a> {
    pub parcel_id: u64,
    pub barcodes: Vec<&'a str>,
    pub destination: Option<&'a str>,
}

pub fn encode_scan(scanner_id: u32, parcel: &Parcel<'_>, out: &mut Vec<u8>) {
    let codes: Vec<&[u8]> = parcel.barcodes.iter().map(|code| code.as_bytes()).collect();
    let frame = Frame::Scan(ScanFrame {
        scanner_id,
        sequence: parcel.parcel_id as u32,
        parcel_id: parcel.parcel_id,
        scanned_at_us: 0,
        barcodes: Barcodes::from_slice(&codes).expect("at most 8 barcodes"),
        destination: parcel.destination.map(str::as_bytes),
        weight_g: 1200,
        length_mm: 300,
        width_mm: 200,
        height_mm: 100,
        flags: ScanFlags::default(),
    });
    wire::encode(&frame, out).expect("encodes");
}

impl BinaryScanner {
    pub fn connect(address: SocketAddr, scanner_id: u32) -> BinaryScanner {
        let mut stream = TcpStream::connect(address).expect("scanner connects");
        stream.set_nodelay(true).expect("nodelay");
        let mut hello = Vec::new();
        wire::encode(
            &Frame::Hello(Hello {
                scanner_id,
                protocol_version: wire::PROTOCOL_VERSION,
                heartbeat_interval_ms: 0,
                sent_at_us: 0,
            }),
            &mut hello,
        )
        .expect("encodes");
        stream.write_all(&hello).expect("hello sent");
        BinaryScanner { stream, scanner_id }
    }

    pub fn send(&mut self, parcel: &Parcel<'_>) {
        let mut bytes = Vec::new();
        encode_scan(self.scanner_id, parcel, &mut bytes);
        self.stream.write_all(&bytes).expect("scan sent");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("bytes sent");
    }
}

/// Scans sent to one listener in a loop until stopped (or the daemon dies): `per_tick`
/// parcels (barcode `YT0000000000002`, ids from `first`) every `pause`.
pub struct ScanLoad {
    stop: Arc<AtomicBool>,
    last: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ScanLoad {
    pub fn start(
        address: SocketAddr,
        scanner_id: u32,
        first: u64,
        per_tick: u64,
        pause: Duration,
    ) -> ScanLoad {
        let mut scanner = BinaryScanner::connect(address, scanner_id);
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(std::sync::atomic::AtomicU64::new(first.saturating_sub(1)));
        let thread = {
            let (stop, last) = (stop.clone(), last.clone());
            std::thread::spawn(move || {
                let mut id = first;
                let mut bytes = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    bytes.clear();
                    for offset in 0..per_tick {
                        let parcel = Parcel {
                            parcel_id: id + offset,
                            barcodes: vec!["YT0000000000002"],
                            destination: None,
                        };
                        encode_scan(scanner_id, &parcel, &mut bytes);
                    }
                    if scanner.stream.write_all(&bytes).is_err() {
                        return;
                    }
                    id += per_tick;
                    last.store(id - 1, Ordering::Release);
                    std::thread::sleep(pause);
                }
            })
        };
        ScanLoad {
            stop,
            last,
            thread: Some(thread),
        }
    }

    /// Stops the load; returns the last parcel id written.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.last.load(Ordering::Acquire)
    }
}

/// Whether the peer closed `stream` within [`PATIENCE`] (reads until EOF or reset).
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error)
                if error.kind() == std::io::ErrorKind::WouldBlock
                    || error.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A path inside the test crate's folder.
pub fn project_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------------------
// Service helpers: signals, a daemon from a configuration of the test's own (with extra
// environment, such as NOTIFY_SOCKET), HTTP scrapes and an OpenMetrics text parser.

/// As [`start_daemon_with_plan`], but the test writes `folder` (plans and all) itself and
/// gives the whole configuration text and extra environment variables.
pub fn start_daemon_in(
    folder: tempfile::TempDir,
    config: &str,
    listeners: usize,
    env: &[(&str, &str)],
) -> DaemonProcess {
    let config_path = folder.path().join("sortd.toml");
    std::fs::write(&config_path, config).expect("config written");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sortd"));
    command
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("sortd starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
            }
        });
    }
    let mut daemon = DaemonProcess {
        child,
        scanner_addresses: Vec::new(),
        log,
        _folder: folder,
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while daemon.log_lines("listening for scanners").len() < listeners {
        assert!(
            std::time::Instant::now() < deadline,
            "sortd did not start listening; log: {:?}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.scanner_addresses = daemon
        .log()
        .iter()
        .filter(|line| line.contains("listening for scanners"))
        .filter_map(|line| field(line, "address")?.parse().ok())
        .collect();
    daemon
}

/// Writes `bytes` to `path` through a temporary file and a rename, as an operator's
/// deployment should, so the daemon never reads a half-written plan.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes).expect("temporary written");
    std::fs::rename(&temporary, path).expect("renamed into place");
}

impl DaemonProcess {
    /// The daemon's folder (configuration and plans).
    pub fn folder(&self) -> &Path {
        self._folder.path()
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
    }

    /// The metrics endpoint's address, from its start-up log line.
    pub fn metrics_address(&self) -> SocketAddr {
        let mut address = None;
        wait_until("the metrics endpoint's log line", || {
            address = self
                .log_lines("metrics endpoint listening")
                .first()
                .and_then(|line| field(line, "address")?.parse().ok());
            address.is_some()
        });
        address.expect("waited for it")
    }
}

/// Sends `request` as is and returns the status code and body of the answer.
pub fn http_exchange(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("metrics endpoint connects");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("request sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response read");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head/body split in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    if let Some(length) = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
    {
        assert_eq!(length.parse::<usize>().ok(), Some(body.len()), "{head}");
    }
    (status, body.to_string())
}

/// `GET /metrics`, parsed; fails the test on anything but a 200 with valid OpenMetrics
/// text.
pub fn scrape(address: SocketAddr) -> Scrape {
    let (status, body) = http_exchange(
        address,
        b"GET /metrics HTTP/1.1\r\nHost: sortd\r\nAccept: application/openmetrics-text\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    parse_openmetrics(&body).unwrap_or_else(|error| panic!("{error}\n{body}"))
}

/// A parsed exposition: every sample by its series (name and sorted labels).
#[derive(Debug, Default)]
pub struct Scrape {
    /// `name{a="1",b="2"}` (labels sorted by name) to value.
    pub samples: std::collections::BTreeMap<String, f64>,
    /// Family name to type.
    pub types: std::collections::BTreeMap<String, String>,
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<(&str, &str)> = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Scrape {
    /// The sample `name` with exactly these labels, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.get(&series_key(name, labels)).copied()
    }

    /// The sample `name` with exactly these labels; fails the test when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {}", series_key(name, labels)))
    }

    /// The sum over every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.samples
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, value)| value)
            .sum()
    }

    /// Every series of `name` as (labels text, value).
    pub fn series(&self, name: &str) -> Vec<(String, f64)> {
        let prefix = format!("{name}{{");
        self.samples
            .iter()
            .filter_map(|(key, value)| {
                let labels = key.strip_prefix(&prefix)?.strip_suffix('}')?;
                Some((labels.to_string(), *value))
            })
            .collect()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_' || first == b':')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

/// The suffixes a sample of a family of `kind` may carry.
fn sample_suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "info" => &["_info"],
        "gauge" | "unknown" => &[""],
        _ => &[],
    }
}

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// Parses labels `a="x",b="y"` (escapes: `\\`, `\"`, `\n`); returns them and the rest.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after_name) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("label without =\" in {text:?}"))?;
        if !is_metric_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after_name.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    other => return Err(format!("bad escape {other:?} in {text:?}")),
                },
                Some((index, '"')) => break index,
                Some((_, other)) => value.push(other),
                None => return Err(format!("unterminated label value in {text:?}")),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after_name[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A strict parser of the OpenMetrics text format as far as sortd uses it: metadata
/// before samples, one TYPE per family, samples named for their family's type, label
/// syntax and escapes, numeric values, no repeated series, cumulative histogram buckets
/// ending in `+Inf` equal to `_count`, and `# EOF` as the last line.
pub fn parse_openmetrics(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with `# EOF`")?;
    let mut family: Option<(String, String)> = None;
    let mut seen_families = std::collections::BTreeSet::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                return Err(format!("bad metadata line {line:?}"));
            };
            if !is_metric_name(name) {
                return Err(format!("bad family name in {line:?}"));
            }
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                return Err(format!("unknown metadata {line:?}"));
            }
            if family.as_ref().map(|(current, _)| current.as_str()) != Some(name) {
                if !seen_families.insert(name.to_string()) {
                    return Err(format!("family {name} described in two places"));
                }
                family = Some((name.to_string(), String::new()));
            }
            let argument = parts.next().unwrap_or_default();
            match (keyword, &mut family) {
                ("TYPE", Some((_, kind))) => {
                    if !kind.is_empty() {
                        return Err(format!("family {name} typed twice"));
                    }
                    if sample_suffixes(argument).is_empty() {
                        return Err(format!("unsupported type in {line:?}"));
                    }
                    *kind = argument.to_string();
                    scrape.types.insert(name.to_string(), kind.clone());
                }
                ("UNIT", _) if !name.ends_with(&format!("_{argument}")) => {
                    return Err(format!("{name} does not end with its unit {argument}"));
                }
                _ => {}
            }
            continue;
        }
        let Some((family_name, kind)) = family.as_ref().filter(|(_, kind)| !kind.is_empty()) else {
            return Err(format!("sample before its family's TYPE: {line:?}"));
        };
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("bad sample {line:?}"))?;
        let name = &line[..name_end];
        let suffix = name
            .strip_prefix(family_name.as_str())
            .ok_or_else(|| format!("sample {name} outside its family {family_name}"))?;
        if !sample_suffixes(kind).contains(&suffix) {
            return Err(format!("sample {name} does not fit type {kind}"));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inner) => parse_labels(inner)?,
            None => (Vec::new(), &line[name_end..]),
        };
        let value_text = rest
            .strip_prefix(' ')
            .and_then(|value| value.split(' ').next())
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            text => text
                .parse()
                .map_err(|_| format!("bad value {text:?} in {line:?}"))?,
        };
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(format!("negative or NaN counter in {line:?}"));
        }
        let label_refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        if suffix == "_bucket" && !labels.iter().any(|(key, _)| key == "le") {
            return Err(format!("bucket without le: {line:?}"));
        }
        let key = series_key(name, &label_refs);
        if scrape.samples.insert(key.clone(), value).is_some() {
            return Err(format!("series {key} repeated"));
        }
    }
    // Histograms: per series (the labels other than `le`), cumulative buckets, the last
    // one +Inf and equal to the count.
    for (name, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let mut by_series: std::collections::BTreeMap<String, Vec<(f64, f64)>> =
            std::collections::BTreeMap::new();
        for (labels, count) in scrape.series(&format!("{name}_bucket")) {
            let mut bound = f64::NAN;
            let mut rest = Vec::new();
            for label in labels.split("\",").map(|label| label.trim_end_matches('"')) {
                match label.strip_prefix("le=\"") {
                    Some(le) => bound = le.replace("+Inf", "inf").parse().unwrap_or(f64::NAN),
                    None => rest.push(label.to_string()),
                }
            }
            by_series
                .entry(rest.join(","))
                .or_default()
                .push((bound, count));
        }
        if by_series.is_empty() {
            return Err(format!("{name} has no +Inf bucket"));
        }
        for (labels, mut bounds) in by_series {
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            if bounds.last().map(|(bound, _)| *bound) != Some(f64::INFINITY) {
                return Err(format!("{name}{{{labels}}} has no +Inf bucket"));
            }
            if bounds.windows(2).any(|pair| pair[0].1 > pair[1].1) {
                return Err(format!("{name}{{{labels}}} buckets are not cumulative"));
            }
            let label_pairs: Vec<(&str, &str)> = labels
                .split(',')
                .filter_map(|label| label.split_once("=\""))
                .collect();
            let count = scrape.get(&format!("{name}_count"), &label_pairs);
            if count != bounds.last().map(|(_, count)| *count) {
                return Err(format!(
                    "{name}{{{labels}}}: +Inf bucket differs from _count"
                ));
            }
        }
    }
    Ok(scrape)
}
