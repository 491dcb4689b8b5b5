//! Counters kept by both ends of the PLC link, for metrics and for tests.
//!
//! "Our numbered telegrams" are SORTs on the host and SORT_CONFIRM / CHUTE_STATUS on the
//! PLC side; "their numbered telegrams" the other way round. Counters only grow
//! (wrapping is not a concern at u64). Exporting them is the daemon's job.

use super::error::TelegramDecodeError;

/// Everything either end of the link counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Our numbered telegrams accepted into the window.
    pub submitted: u64,
    /// SORTs submitted while the link was down, held unnumbered until it is up.
    pub held: u64,
    /// Held SORTs whose deadline passed before the link came up; never sent.
    pub held_expired: u64,
    /// Submissions refused because the window was full.
    pub window_full: u64,
    /// Our numbered telegrams sent for the first time.
    pub sent: u64,
    /// Our numbered telegrams sent again (timeout or reconnect).
    pub retransmitted: u64,
    /// Our numbered telegrams acknowledged.
    pub acked: u64,
    /// ACK telegrams received that advanced the window.
    pub acks_received: u64,
    /// ACKs (or HELLO acknowledgements) that acknowledged nothing new.
    pub acks_duplicate: u64,
    /// ACKs for sequence numbers never assigned; ignored.
    pub acks_invalid: u64,
    /// ACK telegrams sent.
    pub acks_sent: u64,
    /// Their numbered telegrams delivered (exactly once each).
    pub delivered: u64,
    /// Their numbered telegrams received again; re-ACKed, not delivered.
    pub duplicates: u64,
    /// Their numbered telegrams ahead of the expected number; dropped.
    pub out_of_order: u64,
    /// HEARTBEATs sent.
    pub heartbeats_sent: u64,
    /// HEARTBEATs received.
    pub heartbeats_received: u64,
    /// HELLOs sent.
    pub hellos_sent: u64,
    /// HELLOs received.
    pub hellos_received: u64,
    /// 40-byte candidates that failed to decode.
    pub telegrams_bad: u64,
    /// Valid telegrams that make no sense here (wrong direction, before HELLO).
    pub telegrams_unexpected: u64,
    /// Times the reader discarded bytes to find the next sync word.
    pub resyncs: u64,
    /// Bytes discarded while resynchronising.
    pub bytes_skipped: u64,
    /// Input bytes refused because the receive buffer was full.
    pub input_bytes_dropped: u64,
    /// Times the link came up (resync completed).
    pub link_ups: u64,
    /// Times the link went down.
    pub link_downs: u64,
    /// Times the host asked its driver to dial.
    pub connect_requests: u64,
    /// The most recent decode error, for logs.
    pub last_decode_error: Option<TelegramDecodeError>,
}
