//! What the exporter tells the rest of the daemon: its state and counters, as atomics the
//! metrics exposition loads at scrape time. The exporter thread is the only writer.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What the exporter is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExportState {
    /// Not started, or stopped.
    Stopped = 0,
    /// Dialling NATS, checking the stream, reading where the stream ends.
    Connecting = 1,
    /// Connected and behind: publishing full batches.
    CatchingUp = 2,
    /// Connected and caught up with the source.
    Live = 3,
    /// Waiting before the next connection attempt.
    BackingOff = 4,
}

impl ExportState {
    /// Every state, in value order.
    pub const ALL: [ExportState; 5] = [
        ExportState::Stopped,
        ExportState::Connecting,
        ExportState::CatchingUp,
        ExportState::Live,
        ExportState::BackingOff,
    ];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            ExportState::Stopped => "stopped",
            ExportState::Connecting => "connecting",
            ExportState::CatchingUp => "catching_up",
            ExportState::Live => "live",
            ExportState::BackingOff => "backing_off",
        }
    }

    fn from_u8(value: u8) -> ExportState {
        ExportState::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(ExportState::Stopped)
    }
}

/// Why a connection or a publish failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExportErrorKind {
    /// Could not connect (refused, timed out, TLS or authentication failure).
    Connect = 0,
    /// The stream is missing (and may not be created) or its API failed.
    Stream = 1,
    /// No acknowledgement within `ack_timeout_ms`.
    AckTimeout = 2,
    /// The connection dropped.
    Disconnected = 3,
    /// JetStream refused a message (wrong last subject sequence, no stream, limits).
    Rejected = 4,
    /// The source (journal) could not be read, or the cursor not stored.
    Source = 5,
    /// The newest message on the subject was not written by a sortd exporter.
    ForeignMessage = 6,
}

impl ExportErrorKind {
    /// Every kind, in value order.
    pub const ALL: [ExportErrorKind; 7] = [
        ExportErrorKind::Connect,
        ExportErrorKind::Stream,
        ExportErrorKind::AckTimeout,
        ExportErrorKind::Disconnected,
        ExportErrorKind::Rejected,
        ExportErrorKind::Source,
        ExportErrorKind::ForeignMessage,
    ];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            ExportErrorKind::Connect => "connect",
            ExportErrorKind::Stream => "stream",
            ExportErrorKind::AckTimeout => "ack_timeout",
            ExportErrorKind::Disconnected => "disconnected",
            ExportErrorKind::Rejected => "rejected",
            ExportErrorKind::Source => "source",
            ExportErrorKind::ForeignMessage => "foreign_message",
        }
    }
}

/// The exporter's live figures.
#[derive(Debug, Default)]
pub struct ExportCounters {
    state: AtomicU8,
    /// Events the stream acknowledged (duplicates included once: they are in the stream).
    pub events_exported: AtomicU64,
    /// Messages the stream acknowledged.
    pub messages_acked: AtomicU64,
    /// Acknowledgements that said "duplicate" (a replay the stream already held).
    pub duplicates_acked: AtomicU64,
    /// Highest event sequence the stream acknowledged (or holds, after a resync).
    pub acked_seq: AtomicU64,
    /// Newest event sequence in the source.
    pub source_last_seq: AtomicU64,
    /// Age of the oldest unexported event, in milliseconds.
    pub lag_ms: AtomicU64,
    /// Successful connections (the first one included).
    pub connections: AtomicU64,
    errors: [AtomicU64; ExportErrorKind::ALL.len()],
}

impl ExportCounters {
    /// The current state.
    pub fn state(&self) -> ExportState {
        ExportState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state.
    pub fn set_state(&self, state: ExportState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Counts one error of `kind`.
    pub fn count_error(&self, kind: ExportErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Errors of `kind` so far.
    pub fn errors(&self, kind: ExportErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    /// Events in the source that the stream has not acknowledged yet.
    pub fn lag_events(&self) -> u64 {
        let last = self.source_last_seq.load(Ordering::Relaxed);
        last.saturating_sub(self.acked_seq.load(Ordering::Relaxed))
    }
}
