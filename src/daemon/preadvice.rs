//! Pre-advice on the daemon: opening the node's pre-advice log over the configured plan,
//! and the background thread that merges the overlay's delta layer and compacts the
//! overlay into a new compiled plan when they are due.
//!
//! [`HubFeed`] runs the NATS subscriber (`crate::export::preadvice_sub`) that applies the
//! hub's batches. This module does not resolve parcels (the decide path reads the view
//! through the plan handle).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::DaemonError;
use super::config::preadvice::PreAdviceConfig;
use crate::export::HubSettings;
use crate::export::preadvice_sub::{PreadviceCounters, run_preadvice};
use crate::plan::{Plan, PreAdvice};

/// How often the maintenance thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Opens the pre-advice directory over `plan`, replaying its log.
pub fn open(config: &PreAdviceConfig, plan: Plan) -> Result<Arc<PreAdvice>, DaemonError> {
    let (preadvice, recovery) = PreAdvice::open(&config.dir, plan, config.settings)
        .map_err(|error| DaemonError::Plan(format!("pre-advice: {error}")))?;
    tracing::info!(
        dir = %config.dir.display(),
        records = recovery.records,
        records_folded = recovery.records_folded,
        tail_cut_bytes = recovery.tail_cut_bytes,
        compacted_through = recovery.compacted_through.unwrap_or(0),
        compacted_ignored = recovery.compacted_ignored,
        refused_full = recovery.refused_full,
        last_seq = preadvice.last_seq(),
        "pre-advice opened"
    );
    Ok(Arc::new(preadvice))
}

/// The body of the maintenance thread: every `interval`, merge the delta layer and
/// compact when due, until `stop`. A failed compaction is logged and retried at the next
/// check; sorting goes on with the overlay.
pub fn maintain(preadvice: &PreAdvice, stop: &AtomicBool, interval: Duration) -> io::Result<()> {
    let mut next = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(STOP_POLL.min(next - now));
            continue;
        }
        next = now + interval;
        if preadvice.merge_due() && preadvice.merge_delta() {
            tracing::debug!("pre-advice: merged the overlay's delta layer");
        }
        if preadvice.compaction_due() {
            match preadvice.compact() {
                Ok(Some(done)) => tracing::info!(
                    through_seq = done.through_seq,
                    plan = %done.plan_name,
                    version = done.plan_version,
                    folded = done.folded,
                    overlay_left = done.overlay_left,
                    segments_deleted = done.segments_deleted,
                    "pre-advice compacted into the plan"
                ),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "pre-advice: compaction failed; will retry"),
            }
        }
    }
    Ok(())
}

/// Pre-advice from the hub's NATS: the subscriber task on a small runtime of its own, in
/// thread `sortd-hub-preadvice`. Dropping it stops it.
#[derive(Debug)]
pub struct HubFeed {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the metrics read.
    pub counters: Arc<PreadviceCounters>,
}

impl HubFeed {
    /// Starts taking pre-advice for the group in `settings` into `preadvice`. Connecting
    /// happens on the thread: the daemon starts and sorts without the broker.
    pub fn start(settings: &HubSettings, preadvice: Arc<PreAdvice>) -> io::Result<HubFeed> {
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(PreadviceCounters::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let task = run_preadvice(
            Arc::new(settings.clone()),
            preadvice,
            Arc::clone(&counters),
            stop_rx,
        );
        let thread = std::thread::Builder::new()
            .name("sortd-hub-preadvice".into())
            .spawn(move || runtime.block_on(task))?;
        Ok(HubFeed {
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// Stops the task and joins its thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("pre-advice subscriber thread panicked");
        }
    }
}

impl Drop for HubFeed {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
