//! The daemon's plan swaps and its side of the hub: [`PlanSwapper`] is the one code path
//! that swaps a plan in (SIGHUP and plans from the hub both run it: open, verify fully,
//! publish under the pre-advice overlay, count, log, record the running plan), and
//! [`start_plan`] applies the start rule between the configured plan and the last good
//! plan from the hub ([`crate::export::hub_plan::start_choice`]); [`start_hub`] starts
//! the `sortd-hub` thread with the plan watcher and the status reporter.
//!
//! The hub thread, its reconnects and its tasks live in [`crate::export`]; this file only
//! wires them to the plan handle.

use std::path::Path;
use std::sync::Arc;

use super::DaemonError;
use super::plan_source::{PlanSource, PlanSourceError};
use crate::export::hub_plan::{
    PlanIdentity, PlanOrigin, PublishedPlan, RunningPlan, StartChoice, start_choice,
};
use crate::export::hub_plans::{self, InstallError, PlanInstaller, RunningPlanCell};
use crate::export::preadvice_sub::{self, PreadviceCounters};
use crate::export::{Hub, HubCounters, HubSettings};
use crate::plan::{Plan, PlanHandle, PreAdvice, SwapReport};
use crate::stats::Counters;

/// Milliseconds since the Unix epoch, now.
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The running-plan record of `plan`, from `origin`, since now.
pub fn running_plan(plan: &Plan, origin: PlanOrigin) -> RunningPlan {
    RunningPlan {
        identity: PlanIdentity {
            name: plan.name().to_string(),
            version: plan.version(),
            checksum: plan.checksum(),
        },
        since_unix_ms: now_unix_ms(),
        origin,
    }
}

/// Swaps plans into the daemon's handle: the path SIGHUP and the hub share.
#[derive(Debug)]
pub struct PlanSwapper {
    handle: Arc<PlanHandle>,
    counters: Arc<Counters>,
    running: Arc<RunningPlanCell>,
}

impl PlanSwapper {
    /// A swapper over `handle`, recording the running plan in `running`.
    pub fn new(
        handle: Arc<PlanHandle>,
        counters: Arc<Counters>,
        running: Arc<RunningPlanCell>,
    ) -> PlanSwapper {
        PlanSwapper {
            handle,
            counters,
            running,
        }
    }

    /// The running-plan record.
    pub fn running(&self) -> &Arc<RunningPlanCell> {
        &self.running
    }

    /// Opens and fully verifies the plan of `source` and swaps it in; the old plan stays
    /// on any failure. Counts and logs the outcome either way.
    pub fn swap(
        &self,
        source: &PlanSource,
        origin: PlanOrigin,
    ) -> Result<SwapReport, PlanSourceError> {
        match source.swap_into(&self.handle) {
            Ok(report) => {
                Counters::add(&self.counters.plan_reloads_ok, 1);
                self.counters.mark_plan_loaded();
                self.running.set(RunningPlan {
                    identity: PlanIdentity {
                        name: report.new_name.clone(),
                        version: report.new_version,
                        checksum: report.new_checksum,
                    },
                    since_unix_ms: now_unix_ms(),
                    origin,
                });
                tracing::info!(
                    origin = origin.name(),
                    old_plan = report.old_name,
                    old_version = report.old_version,
                    plan = report.new_name,
                    version = report.new_version,
                    "sort plan reloaded"
                );
                Ok(report)
            }
            Err(error) => {
                Counters::add(&self.counters.plan_reloads_failed, 1);
                let current = self.handle.load();
                // A compiler's report spans lines; a log record should not (journald).
                tracing::error!(
                    origin = origin.name(),
                    error = %error.to_string().replace('\n', "; "),
                    plan = current.name(),
                    version = current.version(),
                    "sort plan reload failed; still serving the previous plan"
                );
                Err(error)
            }
        }
    }
}

impl PlanInstaller for PlanSwapper {
    fn install(&self, path: &Path, _published: &PublishedPlan) -> Result<SwapReport, InstallError> {
        self.swap(&PlanSource::new(path.to_path_buf()), PlanOrigin::Hub)
            .map_err(InstallError::from)
    }
}

/// The plan chosen at start (or on SIGHUP).
#[derive(Debug)]
pub struct Chosen {
    /// The source it came from (a plan from the hub is a compiled file in `[hub] dir`).
    pub source: PlanSource,
    /// Where it came from.
    pub origin: PlanOrigin,
}

/// Applies the start rule: with plans from the hub on, the last good plan in `[hub] dir`
/// when it verifies and is a rollback or at least as new as the configured plan;
/// otherwise the configured plan. `configured` is the configured plan's version (`None`
/// when it does not open or verify). Problems with the stored plan are logged and it is
/// passed over.
pub fn choose(
    configured: Option<u32>,
    configured_source: PlanSource,
    hub: Option<&HubSettings>,
) -> Option<Chosen> {
    let stored =
        hub.filter(|hub| hub.plans)
            .and_then(|hub| match hub_plans::stored_plan(&hub.dir) {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "the last plan from the hub does not open; passed over");
                    None
                }
            });
    match start_choice(configured, stored.as_ref().map(|stored| &stored.published))? {
        StartChoice::Configured => Some(Chosen {
            source: configured_source,
            origin: PlanOrigin::Configured,
        }),
        StartChoice::Hub => stored.map(|stored| Chosen {
            source: PlanSource::new(stored.path),
            origin: PlanOrigin::Hub,
        }),
    }
}

/// Opens the plan the daemon starts with: the configured one or the last good plan from
/// the hub, by [`choose`]. Never needs the broker.
pub fn start_plan(
    configured: &PlanSource,
    configured_path: &Path,
    hub: Option<&HubSettings>,
) -> Result<(Plan, PlanOrigin), DaemonError> {
    let opened = configured.open();
    let version = opened.as_ref().ok().map(Plan::version);
    let Some(chosen) = choose(version, PlanSource::new(configured_path.to_path_buf()), hub) else {
        // Neither plan opens: report the configured plan's error.
        return match opened {
            Ok(plan) => Ok((plan, PlanOrigin::Configured)),
            Err(error) => Err(DaemonError::Plan(error)),
        };
    };
    match chosen.origin {
        PlanOrigin::Configured => {
            let plan = opened.map_err(DaemonError::Plan)?;
            Ok((plan, PlanOrigin::Configured))
        }
        PlanOrigin::Hub => match chosen.source.open() {
            Ok(plan) => Ok((plan, PlanOrigin::Hub)),
            Err(error) => {
                tracing::warn!(%error, "the last plan from the hub does not verify; starting with the configured plan");
                let plan = opened.map_err(DaemonError::Plan)?;
                Ok((plan, PlanOrigin::Configured))
            }
        },
    }
}

/// What the pre-advice subscriber works on: the node's pre-advice and its counters.
#[derive(Debug)]
pub struct HubPreAdvice {
    /// The node's pre-advice (log and overlay).
    pub preadvice: Arc<PreAdvice>,
    /// The subscriber's figures, for the metrics.
    pub counters: Arc<PreadviceCounters>,
}

/// Starts the `sortd-hub` thread: the plan watcher (when `[hub] plans`), the status
/// reporter, and the pre-advice subscriber (when given: `[hub] preadvice` with
/// `[preadvice]` on). They share the connection, the runtime and the reconnects.
pub fn start_hub(
    settings: &HubSettings,
    swapper: &Arc<PlanSwapper>,
    preadvice: Option<HubPreAdvice>,
) -> Result<(Hub, Arc<HubCounters>), DaemonError> {
    let counters = Arc::new(HubCounters::default());
    let running = Arc::clone(swapper.running());
    let mut tasks = vec![hub_plans::status_task(Arc::clone(&running))];
    if settings.plans {
        let installer: Arc<dyn PlanInstaller> = Arc::clone(swapper) as Arc<dyn PlanInstaller>;
        tasks.push(hub_plans::plan_task(running, installer));
    }
    if let Some(feed) = preadvice {
        tasks.push(preadvice_sub::task(feed.preadvice, feed.counters));
    }
    let hub =
        Hub::start(Arc::new(settings.clone()), Arc::clone(&counters), tasks).map_err(|error| {
            DaemonError::Thread {
                name: "sortd-hub".into(),
                error,
            }
        })?;
    Ok((hub, counters))
}
