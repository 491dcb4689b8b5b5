//! The shared plan handle: readers load the current plan (and the pre-advice overlay
//! over it) without blocking; a swap opens and fully verifies the new plan before
//! publishing it.
//!
//! Built on `arc-swap`: [`PlanHandle::view`] is a few atomic operations, a swap replaces
//! the pointer, and an old plan (with its mapping) is dropped when its last reader lets
//! go. With pre-advice on, the handle publishes through the node's [`PreAdvice`] (its
//! view carries the overlay, and a swap goes through [`PreAdvice::swap_plan`]); with it
//! off, the view's overlay is always empty. This module does no scheduling: when to swap
//! (between waves) is the daemon's call.

use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::error::PlanError;
use super::open::Plan;
use super::overlay::OverlaySnapshot;
use super::preadvice::{PlanView, PreAdvice};

/// The plan every reader sees; replaced atomically by [`PlanHandle::swap_from_path`].
#[derive(Debug)]
pub struct PlanHandle {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Pre-advice off: the plan with an empty overlay.
    Plain(ArcSwap<PlanView>),
    /// Pre-advice on: the node's pre-advice publishes plan and overlay together.
    PreAdvice(Arc<PreAdvice>),
}

/// What a successful swap replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapReport {
    /// Name of the plan that was replaced.
    pub old_name: String,
    /// Version of the plan that was replaced.
    pub old_version: u32,
    /// Name of the plan now published.
    pub new_name: String,
    /// Version of the plan now published.
    pub new_version: u32,
    /// Checksum ([`Plan::checksum`]) of the plan now published.
    pub new_checksum: u64,
}

impl PlanHandle {
    /// A handle publishing `plan` without pre-advice.
    pub fn new(plan: Plan) -> PlanHandle {
        PlanHandle {
            source: Source::Plain(ArcSwap::from_pointee(PlanView {
                plan: Arc::new(plan),
                overlay: OverlaySnapshot::empty(),
            })),
        }
    }

    /// A handle publishing what `preadvice` publishes (its plan and overlay).
    pub fn with_preadvice(preadvice: Arc<PreAdvice>) -> PlanHandle {
        PlanHandle {
            source: Source::PreAdvice(preadvice),
        }
    }

    /// The node's pre-advice, when it is on.
    pub fn preadvice(&self) -> Option<&Arc<PreAdvice>> {
        match &self.source {
            Source::Plain(_) => None,
            Source::PreAdvice(preadvice) => Some(preadvice),
        }
    }

    /// The current plan and overlay. Load once per batch; never blocks; keep the guard
    /// short-lived. This is what the decide path reads.
    #[inline]
    pub fn view(&self) -> Guard<Arc<PlanView>> {
        match &self.source {
            Source::Plain(view) => view.load(),
            Source::PreAdvice(preadvice) => preadvice.view(),
        }
    }

    /// The current plan alone (for reports, metrics and tools; the hot path uses
    /// [`PlanHandle::view`]).
    pub fn load(&self) -> Arc<Plan> {
        Arc::clone(&self.view().plan)
    }

    /// Open and fully verify the plan at `path`, then publish it. On any error the old
    /// plan stays published and the error says why.
    pub fn swap_from_path(&self, path: &Path) -> Result<SwapReport, PlanError> {
        let plan = Plan::open(path)?;
        plan.verify()?;
        Ok(self.swap(plan))
    }

    /// Publish an already verified plan (under the current overlay, with pre-advice on).
    pub fn swap(&self, plan: Plan) -> SwapReport {
        let old = self.load();
        let new_name = plan.name().to_string();
        let new_version = plan.version();
        let new_checksum = plan.checksum();
        match &self.source {
            Source::Plain(view) => view.store(Arc::new(PlanView {
                plan: Arc::new(plan),
                overlay: OverlaySnapshot::empty(),
            })),
            Source::PreAdvice(preadvice) => preadvice.swap_plan(plan),
        }
        SwapReport {
            old_name: old.name().to_string(),
            old_version: old.version(),
            new_name,
            new_version,
            new_checksum,
        }
    }
}
