//! Configuration of both ends of the PLC link, with defaults and the ranges a
//! validated configuration must fall in.
//!
//! [`LinkConfig`] drives sortd's [`super::HostLink`], [`PeerConfig`] the PLC side
//! ([`super::PlcPeer`]). `validate` names the first bad key; the state machines clamp
//! anything out of range rather than fail, so call `validate` when loading a
//! configuration. Reading files is the daemon's job, not this module's.

use super::error::PlcConfigError;
use super::seq::SEQ_DISTANCE_MAX;
use super::telegram::TELEGRAM_BYTES;

/// Largest window of unacknowledged telegrams either side accepts.
pub const WINDOW_MAX_LIMIT: usize = 1 << 20;
/// Largest receive buffer, in bytes.
pub const RECEIVE_BUFFER_BYTES_LIMIT: usize = 16 << 20;
/// Largest number of undelivered events either side keeps before pausing input.
pub const EVENTS_MAX_LIMIT: usize = 1 << 20;

const _: () = assert!(WINDOW_MAX_LIMIT < SEQ_DISTANCE_MAX as usize / 2);
const _: () = assert!(RECEIVE_BUFFER_BYTES_LIMIT >= 2 * TELEGRAM_BYTES);

/// When the receiver of numbered telegrams sends its cumulative ACK.
///
/// An ACK is due once `every_telegrams` new telegrams arrived, or `delay_ms_max` after
/// the first unacknowledged one arrived, whichever is first. A duplicate is re-ACKed at
/// once. All ACKs due at one `poll_transmit` collapse into one telegram, so
/// `every_telegrams = 1` still sends one ACK per batch of input, not per telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPolicy {
    /// Send an ACK once this many new telegrams are unacknowledged (1 = immediately).
    pub every_telegrams: u32,
    /// Send an ACK at most this long after the first unacknowledged telegram arrived.
    pub delay_ms_max: u32,
}

impl AckPolicy {
    /// Acknowledge every batch of input at once.
    pub const IMMEDIATE: AckPolicy = AckPolicy {
        every_telegrams: 1,
        delay_ms_max: 0,
    };
}

impl Default for AckPolicy {
    fn default() -> Self {
        AckPolicy::IMMEDIATE
    }
}

/// Settings shared by both ends: window, timers, buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Most numbered telegrams sent or queued but not yet acknowledged.
    pub window_max: usize,
    /// Retransmit everything unacknowledged when no ACK advanced for this long.
    pub ack_timeout_ms: u32,
    /// A HEARTBEAT is sent this often while the link is up.
    pub heartbeat_interval_ms: u32,
    /// The link is declared down after this many intervals without any valid telegram.
    pub heartbeats_missed_max: u32,
    /// First reconnect delay (host only).
    pub reconnect_backoff_min_ms: u32,
    /// Largest reconnect delay (host only).
    pub reconnect_backoff_max_ms: u32,
    /// Seed of the reconnect jitter; fixed seeds make tests repeatable.
    pub jitter_seed: u64,
    /// Bytes of received input buffered while events wait to be polled.
    pub receive_buffer_bytes_max: usize,
    /// Events kept before input processing pauses until `poll_event` drains them.
    pub events_max: usize,
    /// When to acknowledge the other side's numbered telegrams.
    pub ack_policy: AckPolicy,
    /// This process's session id (never 0): fixed for the process's life, different on
    /// every start (e.g. start time in microseconds). Tells the other side whether this
    /// end remembers what it had.
    pub session: u64,
    /// Sequence number of the first numbered telegram this process sends.
    pub first_seq: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            window_max: 4096,
            ack_timeout_ms: 200,
            heartbeat_interval_ms: 1000,
            heartbeats_missed_max: 5,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 5000,
            jitter_seed: 0x5eed,
            receive_buffer_bytes_max: 64 * 1024,
            events_max: 8192,
            ack_policy: AckPolicy::IMMEDIATE,
            session: 1,
            first_seq: 1,
        }
    }
}

fn check(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), PlcConfigError> {
    if value < min || value > max {
        return Err(PlcConfigError {
            key,
            value,
            min,
            max,
        });
    }
    Ok(())
}

const MS_MAX: u64 = 3_600_000;

impl LinkConfig {
    /// Check every value against its range; the error names the first bad key.
    pub fn validate(&self) -> Result<(), PlcConfigError> {
        check(
            "window_max",
            self.window_max as u64,
            1,
            WINDOW_MAX_LIMIT as u64,
        )?;
        check("ack_timeout_ms", self.ack_timeout_ms.into(), 1, MS_MAX)?;
        check(
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms.into(),
            1,
            MS_MAX,
        )?;
        check(
            "heartbeats_missed_max",
            self.heartbeats_missed_max.into(),
            1,
            1000,
        )?;
        check(
            "reconnect_backoff_min_ms",
            self.reconnect_backoff_min_ms.into(),
            1,
            MS_MAX,
        )?;
        check(
            "reconnect_backoff_max_ms",
            self.reconnect_backoff_max_ms.into(),
            self.reconnect_backoff_min_ms.into(),
            MS_MAX,
        )?;
        check(
            "receive_buffer_bytes_max",
            self.receive_buffer_bytes_max as u64,
            2 * TELEGRAM_BYTES as u64,
            RECEIVE_BUFFER_BYTES_LIMIT as u64,
        )?;
        check(
            "events_max",
            self.events_max as u64,
            16,
            EVENTS_MAX_LIMIT as u64,
        )?;
        check(
            "ack_policy.every_telegrams",
            self.ack_policy.every_telegrams.into(),
            1,
            WINDOW_MAX_LIMIT as u64,
        )?;
        check(
            "ack_policy.delay_ms_max",
            self.ack_policy.delay_ms_max.into(),
            0,
            MS_MAX,
        )?;
        check("session", self.session, 1, u64::MAX)?;
        Ok(())
    }

    /// The same configuration with every value forced into its range.
    pub fn clamped(&self) -> LinkConfig {
        let clamp_ms = |value: u32, min: u32| value.clamp(min, MS_MAX as u32);
        let backoff_min = clamp_ms(self.reconnect_backoff_min_ms, 1);
        LinkConfig {
            window_max: self.window_max.clamp(1, WINDOW_MAX_LIMIT),
            ack_timeout_ms: clamp_ms(self.ack_timeout_ms, 1),
            heartbeat_interval_ms: clamp_ms(self.heartbeat_interval_ms, 1),
            heartbeats_missed_max: self.heartbeats_missed_max.clamp(1, 1000),
            reconnect_backoff_min_ms: backoff_min,
            reconnect_backoff_max_ms: clamp_ms(self.reconnect_backoff_max_ms, backoff_min),
            jitter_seed: self.jitter_seed,
            receive_buffer_bytes_max: self
                .receive_buffer_bytes_max
                .clamp(2 * TELEGRAM_BYTES, RECEIVE_BUFFER_BYTES_LIMIT),
            events_max: self.events_max.clamp(16, EVENTS_MAX_LIMIT),
            ack_policy: AckPolicy {
                every_telegrams: self
                    .ack_policy
                    .every_telegrams
                    .clamp(1, WINDOW_MAX_LIMIT as u32),
                delay_ms_max: self.ack_policy.delay_ms_max.min(MS_MAX as u32),
            },
            session: self.session.max(1),
            first_seq: self.first_seq,
        }
    }

    /// How long without any valid telegram before the link is declared down, in ms.
    pub fn liveness_timeout_ms(&self) -> u64 {
        u64::from(self.heartbeat_interval_ms) * u64::from(self.heartbeats_missed_max)
    }
}

/// The PLC side's configuration: the same knobs (the reconnect backoff is unused: a PLC
/// waits for the host to connect, or its driver redials on its own schedule).
pub type PeerConfig = LinkConfig;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_keys_are_named() {
        assert_eq!(LinkConfig::default().validate(), Ok(()));
        let cases: &[(LinkConfig, &str)] = &[
            (
                LinkConfig {
                    window_max: 0,
                    ..LinkConfig::default()
                },
                "window_max",
            ),
            (
                LinkConfig {
                    reconnect_backoff_max_ms: 50,
                    ..LinkConfig::default()
                },
                "reconnect_backoff_max_ms",
            ),
            (
                LinkConfig {
                    session: 0,
                    ..LinkConfig::default()
                },
                "session",
            ),
            (
                LinkConfig {
                    receive_buffer_bytes_max: 10,
                    ..LinkConfig::default()
                },
                "receive_buffer_bytes_max",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate().err();
            assert_eq!(error.map(|e| e.key), Some(*key));
            assert_eq!(config.clamped().validate(), Ok(()), "{key}");
        }
    }
}
