//! Live counters shared between the daemon's threads and whoever reads them (logs, the
//! metrics endpoint, tests).
//!
//! Threads accumulate locally and add here once per turn, not once per parcel, so
//! counting costs the hot path almost nothing. This module only counts; it formats
//! nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Reason;

/// Counters by decision reason, indexed by `Reason::code() - 1`.
#[derive(Debug, Default)]
pub struct ByReason([AtomicU64; Reason::ALL.len()]);

impl ByReason {
    /// Adds `count` to `reason`.
    pub fn add(&self, reason: Reason, count: u64) {
        if let Some(slot) = self.0.get(usize::from(reason.code()) - 1) {
            slot.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0
            .get(usize::from(reason.code()) - 1)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }

    /// The sum over every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|slot| slot.load(Ordering::Relaxed)).sum()
    }
}

/// Every counter the daemon keeps.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from scanner connections.
    pub bytes_in: AtomicU64,
    /// Frames decoded (scans, hellos and heartbeats).
    pub frames_in: AtomicU64,
    /// Scan frames decoded: each gets exactly one decision.
    pub scans_in: AtomicU64,
    /// Bytes skipped by the decoders (garbage, bad frames, partial frames at close).
    pub bytes_skipped: AtomicU64,
    /// Decode errors by kind.
    pub decode_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections accepted and served.
    pub connections_accepted: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections refused because `connections_max` were open.
    pub connections_refused_limit: AtomicU64,
    /// Connections refused by the allow-list.
    pub connections_refused_address: AtomicU64,
    /// Connections closed because a started frame missed its deadline.
    pub connections_closed_frame_deadline: AtomicU64,
    /// Connections closed for idleness.
    pub connections_closed_idle: AtomicU64,
    /// Decisions handed to the PLC link, by reason.
    pub decided_sent: ByReason,
    /// Decisions made while the PLC link was down, by reason: counted, not delivered.
    pub decided_undelivered: ByReason,
    /// Sort confirmations from the PLC by outcome name.
    pub confirmations: Mutex<BTreeMap<&'static str, u64>>,
    /// Decision latency (receipt to hand-off to the PLC link) histogram in microseconds.
    pub decision_latency_us: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Counters {
    /// Adds `count` to one of the plain counters.
    pub fn add(counter: &AtomicU64, count: u64) {
        if count != 0 {
            counter.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Counts one decode error of `kind`.
    pub fn count_decode_error(&self, kind: &'static str, count: u64) {
        if let Ok(mut errors) = self.decode_errors.lock() {
            *errors.entry(kind).or_insert(0) += count;
        }
    }

    /// All decisions made, delivered or not.
    pub fn decided_total(&self) -> u64 {
        self.decided_sent.total() + self.decided_undelivered.total()
    }
}
