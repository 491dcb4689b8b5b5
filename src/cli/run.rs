//! `sortd run --config FILE`: validate the configuration, start the daemon, and turn
//! signals into plan reloads (SIGHUP) and a drain (SIGTERM, SIGINT; a second one exits at
//! once).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sortd::daemon::{self, Daemon};

use super::EXIT_USAGE;

/// Arguments of `sortd run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file (see config/sortd.toml for every key and its default).
    #[arg(long, short)]
    config: PathBuf,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match daemon::config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!(
                "sortd: bad configuration {}: {error}",
                args.config.display()
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    init_logging(&config.log_filter);
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let daemon = Daemon::start(config)?;
    tracing::info!("sortd running");

    'serve: loop {
        for signal in signals.pending() {
            match signal {
                SIGHUP => {
                    if let Err(error) = daemon.reload_plan() {
                        tracing::error!(%error, "plan reload failed; still serving the previous plan");
                    }
                }
                _ => break 'serve,
            }
        }
        if daemon.has_stopped_thread() {
            tracing::error!("a daemon thread stopped unexpectedly; shutting down");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    tracing::info!("stopping: draining received parcels");
    let handle = signals.handle();
    let second_signal = std::thread::spawn(move || {
        if signals
            .forever()
            .any(|signal| signal == SIGTERM || signal == SIGINT)
        {
            tracing::warn!("second stop signal: exiting at once");
            std::process::exit(1);
        }
    });
    let counters = daemon.counters.clone();
    let result = daemon.shutdown();
    handle.close();
    let _ = second_signal.join();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let by_reason: Vec<String> = sortd::decision::Reason::ALL
        .iter()
        .map(|reason| {
            format!(
                "{}={}/{}",
                reason.as_str(),
                counters.decided_sent.get(*reason),
                counters.decided_undelivered.get(*reason)
            )
        })
        .collect();
    tracing::info!(
        scans = load(&counters.scans_in),
        decided = counters.decided_total(),
        sent_to_plc = counters.decided_sent.total() - counters.decided_sent.get(sortd::decision::Reason::Duplicate),
        undelivered = counters.decided_undelivered.total(),
        bytes_skipped = load(&counters.bytes_skipped),
        refused_limit = load(&counters.connections_refused_limit),
        refused_address = load(&counters.connections_refused_address),
        closed_frame_deadline = load(&counters.connections_closed_frame_deadline),
        reasons_sent_undelivered = %by_reason.join(","),
        "sortd stopped"
    );
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr through tracing: plain text without colours when not on a terminal
/// (journald), `RUST_LOG` overriding the configured filter.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
