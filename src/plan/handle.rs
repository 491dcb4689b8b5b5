//! The shared plan handle: readers load the current plan without blocking; a swap opens
//! and fully verifies the new plan before publishing it.
//!
//! Built on `arc-swap`: [`PlanHandle::load`] is a few atomic operations, a swap replaces
//! the pointer, and an old plan (with its mapping) is dropped when its last reader lets
//! go. This module does no scheduling: when to swap (between waves) is the daemon's call.

use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::error::PlanError;
use super::open::Plan;

/// The plan every reader sees; replaced atomically by [`PlanHandle::swap_from_path`].
#[derive(Debug)]
pub struct PlanHandle {
    current: ArcSwap<Plan>,
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
}

impl PlanHandle {
    /// A handle publishing `plan`.
    pub fn new(plan: Plan) -> PlanHandle {
        PlanHandle {
            current: ArcSwap::from_pointee(plan),
        }
    }

    /// The current plan. Call once per batch; never blocks; keep the guard short-lived.
    pub fn load(&self) -> Guard<Arc<Plan>> {
        self.current.load()
    }

    /// Open and fully verify the plan at `path`, then publish it. On any error the old
    /// plan stays published and the error says why.
    pub fn swap_from_path(&self, path: &Path) -> Result<SwapReport, PlanError> {
        let plan = Plan::open(path)?;
        plan.verify()?;
        Ok(self.swap(plan))
    }

    /// Publish an already verified plan.
    pub fn swap(&self, plan: Plan) -> SwapReport {
        let new_name = plan.name().to_string();
        let new_version = plan.version();
        let old = self.current.swap(Arc::new(plan));
        SwapReport {
            old_name: old.name().to_string(),
            old_version: old.version(),
            new_name,
            new_version,
        }
    }
}
