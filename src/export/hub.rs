//! The `sortd-hub` thread: one NATS connection to the hub for everything a node takes
//! from it, on its own small tokio runtime, with the exporter's reconnect discipline
//! (each connection runs in a fresh current-thread runtime that is dropped when the
//! connection is lost, and a capped backoff with jitter between attempts). The scanner
//! and PLC threads never wait for it.
//!
//! The hub thread knows nothing of plans or pre-advice: the daemon hands it a list of
//! [`HubTask`]s, and for every connection it spawns each task once with a
//! [`HubSession`] (client, JetStream context, settings, counters). When any task ends
//! (it only ends when it lost its footing: a failed API call, a closed subscription) or
//! the connection drops, the whole session is torn down and reconnected. The plan
//! watcher and status reporter are [`super::hub_plans::tasks`]; a pre-advice subscriber
//! is one more task of the same shape.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::{self, Context};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::connection::connect;
use super::hub_config::HubSettings;
use crate::plc::backoff::Backoff;

/// What the hub connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HubState {
    /// Not started, or stopped.
    Stopped = 0,
    /// Dialling NATS.
    Connecting = 1,
    /// Connected; the tasks run.
    Connected = 2,
    /// Waiting before the next connection attempt.
    BackingOff = 3,
}

impl HubState {
    /// Every state, in value order.
    pub const ALL: [HubState; 4] = [
        HubState::Stopped,
        HubState::Connecting,
        HubState::Connected,
        HubState::BackingOff,
    ];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            HubState::Stopped => "stopped",
            HubState::Connecting => "connecting",
            HubState::Connected => "connected",
            HubState::BackingOff => "backing_off",
        }
    }
}

/// Why a plan from the hub was refused (the old plan keeps sorting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlanRefusal {
    /// The object's metadata is missing or malformed.
    Metadata = 0,
    /// Larger than `plan_bytes_max`.
    TooLarge = 1,
    /// The download failed its digest or length (a failure to write it locally is not
    /// the plan's fault: see [`PlanRetry`]).
    Download = 2,
    /// The plan does not open or verify, or is not the plan the metadata names.
    Verify = 3,
}

impl PlanRefusal {
    /// Every reason, in value order.
    pub const ALL: [PlanRefusal; 4] = [
        PlanRefusal::Metadata,
        PlanRefusal::TooLarge,
        PlanRefusal::Download,
        PlanRefusal::Verify,
    ];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            PlanRefusal::Metadata => "metadata",
            PlanRefusal::TooLarge => "too_large",
            PlanRefusal::Download => "download",
            PlanRefusal::Verify => "verify",
        }
    }
}

/// Why taking a plan from the hub failed for a reason that is not the plan's: the same
/// revision is tried again (with backoff) instead of being refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlanRetry {
    /// The state directory (`[hub] dir`) could not be written (disk full, permissions,
    /// an I/O error) or the download could not be read back: retried in the session
    /// with a capped backoff until it works or a newer revision replaces it.
    Write = 0,
    /// The download broke off (the broker went away, a read failed): the session ends,
    /// and the next one, after the hub's reconnect backoff, downloads it again.
    Interrupted = 1,
}

impl PlanRetry {
    /// Every reason, in value order.
    pub const ALL: [PlanRetry; 2] = [PlanRetry::Write, PlanRetry::Interrupted];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            PlanRetry::Write => "write",
            PlanRetry::Interrupted => "interrupted",
        }
    }
}

/// The hub connection's live figures, read by the metrics.
#[derive(Debug, Default)]
pub struct HubCounters {
    state: AtomicU8,
    /// Successful connections.
    pub connections: AtomicU64,
    /// Sessions that ended (connection lost or a task failed).
    pub sessions_lost: AtomicU64,
    /// Plans taken from the hub and swapped in.
    pub plans_taken: AtomicU64,
    /// Published plans ignored: not newer than the running plan and not a rollback.
    pub plans_ignored: AtomicU64,
    refused: [AtomicU64; PlanRefusal::ALL.len()],
    retried: [AtomicU64; PlanRetry::ALL.len()],
    /// Plan downloads started (each attempt, retries included).
    pub plan_downloads: AtomicU64,
    /// The version published for the group, as last seen (0: none seen yet).
    pub published_version: AtomicU64,
    /// Status reports written to the status bucket.
    pub status_reports: AtomicU64,
}

impl HubCounters {
    /// The current state.
    pub fn state(&self) -> HubState {
        HubState::ALL
            .get(usize::from(self.state.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(HubState::Stopped)
    }

    /// Sets the state.
    pub fn set_state(&self, state: HubState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Counts one refused plan.
    pub fn count_refused(&self, reason: PlanRefusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Plans refused for `reason` so far.
    pub fn refused(&self, reason: PlanRefusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts one failed attempt to take a plan that will be retried.
    pub fn count_retry(&self, reason: PlanRetry) {
        self.retried[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed attempts for `reason` so far (each is retried).
    pub fn retried(&self, reason: PlanRetry) -> u64 {
        self.retried[reason as usize].load(Ordering::Relaxed)
    }
}

/// One connection's handles, given to every task of the session.
#[derive(Clone, Debug)]
pub struct HubSession {
    /// The NATS client (dropped with the session).
    pub client: Client,
    /// JetStream on that client, with the request timeout of `[hub]`.
    pub js: Context,
    /// The validated `[hub]` settings.
    pub settings: Arc<HubSettings>,
    /// The hub's counters.
    pub counters: Arc<HubCounters>,
}

/// How a task ended: it only ends when its session cannot go on; `detail` is logged
/// (once per kind of trouble) and the hub reconnects with backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    /// What went wrong, for the log.
    pub detail: String,
}

/// A task's future.
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskEnd> + Send + 'static>>;

/// A task of the hub thread: `start` is called once per connection with that
/// connection's session and returns the future to run on it.
pub struct HubTask {
    /// Its name in logs (`plans`, `status`, `preadvice`).
    pub name: &'static str,
    /// Makes the task's future for one session.
    pub start: Box<dyn Fn(HubSession) -> TaskFuture + Send + Sync>,
}

impl std::fmt::Debug for HubTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTask").field("name", &self.name).finish()
    }
}

/// A running hub thread; dropping it stops it.
#[derive(Debug)]
pub struct Hub {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<HubCounters>,
}

impl Hub {
    /// Starts the `sortd-hub` thread running `tasks` on every connection. It never blocks
    /// the caller: connecting happens on the thread.
    pub fn start(
        settings: Arc<HubSettings>,
        counters: Arc<HubCounters>,
        tasks: Vec<HubTask>,
    ) -> io::Result<Hub> {
        let (stop, stop_rx) = watch::channel(false);
        let shell = Shell {
            settings,
            counters: Arc::clone(&counters),
            tasks,
            last_logged: None,
            announced: false,
        };
        let thread = std::thread::Builder::new()
            .name("sortd-hub".into())
            .spawn(move || shell.run(stop_rx))?;
        Ok(Hub {
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// The hub's counters.
    pub fn counters(&self) -> &Arc<HubCounters> {
        &self.counters
    }

    /// Stops the thread (the connection and every task) and joins it.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("hub thread panicked");
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// How one session ended.
enum SessionEnd {
    Stopped,
    Lost { detail: String, lasted: Duration },
}

struct Shell {
    settings: Arc<HubSettings>,
    counters: Arc<HubCounters>,
    tasks: Vec<HubTask>,
    /// The kind of the last interruption logged (one warning per kind).
    last_logged: Option<String>,
    /// "hub connected" was logged since the last logged interruption.
    announced: bool,
}

impl Shell {
    fn run(mut self, mut stop: watch::Receiver<bool>) {
        let seed = u64::from(std::process::id()).rotate_left(17);
        let mut backoff = Backoff::new(
            self.settings.reconnect_backoff_min_ms,
            self.settings.reconnect_backoff_max_ms,
            seed,
        );
        // A session that lasted this long was a working one: back off from the start.
        let healthy = Duration::from_millis(u64::from(self.settings.reconnect_backoff_max_ms));
        let mut delay = None;
        loop {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "hub runtime failed to start");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let end = runtime.block_on(async {
                if let Some(delay) = delay {
                    self.counters.set_state(HubState::BackingOff);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    if *stop.borrow() {
                        return SessionEnd::Stopped;
                    }
                }
                self.session(&mut stop).await
            });
            // Dropping the runtime drops the client and every task of the session.
            drop(runtime);
            match end {
                SessionEnd::Stopped => break,
                SessionEnd::Lost { detail, lasted } => {
                    self.counters.sessions_lost.fetch_add(1, Ordering::Relaxed);
                    if lasted >= healthy {
                        backoff.reset();
                        self.last_logged = None;
                    }
                    self.log_loss(&detail);
                    delay = Some(backoff.next_delay());
                }
            }
        }
        self.counters.set_state(HubState::Stopped);
    }

    fn log_loss(&mut self, detail: &str) {
        // One warning per kind of trouble until it changes: a long outage does not flood
        // the log.
        let kind = detail.split(':').next().unwrap_or(detail).to_string();
        if self.last_logged.as_deref() != Some(kind.as_str()) {
            tracing::warn!(detail, "hub connection interrupted; retrying with backoff");
            self.last_logged = Some(kind);
            self.announced = false;
        } else {
            tracing::debug!(detail, "hub connection still interrupted");
        }
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> SessionEnd {
        self.counters.set_state(HubState::Connecting);
        let started = Instant::now();
        let lost = Arc::new(Notify::new());
        let connecting = tokio::select! {
            result = connect(
                &self.settings.connection,
                format!("sortd-hub-{}", self.settings.node),
                Some(Arc::clone(&lost)),
            ) => Some(result),
            _ = stop.changed() => None,
        };
        let client = match connecting {
            None => return SessionEnd::Stopped,
            Some(Ok(client)) => client,
            Some(Err(error)) => {
                return SessionEnd::Lost {
                    detail: format!("connect: {error}"),
                    lasted: started.elapsed(),
                };
            }
        };
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        self.counters.set_state(HubState::Connected);
        // Once after start and after each logged interruption: a session that keeps
        // failing the same way does not log a line per attempt.
        if !self.announced {
            tracing::info!(node = %self.settings.node, group = %self.settings.group, "hub connected");
            self.announced = true;
        }
        let js = jetstream::context::ContextBuilder::new()
            .timeout(self.settings.request_timeout())
            .build(client.clone());
        let session = HubSession {
            client,
            js,
            settings: Arc::clone(&self.settings),
            counters: Arc::clone(&self.counters),
        };
        let mut running = JoinSet::new();
        for task in &self.tasks {
            let name = task.name;
            let future = (task.start)(session.clone());
            running.spawn(async move { (name, future.await) });
        }
        let detail = tokio::select! {
            _ = lost.notified() => "disconnected: connection lost".to_string(),
            joined = running.join_next() => match joined {
                Some(Ok((name, end))) => format!("{name}: {}", end.detail),
                Some(Err(error)) => format!("task: {error}"),
                None => return self.idle(stop).await,
            },
            _ = stop.changed() => return SessionEnd::Stopped,
        };
        SessionEnd::Lost {
            detail,
            lasted: started.elapsed(),
        }
    }

    /// No tasks: hold the connection until stopped.
    async fn idle(&self, stop: &mut watch::Receiver<bool>) -> SessionEnd {
        let _ = stop.changed().await;
        SessionEnd::Stopped
    }
}
