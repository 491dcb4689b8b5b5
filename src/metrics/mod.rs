//! The Prometheus exposition: the daemon's counters as text, in the classic Prometheus
//! format or OpenMetrics, as pure functions.
//!
//! [`exposition`] turns [`crate::stats::Counters`] and the current plan into text at scrape
//! time (the pipeline records nothing extra for it); [`format`](mod@format) picks the format an
//! `Accept` header asks for and makes the classic text. Serving it over HTTP is the web
//! layer's job (`crate::web`).

pub mod exposition;
pub mod format;

pub use exposition::Exposition;
pub use format::Format;
