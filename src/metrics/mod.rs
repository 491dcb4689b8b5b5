//! The Prometheus endpoint: the daemon's counters as OpenMetrics text, served over a tiny
//! read-only HTTP listener on its own thread.
//!
//! [`exposition`] turns [`crate::stats::Counters`] and the current plan into text at scrape
//! time (the pipeline records nothing extra for it); [`http`] is the request parser and
//! response writer, pure functions; [`server`] is the one thread with the socket. Which
//! address to bind and whether to serve at all is configuration (`[metrics]`).

pub mod exposition;
pub mod http;
pub mod server;

pub use exposition::Exposition;
pub use server::MetricsServer;
