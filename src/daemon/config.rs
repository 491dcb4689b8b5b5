//! The daemon's configuration: the TOML file as written, and the validated form the daemon
//! runs on.
//!
//! Parsing rejects unknown keys; validation checks every address, limit, path and text
//! profile and names the offending key. Nothing here binds a socket or opens the plan:
//! the daemon does that only after validation passed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::net::cidr::{AllowList, Cidr};
use crate::wire::{FRAME_BYTES_MAX, Framing, TextProfile, TextProfileSpec};

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key path, such as `scanners.listeners[1].protocol`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The configuration file as written. Every section and key has a default except
/// `plan.path`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// `[plan]`
    pub plan: PlanSection,
    /// `[scanners]`
    pub scanners: ScannersSection,
    /// `[plc]`
    pub plc: PlcSection,
    /// `[pipeline]`
    pub pipeline: PipelineSection,
    /// `[log]`
    pub log: LogSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
    /// `[events]`: the sort-event journal (`config_events.rs`).
    pub events: super::config_events::EventsSection,
    /// `[text_profiles.NAME]`: custom scanner telegram layouts.
    pub text_profiles: BTreeMap<String, TextProfileSpec>,
}

/// `[plan]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSection {
    /// A compiled plan (`sortd plan compile`), or a plan CSV that is compiled at start and
    /// on every reload.
    pub path: Option<PathBuf>,
}

/// `[scanners]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannersSection {
    /// Listening sockets, each with its protocol.
    pub listeners: Vec<ListenerSection>,
    /// Connections beyond this are accepted and closed at once.
    pub connections_max: usize,
    /// Receive buffer per connection; a frame must fit in it.
    pub buffer_bytes: usize,
    /// A frame that has started arriving must be complete within this time.
    pub frame_deadline_ms: u64,
    /// A connection that sends nothing (not even a heartbeat) for this long is closed.
    pub idle_timeout_ms: u64,
    /// Peers allowed to connect, as CIDR blocks.
    pub allow: Vec<String>,
}

impl Default for ScannersSection {
    fn default() -> Self {
        ScannersSection {
            listeners: vec![ListenerSection::default()],
            connections_max: 1024,
            buffer_bytes: 64 * 1024,
            frame_deadline_ms: 2_000,
            idle_timeout_ms: 60_000,
            allow: vec!["0.0.0.0/0".into(), "::/0".into()],
        }
    }
}

/// `[[scanners.listeners]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSection {
    /// Address and port to listen on.
    pub address: String,
    /// `binary`, a built-in text profile name, or a name under `[text_profiles]`.
    pub protocol: String,
    /// Scanner id for text telegrams, which carry none. Unset: each connection gets its own.
    pub scanner_id: Option<u32>,
}

impl Default for ListenerSection {
    fn default() -> Self {
        ListenerSection {
            address: "0.0.0.0:7100".into(),
            protocol: "binary".into(),
            scanner_id: None,
        }
    }
}

/// Whether sortd dials the PLC or the PLC dials sortd.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PlcMode {
    /// sortd is the TCP client; the PLC listens (the usual S7 set-up).
    #[default]
    Connect,
    /// sortd listens; the PLC connects.
    Listen,
}

/// `[plc]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlcSection {
    /// `connect` or `listen`.
    pub mode: PlcMode,
    /// The PLC's address (connect) or the address to listen on (listen).
    pub address: String,
    /// SORT telegrams sent but not yet acknowledged, at most.
    pub window_max: usize,
    /// Retransmit unacknowledged telegrams after this long without an ACK.
    pub ack_timeout_ms: u64,
    /// Heartbeat period in both directions.
    pub heartbeat_interval_ms: u64,
    /// The link is declared down after this many heartbeat periods of silence.
    pub heartbeats_missed_max: u32,
    /// First reconnect delay; doubles on each failure, with jitter.
    pub reconnect_backoff_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_backoff_max_ms: u64,
}

impl Default for PlcSection {
    fn default() -> Self {
        PlcSection {
            mode: PlcMode::Connect,
            address: "127.0.0.1:7200".into(),
            window_max: 4096,
            ack_timeout_ms: 200,
            heartbeat_interval_ms: 1_000,
            heartbeats_missed_max: 5,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 5_000,
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Ingress threads, each decoding and resolving for its share of the connections.
    pub workers: usize,
    /// Decisions handed from a worker to the PLC thread in one batch, at most.
    pub batch_parcels_max: usize,
    /// Batches waiting for the PLC thread, at most; beyond it ingress stops reading.
    pub queue_batches_max: usize,
    /// A decision that would reach the PLC later than this after receipt goes out `late`.
    pub deadline_ms: u64,
    /// The same parcel id from the same scanner inside this window is a duplicate.
    pub duplicate_window_ms: u64,
    /// Parcels the duplicate window remembers, at most.
    pub duplicate_entries_max: usize,
    /// How long an idle thread spins before it parks.
    pub spin_before_park_us: u64,
    /// On stop, how long to wait for the PLC to acknowledge what was already sent.
    pub drain_grace_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            workers: 1,
            batch_parcels_max: 256,
            queue_batches_max: 64,
            deadline_ms: 500,
            duplicate_window_ms: 10_000,
            duplicate_entries_max: 1_000_000,
            spin_before_park_us: 50,
            drain_grace_ms: 5_000,
        }
    }
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing env-filter directive; `RUST_LOG` overrides it.
    pub filter: String,
    /// At most one warning per kind of bad input in this period.
    pub bad_input_warning_interval_ms: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            filter: "info".into(),
            bad_input_warning_interval_ms: 10_000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Whether to serve the Prometheus endpoint.
    pub enabled: bool,
    /// Address and port of the endpoint (`GET /metrics`).
    pub address: String,
}

/// The metrics endpoint's default address: loopback only, the port Prometheus' exporter
/// list suggests for a new exporter.
pub const METRICS_ADDRESS_DEFAULT: &str = "127.0.0.1:9464";

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            address: METRICS_ADDRESS_DEFAULT.into(),
        }
    }
}

/// Validated metrics endpoint settings.
#[derive(Debug, Clone, Copy)]
pub struct MetricsSettings {
    /// `None` when the endpoint is disabled.
    pub address: Option<SocketAddr>,
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
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where to listen.
    pub address: SocketAddr,
    /// How its byte stream is framed.
    pub framing: Framing,
    /// The protocol name as configured, for logs.
    pub protocol_name: String,
    /// Fixed scanner id for text telegrams.
    pub scanner_id: Option<u32>,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once, at most.
    pub connections_max: usize,
    /// Receive buffer per connection.
    pub buffer_bytes: usize,
    /// Time allowed to complete a started frame.
    pub frame_deadline: Duration,
    /// Time allowed without any byte.
    pub idle_timeout: Duration,
}

/// Validated PLC link settings.
#[derive(Debug, Clone, Copy)]
pub struct PlcSettings {
    /// Who dials whom.
    pub mode: PlcMode,
    /// The PLC's address or the address to listen on.
    pub address: SocketAddr,
    /// Unacknowledged SORT telegrams, at most.
    pub window_max: usize,
    /// Retransmission timeout.
    pub ack_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Missed heartbeat periods before the link is down.
    pub heartbeats_missed_max: u32,
    /// First reconnect delay.
    pub reconnect_backoff_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_backoff_max: Duration,
}

impl PlcSettings {
    /// The sans-IO link's settings. The session id is this process's start time in
    /// microseconds, so the PLC can tell a restarted sortd from a reconnecting one.
    pub fn link_config(&self) -> crate::plc::LinkConfig {
        let session = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_micros() as u64)
            .max(1);
        let millis = |duration: Duration| duration.as_millis().min(u128::from(u32::MAX)) as u32;
        crate::plc::LinkConfig {
            window_max: self.window_max,
            ack_timeout_ms: millis(self.ack_timeout),
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            heartbeats_missed_max: self.heartbeats_missed_max,
            reconnect_backoff_min_ms: millis(self.reconnect_backoff_min),
            reconnect_backoff_max_ms: millis(self.reconnect_backoff_max),
            jitter_seed: session,
            session,
            ..crate::plc::LinkConfig::default()
        }
        .clamped()
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
    /// Spin time before parking.
    pub spin_before_park: Duration,
}

/// Parses a configuration file's text. Unknown keys are errors.
pub fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let message = error.message().to_string();
        let key = error
            .span()
            .map(|span| locate(text, span.start))
            .unwrap_or_default();
        ConfigError::new(key, message)
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
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::new("", format!("cannot read {}: {error}", path.display()))
    })?;
    let file = parse(&text)?;
    validate(file, path.parent().unwrap_or(Path::new(".")))
}

fn within<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            key,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    Ok(value)
}

fn socket_address(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("`{text}` is not an address:port such as 0.0.0.0:7100 or [::1]:7100"),
        )
    })
}

fn millis(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// Validates a parsed file. `base` is the folder relative paths are resolved against.
pub fn validate(file: ConfigFile, base: &Path) -> Result<Config, ConfigError> {
    let plan_path = file
        .plan
        .path
        .ok_or_else(|| ConfigError::new("plan.path", "is required"))?;
    let plan_path = if plan_path.is_relative() {
        base.join(plan_path)
    } else {
        plan_path
    };
    if !plan_path.is_file() {
        return Err(ConfigError::new(
            "plan.path",
            format!("{} is not a readable file", plan_path.display()),
        ));
    }

    let mut custom_profiles = BTreeMap::new();
    for (name, spec) in &file.text_profiles {
        let key = format!("text_profiles.{name}");
        if name == "binary" || TextProfile::builtin(name).is_some() {
            return Err(ConfigError::new(key, "shadows a built-in protocol name"));
        }
        let profile = spec
            .validate()
            .map_err(|error| ConfigError::new(key, error.to_string()))?;
        custom_profiles.insert(name.clone(), profile);
    }

    let scanners = &file.scanners;
    if scanners.listeners.is_empty() {
        return Err(ConfigError::new(
            "scanners.listeners",
            "at least one listener is required",
        ));
    }
    let mut listeners = Vec::with_capacity(scanners.listeners.len());
    for (index, listener) in scanners.listeners.iter().enumerate() {
        let key = |field: &str| format!("scanners.listeners[{index}].{field}");
        let address = socket_address(&key("address"), &listener.address)?;
        // Port 0 asks for any free port, so two of them never collide.
        if address.port() != 0 && listeners.iter().any(|l: &Listener| l.address == address) {
            return Err(ConfigError::new(
                key("address"),
                "is used by another listener",
            ));
        }
        let framing = if listener.protocol == "binary" {
            Framing::Binary
        } else if let Some(profile) = custom_profiles.get(&listener.protocol) {
            Framing::Text(profile.clone())
        } else if let Some(profile) = TextProfile::builtin(&listener.protocol) {
            Framing::Text(profile)
        } else {
            let mut known = vec!["binary".to_string()];
            known.extend(TextProfile::builtin_names().iter().map(|n| n.to_string()));
            known.extend(custom_profiles.keys().cloned());
            return Err(ConfigError::new(
                key("protocol"),
                format!(
                    "unknown protocol `{}` (known: {})",
                    listener.protocol,
                    known.join(", ")
                ),
            ));
        };
        listeners.push(Listener {
            address,
            framing,
            protocol_name: listener.protocol.clone(),
            scanner_id: listener.scanner_id,
        });
    }

    let limits = ConnectionLimits {
        connections_max: within(
            "scanners.connections_max",
            scanners.connections_max,
            1,
            65_536,
        )?,
        buffer_bytes: within(
            "scanners.buffer_bytes",
            scanners.buffer_bytes,
            2 * FRAME_BYTES_MAX,
            16 << 20,
        )?,
        frame_deadline: millis(within(
            "scanners.frame_deadline_ms",
            scanners.frame_deadline_ms,
            1,
            600_000,
        )?),
        idle_timeout: millis(within(
            "scanners.idle_timeout_ms",
            scanners.idle_timeout_ms,
            1,
            86_400_000,
        )?),
    };

    let mut blocks = Vec::with_capacity(scanners.allow.len());
    for (index, text) in scanners.allow.iter().enumerate() {
        let block: Cidr = text.parse().map_err(|error: crate::net::cidr::CidrError| {
            ConfigError::new(format!("scanners.allow[{index}]"), error.to_string())
        })?;
        blocks.push(block);
    }
    if blocks.is_empty() {
        return Err(ConfigError::new(
            "scanners.allow",
            "is empty, so no scanner could connect (use \"0.0.0.0/0\" and \"::/0\" to allow all)",
        ));
    }

    let plc_section = &file.plc;
    let plc = PlcSettings {
        mode: plc_section.mode,
        address: socket_address("plc.address", &plc_section.address)?,
        window_max: within("plc.window_max", plc_section.window_max, 1, 65_536)?,
        ack_timeout: millis(within(
            "plc.ack_timeout_ms",
            plc_section.ack_timeout_ms,
            1,
            60_000,
        )?),
        heartbeat_interval: millis(within(
            "plc.heartbeat_interval_ms",
            plc_section.heartbeat_interval_ms,
            10,
            60_000,
        )?),
        heartbeats_missed_max: within(
            "plc.heartbeats_missed_max",
            plc_section.heartbeats_missed_max,
            1,
            1_000,
        )?,
        reconnect_backoff_min: millis(within(
            "plc.reconnect_backoff_min_ms",
            plc_section.reconnect_backoff_min_ms,
            1,
            60_000,
        )?),
        reconnect_backoff_max: millis(within(
            "plc.reconnect_backoff_max_ms",
            plc_section.reconnect_backoff_max_ms,
            plc_section.reconnect_backoff_min_ms.max(1),
            600_000,
        )?),
    };

    let pipeline_section = &file.pipeline;
    let pipeline = PipelineSettings {
        workers: within(
            "pipeline.workers",
            pipeline_section.workers,
            1,
            crate::stats::INGRESS_WORKERS_MAX,
        )?,
        batch_parcels_max: within(
            "pipeline.batch_parcels_max",
            pipeline_section.batch_parcels_max,
            1,
            65_536,
        )?,
        queue_batches_max: within(
            "pipeline.queue_batches_max",
            pipeline_section.queue_batches_max,
            1,
            65_536,
        )?,
        deadline: millis(within(
            "pipeline.deadline_ms",
            pipeline_section.deadline_ms,
            1,
            60_000,
        )?),
        duplicate_window: millis(within(
            "pipeline.duplicate_window_ms",
            pipeline_section.duplicate_window_ms,
            0,
            86_400_000,
        )?),
        duplicate_entries_max: within(
            "pipeline.duplicate_entries_max",
            pipeline_section.duplicate_entries_max,
            1,
            100_000_000,
        )?,
        spin_before_park: Duration::from_micros(within(
            "pipeline.spin_before_park_us",
            pipeline_section.spin_before_park_us,
            0,
            10_000,
        )?),
    };

    if file
        .log
        .filter
        .parse::<tracing_subscriber::EnvFilter>()
        .is_err()
    {
        return Err(ConfigError::new(
            "log.filter",
            format!("`{}` is not a valid filter directive", file.log.filter),
        ));
    }

    let drain_grace = millis(within(
        "pipeline.drain_grace_ms",
        pipeline_section.drain_grace_ms,
        0,
        600_000,
    )?);

    let metrics_address = if file.metrics.enabled {
        let address = socket_address("metrics.address", &file.metrics.address)?;
        let taken = listeners.iter().any(|l| l.address == address)
            || (plc.mode == PlcMode::Listen && plc.address == address);
        if address.port() != 0 && taken {
            return Err(ConfigError::new(
                "metrics.address",
                "is used by a scanner or PLC listener",
            ));
        }
        Some(address)
    } else {
        None
    };
    let metrics = MetricsSettings {
        address: metrics_address,
    };

    let bad_input_warning_interval = millis(within(
        "log.bad_input_warning_interval_ms",
        file.log.bad_input_warning_interval_ms,
        1,
        3_600_000,
    )?);
    let events = super::config_events::validate(&file.events, base, bad_input_warning_interval)?;

    Ok(Config {
        events,
        drain_grace,
        metrics,
        plan_path,
        listeners,
        limits,
        allow: AllowList::new(blocks),
        plc,
        pipeline,
        log_filter: file.log.filter,
        bad_input_warning_interval,
    })
}
