//! Where the daemon's plan comes from: a compiled plan file, or a plan CSV that is compiled
//! to a private temporary file at start and on every reload.
//!
//! It only produces verified plans; publishing one is the [`PlanHandle`]'s job.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::{CompileErrors, Plan, PlanError, PlanHandle, SwapReport, compile_file};

/// Why the configured plan could not be turned into a verified plan. The plan layer's
/// error is kept whole (and returned by [`std::error::Error::source`]).
#[derive(Debug)]
pub enum PlanSourceError {
    /// The plan CSV does not compile.
    Compile {
        /// The CSV that was compiled.
        csv_path: PathBuf,
        /// Every error the compiler found, with its line.
        errors: CompileErrors,
    },
    /// The compiled plan could not be opened, verified or swapped in.
    Plan {
        /// The compiled file (a private temporary file for a CSV).
        path: PathBuf,
        /// What is wrong with it.
        error: PlanError,
    },
}

impl fmt::Display for PlanSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanSourceError::Compile { csv_path, errors } => {
                write!(f, "{} does not compile: {errors}", csv_path.display())
            }
            PlanSourceError::Plan { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for PlanSourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanSourceError::Compile { errors, .. } => Some(errors),
            PlanSourceError::Plan { error, .. } => Some(error),
        }
    }
}

impl PlanSourceError {
    fn plan(path: &Path) -> impl FnOnce(PlanError) -> PlanSourceError + '_ {
        move |error| PlanSourceError::Plan {
            path: path.to_path_buf(),
            error,
        }
    }
}

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

    fn compile_to_scratch(&self) -> Result<Scratch, PlanSourceError> {
        let serial = self.compiles.fetch_add(1, Ordering::Relaxed);
        let scratch = Scratch(
            std::env::temp_dir().join(format!("sortd-{}-{serial}.sortplan", std::process::id())),
        );
        compile_file(&self.path, &scratch.0).map_err(|errors| PlanSourceError::Compile {
            csv_path: self.path.clone(),
            errors,
        })?;
        Ok(scratch)
    }

    fn with_compiled<T>(
        &self,
        use_path: impl FnOnce(&Path) -> Result<T, PlanSourceError>,
    ) -> Result<T, PlanSourceError> {
        if self.is_csv() {
            let scratch = self.compile_to_scratch()?;
            use_path(&scratch.0)
        } else {
            use_path(&self.path)
        }
    }

    /// Opens and fully verifies the plan.
    pub fn open(&self) -> Result<Plan, PlanSourceError> {
        self.with_compiled(|path| {
            let plan = Plan::open(path).map_err(PlanSourceError::plan(path))?;
            plan.verify().map_err(PlanSourceError::plan(path))?;
            Ok(plan)
        })
    }

    /// Replaces the plan in `handle` with a fresh, fully verified one; on any failure the
    /// old plan stays.
    pub fn swap_into(&self, handle: &PlanHandle) -> Result<SwapReport, PlanSourceError> {
        self.with_compiled(|path| {
            handle
                .swap_from_path(path)
                .map_err(PlanSourceError::plan(path))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::daemon::DaemonError;
    use crate::plan::CompileErrorKind;

    const PLAN_CSV: &str = include_str!("../../config/example-plan.csv");

    /// The daemon's error keeps the compiler's report, line numbers and all.
    #[test]
    fn a_csv_that_does_not_compile_keeps_the_compile_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("plan.csv");
        std::fs::write(&csv, "kind,key,chutes\nexact,1Z999,0\n").expect("write");
        let error = DaemonError::Plan(PlanSource::new(csv.clone()).open().expect_err("bad"));
        assert!(error.to_string().starts_with("sort plan: "), "{error}");
        let source = error.source().expect("a source");
        let Some(PlanSourceError::Compile { csv_path, .. }) = source.downcast_ref() else {
            panic!("not a compile error: {source:?}");
        };
        assert_eq!(csv_path, &csv);
        let errors = source
            .source()
            .and_then(|cause| cause.downcast_ref::<CompileErrors>())
            .expect("the compile errors");
        let bad_chute = errors
            .errors
            .iter()
            .find(|error| matches!(error.kind, CompileErrorKind::BadChute { .. }))
            .expect("the bad chute");
        assert_eq!(bad_chute.line, 2);
    }

    /// A file that is not a plan keeps the plan layer's `PlanError`, both when opened and
    /// when swapped in (the reload path); the old plan stays.
    #[test]
    fn a_bad_plan_file_keeps_the_plan_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("plan.csv");
        std::fs::write(&csv, PLAN_CSV).expect("write");
        let handle = PlanHandle::new(PlanSource::new(csv).open().expect("example plan"));
        let serving = (handle.load().name().to_string(), handle.load().version());
        let bogus = dir.path().join("bogus.sortplan");
        std::fs::write(&bogus, vec![b'x'; 4096]).expect("write");
        let source = PlanSource::new(bogus.clone());
        for error in [
            source.open().expect_err("not a plan"),
            source.swap_into(&handle).expect_err("not a plan"),
        ] {
            let PlanSourceError::Plan { path, error: plan } = &error else {
                panic!("not a plan error: {error:?}");
            };
            assert_eq!(path, &bogus);
            assert!(matches!(plan, PlanError::BadMagic { .. }), "{plan:?}");
            let cause = error
                .source()
                .and_then(|cause| cause.downcast_ref::<PlanError>());
            assert_eq!(cause, Some(plan));
        }
        let after = (handle.load().name().to_string(), handle.load().version());
        assert_eq!(after, serving);
    }
}
