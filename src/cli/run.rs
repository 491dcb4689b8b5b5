//! `sortd run --config FILE`: validate the configuration, start the daemon and the metrics
//! endpoint, and run the main loop: signals become plan reloads (SIGHUP) and a drain
//! (SIGTERM, SIGINT; a second one exits at once), systemd hears READY, RELOADING,
//! STOPPING and a STATUS line, and the watchdog is fed while every daemon thread turns.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sortd::daemon::systemd::{
    Liveness, LivenessWatch, Notifier, STATUS_INTERVAL, StatusFigures, status_text,
};
use sortd::daemon::{self, Daemon};
use sortd::web::{WebServer, WebSettings, WebSources};

use super::EXIT_USAGE;

/// Arguments of `sortd run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file (see config/sortd.toml for every key and its default).
    #[arg(long, short)]
    config: PathBuf,
    /// Validate the configuration and open and verify the plan, then exit (0 when good,
    /// 64 naming the problem when not) without binding a socket.
    #[arg(long)]
    check: bool,
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
    if args.check {
        return Ok(check(&args.config, &config));
    }
    init_logging(&config.log_filter);
    if let Some(export) = &config.export {
        for warning in
            sortd::export::config::secret_exposure_warnings(&args.config, &export.connection.auth)
        {
            tracing::warn!("{warning}");
        }
    }
    if let Some(hub) = &config.hub {
        for warning in
            sortd::export::config::secret_exposure_warnings(&args.config, &hub.connection.auth)
        {
            tracing::warn!("{warning}");
        }
    }
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let metrics_settings = config.metrics.clone();
    let daemon = Daemon::start(config)?;
    let metrics = metrics_settings.address.and_then(|address| {
        start_web(
            &daemon,
            WebSettings {
                address,
                security: metrics_settings.security.clone(),
            },
        )
    });
    let notifier = Notifier::from_environment();
    let mut status = StatusReporter::new(&daemon);
    notifier.ready(&status.line(&daemon, Instant::now()));
    tracing::info!(
        systemd = notifier.is_active(),
        watchdog_ms = notifier
            .watchdog_period()
            .map(|period| period.as_millis() as u64),
        "sortd running"
    );

    let mut watch = LivenessWatch::new(&daemon.thread_turns());
    let check_interval = notifier.liveness_check_interval();
    let mut next_check = Instant::now() + check_interval;
    let mut next_status = Instant::now() + STATUS_INTERVAL;
    let mut stalled = false;
    // Signals arrive through a channel, so the main loop sleeps until a signal or its next
    // due check instead of waking every few milliseconds to look.
    let handle = signals.handle();
    let (signal_sender, signal_receiver) = mpsc::channel();
    let forwarder = std::thread::Builder::new()
        .name("sortd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_sender.send(signal).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    'serve: loop {
        let wait = next_check
            .min(next_status)
            .saturating_duration_since(Instant::now())
            .min(MAIN_LOOP_WAIT_MAX);
        match signal_receiver.recv_timeout(wait) {
            Ok(SIGHUP) => {
                notifier.reloading();
                // Failures are logged and counted by the daemon; the old plan stays.
                let _ = daemon.reload_plan();
                reload_web_config(metrics.as_ref(), metrics_settings.web_config.as_deref());
                notifier.ready(&status.line(&daemon, Instant::now()));
            }
            Ok(_) | Err(RecvTimeoutError::Disconnected) => break 'serve,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if daemon.has_stopped_thread() {
            tracing::error!("a daemon thread stopped unexpectedly; shutting down");
            break;
        }
        let now = Instant::now();
        if now >= next_check {
            next_check = now + check_interval;
            match watch.observe(&daemon.thread_turns()) {
                Liveness::AllAdvanced => {
                    notifier.watchdog();
                    if std::mem::take(&mut stalled) {
                        tracing::info!("every daemon thread is turning again");
                    }
                }
                Liveness::Stalled { thread } => {
                    if !std::mem::replace(&mut stalled, true) {
                        let names = daemon.thread_names();
                        tracing::warn!(
                            thread = names.get(thread).copied().unwrap_or("?"),
                            check_interval_ms = check_interval.as_millis() as u64,
                            "a daemon thread's loop did not turn; not feeding the watchdog"
                        );
                    }
                }
            }
        }
        if now >= next_status {
            next_status = now + STATUS_INTERVAL;
            if notifier.is_active() {
                notifier.status(&status.line(&daemon, now));
            }
        }
    }

    tracing::info!("stopping: draining received parcels");
    notifier.stopping("draining: deciding and sending every parcel received");
    let second_signal = std::thread::spawn(move || {
        // Ends when the forwarder does (`handle.close()` below).
        if signal_receiver
            .iter()
            .any(|signal| signal == SIGTERM || signal == SIGINT)
        {
            tracing::warn!("second stop signal: exiting at once");
            std::process::exit(1);
        }
    });
    let counters = daemon.counters.clone();
    let result = daemon.shutdown();
    // Scrapes are answered during the drain; the endpoint goes last.
    if let Some(metrics) = metrics {
        metrics.shutdown();
    }
    handle.close();
    let _ = forwarder.join();
    let _ = second_signal.join();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let by_reason: Vec<String> = sortd::decision::Reason::ALL
        .iter()
        .map(|reason| {
            format!(
                "{}={}/{}",
                reason.as_str(),
                counters.decided(*reason) - counters.decided_undelivered.get(*reason),
                counters.decided_undelivered.get(*reason)
            )
        })
        .collect();
    tracing::info!(
        scans = load(&counters.scans_in),
        decided = counters.decided_total(),
        sent_to_plc = counters.decided_sent.total(),
        duplicates = load(&counters.decided_duplicate),
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

/// `--check`: the configuration parsed and validated; open and verify the plan too.
fn check(path: &std::path::Path, config: &daemon::config::Config) -> ExitCode {
    match daemon::check_plan(config) {
        Ok(plan) => {
            println!(
                "sortd: {} is valid; plan \"{}\" version {} verified",
                path.display(),
                plan.name(),
                plan.version()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sortd: {}: {error}", path.display());
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The longest the main loop waits for a signal before it looks at the daemon's threads
/// again (a thread that stopped is noticed within this).
const MAIN_LOOP_WAIT_MAX: Duration = Duration::from_millis(250);

/// Starts the web endpoint (metrics, operator page). A failure to bind is logged, not
/// fatal: the sorter keeps sorting without metrics rather than stopping (or
/// restart-looping) over a taken port. (A bad web-config file stopped the start earlier,
/// with the configuration.)
fn start_web(daemon: &Daemon, settings: WebSettings) -> Option<WebServer> {
    let address = settings.address;
    let tls = settings.security.tls.is_some();
    let basic_auth = settings.security.auth.is_required();
    let sources = WebSources {
        counters: daemon.counters.clone(),
        plan: daemon.plan.clone(),
        chute_states: daemon.chute_states.clone(),
        ingress_workers: daemon.ingress_workers(),
        export: daemon.export.clone(),
        journal: daemon.journal.clone(),
        hub: daemon.hub.clone(),
        hub_preadvice: daemon.hub_preadvice.clone(),
    };
    match WebServer::start(settings, sources) {
        Ok(server) => {
            tracing::info!(address = %server.local_address(), tls, basic_auth, "metrics endpoint listening");
            Some(server)
        }
        Err(error) => {
            tracing::error!(%address, %error, "metrics endpoint not started; sorting continues without it");
            None
        }
    }
}

/// Reads the web-config file again (SIGHUP) so that a new password or certificate takes
/// effect without a restart; a file that no longer checks out is logged and the settings
/// in force stay.
fn reload_web_config(server: Option<&WebServer>, path: Option<&std::path::Path>) {
    let (Some(server), Some(path)) = (server, path) else {
        return;
    };
    match sortd::web::WebSecurity::load(path) {
        Ok(security) => {
            server.replace_security(security);
            tracing::info!(path = %path.display(), "web-config reloaded");
        }
        Err(error) => tracing::error!(
            path = %path.display(),
            %error,
            "web-config reload failed; the previous TLS and basic-auth settings stay"
        ),
    }
}

/// Builds the STATUS line, with the decision rate since the previous one.
struct StatusReporter {
    previous_decided: u64,
    previous_at: Instant,
}

impl StatusReporter {
    fn new(daemon: &Daemon) -> StatusReporter {
        StatusReporter {
            previous_decided: daemon.counters.decided_total(),
            previous_at: Instant::now(),
        }
    }

    fn line(&mut self, daemon: &Daemon, now: Instant) -> String {
        let counters = &daemon.counters;
        let decided = counters.decided_total();
        let elapsed_s = now
            .saturating_duration_since(self.previous_at)
            .as_secs_f64();
        let decided_per_s = if elapsed_s > 0.0 {
            decided.saturating_sub(self.previous_decided) as f64 / elapsed_s
        } else {
            0.0
        };
        self.previous_decided = decided;
        self.previous_at = now;
        let plan = daemon.plan.load();
        status_text(&StatusFigures {
            decided,
            decided_per_s,
            plc_link_up: counters.plc.link_up.load(Ordering::Relaxed),
            in_flight: counters.plc.in_flight.load(Ordering::Relaxed),
            connections_open: counters.connections_open.load(Ordering::Relaxed),
            plan_name: plan.name(),
            plan_version: plan.version(),
            journal: daemon.journal.as_ref().map(|journal| {
                let counters = journal.snapshot();
                (counters.events_journaled, counters.lost_total())
            }),
        })
    }
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
