//! The HTTP side of the daemon: `/metrics` for Prometheus, the operator page at `/` and
//! the `/status.json` snapshot it polls, on one port, read-only, loopback by default.
//!
//! [`server`] is the IO shell: hyper on a single-threaded tokio runtime in its own thread,
//! with optional TLS and basic auth from an exporter web-config file ([`security`]).
//! [`routes`] (method and path to resource, the embedded page) and [`status`] (readings,
//! rates, the snapshot) are pure. The exposition text itself is [`crate::metrics`]'s.
//! Nothing here writes to the pipeline: it only loads counters.

pub mod routes;
pub mod security;
pub mod server;
pub mod status;

pub use security::{WebConfigError, WebSecurity};
pub use server::{WebServer, WebSettings, WebSources};
