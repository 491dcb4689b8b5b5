//! The configuration file as written: every section and key with its default, parsed
//! with unknown keys rejected. Nothing here checks a range or an address; that is
//! `sections.rs`' job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::wire::TextProfileSpec;

pub use crate::net::settings::PlcMode;

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
    /// `[export]`: sort events into NATS JetStream.
    pub export: crate::export::ExportSection,
    /// `[events]`: the sort-event journal (`events.rs`).
    pub events: super::events::EventsSection,
    /// `[preadvice]`: the pre-advice overlay (`preadvice.rs`).
    pub preadvice: super::preadvice::PreAdviceSection,
    /// `[hub]`: plans and pre-advice from the hub's NATS.
    pub hub: crate::export::HubSection,
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
    /// Peers allowed to connect to any listener, as CIDR blocks; a listener's own
    /// `allow` narrows it further.
    pub allow: Vec<String>,
}

/// The default `[scanners] allow`: loopback and the private ranges (RFC 1918, IPv6
/// unique-local and link-local), so the demo and a first install on a site network work
/// while nothing from a routed public address can connect.
pub const SCANNERS_ALLOW_DEFAULT: [&str; 7] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

impl Default for ScannersSection {
    fn default() -> Self {
        ScannersSection {
            listeners: vec![ListenerSection::default()],
            connections_max: 1024,
            buffer_bytes: 64 * 1024,
            frame_deadline_ms: 2_000,
            idle_timeout_ms: 60_000,
            allow: SCANNERS_ALLOW_DEFAULT.map(String::from).to_vec(),
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
    /// Peers this listener accepts (CIDR blocks), checked after `[scanners] allow`.
    /// Unset: whoever the global list allows.
    pub allow: Option<Vec<String>>,
}

impl Default for ListenerSection {
    fn default() -> Self {
        ListenerSection {
            address: "0.0.0.0:7100".into(),
            protocol: "binary".into(),
            scanner_id: None,
            allow: None,
        }
    }
}

/// `[plc]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlcSection {
    /// `connect` or `listen`.
    pub mode: PlcMode,
    /// The PLC's address (connect) or the address to listen on (listen).
    pub address: String,
    /// Listen mode: the addresses a PLC may connect from, as CIDR blocks. Required (not
    /// empty) in listen mode; ignored in connect mode.
    pub allow: Vec<String>,
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
            allow: Vec::new(),
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
    /// Ingress and the PLC side on one thread or apart: `auto`, `single` or `split`.
    pub threads: String,
    /// How an idle thread waits: `adaptive`, `park`, `spin` or `busy_poll`.
    pub idle: String,
    /// How long an idle thread spins before it parks (modes `adaptive` and `spin`).
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
            threads: "auto".to_string(),
            idle: "adaptive".to_string(),
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
    /// Address and port of the endpoint (`GET /metrics`, the operator page at `/`).
    pub address: String,
    /// A web-config file (the Prometheus exporters' format) with TLS and basic-auth
    /// settings; relative to the configuration file. None: plain HTTP, no password.
    pub web_config: Option<PathBuf>,
}

/// The metrics endpoint's default address: loopback only, the port Prometheus' exporter
/// list suggests for a new exporter.
pub const METRICS_ADDRESS_DEFAULT: &str = "127.0.0.1:9464";

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            address: METRICS_ADDRESS_DEFAULT.into(),
            web_config: None,
        }
    }
}
