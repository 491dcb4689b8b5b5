//! `sortd loadgen`: play scanners (and, by default, the PLC) against a running sortd and
//! report throughput, decisions and latency.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sortd::loadgen::mix::MixShares;
use sortd::loadgen::scanners::{Pacing, ScannerOptions};
use sortd::loadgen::{LoadOptions, run_load};
use sortd::plc::PeerConfig;
use sortd::sim::plc::{PlcSim, PlcSimCounters, PlcSimOptions, SimMode};
use sortd::wire::TextProfile;

/// Arguments of `sortd loadgen`.
#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// sortd's scanner listener (binary protocol).
    #[arg(long, default_value = "127.0.0.1:7100")]
    target: SocketAddr,
    /// The plan the daemon serves (compiled or CSV): parcels are drawn from it.
    #[arg(long)]
    plan: PathBuf,
    /// Scanner connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Scanner protocol: `binary`, or a built-in text profile (`sick-dws`, `sick-clv`,
    /// `datalogic`) to play those scanners; `--target` must be a listener of that
    /// protocol. Without a parcel id in the telegram (sick-clv, datalogic) latency is
    /// not measured and no duplicates are sent.
    #[arg(long, default_value = "binary")]
    profile: String,
    /// Frames per write (1 = one parcel per send; 16+ = a coalescing gateway).
    #[arg(long, default_value_t = 1)]
    frames_per_write: usize,
    /// Parcels per second, evenly paced (open loop). Without it: as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
    /// Open loop: how the pacer waits for the next parcel's time: `sleep` (leaves the
    /// CPU to the daemon; parcels due within the timer's granularity go out together)
    /// or `spin` (on time, but takes a core: only with a core to spare).
    #[arg(long, default_value = "sleep")]
    pacing: String,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Parcels to send (stops at whichever of duration and count comes first).
    #[arg(long)]
    count: Option<u64>,
    /// Seed of the parcel mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parcel mix weights: exact,prefix,unknown,no_read,multi_read,duplicate.
    #[arg(long, value_delimiter = ',', default_values_t = [30u32, 55, 4, 5, 3, 3])]
    mix: Vec<u32>,
    /// Play the PLC, listening here for sortd (its `plc.address`).
    #[arg(long, default_value = "127.0.0.1:7200")]
    plc_listen: SocketAddr,
    /// Do not play the PLC (another PLC or plc-sim is attached); latency is then not
    /// measured.
    #[arg(long)]
    no_plc: bool,
    /// Seconds to wait for the PLC link before sending and for decisions after.
    #[arg(long, default_value_t = 10.0)]
    settle_s: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency percentile curve here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Runs the load; exits non-zero when a parcel went missing or counts disagree.
pub fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    super::run::init_logging("warn");
    if args.mix.len() != 6 {
        anyhow::bail!(
            "--mix takes six weights: exact,prefix,unknown,no_read,multi_read,duplicate (got {})",
            args.mix.len()
        );
    }
    let shares = MixShares {
        exact: args.mix.first().copied().unwrap_or(0),
        prefix: args.mix.get(1).copied().unwrap_or(0),
        unknown: args.mix.get(2).copied().unwrap_or(0),
        no_read: args.mix.get(3).copied().unwrap_or(0),
        multi_read: args.mix.get(4).copied().unwrap_or(0),
        duplicate: args.mix.get(5).copied().unwrap_or(0),
    };
    let profile = match args.profile.as_str() {
        "binary" => None,
        name => Some(TextProfile::builtin(name).with_context(|| {
            format!(
                "--profile {name}: not binary or a built-in text profile ({})",
                TextProfile::builtin_names().join(", ")
            )
        })?),
    };
    let pacing = Pacing::from_name(&args.pacing)
        .with_context(|| format!("--pacing {}: expected sleep or spin", args.pacing))?;
    let options = LoadOptions {
        scanners: ScannerOptions {
            target: args.target,
            connections: args.connections.max(1),
            frames_per_write: args.frames_per_write.max(1),
            rate_per_s: args.rate,
            duration: Some(Duration::from_secs_f64(args.duration_s.max(0.0))),
            count: args.count,
            scanner_id_base: 1,
            profile,
            pacing,
        },
        plan_path: args.plan,
        shares,
        seed: args.seed,
        settle: Duration::from_secs_f64(args.settle_s.max(0.0)),
        progress: true,
    };
    let plc = if args.no_plc {
        None
    } else {
        Some(
            PlcSim::new(
                PlcSimOptions {
                    mode: SimMode::Listen(args.plc_listen),
                    link: PeerConfig::default(),
                    confirm_delay: Some(Duration::from_millis(1500)),
                    chute_faults: None,
                    link_faults: Vec::new(),
                    chute_events: Vec::new(),
                },
                std::sync::Arc::new(PlcSimCounters::default()),
                None,
            )
            .with_context(|| format!("listening for sortd's PLC link on {}", args.plc_listen))?,
        )
    };
    let report = run_load(&options, plc, None)?;
    print!("{}", report.render());
    write_outputs(&report, args.json.as_deref(), args.plot.as_deref())?;
    Ok(if report.discrepancies.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes the JSON report and the SVG plot where asked.
pub fn write_outputs(
    report: &sortd::loadgen::report::LoadReport,
    json: Option<&std::path::Path>,
    plot: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
