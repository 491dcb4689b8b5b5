//! The journal's counters, shared between the writer, its fsync thread and whoever
//! exposes metrics (atomics, written by one thread each, read by any).
//!
//! Counting only; the daemon turns a [`JournalCounters`] snapshot into metrics and the
//! systemd status line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why events were lost instead of journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The file system is full (ENOSPC) or over quota (EDQUOT).
    DiskFull,
    /// A segment hit the process's file size limit (EFBIG).
    FileTooLarge,
    /// Any other write, create or open failure.
    IoError,
    /// The event does not fit the record format (a bug upstream; counted, not written).
    InvalidEvent,
}

impl LossReason {
    /// Every reason, in index order.
    pub const ALL: [LossReason; 4] = [
        LossReason::DiskFull,
        LossReason::FileTooLarge,
        LossReason::IoError,
        LossReason::InvalidEvent,
    ];

    /// snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            LossReason::DiskFull => "disk_full",
            LossReason::FileTooLarge => "file_too_large",
            LossReason::IoError => "io_error",
            LossReason::InvalidEvent => "invalid_event",
        }
    }

    /// The reason for an I/O error.
    pub fn of(error: &std::io::Error) -> LossReason {
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                LossReason::DiskFull
            }
            std::io::ErrorKind::FileTooLarge => LossReason::FileTooLarge,
            _ => LossReason::IoError,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Live counters of one journal.
#[derive(Debug, Default)]
pub struct JournalStats {
    events_journaled: AtomicU64,
    bytes_journaled: AtomicU64,
    lost: [AtomicU64; LossReason::ALL.len()],
    written_seq: AtomicU64,
    durable_seq: AtomicU64,
    segments: AtomicU64,
    segment_bytes: AtomicU64,
    segments_deleted: AtomicU64,
    torn_tails_cut: AtomicU64,
    segments_set_aside: AtomicU64,
    fsync_errors: AtomicU64,
}

/// A snapshot of [`JournalStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCounters {
    /// Events written to the page cache since start.
    pub events_journaled: u64,
    /// Their bytes.
    pub bytes_journaled: u64,
    /// Events lost, by [`LossReason`] (indexed as [`LossReason::ALL`]).
    pub lost: [u64; LossReason::ALL.len()],
    /// Highest sequence written to the page cache (0: none yet).
    pub written_seq: u64,
    /// Highest sequence known fsynced (0: none yet).
    pub durable_seq: u64,
    /// Segment files in the directory (as of the last retention pass or roll).
    pub segments: u64,
    /// Their bytes.
    pub segment_bytes: u64,
    /// Segments deleted by retention since start.
    pub segments_deleted: u64,
    /// Torn or corrupt tails cut at open.
    pub torn_tails_cut: u64,
    /// Segments set aside at open because their header was unreadable.
    pub segments_set_aside: u64,
    /// fsync failures (what was written may not be durable).
    pub fsync_errors: u64,
}

impl JournalCounters {
    /// Events lost for `reason`.
    pub fn lost(&self, reason: LossReason) -> u64 {
        self.lost[reason.index()]
    }

    /// Events lost for any reason.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
}

impl JournalStats {
    /// A snapshot of every counter.
    pub fn snapshot(&self) -> JournalCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        JournalCounters {
            events_journaled: get(&self.events_journaled),
            bytes_journaled: get(&self.bytes_journaled),
            lost: [
                get(&self.lost[0]),
                get(&self.lost[1]),
                get(&self.lost[2]),
                get(&self.lost[3]),
            ],
            written_seq: self.written_seq.load(Ordering::Acquire),
            durable_seq: self.durable_seq.load(Ordering::Acquire),
            segments: get(&self.segments),
            segment_bytes: get(&self.segment_bytes),
            segments_deleted: get(&self.segments_deleted),
            torn_tails_cut: get(&self.torn_tails_cut),
            segments_set_aside: get(&self.segments_set_aside),
            fsync_errors: get(&self.fsync_errors),
        }
    }

    /// Highest sequence known fsynced: what survives a power loss.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    pub(super) fn add_journaled(&self, events: u64, bytes: u64, written_seq: u64) {
        self.events_journaled.fetch_add(events, Ordering::Relaxed);
        self.bytes_journaled.fetch_add(bytes, Ordering::Relaxed);
        self.segment_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.written_seq.store(written_seq, Ordering::Release);
    }

    pub(super) fn written_seq(&self) -> u64 {
        self.written_seq.load(Ordering::Acquire)
    }

    pub(super) fn set_written_seq(&self, seq: u64) {
        self.written_seq.store(seq, Ordering::Release);
    }

    pub(super) fn set_durable_seq(&self, seq: u64) {
        self.durable_seq.fetch_max(seq, Ordering::AcqRel);
    }

    pub(super) fn add_lost(&self, reason: LossReason, events: u64) {
        self.lost[reason.index()].fetch_add(events, Ordering::Relaxed);
    }

    pub(super) fn set_segments(&self, segments: u64, bytes: u64) {
        self.segments.store(segments, Ordering::Relaxed);
        self.segment_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(super) fn add_segment(&self, header_bytes: u64) {
        self.segments.fetch_add(1, Ordering::Relaxed);
        self.segment_bytes
            .fetch_add(header_bytes, Ordering::Relaxed);
    }

    pub(super) fn add_deleted(&self, segments: u64) {
        self.segments_deleted.fetch_add(segments, Ordering::Relaxed);
    }

    pub(super) fn add_torn_tail(&self) {
        self.torn_tails_cut.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_set_aside(&self) {
        self.segments_set_aside.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_fsync_error(&self) {
        self.fsync_errors.fetch_add(1, Ordering::Relaxed);
    }
}
