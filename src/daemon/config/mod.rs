//! The daemon's configuration: the TOML file as written, and the validated form the daemon
//! runs on.
//!
//! Parsing (`schema.rs`) rejects unknown keys; validation (`sections.rs`, one function per
//! section) checks every address, limit, path and text profile, names the offending key,
//! and builds each layer's own settings types (net's, the PLC link's, the pipeline's).
//! Nothing here binds a socket or opens the plan: the daemon does that only after
//! validation passed.

pub mod events;
pub mod preadvice;
mod schema;
mod sections;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::core::idle::IdleMode;
use crate::net::cidr::AllowList;
pub use crate::net::settings::{ConnectionLimits, Listener, PlcMode, PlcSettings};
use crate::web::WebSecurity;
pub use schema::{
    ConfigFile, ListenerSection, LogSection, METRICS_ADDRESS_DEFAULT, MetricsSection,
    PipelineSection, PlanSection, PlcSection, ScannersSection,
};

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfigError {
    /// The dotted key path, such as `scanners.listeners[1].protocol`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl DaemonConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> DaemonConfigError {
        DaemonConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DaemonConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for DaemonConfigError {}

/// Validated metrics endpoint settings.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `None` when the endpoint is disabled.
    pub address: Option<SocketAddr>,
    /// TLS and basic auth, read from `web_config` (open when there is none).
    pub security: Arc<WebSecurity>,
    /// The web-config file, read again on SIGHUP (to rotate a password or certificate).
    pub web_config: Option<PathBuf>,
}

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The plan file (compiled, or CSV to compile).
    pub plan_path: PathBuf,
    /// Scanner listeners.
    pub listeners: Vec<Listener>,
    /// Connection limits and deadlines.
    pub limits: ConnectionLimits,
    /// Who may connect.
    pub allow: AllowList,
    /// The PLC link.
    pub plc: PlcSettings,
    /// Queues, workers and deadlines.
    pub pipeline: PipelineSettings,
    /// Log filter and rate limits.
    pub log_filter: String,
    /// At most one warning per kind of bad input in this period.
    pub bad_input_warning_interval: Duration,
    /// On stop, how long to wait for the PLC to acknowledge what was already sent.
    pub drain_grace: Duration,
    /// The Prometheus endpoint.
    pub metrics: MetricsSettings,
    /// The sort-event journal; `None` when `[events] enabled = false`.
    pub events: Option<crate::events::journal::WriterConfig>,
    /// The NATS export; `None` when disabled.
    pub export: Option<crate::export::ExportSettings>,
    /// The pre-advice overlay; `None` when `[preadvice] enabled = false`.
    pub preadvice: Option<preadvice::PreAdviceConfig>,
    /// Plans and pre-advice from the hub's NATS; `None` when `[hub] enabled = false`.
    pub hub: Option<crate::export::HubSettings>,
}

impl Config {
    /// What the ingress workers run on.
    pub fn ingress_settings(&self) -> crate::net::settings::IngressSettings {
        crate::net::settings::IngressSettings {
            listeners: self.listeners.clone(),
            limits: self.limits,
            allow: self.allow.clone(),
            bad_input_warning_interval: self.bad_input_warning_interval,
        }
    }
}

/// Validated pipeline settings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    /// Ingress threads.
    pub workers: usize,
    /// Decisions per hand-off batch, at most.
    pub batch_parcels_max: usize,
    /// Batches queued for the PLC thread, at most.
    pub queue_batches_max: usize,
    /// Decision deadline from receipt.
    pub deadline: Duration,
    /// Duplicate window.
    pub duplicate_window: Duration,
    /// Duplicate window memory bound.
    pub duplicate_entries_max: usize,
    /// Ingress and the PLC side on one thread or apart.
    pub threads: crate::net::single::ThreadMode,
    /// How an idle thread waits.
    pub idle: IdleMode,
    /// Spin time before parking.
    pub spin_before_park: Duration,
}

/// Parses a configuration file's text. Unknown keys are errors.
pub fn parse(text: &str) -> Result<ConfigFile, DaemonConfigError> {
    toml::from_str(text).map_err(|error| {
        let message = error.message().to_string();
        let key = error
            .span()
            .map(|span| locate(text, span.start))
            .unwrap_or_default();
        DaemonConfigError::new(key, message)
    })
}

/// "line N" for a byte offset, so a TOML error points into the file.
fn locate(text: &str, offset: usize) -> String {
    let line = text
        .get(..offset)
        .map(|before| before.matches('\n').count() + 1)
        .unwrap_or(1);
    format!("line {line}")
}

/// Reads and validates a configuration file. Relative plan paths are taken relative to the
/// configuration file's folder.
pub fn load(path: &Path) -> Result<Config, DaemonConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        DaemonConfigError::new("", format!("cannot read {}: {error}", path.display()))
    })?;
    let file = parse(&text)?;
    validate(file, path.parent().unwrap_or(Path::new(".")))
}

/// Validates a parsed file. `base` is the folder relative paths are resolved against.
/// Each section is checked by its own function in `sections.rs`, in file order.
pub fn validate(file: ConfigFile, base: &Path) -> Result<Config, DaemonConfigError> {
    let plan_path = sections::plan(file.plan, base)?;
    let custom_profiles = sections::text_profiles(&file.text_profiles)?;
    let (listeners, limits, allow) = sections::scanners(&file.scanners, &custom_profiles)?;
    let plc = sections::plc(&file.plc)?;
    let (pipeline, drain_grace) = sections::pipeline(&file.pipeline)?;
    let bad_input_warning_interval = sections::log(&file.log)?;
    let metrics = sections::metrics(&file.metrics, &listeners, &plc, base)?;
    let export = file
        .export
        .validate()
        .map_err(|error| DaemonConfigError::new(error.key, error.message))?
        .map(|settings| settings.relative_to(base));

    let events = events::validate(&file.events, base, bad_input_warning_interval)?;
    let preadvice = preadvice::validate(&file.preadvice, base)?;
    let hub = file
        .hub
        .validate(base)
        .map_err(|error| DaemonConfigError::new(error.key, error.message))?;
    if let Some(hub) = &hub
        && hub.preadvice
        && preadvice.is_none()
    {
        return Err(DaemonConfigError::new(
            "hub.preadvice",
            "taking pre-advice from the hub needs [preadvice] enabled = true",
        ));
    }

    Ok(Config {
        events,
        preadvice,
        hub,
        drain_grace,
        metrics,
        export,
        plan_path,
        listeners,
        limits,
        allow,
        plc,
        pipeline,
        log_filter: file.log.filter,
        bad_input_warning_interval,
    })
}
