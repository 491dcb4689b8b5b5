//! Test harness for driving the real `sortd` binary over real sockets: a daemon process
//! started from a configuration text, a recording PLC (the library's PLC simulator), and
//! scripted scanners.

#![allow(dead_code)]

pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
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
        let counters = Arc::new(PlcSimCounters::default());
        let recorder = Arc::new(Recorder::default());
        let sim = PlcSim::new(
            PlcSimOptions {
                mode: SimMode::Listen("127.0.0.1:0".parse().unwrap()),
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
        let address = sim.local_address().expect("listening");
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
    let config_path = folder.path().join("sortd.toml");
    std::fs::write(&config_path, config).expect("config written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sortd"))
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sortd starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening for scanners") {
                    if let Some(address) = field(&line, "address") {
                        let _ = address_tx.send(address);
                    }
                }
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
            }
        });
    }
    let mut scanner_addresses = Vec::new();
    for _ in listeners {
        let address = address_rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!(
                "sortd did not start listening; log: {:?}",
                log.lock().map(|l| l.clone())
            )
        });
        scanner_addresses.push(address.parse().expect("address parses"));
    }
    DaemonProcess {
        child,
        scanner_addresses,
        log,
        _folder: folder,
    }
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
