//! The sort plan: operators' CSV compiled into a memory-mapped file, exact lookup by
//! barcode, longest-prefix lookup by destination code, and a shared handle that swaps
//! plans between waves without blocking readers.
//!
//! Jobs by file: [`csv`] parses the source and writes the compiled file atomically;
//! [`build`] lays out the tables; [`format`](mod@format) is the byte layout (also in PLAN.md);
//! [`open`](Plan::open) maps and checks a file; [`lookup`](Plan::resolve) is the hot path;
//! [`handle`](PlanHandle) publishes plans; [`diff()`] compares two plans; [`generate`]
//! makes synthetic and example plans. Pre-advice: [`overlay`] holds exact entries over a
//! plan and resolves through both, [`preadvice`] logs, publishes and compacts them,
//! [`preadvice_log`] is the log record and [`preadvice_msg`] the JSON-lines message. This layer does no networking, threading or
//! clock reading; the daemon decides when to load and swap.

pub mod build;
pub mod csv;
pub mod diff;
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod generate;
mod handle;
mod joint;
mod lookup;
mod open;
pub mod overlay;
pub mod preadvice;
pub mod preadvice_log;
pub mod preadvice_msg;
mod types;

pub use build::{BuiltPlan, PlanBuilder};
pub use csv::{CompileReport, compile_file, compile_reader, compile_str};
pub use diff::{PlanDiff, diff};
pub use error::{CompileError, CompileErrorKind, CompileErrors, PlanError};
pub use handle::{PlanHandle, SwapReport};
pub use open::Plan;
pub use overlay::{
    OverlayResolution, OverlaySnapshot, PreAdviceEntry, PreAdviceValue, resolve_with_overlay,
};
pub use preadvice::{PlanView, PreAdvice, PreAdviceError, PreAdviceSettings};
pub use types::{
    CHUTES_PER_RULE_MAX, Chutes, DefaultKind, Outcome, PlanStats, Resolution, RuleKind, RuleRef,
};
