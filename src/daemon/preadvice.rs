//! Pre-advice on the daemon: opening the node's pre-advice log over the configured plan,
//! and the background thread that merges the overlay's delta layer (and builds its joint
//! index with the plan) and compacts the overlay into a new compiled plan when they are
//! due.
//!
//! It does not receive pre-advice (the hub task `crate::export::preadvice_sub` calls
//! [`PreAdvice::apply_unsynced`] and [`PreAdvice::sync`]) and does not resolve parcels (the decide path reads the view
//! through the plan handle).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::DaemonError;
use super::config::preadvice::PreAdviceConfig;
use crate::plan::{Plan, PreAdvice};

/// How often the maintenance thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Opens the pre-advice directory over `plan`, replaying its log.
pub fn open(config: &PreAdviceConfig, plan: Plan) -> Result<Arc<PreAdvice>, DaemonError> {
    let (preadvice, recovery) =
        PreAdvice::open(&config.dir, plan, config.settings).map_err(DaemonError::PreAdvice)?;
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
            tracing::debug!(
                "pre-advice: merged the overlay's delta layer or built its joint index"
            );
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
