//! `sortd simulate`: run the deterministic simulation of the core over many seeds and
//! report; a broken promise prints its seed and exits non-zero.
//!
//! The simulation itself is [`sortd::sim::deterministic`]; this file only loops over
//! seeds, prints progress and the totals.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use sortd::sim::deterministic::{PlantedBug, SeedReport, SimOptions, Simulator};

/// Arguments of `sortd simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed (a failure prints the seed that replays it).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Valid scans the simulated scanners send per seed.
    #[arg(long, default_value_t = 200)]
    parcels_per_seed: u64,
    /// Skip the isolation check (promise 4), which runs each seed twice more.
    #[arg(long)]
    no_isolation: bool,
    /// Plant a bug to see the checker catch it: skip-duplicate-window, double-submit,
    /// drop-batch-when-queue-full, garbage-clears-every-buffer, publish-without-verify,
    /// ignore-backpressure.
    #[arg(long)]
    plant: Option<String>,
    /// Print each seed's digest and counts.
    #[arg(long)]
    verbose: bool,
}

/// Runs the seeds; exit status 1 on the first broken promise.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let planted_bug = match args.plant.as_deref() {
        None => None,
        Some(name) => Some(
            PlantedBug::from_name(name).with_context(|| format!("--plant {name}: no such bug"))?,
        ),
    };
    let options = SimOptions {
        parcels_per_seed: args.parcels_per_seed.max(1),
        isolation_check: !args.no_isolation,
        planted_bug,
    };
    let started = Instant::now();
    let simulator = Simulator::new(started).context("writing the simulation's plans")?;
    let mut total = SeedReport::default();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        let report = match simulator.run_seed(seed, &options) {
            Ok(report) => report,
            Err(failure) => {
                println!("FAILED {failure}");
                return Ok(ExitCode::FAILURE);
            }
        };
        if args.verbose {
            println!("{report:?}");
        }
        total.add(&report);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} seeds ({}..{}) kept every promise in {elapsed:.1} s",
        args.seeds,
        args.first_seed,
        args.first_seed.saturating_add(args.seeds)
    );
    println!(
        "  scans sent {} decoded {} | sent to PLC {} duplicate {} undelivered {} late {} | actuated {}",
        total.scans_sent,
        total.scans_decoded,
        total.sent,
        total.duplicates,
        total.undelivered,
        total.late,
        total.actuated
    );
    println!(
        "  held while the PLC link was down {} (of which expired unsent {})",
        total.held, total.held_expired
    );
    println!(
        "  text scanners {} | PLC restarts {} | actuated again after a PLC restart {}",
        total.text_scanners, total.plc_restarts, total.actuated_again_after_restart
    );
    println!(
        "  bytes skipped {} | connections closed {} | plan swaps published {} refused {} | \
         blocked turns {} | PLC link-ups {} | steps {} | clean scanners compared {}",
        total.bytes_skipped,
        total.connections_closed,
        total.swaps_published,
        total.swaps_refused,
        total.blocked_turns,
        total.link_ups,
        total.steps,
        total.isolation_scanners_compared
    );
    println!(
        "  sortd crashes {} (power losses {}, torn tails cut {}, segments set aside {}) | decisions lost in flight {} | \
         events journaled {} in the stream {} in {} messages | duplicate publishes refused {} | \
         NATS connections lost {}",
        total.sortd_crashes,
        total.power_losses,
        total.torn_tails_cut,
        total.segments_set_aside,
        total.lost_in_crash,
        total.events_journaled,
        total.events_in_stream,
        total.nats_messages,
        total.nats_duplicates_refused,
        total.nats_connection_losses
    );
    Ok(ExitCode::SUCCESS)
}
