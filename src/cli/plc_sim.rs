//! `sortd plc-sim`: run the PLC simulator on its own, for manual tests and fault drills.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sortd::loadgen::report::LatencyUs;
use sortd::plc::PeerConfig;
use sortd::sim::plc::{
    ChuteFaults, LinkFault, LinkFaultKind, PlcSim, PlcSimCounters, PlcSimOptions, SimMode,
};

/// Arguments of `sortd plc-sim`.
#[derive(Debug, clap::Args)]
pub struct PlcSimArgs {
    /// Listen for sortd here (sortd's `plc.mode = "connect"`).
    #[arg(long, default_value = "127.0.0.1:7200", conflicts_with = "connect")]
    listen: SocketAddr,
    /// Dial sortd here instead (sortd's `plc.mode = "listen"`).
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Conveyor delay from SORT to SORT_CONFIRM; 0 sends no confirmations.
    #[arg(long, default_value_t = 1500)]
    confirm_delay_ms: u64,
    /// Chutes that may go full or disabled at random, e.g. `101,102,103`.
    #[arg(long, value_delimiter = ',')]
    fault_chutes: Vec<u16>,
    /// Mean time between random chute faults.
    #[arg(long, default_value_t = 1000)]
    fault_interval_ms: u64,
    /// How long a faulted chute stays full or disabled.
    #[arg(long, default_value_t = 3000)]
    fault_hold_ms: u64,
    /// Share of chute faults that disable instead of fill, in percent.
    #[arg(long, default_value_t = 20)]
    fault_disabled_percent: u8,
    /// Seed of the random chute faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Drop the link at these times (seconds after sortd first connected).
    #[arg(long, value_delimiter = ',')]
    drop_at_s: Vec<f64>,
    /// Stall the link: `SECONDS:MILLISECONDS` (when, after sortd first connected; how long), repeatable.
    #[arg(long)]
    stall: Vec<String>,
    /// ACK every N SORTs (1 = at once, per batch of input).
    #[arg(long, default_value_t = 1)]
    ack_every: u32,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration_s: Option<f64>,
}

fn parse_stall(text: &str) -> anyhow::Result<LinkFault> {
    let (at, length) = text
        .split_once(':')
        .with_context(|| format!("--stall {text}: expected SECONDS:MILLISECONDS"))?;
    Ok(LinkFault {
        at: Duration::from_secs_f64(at.parse().with_context(|| format!("--stall {text}"))?),
        kind: LinkFaultKind::Stall(Duration::from_millis(
            length.parse().with_context(|| format!("--stall {text}"))?,
        )),
    })
}

/// Runs the simulator until the duration ends or a stop signal arrives.
pub fn run(args: PlcSimArgs) -> anyhow::Result<ExitCode> {
    super::run::init_logging("info");
    let mut link_faults: Vec<LinkFault> = args
        .drop_at_s
        .iter()
        .map(|at| LinkFault {
            at: Duration::from_secs_f64(at.max(0.0)),
            kind: LinkFaultKind::Drop,
        })
        .collect();
    for stall in &args.stall {
        link_faults.push(parse_stall(stall)?);
    }
    let mut link = PeerConfig::default();
    link.ack_policy.every_telegrams = args.ack_every.max(1);
    if link.ack_policy.every_telegrams > 1 {
        link.ack_policy.delay_ms_max = 5;
    }
    let options = PlcSimOptions {
        mode: match args.connect {
            Some(address) => SimMode::Connect(address),
            None => SimMode::Listen(args.listen),
        },
        link,
        confirm_delay: (args.confirm_delay_ms > 0)
            .then(|| Duration::from_millis(args.confirm_delay_ms)),
        chute_faults: (!args.fault_chutes.is_empty()).then(|| ChuteFaults {
            seed: args.seed,
            interval_mean: Duration::from_millis(args.fault_interval_ms.max(1)),
            hold: Duration::from_millis(args.fault_hold_ms),
            disabled_percent: args.fault_disabled_percent.min(100),
            chutes: args.fault_chutes.clone(),
        }),
        link_faults,
        chute_events: Vec::new(),
    };
    let counters = Arc::new(PlcSimCounters::default());
    let sim = PlcSim::new(options, counters.clone(), None).context("starting the PLC simulator")?;
    if let Some(address) = sim.local_address() {
        tracing::info!(%address, "plc-sim listening for sortd");
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || sim.run(&stop))
    };
    let started = Instant::now();
    let duration = args.duration_s.map(Duration::from_secs_f64);
    while !stop.load(Ordering::Acquire) && !runner.is_finished() {
        if duration.is_some_and(|duration| started.elapsed() >= duration) {
            stop.store(true, Ordering::Release);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Release);
    runner
        .join()
        .map_err(|_| anyhow::anyhow!("simulator thread panicked"))??;
    print_summary(&counters);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(counters: &PlcSimCounters) {
    println!(
        "plc-sim: {} SORTs received, {} retransmissions ignored, {} connections",
        counters.sorts.load(Ordering::Relaxed),
        counters.duplicates_ignored.load(Ordering::Relaxed),
        counters.connections.load(Ordering::Relaxed)
    );
    for reason in sortd::decision::Reason::ALL {
        let count = counters.by_reason.get(reason);
        if count > 0 {
            println!("  {:<18} {count}", reason.as_str());
        }
    }
    if let Ok(confirms) = counters.confirms.lock() {
        for (outcome, count) in confirms.iter() {
            println!("  confirmed {outcome:<9} {count}");
        }
    }
    if let Ok(latency) = counters.latency_us.lock() {
        if !latency.is_empty() {
            let latency = LatencyUs::of(&latency);
            println!(
                "  latency receipt -> PLC (us): p50 {} p99 {} p99.9 {} max {}",
                latency.p50, latency.p99, latency.p999, latency.max
            );
        }
    }
}
