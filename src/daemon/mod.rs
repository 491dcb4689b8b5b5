//! `sortd run`: the daemon. It opens the plan, binds the scanner listeners, starts the
//! ingress workers and the PLC thread, and turns signals into plan reloads and drains.
//!
//! Everything here is start-up and wiring; the loops are in [`crate::net`] and the rules
//! in the sans-IO layers. Configuration is validated (see [`config`]) before this runs.

pub mod config;
pub mod hub;
pub mod plan_source;
pub mod preadvice;
pub mod systemd;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};

use crate::core::idle::IdlePolicy;
use crate::events::journal::JournalWriter;
use crate::net::egress::{self, Egress, EgressShared};
use crate::net::ingress::{self, IngressShared, IngressWorker};
use crate::net::single;
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Wake, batch_queue};
use crate::plan::{PlanHandle, SwapReport};
use crate::plc::{ChuteStateTable, HostLink};
use crate::stats::Counters;

pub use config::Config;
use config::PipelineSettings;
pub use plan_source::{PlanSource, PlanSourceError};

/// Why the daemon could not start or stopped with an error. Each variant keeps the lower
/// layer's error whole and returns it from [`std::error::Error::source`].
#[derive(Debug)]
pub enum DaemonError {
    /// The plan could not be compiled, opened or verified.
    Plan(PlanSourceError),
    /// The pre-advice directory could not be opened over the plan.
    PreAdvice(crate::plan::PreAdviceError),
    /// A socket could not be bound or registered.
    Bind {
        /// What was being bound.
        what: String,
        /// The error.
        error: io::Error,
    },
    /// A thread could not be started, or ended with an error.
    Thread {
        /// The thread's name.
        name: String,
        /// The error.
        error: io::Error,
    },
    /// A thread panicked.
    Panicked {
        /// The thread's name.
        name: String,
    },
    /// The sort-event journal could not be opened.
    Journal(crate::events::journal::JournalError),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Plan(error) => write!(f, "sort plan: {error}"),
            DaemonError::PreAdvice(error) => write!(f, "sort plan: pre-advice: {error}"),
            DaemonError::Bind { what, error } => write!(f, "cannot bind {what}: {error}"),
            DaemonError::Thread { name, error } => write!(f, "thread: {name}: {error}"),
            DaemonError::Panicked { name } => write!(f, "thread: {name} panicked"),
            DaemonError::Journal(error) => write!(f, "sort-event journal: {error}"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Plan(error) => Some(error),
            DaemonError::PreAdvice(error) => Some(error),
            DaemonError::Bind { error, .. } | DaemonError::Thread { error, .. } => Some(error),
            DaemonError::Journal(error) => Some(error),
            DaemonError::Panicked { .. } => None,
        }
    }
}

/// A running daemon: its threads and the handles to steer it.
#[derive(Debug)]
pub struct Daemon {
    /// Live counters.
    pub counters: Arc<Counters>,
    /// The current plan.
    pub plan: Arc<PlanHandle>,
    /// Every chute's state as the PLC last reported it.
    pub chute_states: Arc<ChuteStateTable>,
    /// The sort-event journal's counters; `None` when `[events]` is off.
    pub journal: Option<Arc<crate::events::journal::JournalStats>>,
    /// The NATS exporter's counters; `None` when `[export]` is off.
    pub export: Option<Arc<crate::export::ExportCounters>>,
    /// The hub connection's counters; `None` when `[hub]` is off.
    pub hub: Option<Arc<crate::export::HubCounters>>,
    /// The hub pre-advice subscriber's counters; `None` when it does not run.
    pub hub_preadvice: Option<Arc<crate::export::preadvice_sub::PreadviceCounters>>,
    exporter: Option<crate::export::Exporter>,
    hub_thread: Option<crate::export::Hub>,
    plan_source: PlanSource,
    plan_path: std::path::PathBuf,
    hub_settings: Option<crate::export::HubSettings>,
    swapper: Arc<hub::PlanSwapper>,
    stop: Arc<AtomicBool>,
    ingress_wakers: Vec<Arc<Waker>>,
    /// Ingress workers, whether on their own threads or on the pipeline thread.
    ingress_workers: usize,
    /// Ingress and the PLC side share one thread ([`crate::net::single`]).
    single_thread: bool,
    egress_waker: Arc<Waker>,
    threads: Vec<(String, JoinHandle<io::Result<()>>)>,
    scanner_addresses: Vec<std::net::SocketAddr>,
}

/// Starts the NATS exporter over the journal in `dir`.
fn start_exporter(
    settings: &crate::export::ExportSettings,
    dir: &std::path::Path,
    stats: &Arc<crate::events::journal::JournalStats>,
) -> Result<crate::export::Exporter, DaemonError> {
    let reader = crate::events::journal::JournalReader::open(dir).map_err(DaemonError::Journal)?;
    let source = crate::export::JournalSource::new(reader, Arc::clone(stats));
    let cursor = crate::events::journal::ExportCursor::new(dir);
    crate::export::Exporter::start(
        settings.clone(),
        source,
        cursor,
        Arc::new(crate::export::ExportCounters::default()),
    )
    .map_err(|error| DaemonError::Thread {
        name: "sortd-export".into(),
        error,
    })
}

/// Opens and fully verifies the configured plan without binding a socket or starting a
/// thread: `sortd run --check`, for packaging and deployment scripts.
pub fn check_plan(config: &Config) -> Result<crate::plan::Plan, DaemonError> {
    PlanSource::new(config.plan_path.clone())
        .open()
        .map_err(DaemonError::Plan)
}

impl Daemon {
    /// Opens the plan, binds every socket and starts the threads.
    pub fn start(config: Config) -> Result<Daemon, DaemonError> {
        let config = Arc::new(config);
        let plan_source = PlanSource::new(config.plan_path.clone());
        let (plan, origin) = hub::start_plan(&plan_source, &config.plan_path, config.hub.as_ref())?;
        let running = Arc::new(crate::export::hub_plans::RunningPlanCell::new(
            hub::running_plan(&plan, origin),
        ));
        tracing::info!(
            plan = plan.name(),
            version = plan.version(),
            origin = origin.name(),
            path = %config.plan_path.display(),
            "sort plan loaded"
        );
        let (plan, maintained) = match &config.preadvice {
            Some(settings) => {
                let opened = preadvice::open(settings, plan)?;
                let handle = PlanHandle::with_preadvice(Arc::clone(&opened));
                let interval = Duration::from_millis(settings.maintenance_interval_ms);
                (handle, Some((opened, interval)))
            }
            None => (PlanHandle::new(plan), None),
        };
        let plan = Arc::new(plan);
        let counters = Arc::new(Counters::default());
        counters.mark_plan_loaded();
        let swapper = Arc::new(hub::PlanSwapper::new(
            Arc::clone(&plan),
            Arc::clone(&counters),
            running,
        ));
        let chute_states = Arc::new(ChuteStateTable::new());
        let stop = Arc::new(AtomicBool::new(false));

        let mut std_listeners = Vec::with_capacity(config.listeners.len());
        let mut scanner_addresses = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let bound = std::net::TcpListener::bind(listener.address).map_err(|error| {
                DaemonError::Bind {
                    what: format!("scanner listener {}", listener.address),
                    error,
                }
            })?;
            bound
                .set_nonblocking(true)
                .map_err(|error| DaemonError::Bind {
                    what: format!("scanner listener {}", listener.address),
                    error,
                })?;
            let local = bound.local_addr().map_err(|error| DaemonError::Bind {
                what: format!("scanner listener {}", listener.address),
                error,
            })?;
            tracing::info!(address = %local, protocol = %listener.protocol_name, "listening for scanners");
            scanner_addresses.push(local);
            std_listeners.push(bound);
        }

        let egress_poll = Poll::new().map_err(|error| DaemonError::Bind {
            what: "PLC event loop".into(),
            error,
        })?;
        let egress_waker = Arc::new(
            Waker::new(egress_poll.registry(), egress::WAKE_TOKEN).map_err(|error| {
                DaemonError::Bind {
                    what: "PLC waker".into(),
                    error,
                }
            })?,
        );
        let pipeline = config.pipeline;
        let (sender, receiver) = batch_queue(
            pipeline.queue_batches_max,
            pipeline.batch_parcels_max,
            // The scans' facts cross to the PLC thread only for the sort events.
            config.events.is_some(),
            egress_waker.clone() as Arc<dyn Wake>,
        );
        let link = HostLink::new(config.plc.link_config(), std::time::Instant::now());
        let finalizer = Finalizer::new(
            pipeline.deadline,
            pipeline.duplicate_window,
            pipeline.duplicate_entries_max,
        );
        let journal = match config.events.clone() {
            Some(mut events) => {
                // Without an exporter nothing reads the cursor: retention must not wait
                // for it.
                events.retention.cursor_required = config.export.is_some();
                let writer = JournalWriter::open(events).map_err(DaemonError::Journal)?;
                tracing::info!(next_seq = writer.next_seq(), "sort-event journal open");
                Some(writer)
            }
            None => None,
        };
        let journal_stats = journal.as_ref().map(JournalWriter::stats);
        let exporter = match (&config.export, &config.events, &journal_stats) {
            (Some(settings), Some(events), Some(stats)) => {
                Some(start_exporter(settings, &events.dir, stats)?)
            }
            (Some(_), _, _) => {
                tracing::warn!("[export] is on but [events] is off: nothing to export");
                None
            }
            _ => None,
        };
        let single_thread = pipeline.threads.is_single(pipeline.workers);
        let egress = Egress::new(
            egress_poll.registry(),
            link,
            receiver,
            finalizer,
            EgressShared {
                plc: config.plc.clone(),
                chute_states: chute_states.clone(),
                counters: counters.clone(),
                stop: stop.clone(),
                idle: idle_policy(&pipeline, single_thread),
                drain_grace: config.drain_grace,
                journal,
                warning_interval: config.bad_input_warning_interval,
            },
        )
        .map_err(|error| DaemonError::Bind {
            what: format!("PLC listener {}", config.plc.address),
            error,
        })?;

        let shared = IngressShared {
            settings: Arc::new(config.ingress_settings()),
            plan: plan.clone(),
            chute_states: chute_states.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            next_synthetic_scanner_id: Arc::new(AtomicU32::new(0)),
        };
        let mut workers = Vec::with_capacity(pipeline.workers);
        let mut ingress_wakers = Vec::with_capacity(pipeline.workers);
        for index in 0..pipeline.workers {
            let bind_error = |error| DaemonError::Bind {
                what: format!("ingress worker {index}"),
                error,
            };
            // One thread: the worker's sockets go on the PLC side's poll, whose waker
            // serves both.
            let poll = if single_thread {
                None
            } else {
                let poll = Poll::new().map_err(bind_error)?;
                let waker = Waker::new(poll.registry(), ingress::WAKE_TOKEN).map_err(bind_error)?;
                ingress_wakers.push(Arc::new(waker));
                Some(poll)
            };
            let mut listeners = Vec::with_capacity(std_listeners.len());
            for bound in &std_listeners {
                let clone = bound.try_clone().map_err(bind_error)?;
                listeners.push(mio::net::TcpListener::from_std(clone));
            }
            let registry = poll.as_ref().map_or(egress_poll.registry(), Poll::registry);
            let worker =
                IngressWorker::new(index, registry, listeners, sender.clone(), shared.clone())
                    .map_err(bind_error)?;
            workers.push((worker, poll));
        }
        drop(sender);

        let mut threads = Vec::new();
        let spawn = |name: String, body: Box<dyn FnOnce() -> io::Result<()> + Send>| {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(body)
                .map(|handle| (name.clone(), handle))
                .map_err(|error| DaemonError::Thread { name, error })
        };
        if single_thread {
            let stop = stop.clone();
            let (worker, _) = workers.pop().ok_or_else(|| DaemonError::Thread {
                name: "sortd-pipeline".into(),
                error: io::Error::other("no ingress worker"),
            })?;
            threads.push(spawn(
                "sortd-pipeline".into(),
                Box::new(move || single::run(worker, egress, egress_poll, &stop)),
            )?);
        } else {
            threads.push(spawn(
                "sortd-plc".into(),
                Box::new(move || egress.run(egress_poll)),
            )?);
        }
        for (worker, poll) in workers {
            let Some(poll) = poll else { continue };
            let name = format!("sortd-ingress-{}", threads.len() - 1);
            threads.push(spawn(name, Box::new(move || worker.run(poll)))?);
        }
        tracing::info!(
            threads = pipeline.threads.name(),
            single = single_thread,
            workers = pipeline.workers,
            "pipeline threads"
        );
        let hub_preadvice = match (&config.hub, &maintained) {
            (Some(hub), Some((opened, _))) if hub.preadvice => Some(hub::HubPreAdvice {
                preadvice: Arc::clone(opened),
                counters: Arc::default(),
            }),
            _ => None,
        };
        let hub_preadvice_counters = hub_preadvice
            .as_ref()
            .map(|feed| Arc::clone(&feed.counters));
        if let Some((opened, interval)) = maintained {
            let stop = Arc::clone(&stop);
            threads.push(spawn(
                "sortd-preadvice".into(),
                Box::new(move || preadvice::maintain(&opened, &stop, interval)),
            )?);
        }
        let (hub_thread, hub_counters) = match &config.hub {
            Some(settings) => {
                let (thread, counters) = hub::start_hub(settings, &swapper, hub_preadvice)?;
                (Some(thread), Some(counters))
            }
            None => (None, None),
        };
        Ok(Daemon {
            counters,
            hub: hub_counters,
            hub_preadvice: hub_preadvice_counters,
            hub_thread,
            hub_settings: config.hub.clone(),
            plan_path: config.plan_path.clone(),
            swapper,
            plan,
            chute_states,
            journal: journal_stats,
            export: exporter
                .as_ref()
                .map(|exporter| exporter.counters().clone()),
            exporter,
            plan_source,
            stop,
            ingress_wakers,
            ingress_workers: pipeline.workers,
            single_thread,
            egress_waker,
            threads,
            scanner_addresses,
        })
    }

    /// The addresses the scanner listeners are bound to, in configuration order.
    pub fn scanner_addresses(&self) -> &[std::net::SocketAddr] {
        &self.scanner_addresses
    }

    /// Loads the plan again (SIGHUP): the configured plan, or with plans from the hub on,
    /// the plan the start rule picks between it and the last good plan from the hub. The
    /// old plan stays on any failure; the outcome is logged and counted either way (the
    /// same code a plan from the hub goes through).
    pub fn reload_plan(&self) -> Result<SwapReport, PlanSourceError> {
        let hub_plans = self.hub_settings.as_ref().filter(|hub| hub.plans);
        if hub_plans.is_none() {
            return self.swapper.swap(
                &self.plan_source,
                crate::export::hub_plan::PlanOrigin::Configured,
            );
        }
        let configured = self.plan_source.open().ok().map(|plan| plan.version());
        let configured_source = PlanSource::new(self.plan_path.clone());
        match hub::choose(configured, configured_source, hub_plans) {
            Some(chosen) => self.swapper.swap(&chosen.source, chosen.origin),
            // Neither opens: the configured plan's error is the one to report.
            None => self.swapper.swap(
                &self.plan_source,
                crate::export::hub_plan::PlanOrigin::Configured,
            ),
        }
    }

    /// Loop turns of each daemon thread so far: the PLC thread (or the one pipeline
    /// thread) first, then each ingress worker's, in the order of
    /// [`Daemon::thread_names`].
    pub fn thread_turns(&self) -> Vec<u64> {
        let liveness = &self.counters.liveness;
        let worker_threads = if self.single_thread {
            0
        } else {
            self.ingress_workers
        };
        std::iter::once(liveness.plc_turns())
            .chain((0..worker_threads).map(|index| liveness.ingress_turns(index)))
            .collect()
    }

    /// The daemon threads' names, in the order of [`Daemon::thread_turns`].
    pub fn thread_names(&self) -> Vec<&str> {
        self.threads.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Ingress worker threads.
    pub fn ingress_workers(&self) -> usize {
        self.ingress_workers
    }

    /// Whether ingress and the PLC side share one thread (`pipeline.threads`).
    pub fn is_single_thread(&self) -> bool {
        self.single_thread
    }

    /// Stops accepting and reading, decides and sends what was received, and waits for the
    /// threads to finish.
    pub fn shutdown(self) -> Result<(), DaemonError> {
        self.stop.store(true, Ordering::Release);
        for waker in &self.ingress_wakers {
            let _ = waker.wake();
        }
        let mut first_error = None;
        // Ingress first (threads after the PLC thread), then the PLC thread drains.
        let mut threads = self.threads;
        let plc_thread = if threads.is_empty() {
            None
        } else {
            Some(threads.remove(0))
        };
        for (name, handle) in threads.into_iter().chain(plc_thread) {
            let _ = self.egress_waker.wake();
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(DaemonError::Thread { name, error });
                }
                Err(_) => {
                    first_error.get_or_insert(DaemonError::Panicked { name });
                }
            }
        }
        if let Some(hub) = self.hub_thread {
            hub.stop();
        }
        // The exporter last: it sends what the drain journaled, then stores its cursor.
        if let Some(exporter) = self.exporter {
            exporter.stop();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether any thread has exited (it should not before shutdown).
    pub fn has_stopped_thread(&self) -> bool {
        self.threads.iter().any(|(_, handle)| handle.is_finished())
    }
}

/// The idle policy for this machine: the configured mode against the cores this process
/// may use and the threads that run under load (the workers, the PLC thread unless it is
/// the worker's, and the metrics thread).
fn idle_policy(pipeline: &PipelineSettings, single_thread: bool) -> IdlePolicy {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let plc_thread = usize::from(!single_thread);
    let policy = IdlePolicy::resolve(
        pipeline.idle,
        pipeline.spin_before_park,
        cores,
        pipeline.workers + plc_thread + 1,
    );
    tracing::info!(
        mode = pipeline.idle.name(),
        cores,
        spin_us = policy.spin_for().map(|spin| spin.as_micros() as u64),
        "idle policy"
    );
    policy
}
