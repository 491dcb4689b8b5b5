//! The network shells' own settings: scanner listeners and their limits, who may
//! connect, and how the PLC is reached. `daemon/config` builds them from the TOML file
//! and validates them; the shells only read them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::core::session::SessionLimits;
use crate::wire::Framing;

use super::cidr::AllowList;

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

/// A validated listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where to listen.
    pub address: SocketAddr,
    /// Peers this listener accepts, on top of the global `[scanners] allow`.
    pub allow: AllowList,
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
#[derive(Debug, Clone)]
pub struct PlcSettings {
    /// Who dials whom.
    pub mode: PlcMode,
    /// The PLC's address or the address to listen on.
    pub address: SocketAddr,
    /// Listen mode: the addresses a PLC may connect from (never empty in listen mode).
    pub allow: AllowList,
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
        self.unclamped_link_config().clamped()
    }

    /// Listen mode: how long a new connection may take to send its HELLO before it is
    /// closed (the link's own silence limit: heartbeat period times missed periods).
    pub fn hello_timeout(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.heartbeats_missed_max.max(1))
    }

    /// The link's settings as configured, before clamping: validate these with
    /// [`crate::plc::LinkConfig::validate`], the one place the link's ranges are kept.
    pub fn unclamped_link_config(&self) -> crate::plc::LinkConfig {
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
    }
}

/// What the ingress workers are told.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// Scanner listeners, in the order their sockets are given to the workers.
    pub listeners: Vec<Listener>,
    /// Connection limits and deadlines.
    pub limits: ConnectionLimits,
    /// Who may connect.
    pub allow: AllowList,
    /// At most one warning per kind of bad input in this period.
    pub bad_input_warning_interval: Duration,
}

impl ConnectionLimits {
    /// A scanner session's share of the limits.
    pub fn session(&self) -> SessionLimits {
        SessionLimits {
            buffer_bytes: self.buffer_bytes,
            frame_deadline: self.frame_deadline,
            idle_timeout: self.idle_timeout,
        }
    }
}
