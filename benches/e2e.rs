//! The end-to-end benchmark: `cargo bench --bench e2e` prints one table.
//!
//! 1. Throughput: 4 scanner connections, binary protocol, a plan with 10 M exact keys, at
//!    1, 16 and 64 frames per write (closed loop); each batching twice, with the sort-event
//!    journal off and on (`[events]` into the daemon's temporary folder).
//! 2. Scanner-realistic latency: 64 connections, 1 frame per write, open loop at 100,000
//!    parcels per second.
//! 4. Text scanners: 4 connections playing `sick-dws` telegrams (the built-in profile
//!    that carries a parcel id, so latency is measured too), 1 frame per write.
//! 3. Beside it, in the same run and with the same connections and batching:
//!    `redis-benchmark` GET against `redis-server` (pipeline depth 1, 16, 64), and a raw
//!    loopback relay of the same byte stream through a trivial forwarder with the same
//!    number of hops (scanner -> relay -> sink, as scanner -> sortd -> PLC).
//!
//! The daemon runs as its own process (`sortd run`) so its CPU time and its anonymous
//! resident memory (the mapped plan aside) can be read from /proc; the load generator and
//! the simulated PLC run in this process. Environment: SORTD_BENCH_SECONDS (per
//! throughput run, default 10), SORTD_BENCH_LATENCY_SECONDS (default 30),
//! SORTD_BENCH_EXACT_KEYS (default 10,000,000), SORTD_BENCH_CONFIRM (1 = the simulated
//! PLC sends SORT_CONFIRMs, default 1), SORTD_BENCH_THREADS (`pipeline.threads` of every
//! daemon it starts: `auto`, the default, `single` or `split`).
//!
//! 5. Export: at each batching a third run with the events exported into NATS
//!    JetStream (a `nats-server` the benchmark starts on a free loopback port with its
//!    own store, installing Debian's package if missing), in a table of its own: parcels
//!    per second against events off and journal only, events per second into the stream,
//!    the export lag (events journaled, not acknowledged) at the end of the load and at
//!    its worst, and how long after the load the stream caught up. SORTD_BENCH_EXPORT=0
//!    skips it; SORTD_BENCH_ONLY_EXPORT=1 runs only the throughput rows with the export
//!    (off, journal, export; no Redis, relay, latency or text rows);
//!    SORTD_BENCH_BATCHINGS=64 (comma-separated) picks the batchings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sortd::loadgen::mix::{MixShares, ParcelMix};
use sortd::loadgen::report::LoadReport;
use sortd::loadgen::scanners::{ScannerCounters, ScannerOptions, SendTimes, run_scanners};
use sortd::loadgen::{LoadOptions, run_load};
use sortd::plc::PeerConfig;
use sortd::sim::plc::{PlcSim, PlcSimCounters, PlcSimOptions, SimMode};
use sortd::wire::TextProfile;

const CONNECTIONS: usize = 4;
const BATCHINGS: [usize; 3] = [1, 16, 64];
/// The text profile of the text-scanner row.
const TEXT_PROFILE: &str = "sick-dws";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let seconds = env_number("SORTD_BENCH_SECONDS", 10) as f64;
    let latency_seconds = env_number("SORTD_BENCH_LATENCY_SECONDS", 30) as f64;
    let exact_keys = env_number("SORTD_BENCH_EXACT_KEYS", 10_000_000);
    let confirm = env_number("SORTD_BENCH_CONFIRM", 1) == 1;
    let sortd = PathBuf::from(env!("CARGO_BIN_EXE_sortd"));

    let plan = prepare_plan(&sortd, exact_keys);
    println!(
        "plan: {} ({} exact keys, village-level prefixes)",
        plan.display(),
        exact_keys
    );
    println!("machine: {}", machine_line());
    println!();

    let knobs = ExportKnobs::from_env();
    let mut rows = Vec::new();
    let mut export_rows = Vec::new();
    for frames_per_write in knobs.batchings() {
        let load = Load {
            connections: CONNECTIONS,
            frames_per_write,
            rate_per_s: None,
            seconds,
            profile: None,
        };
        let run = run_sortd(&sortd, &plan, &load, confirm, false);
        let journaling = run_sortd(&sortd, &plan, &load, confirm, true);
        if knobs.export {
            export_rows.push(export_row(&sortd, &plan, &load, confirm, &run, &journaling));
        }
        if knobs.only_export {
            continue;
        }
        let redis = redis_get_rate(CONNECTIONS, frames_per_write, seconds);
        let relay = relay_rate(&plan, CONNECTIONS, frames_per_write, seconds);
        rows.push((frames_per_write, run, journaling, redis, relay));
    }
    if knobs.only_export {
        print_export_table(&export_rows);
        return;
    }
    let latency_load = Load {
        connections: 64,
        frames_per_write: 1,
        rate_per_s: Some(100_000),
        seconds: latency_seconds,
        profile: None,
    };
    let latency = run_sortd(&sortd, &plan, &latency_load, confirm, false);
    let text_load = Load {
        connections: CONNECTIONS,
        frames_per_write: 1,
        rate_per_s: None,
        seconds,
        profile: TextProfile::builtin(TEXT_PROFILE),
    };
    let text = run_sortd(&sortd, &plan, &text_load, confirm, false);

    println!();
    println!(
        "| scenario | sortd parcels/s | daemon CPU ns/parcel | daemon RSS anon MiB | events on parcels/s | events on / off | events on CPU ns/parcel | redis GET/s | sortd / redis | raw relay frames/s | sortd / relay |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (frames_per_write, run, journaling, redis, relay) in &rows {
        println!(
            "| {CONNECTIONS} conns, {frames_per_write} frames/write | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} | {} | {} | {:.0} | {:.2} |",
            run.rate,
            run.cpu_ns_per_parcel,
            run.rss_anon_mib,
            journaling.rate,
            journaling.rate / run.rate.max(1.0),
            journaling.cpu_ns_per_parcel,
            redis.map_or("n/a".to_string(), |r| format!("{r:.0}")),
            redis.map_or("n/a".to_string(), |r| format!("{:.2}", run.rate / r)),
            relay,
            run.rate / relay.max(1.0)
        );
    }
    let l = latency.report.latency_us;
    println!(
        "| 64 conns, 1 frame/write, open loop 100,000/s, {latency_seconds:.0} s | {:.0} | {:.0} | {:.1} | | | | latency us: p50 {} p90 {} p99 {} p99.9 {} max {} | | | |",
        latency.rate,
        latency.cpu_ns_per_parcel,
        latency.rss_anon_mib,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    let t = text.report.latency_us;
    println!(
        "| {CONNECTIONS} conns, text `{TEXT_PROFILE}`, 1 frame/write | {:.0} | {:.0} | {:.1} | latency us: p50 {} p99 {} p99.9 {} | | | |",
        text.rate, text.cpu_ns_per_parcel, text.rss_anon_mib, t.p50, t.p99, t.p999
    );
    let missing: u64 = rows
        .iter()
        .map(|row| row.1.report.missing + row.2.report.missing)
        .sum::<u64>()
        + latency.report.missing
        + text.report.missing;
    println!();
    println!("parcels missing across all runs: {missing}");
    print_export_table(&export_rows);
}

fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpus} CPUs, {model}; load average at start {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Generates and compiles the benchmark plan once; kept under target/ between runs.
fn prepare_plan(sortd: &Path, exact_keys: u64) -> PathBuf {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-plans");
    std::fs::create_dir_all(&folder).expect("bench folder");
    let compiled = folder.join(format!("plan-{exact_keys}.sortplan"));
    if compiled.exists() {
        return compiled;
    }
    let csv = folder.join(format!("plan-{exact_keys}.csv"));
    eprintln!("generating a plan with {exact_keys} exact keys ...");
    let status = Command::new(sortd)
        .args([
            "plan",
            "generate",
            "--villages",
            "--exact",
            &exact_keys.to_string(),
            "-o",
        ])
        .arg(&csv)
        .status()
        .expect("sortd plan generate");
    assert!(status.success());
    let status = Command::new(sortd)
        .args(["plan", "compile"])
        .arg(&csv)
        .arg("-o")
        .arg(&compiled)
        .status()
        .expect("sortd plan compile");
    assert!(status.success());
    let _ = std::fs::remove_file(&csv);
    compiled
}

struct SortdRun {
    rate: f64,
    cpu_ns_per_parcel: f64,
    rss_anon_mib: f64,
    report: LoadReport,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Process CPU time (user + system) in nanoseconds.
fn cpu_time_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the name.
    let ticks: u64 = [11usize, 12]
        .iter()
        .filter_map(|index| {
            fields
                .get(*index)
                .and_then(|value| value.parse::<u64>().ok())
        })
        .sum();
    ticks * 10_000_000 // USER_HZ is 100 on Linux
}

fn rss_anon_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("RssAnon:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

struct Daemon {
    child: Child,
    scanner_address: SocketAddr,
    /// From the "metrics endpoint listening" log line, once seen.
    metrics_address: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    _folder: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `protocol`: the scanner listener's (`binary` or a text profile's name); `events`:
/// journal sort events into the daemon's temporary folder; `extra`: appended to the
/// configuration (e.g. an `[export]` section).
fn start_daemon(
    sortd: &Path,
    plan: &Path,
    plc: SocketAddr,
    protocol: &str,
    events: bool,
    extra: &str,
) -> Daemon {
    let folder = tempfile::tempdir().expect("temp dir");
    let config = folder.path().join("sortd.toml");
    let events = if events {
        format!(
            "[events]\nenabled = true\ndir = \"{}\"\nhub_id = \"bench\"\nsorter_id = \"bench\"\n",
            folder.path().join("events").display()
        )
    } else {
        String::new()
    };
    let threads = std::env::var("SORTD_BENCH_THREADS").unwrap_or_else(|_| "auto".into());
    let extra = format!("[pipeline]\nthreads = \"{threads}\"\n{extra}");
    std::fs::write(
        &config,
        format!(
            "[plan]\npath = \"{}\"\n[[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\n[plc]\naddress = \"{plc}\"\n[log]\nfilter = \"warn,sortd::daemon=info,sortd::cli=info\"\n[metrics]\naddress = \"127.0.0.1:0\"\n{events}{extra}",
            plan.display()
        ),
    )
    .expect("config");
    let mut child = Command::new(sortd)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sortd run");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let metrics_address = Arc::new(std::sync::Mutex::new(None));
    let scanner_address = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("sortd exited before listening");
        note_metrics_address(&line, &metrics_address);
        if let Some(rest) = line.split("address=").nth(1) {
            if line.contains("listening for scanners") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .expect("address");
            }
        }
    };
    {
        let metrics_address = Arc::clone(&metrics_address);
        std::thread::spawn(move || {
            for line in lines.by_ref().map_while(Result::ok) {
                note_metrics_address(&line, &metrics_address);
            }
        });
    }
    Daemon {
        child,
        scanner_address,
        metrics_address,
        _folder: folder,
    }
}

/// One scenario's load.
struct Load {
    connections: usize,
    frames_per_write: usize,
    /// Open loop at this rate; `None`: as fast as the sockets take.
    rate_per_s: Option<u64>,
    seconds: f64,
    /// `None`: binary scanners; else text scanners of this profile.
    profile: Option<TextProfile>,
}

fn run_sortd(sortd: &Path, plan: &Path, load: &Load, confirm: bool, events: bool) -> SortdRun {
    run_sortd_with(sortd, plan, load, confirm, events, None).0
}

/// [`run_sortd`], with the export into `nats` when given (events on), and its figures.
fn run_sortd_with(
    sortd: &Path,
    plan: &Path,
    load: &Load,
    confirm: bool,
    events: bool,
    nats: Option<&BenchNats>,
) -> (SortdRun, Option<ExportFigures>) {
    let Load {
        connections,
        frames_per_write,
        rate_per_s,
        seconds,
        ref profile,
    } = *load;
    let plc_address: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let sim = PlcSim::new(
        PlcSimOptions {
            mode: SimMode::Listen(plc_address),
            link: PeerConfig::default(),
            confirm_delay: confirm.then(|| Duration::from_millis(1500)),
            chute_faults: None,
            link_faults: Vec::new(),
            chute_events: Vec::new(),
        },
        Arc::new(PlcSimCounters::default()),
        None,
    )
    .expect("PLC simulator");
    let protocol = profile
        .as_ref()
        .map_or("binary".to_string(), |p| p.name().to_string());
    let extra = nats.map_or(String::new(), BenchNats::export_config);
    let daemon = start_daemon(sortd, plan, plc_address, &protocol, events, &extra);
    let pid = daemon.child.id();
    let watch = nats.map(|nats| ExportWatch::start(nats, &daemon, seconds));
    let options = LoadOptions {
        scanners: ScannerOptions {
            target: daemon.scanner_address,
            connections,
            frames_per_write,
            rate_per_s,
            duration: Some(Duration::from_secs_f64(seconds)),
            count: None,
            scanner_id_base: 1,
            profile: profile.clone(),
            pacing: sortd::loadgen::scanners::Pacing::default(),
        },
        plan_path: plan.to_path_buf(),
        shares: MixShares {
            duplicate: 0,
            ..MixShares::default()
        },
        seed: 1,
        settle: Duration::from_secs(20),
        progress: false,
    };
    let cpu_before = cpu_time_ns(pid);
    let report = run_load(&options, Some(sim), None).expect("load run");
    let cpu = cpu_time_ns(pid).saturating_sub(cpu_before);
    let rss = rss_anon_mib(pid);
    let export = watch.map(ExportWatch::finish);
    drop(daemon);
    let rate = report.decided as f64 / report.elapsed_s.max(1e-9);
    eprintln!(
        "sortd {connections} conns x {frames_per_write} frames/write{}{}: {:.0} parcels/s, p99.9 {} us, missing {}",
        rate_per_s.map_or(String::new(), |r| format!(" at {r}/s")),
        match (events, nats.is_some()) {
            (true, true) => ", events on, export to NATS",
            (true, false) => ", events on",
            _ => "",
        },
        rate,
        report.latency_us.p999,
        report.missing
    );
    let run = SortdRun {
        rate,
        cpu_ns_per_parcel: cpu as f64 / report.decided.max(1) as f64,
        rss_anon_mib: rss,
        report,
    };
    (run, export)
}

/// Requests per second of `redis-benchmark -t get`, or None when Redis is not installed
/// (the benchmark tries `apt-get install redis-server redis-tools` once).
fn redis_get_rate(connections: usize, pipeline: usize, seconds: f64) -> Option<f64> {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("redis-server") || !have("redis-benchmark") {
        eprintln!("installing redis (Debian package) ...");
        let _ = Command::new("sh")
            .args(["-c", "apt-get install -y redis-server redis-tools >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y redis-server redis-tools >/dev/null 2>&1)"])
            .status();
        if !have("redis-server") {
            eprintln!("redis-server not available: its columns read n/a");
            return None;
        }
    }
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let ready = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < ready {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Size the request count so a run lasts about `seconds` (at most 100 M requests).
    let requests = ((pipeline as f64) * 150_000.0 * seconds).min(100_000_000.0) as u64;
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            &connections.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args([
            "-t",
            "get",
            "-n",
            &requests.to_string(),
            "-q",
            "--csv",
            "-r",
            "1000000",
        ])
        .output()
        .ok();
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&output?.stdout).to_string();
    let rate = text
        .lines()
        .find(|line| line.starts_with("\"GET\""))
        .and_then(|line| line.split(',').nth(1))
        .and_then(|value| value.trim_matches('"').parse::<f64>().ok());
    eprintln!("redis GET, {connections} conns, pipeline {pipeline}: {rate:?}/s");
    rate
}

/// Frames per second through scanner -> relay -> sink, the same frames sortd gets.
fn relay_rate(plan: &Path, connections: usize, frames_per_write: usize, seconds: f64) -> f64 {
    let sink = TcpListener::bind("127.0.0.1:0").expect("sink");
    let sink_address = sink.local_addr().expect("address");
    let relay = TcpListener::bind("127.0.0.1:0").expect("relay");
    let relay_address = relay.local_addr().expect("address");
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            for stream in sink.incoming().take(connections).flatten() {
                let received = received.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = vec![0u8; 256 * 1024];
                    while let Ok(count) = stream.read(&mut buffer) {
                        if count == 0 {
                            break;
                        }
                        received.fetch_add(count as u64, Ordering::Relaxed);
                    }
                });
            }
        });
    }
    std::thread::spawn(move || {
        for stream in relay.incoming().take(connections).flatten() {
            std::thread::spawn(move || {
                let mut inbound = stream;
                let Ok(mut outbound) = TcpStream::connect(sink_address) else {
                    return;
                };
                let _ = outbound.set_nodelay(true);
                let mut buffer = vec![0u8; 256 * 1024];
                while let Ok(count) = inbound.read(&mut buffer) {
                    if count == 0 || outbound.write_all(&buffer[..count]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let plan_file = sortd::plan::Plan::open(plan).expect("plan");
    let mix = ParcelMix::from_plan(
        &plan_file,
        MixShares {
            duplicate: 0,
            ..MixShares::default()
        },
        1,
    )
    .expect("mix");
    drop(plan_file);
    let counters = ScannerCounters::default();
    let send_times = SendTimes::new(Instant::now());
    let options = ScannerOptions {
        target: relay_address,
        connections,
        frames_per_write,
        rate_per_s: None,
        duration: Some(Duration::from_secs_f64(seconds)),
        count: None,
        scanner_id_base: 1,
        profile: None,
        pacing: sortd::loadgen::scanners::Pacing::default(),
    };
    let started = Instant::now();
    let bytes_sent = Arc::new(AtomicU64::new(0));
    run_scanners(&options, &mix, 1, &send_times, &counters, &done).expect("relay load");
    let frames = counters.sent.load(Ordering::Relaxed);
    // Wait for the sink to have everything the scanners wrote.
    let _ = bytes_sent;
    let mut last = 0;
    let mut stable_since = Instant::now();
    let mut finished = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(300) {
        let now = received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            stable_since = Instant::now();
            finished = stable_since;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::Release);
    let elapsed = finished.saturating_duration_since(started).as_secs_f64();
    let rate = frames as f64 / elapsed.max(1e-9);
    eprintln!(
        "raw relay {connections} conns x {frames_per_write} frames/write: {rate:.0} frames/s"
    );
    rate
}

// ---- 5. Export into NATS JetStream ----------------------------------------------------

/// Which rows run (environment knobs, see the module docs).
struct ExportKnobs {
    export: bool,
    only_export: bool,
    batchings: Vec<usize>,
}

impl ExportKnobs {
    fn from_env() -> ExportKnobs {
        let only_export = env_number("SORTD_BENCH_ONLY_EXPORT", 0) == 1;
        let batchings = std::env::var("SORTD_BENCH_BATCHINGS")
            .ok()
            .map(|list| {
                list.split(',')
                    .filter_map(|item| item.trim().parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .collect::<Vec<usize>>()
            })
            .filter(|list| !list.is_empty())
            .unwrap_or_else(|| BATCHINGS.to_vec());
        ExportKnobs {
            export: only_export || env_number("SORTD_BENCH_EXPORT", 1) == 1,
            only_export,
            batchings,
        }
    }

    fn batchings(&self) -> Vec<usize> {
        self.batchings.clone()
    }
}

/// A `nats-server` with JetStream for one run: loopback, free ports (client and
/// monitoring), its own store; killed on drop.
struct BenchNats {
    child: Child,
    port: u16,
    monitor_port: u16,
    _dir: tempfile::TempDir,
}

impl BenchNats {
    /// None when nats-server is not installed and cannot be (the benchmark tries
    /// `apt-get install nats-server` once, as for Redis).
    fn start() -> Option<BenchNats> {
        let have = || {
            Command::new("sh")
                .args(["-c", "command -v nats-server"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have() {
            eprintln!("installing nats-server (Debian package) ...");
            let _ = Command::new("sh")
                .args(["-c", "apt-get install -y nats-server >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y nats-server >/dev/null 2>&1)"])
                .status();
            if !have() {
                eprintln!("nats-server not available: the export table is left out");
                return None;
            }
        }
        let dir = tempfile::tempdir().ok()?;
        let (port, monitor_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("nats.log")).ok()?;
        let child = Command::new("nats-server")
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor_port.to_string()])
            .arg("-sd")
            .arg(dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .ok()?;
        let nats = BenchNats {
            child,
            port,
            monitor_port,
            _dir: dir,
        };
        let ready = Instant::now() + Duration::from_secs(15);
        while nats.stream_state().is_none() {
            if Instant::now() > ready {
                eprintln!("nats-server did not start");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nats)
    }

    /// The daemon's `[export]` section. SORTD_BENCH_EXPORT_RECORDS and
    /// SORTD_BENCH_EXPORT_WINDOW override events per message and messages in flight.
    fn export_config(&self) -> String {
        let mut section = format!(
            "[export]\nenabled = true\nurls = [\"nats://127.0.0.1:{}\"]\nhub = \"bench\"\nsorter = \"bench\"\n",
            self.port
        );
        for (knob, key) in [
            ("SORTD_BENCH_EXPORT_RECORDS", "message_records_max"),
            ("SORTD_BENCH_EXPORT_WINDOW", "publish_window_max"),
        ] {
            if let Some(value) = std::env::var(knob).ok().and_then(|v| v.parse::<u64>().ok()) {
                section.push_str(&format!("{key} = {value}\n"));
            }
        }
        section
    }

    /// Messages stored over every stream, None until the monitoring endpoint answers.
    fn stream_state(&self) -> Option<u64> {
        stream_messages(self.monitor_port)
    }
}

/// Messages stored over every stream (the benchmark's server holds one stream with one
/// subject: this sorter's), from the monitoring endpoint on `monitor_port`.
fn stream_messages(monitor_port: u16) -> Option<u64> {
    let body = http_get(
        SocketAddr::from(([127, 0, 0, 1], monitor_port)),
        "/jsz?accounts=true&streams=true",
    )?;
    let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .filter_map(|stream| stream["state"]["messages"].as_u64())
            .sum(),
    )
}

impl Drop for BenchNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps the metrics endpoint's address from its start-up log line.
fn note_metrics_address(line: &str, address: &std::sync::Mutex<Option<SocketAddr>>) {
    if !line.contains("metrics endpoint listening") {
        return;
    }
    let found = line
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|text| text.parse().ok());
    if let (Some(found), Ok(mut slot)) = (found, address.lock()) {
        *slot = Some(found);
    }
}

/// The body of `GET path` (HTTP/1.0, the server closes), or None.
fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// One sample of the daemon's journal and export sequences.
#[derive(Debug, Clone, Copy)]
struct ExportSample {
    /// Seconds since the watch started.
    at_s: f64,
    /// `sortd_events_written_sequence`: events journaled.
    written: u64,
    /// `sortd_export_acked_sequence`: events the stream acknowledged.
    acked: u64,
}

fn sample_export(metrics: SocketAddr, started: Instant) -> Option<ExportSample> {
    let body = http_get(metrics, "/metrics")?;
    let value = |name: &str| {
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    };
    Some(ExportSample {
        at_s: started.elapsed().as_secs_f64(),
        written: value("sortd_events_written_sequence")?,
        acked: value("sortd_export_acked_sequence")?,
    })
}

/// Samples the daemon's metrics every 100 ms while the load runs.
struct ExportWatch {
    samples: Arc<std::sync::Mutex<Vec<ExportSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    messages_before: u64,
    monitor_port: u16,
    load_seconds: f64,
    nats_pid: u32,
    nats_cpu_before_ns: u64,
}

/// What one export run showed.
#[derive(Debug, Clone, Copy, Default)]
struct ExportFigures {
    /// Events journaled per second over the load.
    journaled_per_s: f64,
    /// Events acknowledged by JetStream per second over the load.
    acked_per_s: f64,
    /// Journaled minus acknowledged when the load ended.
    lag_at_end: u64,
    /// The largest lag seen during the load.
    lag_max: u64,
    /// Seconds from the end of the load until the stream held every event journaled by
    /// then (None: not within the wait).
    caught_up_s: Option<f64>,
    /// Messages the stream stored over the run.
    messages: u64,
    /// Events the stream acknowledged over the run.
    events: u64,
    /// nats-server's CPU time (user + system) over the run, in nanoseconds.
    nats_cpu_ns: u64,
}

impl ExportWatch {
    fn start(nats: &BenchNats, daemon: &Daemon, load_seconds: f64) -> ExportWatch {
        let ready = Instant::now() + Duration::from_secs(10);
        let metrics = loop {
            if let Some(address) = *daemon.metrics_address.lock().expect("metrics address") {
                break address;
            }
            assert!(Instant::now() < ready, "no metrics endpoint log line");
            std::thread::sleep(Duration::from_millis(10));
        };
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
            let started = Instant::now();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(sample) = sample_export(metrics, started) {
                        samples.lock().expect("samples").push(sample);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        ExportWatch {
            samples,
            stop,
            thread: Some(thread),
            messages_before: nats.stream_state().unwrap_or(0),
            monitor_port: nats.monitor_port,
            load_seconds,
            nats_pid: nats.child.id(),
            nats_cpu_before_ns: cpu_time_ns(nats.child.id()),
        }
    }

    /// After the load (and its settle): waits up to 60 s for the stream to catch up,
    /// then computes the figures. The load starts at the first sample with an event.
    fn finish(mut self) -> ExportFigures {
        let deadline = Instant::now() + Duration::from_secs(60);
        let figures = loop {
            let samples = self.samples.lock().expect("samples").clone();
            let figures = export_figures(&samples, self.load_seconds);
            if figures.caught_up_s.is_some() || Instant::now() > deadline {
                break figures;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let messages_after = stream_messages(self.monitor_port).unwrap_or(0);
        ExportFigures {
            messages: messages_after.saturating_sub(self.messages_before),
            nats_cpu_ns: cpu_time_ns(self.nats_pid).saturating_sub(self.nats_cpu_before_ns),
            ..figures
        }
    }
}

/// The figures from the samples (messages left at 0).
fn export_figures(samples: &[ExportSample], load_seconds: f64) -> ExportFigures {
    let Some(first) = samples.iter().position(|s| s.written > 0) else {
        return ExportFigures::default();
    };
    let start = samples[first.saturating_sub(1)];
    let end_at = start.at_s + load_seconds;
    let during = &samples[first..];
    let end = during
        .iter()
        .find(|s| s.at_s >= end_at)
        .or(during.last())
        .copied()
        .unwrap_or(start);
    let span = (end.at_s - start.at_s).max(1e-9);
    let lag_max = during
        .iter()
        .filter(|s| s.at_s <= end.at_s)
        .map(|s| s.written.saturating_sub(s.acked))
        .max()
        .unwrap_or(0);
    let caught_up_s = (end.at_s >= end_at)
        .then(|| {
            during
                .iter()
                .find(|s| s.at_s >= end.at_s && s.acked >= end.written)
        })
        .flatten()
        .map(|s| s.at_s - end.at_s);
    let last = samples.last().copied().unwrap_or(end);
    ExportFigures {
        journaled_per_s: (end.written - start.written) as f64 / span,
        acked_per_s: end.acked.saturating_sub(start.acked) as f64 / span,
        lag_at_end: end.written.saturating_sub(end.acked),
        lag_max,
        caught_up_s,
        messages: 0,
        events: last.acked,
        nats_cpu_ns: 0,
    }
}

/// One batching's export row.
struct ExportRow {
    frames_per_write: usize,
    off: f64,
    journal: f64,
    run: SortdRun,
    figures: Option<ExportFigures>,
}

/// Runs `load` with the export into a fresh nats-server.
fn export_row(
    sortd: &Path,
    plan: &Path,
    load: &Load,
    confirm: bool,
    off: &SortdRun,
    journal: &SortdRun,
) -> ExportRow {
    let nats = BenchNats::start();
    let (run, figures) = run_sortd_with(sortd, plan, load, confirm, true, nats.as_ref());
    if let Some(f) = &figures {
        eprintln!(
            "export {} frames/write: {:.0} events/s journaled, {:.0} acked, lag at end {} (max {}), caught up after {} s, {} messages",
            load.frames_per_write,
            f.journaled_per_s,
            f.acked_per_s,
            f.lag_at_end,
            f.lag_max,
            f.caught_up_s.map_or_else(
                || "(not within the wait)".to_string(),
                |s| format!("{s:.1}")
            ),
            f.messages
        );
    }
    ExportRow {
        frames_per_write: load.frames_per_write,
        off: off.rate,
        journal: journal.rate,
        run,
        figures,
    }
}

fn print_export_table(rows: &[ExportRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| export to NATS JetStream | parcels/s | export / off | export / journal only | CPU ns/parcel | events/s journaled | events/s into JetStream | JetStream / journaled | events per message | lag at load end (events) | lag max (events) | caught up after (s) | nats-server CPU ns/event |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in rows {
        let f = row.figures.unwrap_or_default();
        println!(
            "| {CONNECTIONS} conns, {} frames/write | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {} | {} | {} | {:.0} |",
            row.frames_per_write,
            row.run.rate,
            row.run.rate / row.off.max(1.0),
            row.run.rate / row.journal.max(1.0),
            row.run.cpu_ns_per_parcel,
            f.journaled_per_s,
            f.acked_per_s,
            f.acked_per_s / f.journaled_per_s.max(1.0),
            f.events as f64 / f.messages.max(1) as f64,
            f.lag_at_end,
            f.lag_max,
            f.caught_up_s
                .map_or("not within 60 s".to_string(), |s| format!("{s:.1}")),
            f.nats_cpu_ns as f64 / f.events.max(1) as f64
        );
    }
}
