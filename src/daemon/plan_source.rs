//! Where the daemon's plan comes from: a compiled plan file, or a plan CSV that is compiled
//! to a private temporary file at start and on every reload.
//!
//! It only produces verified plans; publishing one is the [`PlanHandle`]'s job.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::{Plan, PlanHandle, SwapReport, compile_file};

/// The configured plan path and how to turn it into a plan.
#[derive(Debug)]
pub struct PlanSource {
    path: PathBuf,
    compiles: AtomicU64,
}

/// A compiled file that is removed when dropped (a mapping of it stays valid after).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl PlanSource {
    /// A source reading `path`; a `.csv` extension means "compile it first".
    pub fn new(path: PathBuf) -> PlanSource {
        PlanSource {
            path,
            compiles: AtomicU64::new(0),
        }
    }

    /// Whether the path names a plan CSV (compiled before use).
    pub fn is_csv(&self) -> bool {
        self.path
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"))
    }

    fn compile_to_scratch(&self) -> Result<Scratch, String> {
        let serial = self.compiles.fetch_add(1, Ordering::Relaxed);
        let scratch = Scratch(
            std::env::temp_dir().join(format!("sortd-{}-{serial}.sortplan", std::process::id())),
        );
        compile_file(&self.path, &scratch.0)
            .map_err(|errors| format!("{} does not compile: {errors}", self.path.display()))?;
        Ok(scratch)
    }

    fn with_compiled<T>(
        &self,
        use_path: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<T, String> {
        if self.is_csv() {
            let scratch = self.compile_to_scratch()?;
            use_path(&scratch.0)
        } else {
            use_path(&self.path)
        }
    }

    /// Opens and fully verifies the plan.
    pub fn open(&self) -> Result<Plan, String> {
        self.with_compiled(|path| {
            let plan = Plan::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
            plan.verify()
                .map_err(|error| format!("{}: {error}", path.display()))?;
            Ok(plan)
        })
    }

    /// Replaces the plan in `handle` with a fresh, fully verified one; on any failure the
    /// old plan stays.
    pub fn swap_into(&self, handle: &PlanHandle) -> Result<SwapReport, String> {
        self.with_compiled(|path| {
            handle
                .swap_from_path(path)
                .map_err(|error| format!("{}: {error}", path.display()))
        })
    }
}
