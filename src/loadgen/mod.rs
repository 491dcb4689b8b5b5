//! `sortd loadgen`: plays N scanners against a running sortd and, by default, plays its
//! PLC too, so that each parcel's latency runs from its intended send time to the moment
//! its SORT reaches the PLC side, on one clock.
//!
//! At the end it cross-checks what it sent against what the PLC side received (and the
//! daemon's own counts when it has them) and reports any parcel that went missing.

pub mod mix;
pub mod report;
pub mod scanners;
pub mod text;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::PlanSource;
use crate::decision::Reason;
use crate::plc::SortCommand;
use crate::sim::plc::{PlcSim, PlcSimCounters, SortObserver, new_latency_histogram};
use crate::stats::Counters;

use mix::{MixShares, ParcelKind, ParcelMix};
use report::{LatencyUs, LoadReport, percentile_curve};
use scanners::{ScannerCounters, ScannerOptions, SendTimes, run_scanners};

/// Everything a load run needs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The scanners' behaviour.
    pub scanners: ScannerOptions,
    /// The plan the parcel mix is drawn from (the daemon's plan, compiled or CSV).
    pub plan_path: PathBuf,
    /// Shares of each parcel kind.
    pub shares: MixShares,
    /// Seed of the parcel mix.
    pub seed: u64,
    /// How long to wait for the PLC link before sending, and for decisions after.
    pub settle: Duration,
    /// Show a live progress line.
    pub progress: bool,
}

/// Why a run could not be carried out.
#[derive(Debug)]
pub enum LoadError {
    /// The plan could not be read.
    Plan(crate::daemon::PlanSourceError),
    /// The parcel mix cannot be drawn from the plan.
    Mix(mix::MixError),
    /// A socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Plan(message) => write!(f, "plan: {message}"),
            LoadError::Mix(error) => write!(f, "parcel mix: {error}"),
            LoadError::Io(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Plan(error) => Some(error),
            LoadError::Mix(error) => Some(error),
            LoadError::Io(error) => Some(error),
        }
    }
}

/// Measures latency as SORTs arrive at the simulated PLC.
struct LatencyObserver {
    send_times: Arc<SendTimes>,
    histogram: Mutex<hdrhistogram::Histogram<u64>>,
    /// False when the scanners' telegrams carry no parcel id: the SORTs then carry the
    /// daemon's synthetic ids, which name no send time.
    measures: bool,
}

impl SortObserver for LatencyObserver {
    fn on_sort(&self, sort: &SortCommand, arrived_at: Instant) {
        self.on_sorts(std::slice::from_ref(sort), arrived_at);
    }

    fn on_sorts(&self, sorts: &[SortCommand], arrived_at: Instant) {
        if !self.measures {
            return;
        }
        if let Ok(mut histogram) = self.histogram.lock() {
            for sort in sorts {
                if let Some(intended) = self.send_times.intended(sort.parcel_id) {
                    let micros = arrived_at.saturating_duration_since(intended).as_micros() as u64;
                    let _ = histogram.record(micros.max(1));
                }
            }
        }
    }
}

/// Runs the load and returns the report. `plc` is a bound PLC simulator to play the PLC
/// with (sortd dials it); `daemon` adds the daemon's own counts to the cross-check when
/// the daemon runs in this process (the demo).
pub fn run_load(
    options: &LoadOptions,
    plc: Option<PlcSim>,
    daemon: Option<&Counters>,
) -> Result<LoadReport, LoadError> {
    let plan = PlanSource::new(options.plan_path.clone())
        .open()
        .map_err(LoadError::Plan)?;
    // Telegrams without a parcel id get a fresh synthetic id each, so a repeat would be
    // a new parcel to the daemon: no duplicates then, and no latency by parcel id.
    let carries_ids = options
        .scanners
        .profile
        .as_ref()
        .is_none_or(text::carries_parcel_id);
    let shares = if carries_ids {
        options.shares
    } else {
        MixShares {
            duplicate: 0,
            ..options.shares
        }
    };
    let mix = ParcelMix::from_plan(&plan, shares, options.seed).map_err(LoadError::Mix)?;
    drop(plan);

    let send_times = Arc::new(SendTimes::new(Instant::now()));
    let observer = Arc::new(LatencyObserver {
        send_times: send_times.clone(),
        histogram: Mutex::new(new_latency_histogram()),
        measures: carries_ids,
    });
    let plays_plc = plc.is_some();
    let sim_counters = plc
        .as_ref()
        .map_or_else(|| Arc::new(PlcSimCounters::default()), PlcSim::counters);
    let stop_sim = Arc::new(AtomicBool::new(false));
    let sim_thread = plc.map(|mut sim| {
        sim.set_observer(observer.clone() as Arc<dyn SortObserver>);
        let stop = stop_sim.clone();
        std::thread::spawn(move || sim.run(&stop))
    });
    if plays_plc {
        let deadline = Instant::now() + options.settle;
        while sim_counters.connections.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let scanner_counters = Arc::new(ScannerCounters::default());
    let stop_scanners = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sender = {
        let scanner_options = options.scanners.clone();
        let counters = scanner_counters.clone();
        let stop = stop_scanners.clone();
        let send_times = send_times.clone();
        let seed = options.seed;
        std::thread::spawn(move || {
            run_scanners(&scanner_options, &mix, seed, &send_times, &counters, &stop)
        })
    };
    let progress = options.progress && std::io::stderr().is_terminal();
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    while !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(bar) = &bar {
            let sent = scanner_counters.sent.load(Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{:>10.0} parcels/s   sent {sent}   at PLC {}   errors {}",
                sent as f64 / elapsed,
                sim_counters.sorts.load(Ordering::Relaxed),
                scanner_counters.errors.load(Ordering::Relaxed)
            ));
        }
    }
    let sending = started.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let send_result = sender
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("scanner thread panicked")));

    let sent = scanner_counters.sent.load(Ordering::Relaxed);
    let sent_by_kind: BTreeMap<String, u64> = ParcelKind::ALL
        .iter()
        .zip(scanner_counters.sent_by_kind.iter())
        .map(|(kind, count)| (kind.as_str().to_string(), count.load(Ordering::Relaxed)))
        .collect();
    let duplicates_sent = sent_by_kind.get("duplicate").copied().unwrap_or(0);

    // Wait for the decisions to land.
    let accounted = |daemon: Option<&Counters>| -> u64 {
        match daemon {
            Some(counters) => counters.decided_total(),
            None => sim_counters.sorts.load(Ordering::Relaxed) + duplicates_sent,
        }
    };
    let deadline = Instant::now() + options.settle;
    while accounted(daemon) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if plays_plc {
        // SORTs in flight to the PLC side.
        let expected_sorts = match daemon {
            Some(counters) => counters.decided_sent.total(),
            None => sent - duplicates_sent,
        };
        while sim_counters.sorts.load(Ordering::Relaxed) < expected_sorts
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop_sim.store(true, Ordering::Release);
    if let Some(thread) = sim_thread {
        let _ = thread.join();
    }

    let mut report = LoadReport {
        sent,
        sent_by_kind,
        elapsed_s: sending.as_secs_f64(),
        throughput_per_s: sent as f64 / sending.as_secs_f64().max(1e-9),
        errors: scanner_counters.errors.load(Ordering::Relaxed),
        plc_duplicates_ignored: sim_counters.duplicates_ignored.load(Ordering::Relaxed),
        ..LoadReport::default()
    };
    if let Err(error) = send_result {
        report
            .discrepancies
            .push(format!("scanners stopped early: {error}"));
    }
    let sorts = sim_counters.sorts.load(Ordering::Relaxed);
    match daemon {
        Some(counters) => {
            for reason in Reason::ALL {
                let count = counters.decided(reason);
                if count > 0 {
                    report.reasons.insert(reason.as_str().to_string(), count);
                }
            }
            let undelivered = counters.decided_undelivered.total();
            if undelivered > 0 {
                report
                    .reasons
                    .insert("(undelivered, PLC link down)".into(), undelivered);
            }
            report.decided = counters.decided_total();
            let scans = counters.scans_in.load(Ordering::Relaxed);
            if scans != sent {
                report.discrepancies.push(format!(
                    "sent {sent} parcels but the daemon decoded {scans}"
                ));
            }
            let expected_sorts = counters.decided_sent.total();
            if plays_plc && sorts != expected_sorts {
                report.discrepancies.push(format!(
                    "the daemon sent {expected_sorts} SORTs but the PLC side received {sorts}"
                ));
            }
        }
        None => {
            for reason in Reason::ALL {
                let count = sim_counters.by_reason.get(reason);
                if count > 0 {
                    report.reasons.insert(reason.as_str().to_string(), count);
                }
            }
            if duplicates_sent > 0 {
                *report.reasons.entry("duplicate".into()).or_insert(0) += duplicates_sent;
            }
            report.decided = sorts + duplicates_sent;
        }
    }
    report.missing = sent.saturating_sub(report.decided);
    if report.missing > 0 {
        report
            .discrepancies
            .push(format!("{} parcels sent got no decision", report.missing));
    }
    if let Ok(by_chute) = sim_counters.by_chute.lock() {
        let mut chutes: Vec<(u16, u64)> = by_chute.iter().map(|(c, n)| (*c, *n)).collect();
        chutes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        chutes.truncate(20);
        report.top_chutes = chutes;
    }
    if let Ok(lateness) = scanner_counters.send_lateness_us.lock() {
        if let Some(histogram) = lateness.as_ref() {
            report.send_lateness_us = LatencyUs::of(histogram);
        }
    }
    if plays_plc {
        if let Ok(histogram) = sim_counters.latency_us.lock() {
            report.plc_read_us = LatencyUs::of(&histogram);
        }
    }
    if let Ok(histogram) = observer.histogram.lock() {
        report.latency_us = LatencyUs::of(&histogram);
        report.curve = percentile_curve(&histogram);
    }
    Ok(report)
}
