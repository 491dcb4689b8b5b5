//! The exporter's loop decisions, sans-IO: what the next NATS message holds (a replay
//! with its old bounds, or new records), which message carries the guard, how wide the
//! publish window is, what an acknowledgement changes, where to resume once the stream
//! said what it holds, and when the cursor is due. Two drivers run it: the async-nats
//! shell in [`super::exporter`] and the deterministic simulator (against its model of a
//! JetStream stream).
//!
//! It does no IO of its own: it reads through the [`ExportSource`] it is handed, and the
//! driver publishes, awaits acknowledgements, stores the cursor and keeps the clock.
//! The bookkeeping of in-flight batches is the [`Ledger`]'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::counters::{ExportCounters, ExportState};
use super::ledger::{Bounds, LagClock, Ledger, Resume};
use super::source::ExportSource;

/// Samples kept to measure the lag in seconds.
const LAG_SAMPLES_MAX: usize = 1024;

/// The settings the decisions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreSettings {
    /// Events per message, at most.
    pub message_records_max: usize,
    /// Payload bytes per message, at most (one larger record still goes alone).
    pub message_bytes_max: usize,
    /// Messages published and not yet acknowledged, at most.
    pub publish_window_max: usize,
    /// Store the acknowledged cursor at most this often (unless forced).
    pub cursor_store_interval: Duration,
}

/// What the stream holds for this exporter's subject when a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// The last event sequence of the subject's newest message (None: empty subject).
    pub last_seq: Option<u64>,
    /// The stream sequence of that message (0: none).
    pub subject_seq: u64,
}

/// The next message to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Its first and last event sequence (the payload holds exactly these records).
    pub bounds: Bounds,
    /// `Some(subject_seq)`: send it with `Nats-Expected-Last-Subject-Sequence`.
    pub guard: Option<u64>,
}

/// The exporter's state between IO calls. See the module docs.
#[derive(Debug)]
pub struct ExportCore {
    settings: CoreSettings,
    counters: Arc<ExportCounters>,
    ledger: Ledger,
    lag: LagClock,
    /// Highest sequence the stream holds, as far as this exporter knows.
    acked_seq: u64,
    stored_cursor: u64,
    cursor_stored_at: Option<Instant>,
    /// Last sequence handed to the connection.
    published_seq: u64,
    /// An acknowledgement arrived on this connection (the window opens).
    progressed: bool,
    /// The guard the connection's first message carries.
    guard: Option<u64>,
}

impl ExportCore {
    /// A core that reports into `counters`.
    pub fn new(settings: CoreSettings, counters: Arc<ExportCounters>) -> ExportCore {
        ExportCore {
            settings,
            counters,
            ledger: Ledger::new(),
            lag: LagClock::new(LAG_SAMPLES_MAX),
            acked_seq: 0,
            stored_cursor: 0,
            cursor_stored_at: None,
            published_seq: 0,
            progressed: false,
            guard: None,
        }
    }

    /// At start (`now`): the cursor stored by an earlier run (None when it was
    /// unreadable: the stream decides alone). The first store waits an interval.
    pub fn start(&mut self, stored_cursor: Option<u64>, now: Instant) {
        self.cursor_stored_at = Some(now);
        if let Some(cursor) = stored_cursor {
            self.stored_cursor = cursor;
            self.acked_seq = cursor;
        }
        self.counters
            .acked_seq
            .store(self.acked_seq, Ordering::Relaxed);
    }

    /// Highest sequence known to be in the stream.
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// An acknowledgement arrived on the current connection.
    pub fn progressed(&self) -> bool {
        self.progressed
    }

    /// A connection is up and the stream said where the subject ends: decides where to
    /// resume (the stream, not the cursor, unless the subject is empty), positions
    /// `source` there and arms the guard. When the stream holds something, the cursor
    /// should be stored now ([`ExportCore::cursor_due`] with `force`).
    pub fn connected<S: ExportSource>(
        &mut self,
        end: StreamEnd,
        source: &mut S,
    ) -> Result<Resume, S::Error> {
        let resume = self.ledger.resume(end.last_seq, self.acked_seq);
        if let Some(last) = end.last_seq {
            if last > source.last_seq() {
                tracing::error!(
                    stream_last = last,
                    source_last = source.last_seq(),
                    "the stream holds events beyond the local journal; exporting resumes after them"
                );
            }
            self.set_acked(last);
        }
        source.seek(resume.next_seq)?;
        self.published_seq = resume.next_seq - 1;
        self.progressed = false;
        self.guard = Some(end.subject_seq);
        Ok(resume)
    }

    /// Messages that may be in flight now: one until the connection's first
    /// acknowledgement (the guarded message goes alone), then the configured window.
    pub fn window(&self) -> usize {
        if self.progressed {
            self.settings.publish_window_max
        } else {
            1
        }
    }

    /// Messages published and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.ledger.in_flight()
    }

    /// Reads the next message into `payload` (cleared first): a replay with its old
    /// bounds, or new records up to the message limits. None when the source has
    /// nothing new.
    pub fn next_message<S: ExportSource>(
        &mut self,
        source: &mut S,
        payload: &mut Vec<u8>,
    ) -> Result<Option<Outgoing>, S::Error> {
        payload.clear();
        let replay = self.ledger.next_replay();
        let records_max = replay.map_or(self.settings.message_records_max, |bounds| {
            usize::try_from(bounds.records()).unwrap_or(usize::MAX)
        });
        let batch = source.read_batch(payload, records_max, self.settings.message_bytes_max)?;
        if batch.records == 0 {
            return Ok(None);
        }
        let bounds = Bounds {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
        };
        if let Some(old) = replay {
            self.ledger.replayed();
            if old != bounds {
                tracing::warn!(?old, new = ?bounds, "a replayed batch has new bounds (the source changed)");
            }
        }
        Ok(Some(Outgoing {
            bounds,
            guard: self.guard.take(),
        }))
    }

    /// The message with `bounds` was handed to the connection (or failed while being
    /// handed over: its fate is unknown, so it counts as in flight).
    pub fn published(&mut self, bounds: Bounds) {
        self.ledger.published(bounds);
        self.published_seq = bounds.last_seq;
    }

    /// The oldest in-flight message was acknowledged (`duplicate`: the stream already
    /// held its `Nats-Msg-Id`).
    pub fn on_ack(&mut self, bounds: Bounds, duplicate: bool) {
        let acked = self.ledger.acked();
        debug_assert_eq!(acked, Some(bounds));
        self.progressed = true;
        let counters = &self.counters;
        counters.messages_acked.fetch_add(1, Ordering::Relaxed);
        counters
            .events_exported
            .fetch_add(bounds.records(), Ordering::Relaxed);
        if duplicate {
            counters.duplicates_acked.fetch_add(1, Ordering::Relaxed);
        }
        self.set_acked(bounds.last_seq);
    }

    /// The connection is gone with everything it could still send: what was in flight
    /// is kept for replay.
    pub fn connection_lost(&mut self) {
        self.ledger.connection_lost();
        self.guard = None;
    }

    fn set_acked(&mut self, acked_seq: u64) {
        self.acked_seq = acked_seq;
        self.lag.acked(acked_seq);
        self.counters.acked_seq.store(acked_seq, Ordering::Relaxed);
    }

    /// The source's newest sequence is `source_last` at `now`: updates the lag figures.
    pub fn observe_source(&mut self, source_last: u64, now: Instant) {
        self.lag.observe(source_last, now);
        self.counters
            .source_last_seq
            .store(source_last, Ordering::Relaxed);
        let lag_ms = u64::try_from(self.lag.lag(now).as_millis()).unwrap_or(u64::MAX);
        self.counters.lag_ms.store(lag_ms, Ordering::Relaxed);
    }

    /// The state after a round of publishing: live when caught up with `source_last`.
    pub fn state(&self, caught_up: bool, source_last: u64) -> ExportState {
        if caught_up || self.published_seq >= source_last {
            ExportState::Live
        } else {
            ExportState::CatchingUp
        }
    }

    /// The sequence to store as the cursor now, if any: something new was acknowledged
    /// and the store interval has passed (or `force`).
    pub fn cursor_due(&self, now: Instant, force: bool) -> Option<u64> {
        if self.acked_seq == self.stored_cursor {
            return None;
        }
        let waited = self.cursor_stored_at.is_none_or(|at| {
            now.saturating_duration_since(at) >= self.settings.cursor_store_interval
        });
        (force || waited).then_some(self.acked_seq)
    }

    /// The cursor `acked_seq` was stored durably at `now`.
    pub fn cursor_stored(&mut self, acked_seq: u64, now: Instant) {
        self.stored_cursor = acked_seq;
        self.cursor_stored_at = Some(now);
    }
}
