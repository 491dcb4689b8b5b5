//! `sortd demo`: the first thing a newcomer runs. In one process it starts a simulated
//! PLC, the daemon with the built-in example plan, and scanners, runs two short phases (a
//! busy hub at a steady rate, then flat out), and explains what happened. The first phase
//! journals every sort event ([events] on, in the temporary folder) and tells one
//! parcel's story from the journal, as `sortd events find` does.
//!
//! Nothing to prepare: the example plan is compiled into the binary and written to a
//! private temporary folder.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sortd::daemon::{Daemon, config};
use sortd::events::journal::JournalReader;
use sortd::events::record::{self, Action, Event, RecordDecoded};
use sortd::loadgen::mix::MixShares;
use sortd::loadgen::report::LoadReport;
use sortd::loadgen::scanners::ScannerOptions;
use sortd::loadgen::{LoadOptions, run_load};
use sortd::plan::Plan;
use sortd::plc::PeerConfig;
use sortd::sim::plc::{ChuteFaults, PlcSim, PlcSimCounters, PlcSimOptions, SimMode};

/// The example plan, built into the binary.
const EXAMPLE_PLAN_CSV: &str = include_str!("../../config/example-plan.csv");

/// Arguments of `sortd demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Total running time in seconds, split between the two phases.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Parcels per second in the steady phase.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Write the steady phase's latency curve here (SVG).
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

struct Phase {
    title: &'static str,
    story: &'static str,
    connections: usize,
    frames_per_write: usize,
    rate_per_s: Option<u64>,
    seconds: f64,
    /// Journal the phase's sort events (the flat-out phase does not: its figure is
    /// sortd's raw speed, and its events would take gigabytes of temporary disk).
    journal: bool,
}

/// Runs the demo; exits non-zero if any parcel went missing.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Each phase stops its simulated PLC before its daemon; the PLC thread's "link down"
    // at that moment is expected, so only its errors are shown.
    super::run::init_logging("warn,sortd::net::egress=error");
    let folder = tempfile::tempdir().context("creating a temporary folder")?;
    let plan_path = folder.path().join("example-plan.csv");
    std::fs::write(&plan_path, EXAMPLE_PLAN_CSV).context("writing the example plan")?;
    let plan = sortd::daemon::PlanSource::new(plan_path.clone()).open()?;
    let stats = plan.stats();
    println!(
        "sortd demo: plan \"{}\" (version {}): {} exact tracking numbers, {} destination-code prefixes",
        plan.name(),
        plan.version(),
        stats.exact_keys,
        stats.prefix_keys
    );
    let chutes = busy_chutes(&plan);
    drop(plan);

    let seconds = args.seconds.max(1.0);
    let phases = [
        Phase {
            title: "Phase 1: a busy hub",
            story: "16 scanners, each sending one parcel per TCP write, evenly paced",
            connections: 16,
            frames_per_write: 1,
            rate_per_s: Some(args.rate.max(1)),
            seconds: seconds * 0.6,
            journal: true,
        },
        Phase {
            title: "Phase 2: flat out",
            story: "4 DWS gateways coalescing 64 parcels per write, as fast as sortd takes them",
            connections: 4,
            frames_per_write: 64,
            rate_per_s: None,
            seconds: seconds * 0.4,
            journal: false,
        },
    ];
    let mut all_good = true;
    for (index, phase) in phases.iter().enumerate() {
        println!();
        println!("{}: {}", phase.title, phase.story);
        let journal_dir = folder.path().join(format!("events-phase-{}", index + 1));
        let journal = phase.journal.then_some(journal_dir.as_path());
        let report = run_phase(phase, &plan_path, &chutes, index as u64, journal)?;
        explain(&report, phase);
        if let Some(dir) = journal {
            explain_events(dir, confirm_delay(phase))?;
        }
        if index == 0 {
            if let Some(path) = &args.plot {
                std::fs::write(path, report.svg())
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("  latency curve written to {}", path.display());
            }
        }
        all_good &= report.discrepancies.is_empty();
    }
    println!();
    if all_good {
        println!(
            "Every parcel sent got exactly one decision. Next: README.md, `sortd run --config config/sortd.toml`."
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("Some parcels were not accounted for: see the MISMATCH lines above.");
        Ok(ExitCode::FAILURE)
    }
}

/// The primary chutes of the plan's rules, for the simulated chute faults.
fn busy_chutes(plan: &Plan) -> Vec<u16> {
    let mut chutes: Vec<u16> = plan
        .prefix_entries()
        .map(|(_, chutes)| chutes.primary())
        .collect();
    chutes.sort_unstable();
    chutes.dedup();
    chutes
}

/// How long after a SORT the simulated PLC confirms it (the parcel's ride to its
/// chute): 1.5 s, shorter in a short phase so that most parcels' outcomes come in before
/// it ends.
fn confirm_delay(phase: &Phase) -> Duration {
    Duration::from_millis(1500).min(Duration::from_secs_f64(phase.seconds / 4.0))
}

fn run_phase(
    phase: &Phase,
    plan_path: &Path,
    chutes: &[u16],
    seed: u64,
    journal: Option<&Path>,
) -> anyhow::Result<LoadReport> {
    let counters = Arc::new(PlcSimCounters::default());
    let sim = PlcSim::new(
        PlcSimOptions {
            mode: SimMode::Listen("127.0.0.1:0".parse()?),
            link: PeerConfig::default(),
            confirm_delay: Some(confirm_delay(phase)),
            chute_faults: Some(ChuteFaults {
                seed: seed + 7,
                interval_mean: Duration::from_millis(300),
                hold: Duration::from_secs(2),
                disabled_percent: 20,
                chutes: chutes.to_vec(),
            }),
            link_faults: Vec::new(),
            chute_events: Vec::new(),
        },
        counters,
        None,
    )
    .context("starting the PLC simulator")?;
    let plc_address = sim
        .local_address()
        .context("the PLC simulator has no address")?;
    let quoted = |path: &Path| path.display().to_string().replace('\\', "\\\\");
    let events = journal.map_or(String::new(), |dir| {
        format!(
            "[events]\nenabled = true\ndir = \"{}\"\nhub_id = \"demo\"\nsorter_id = \"demo-sorter\"\n",
            quoted(dir)
        )
    });
    let config_text = format!(
        r#"
[plan]
path = "{plan}"
[[scanners.listeners]]
address = "127.0.0.1:0"
protocol = "binary"
[plc]
address = "{plc_address}"
[log]
filter = "warn,sortd::net::egress=error"
{events}"#,
        plan = quoted(plan_path)
    );
    let file = config::parse(&config_text).map_err(|error| anyhow::anyhow!("{error}"))?;
    let config =
        config::validate(file, Path::new(".")).map_err(|error| anyhow::anyhow!("{error}"))?;
    let daemon = Daemon::start(config)?;
    let target = *daemon
        .scanner_addresses()
        .first()
        .context("the daemon has no scanner listener")?;
    let options = LoadOptions {
        scanners: ScannerOptions {
            target,
            connections: phase.connections,
            frames_per_write: phase.frames_per_write,
            rate_per_s: phase.rate_per_s,
            duration: Some(Duration::from_secs_f64(phase.seconds)),
            count: None,
            scanner_id_base: 1,
            profile: None,
            pacing: sortd::loadgen::scanners::Pacing::default(),
        },
        plan_path: plan_path.to_path_buf(),
        shares: MixShares::default(),
        seed: seed + 1,
        settle: Duration::from_secs(10),
        progress: true,
    };
    let counters = daemon.counters.clone();
    let report = run_load(&options, Some(sim), Some(&counters));
    daemon.shutdown()?;
    Ok(report?)
}

fn explain(report: &LoadReport, phase: &Phase) {
    println!(
        "  {} parcels in {:.1} s: {:.0} parcels per second{}",
        report.sent,
        report.elapsed_s,
        report.throughput_per_s,
        match phase.rate_per_s {
            Some(rate) => format!(" (asked for {rate}/s)"),
            None => String::new(),
        }
    );
    println!("  where they went:");
    for (reason, count) in &report.reasons {
        let share = 100.0 * *count as f64 / report.decided.max(1) as f64;
        let meaning = match reason.as_str() {
            "sorted_primary" => "to the chute the plan names first",
            "sorted_alternate" => "to an alternate chute: the first was full or disabled",
            "no_read" => "no barcode and no code: the no-read chute",
            "multi_read" => "barcodes that disagree: the multi-read chute",
            "no_rule" => "nothing in the plan matched: the exception chute",
            "chute_unavailable" => "every chute of its rule was full: the exception chute",
            "late" => "decided after its deadline: the late chute",
            "duplicate" => "the same parcel scanned twice: not actuated again",
            _ => "",
        };
        println!("    {count:>10} ({share:>5.1}%) {reason}: {meaning}");
    }
    if !report.top_chutes.is_empty() {
        let busiest: Vec<String> = report
            .top_chutes
            .iter()
            .take(5)
            .map(|(chute, count)| format!("chute {chute} ({count})"))
            .collect();
        println!("  busiest chutes: {}", busiest.join(", "));
    }
    let latency = report.latency_us;
    println!(
        "  time from a scanner sending a parcel to its SORT reaching the PLC: half within {} us, \
99% within {} us, 99.9% within {} us, worst {} us",
        latency.p50, latency.p99, latency.p999, latency.max
    );
    if phase.rate_per_s.is_none() {
        println!(
            "  (flat out, every parcel waits behind those the gateways already queued, so \
this is queueing time; phase 1 shows sortd's own latency)"
        );
    }
    for discrepancy in &report.discrepancies {
        println!("  MISMATCH: {discrepancy}");
    }
}

/// What a phase's journal holds: decisions by action, outcomes, bytes, and a parcel
/// worth telling (sent, with barcodes, a destination and an outcome).
#[derive(Default)]
struct JournalSummary {
    decisions: u64,
    not_actuated: u64,
    outcomes: u64,
    bytes: u64,
    /// Sent parcels with barcodes and a destination, awaiting their outcome.
    candidates: std::collections::HashSet<(u32, u64)>,
    story: Option<u64>,
}

/// Candidates looked at, at most, for the story.
const STORY_CANDIDATES_MAX: usize = 1000;

fn summarize(dir: &Path) -> anyhow::Result<JournalSummary> {
    let mut reader = JournalReader::open(dir).context("opening the demo's journal")?;
    let mut summary = JournalSummary::default();
    let mut buf = Vec::with_capacity(1 << 20);
    loop {
        buf.clear();
        let batch = reader.read_batch(&mut buf, 4096, 1 << 20)?;
        if batch.records == 0 {
            return Ok(summary);
        }
        let mut rest = buf.as_slice();
        while let RecordDecoded::Complete { record, consumed } = record::decode(rest) {
            summary.bytes += consumed as u64;
            match record.event {
                Event::Decision(d) => {
                    summary.decisions += 1;
                    if d.action != Action::Sent {
                        summary.not_actuated += 1;
                    } else if !d.barcodes.is_empty()
                        && !d.destination.is_empty()
                        && summary.candidates.len() < STORY_CANDIDATES_MAX
                    {
                        summary.candidates.insert((d.scanner_id, d.parcel_id));
                    }
                }
                Event::Outcome(o) => {
                    summary.outcomes += 1;
                    if summary.story.is_none()
                        && summary.candidates.contains(&(o.scanner_id, o.parcel_id))
                    {
                        summary.story = Some(o.parcel_id);
                    }
                }
            }
            rest = rest.get(consumed..).unwrap_or_default();
        }
    }
}

fn explain_events(dir: &Path, confirm_delay: Duration) -> anyhow::Result<()> {
    let summary = summarize(dir)?;
    println!(
        "  sort events journaled: {} decisions ({} sent to the PLC, {} not actuated) and {} \
PLC outcomes, {:.1} MB",
        summary.decisions,
        summary.decisions.saturating_sub(summary.not_actuated),
        summary.not_actuated,
        summary.outcomes,
        summary.bytes as f64 / 1e6
    );
    let sent = summary.decisions.saturating_sub(summary.not_actuated);
    if summary.outcomes < sent {
        println!(
            "  (the simulated PLC confirms a SORT {:.1} s after it; the last parcels' outcomes \
were still on their way when the phase stopped)",
            confirm_delay.as_secs_f64()
        );
    }
    let Some(parcel) = summary.story else {
        return Ok(());
    };
    println!("  one parcel's story, as `sortd events find --parcel {parcel}` tells it:");
    let mut story = Vec::new();
    super::events::find(dir, Some(parcel), None, false, &mut story)?;
    for line in String::from_utf8_lossy(&story).lines() {
        println!("    {line}");
    }
    Ok(())
}
