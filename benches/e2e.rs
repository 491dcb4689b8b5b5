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
//! PLC sends SORT_CONFIRMs, default 1).

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

    let mut rows = Vec::new();
    for frames_per_write in BATCHINGS {
        let load = Load {
            connections: CONNECTIONS,
            frames_per_write,
            rate_per_s: None,
            seconds,
            profile: None,
        };
        let run = run_sortd(&sortd, &plan, &load, confirm, false);
        let journaling = run_sortd(&sortd, &plan, &load, confirm, true);
        let redis = redis_get_rate(CONNECTIONS, frames_per_write, seconds);
        let relay = relay_rate(&plan, CONNECTIONS, frames_per_write, seconds);
        rows.push((frames_per_write, run, journaling, redis, relay));
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
/// journal sort events into the daemon's temporary folder.
fn start_daemon(
    sortd: &Path,
    plan: &Path,
    plc: SocketAddr,
    protocol: &str,
    events: bool,
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
    std::fs::write(
        &config,
        format!(
            "[plan]\npath = \"{}\"\n[[scanners.listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\n[plc]\naddress = \"{plc}\"\n[log]\nfilter = \"warn,sortd::daemon=info\"\n[metrics]\naddress = \"127.0.0.1:0\"\n{events}",
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
    let scanner_address = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("sortd exited before listening");
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
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Daemon {
        child,
        scanner_address,
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
    let daemon = start_daemon(sortd, plan, plc_address, &protocol, events);
    let pid = daemon.child.id();
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
    drop(daemon);
    let rate = report.decided as f64 / report.elapsed_s.max(1e-9);
    eprintln!(
        "sortd {connections} conns x {frames_per_write} frames/write{}{}: {:.0} parcels/s, p99.9 {} us, missing {}",
        rate_per_s.map_or(String::new(), |r| format!(" at {r}/s")),
        if events { ", events on" } else { "" },
        rate,
        report.latency_us.p999,
        report.missing
    );
    SortdRun {
        rate,
        cpu_ns_per_parcel: cpu as f64 / report.decided.max(1) as f64,
        rss_anon_mib: rss,
        report,
    }
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
