//! The operator page's data: readings of the live counters, a short history of them, and
//! the `/status.json` snapshot (rates, chute states, scanners, PLC link, plan) made from
//! a fresh reading and that history.
//!
//! [`Reading::take`] only loads shared atomics (no sockets, no clock: the caller passes
//! the instant); [`History`] keeps one reading per second for a minute and turns them
//! into rates; [`History::status`] is a pure function of the history, a reading and the
//! wall-clock time the caller gives. Serving it is [`super::server`]'s job. Every list
//! is bounded: [`CHUTES_SHOWN_MAX`] chutes, the scanner table's slots.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::decision::{ChuteNumber, Reason};
use crate::events::journal::{JournalCounters, JournalStats, LossReason};
use crate::export::{ExportCounters, ExportState};
use crate::plan::{DefaultKind, Plan, RuleKind};
use crate::plc::{ChuteState, ChuteStateTable};
use crate::stats::{Counters, ScannerReading};

/// Chutes listed on the page at most (the rest are counted as omitted).
pub const CHUTES_SHOWN_MAX: usize = 1024;
/// How often the history takes a reading.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Window of the per-chute rate (parcels per minute).
pub const CHUTE_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Window of the per-reason and per-scanner rates (per second).
pub const SHORT_RATE_WINDOW: Duration = Duration::from_secs(10);
/// Readings kept: a minute's worth and one more for the baseline.
pub const HISTORY_READINGS_MAX: usize = 62;
/// Plan entries looked at, at most, to list the plan's chutes (once per plan version).
pub const PLAN_ENTRIES_SCANNED_MAX: usize = 2_000_000;

const _: () =
    assert!(HISTORY_READINGS_MAX as u64 * SAMPLE_PERIOD.as_secs() > CHUTE_RATE_WINDOW.as_secs());
const _: () = assert!(SHORT_RATE_WINDOW.as_secs() < CHUTE_RATE_WINDOW.as_secs());

/// The live counters at one instant.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// Decisions by reason (sent and undelivered), in [`Reason::ALL`] order.
    pub decided_by_reason: [u64; Reason::ALL.len()],
    /// SORTs by chute, for every chute with at least one, in chute order.
    pub by_chute: Vec<(ChuteNumber, u64)>,
    /// Chutes not available now, in chute order.
    pub unavailable: Vec<(ChuteNumber, ChuteState)>,
    /// SORT telegrams the PLC acknowledged.
    pub acked: u64,
    /// Connected scanners.
    pub scanners: Vec<ScannerReading>,
    /// The sort-event journal's counters, when `[events]` is on.
    pub journal: Option<JournalCounters>,
}

impl Reading {
    /// Loads the counters and chute states (a scan of both 65,536-entry tables: tens of
    /// microseconds, on the web thread), and the journal's counters when it runs.
    pub fn take(
        counters: &Counters,
        chute_states: &ChuteStateTable,
        journal: Option<&JournalStats>,
        at: Instant,
    ) -> Reading {
        let mut decided_by_reason = [0u64; Reason::ALL.len()];
        for (slot, reason) in decided_by_reason.iter_mut().zip(Reason::ALL) {
            *slot = counters.decided(reason);
        }
        let unavailable = (0..=ChuteNumber::MAX)
            .filter_map(|chute| {
                let state = chute_states.get(chute);
                (state != ChuteState::Available).then_some((chute, state))
            })
            .collect();
        Reading {
            at,
            decided_by_reason,
            by_chute: counters.sorts_by_chute.nonzero().collect(),
            unavailable,
            acked: counters.plc.acked.load(Ordering::Relaxed),
            scanners: counters.scanners.readings(),
            journal: journal.map(JournalStats::snapshot),
        }
    }
}

/// The chutes a plan names (rules and defaults), in chute order, at most
/// [`CHUTES_SHOWN_MAX`], looking at no more than [`PLAN_ENTRIES_SCANNED_MAX`] entries.
pub fn plan_chutes(plan: &Plan) -> Vec<ChuteNumber> {
    let mut seen = vec![false; usize::from(ChuteNumber::MAX) + 1];
    let defaults = DefaultKind::ALL.map(|kind| plan.default_chute(kind));
    let rules = plan
        .entries(RuleKind::Prefix)
        .chain(plan.entries(RuleKind::Exact))
        .take(PLAN_ENTRIES_SCANNED_MAX)
        .flat_map(|(_, chutes, _)| chutes.slots());
    for chute in defaults.into_iter().chain(rules) {
        if let Some(flag) = seen.get_mut(usize::from(chute)) {
            *flag = true;
        }
    }
    (0..=ChuteNumber::MAX)
        .filter(|chute| chute != &0 && seen.get(usize::from(*chute)) == Some(&true))
        .take(CHUTES_SHOWN_MAX)
        .collect()
}

/// The plan deciding now, as the snapshot shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanStatus {
    /// The plan's name.
    pub name: String,
    /// The plan's version.
    pub version: u32,
    /// When it was loaded, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
}

/// The PLC link in the snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlcStatus {
    /// Whether the link is established and SORTs flow.
    pub link_up: bool,
    /// SORT telegrams sent and not yet acknowledged.
    pub in_flight: u64,
    /// SORT telegrams acknowledged so far.
    pub acked: u64,
    /// Milliseconds since the acknowledged count last grew, to within the sampling period
    /// (one second); `null` before the first ACK.
    pub last_ack_age_ms: Option<u64>,
    /// Times the link went down.
    pub link_downs: u64,
}

/// One reason's rate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReasonRate {
    /// The reason's name (as in the metrics).
    pub reason: &'static str,
    /// Decisions per second over the short window.
    pub per_s: f64,
    /// Decisions so far.
    pub total: u64,
}

/// One chute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChuteStatus {
    /// The chute number.
    pub chute: ChuteNumber,
    /// `available`, `full` or `disabled`.
    pub state: &'static str,
    /// SORTs per minute over the last minute (or since start, if shorter).
    pub per_min: f64,
    /// SORTs so far.
    pub total: u64,
}

/// One connected scanner.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScannerStatus {
    /// The scanner id (from its HELLO or its listener).
    pub scanner_id: u32,
    /// The peer address.
    pub peer: Option<String>,
    /// Scans per second over the short window.
    pub scans_per_s: f64,
    /// Scans on this connection so far.
    pub scans: u64,
    /// Bad input on this connection so far (decode errors, truncated frames).
    pub bad_inputs: u64,
}

/// The `/status.json` document (the fields are documented in docs/operations-web.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// When the snapshot was made, in milliseconds since the Unix epoch.
    pub generated_unix_ms: u64,
    /// The plan deciding now.
    pub plan: PlanStatus,
    /// The PLC link.
    pub plc: PlcStatus,
    /// The window of the per-second rates, in seconds (shorter just after start).
    pub rate_window_s: f64,
    /// All decisions per second.
    pub decided_per_s: f64,
    /// Decisions per second, by reason, in a fixed order.
    pub reasons: Vec<ReasonRate>,
    /// The window of the per-chute rates, in seconds (shorter just after start).
    pub chute_window_s: f64,
    /// Chutes: the plan's, those with SORTs and those not available, in chute order.
    pub chutes: Vec<ChuteStatus>,
    /// Chutes left out beyond [`CHUTES_SHOWN_MAX`].
    pub chutes_omitted: usize,
    /// Connected scanners.
    pub scanners: Vec<ScannerStatus>,
    /// Connections beyond the scanner table's room so far.
    pub scanners_untracked: u64,
    /// The sort-event journal and its export; `null` when `[events]` is off.
    pub journal: Option<JournalStatus>,
}

/// Events lost for one reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LossCount {
    /// The reason (as in `sortd_events_lost_total`).
    pub reason: &'static str,
    /// Events lost so far.
    pub total: u64,
}

/// The sort-event journal in the snapshot (the `sortd_events_*` figures).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JournalStatus {
    /// Events written to the journal since start.
    pub events: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Segment files on disk, and their bytes.
    pub segments: u64,
    /// Bytes of the segment files.
    pub segment_bytes: u64,
    /// Highest sequence written (page cache).
    pub written_seq: u64,
    /// Highest sequence known fsynced.
    pub durable_seq: u64,
    /// Milliseconds since the durable sequence last advanced, to within the sampling
    /// period (one second); 0 while everything written is durable; `null` before the
    /// first fsync.
    pub last_fsync_age_ms: Option<u64>,
    /// fsync failures so far.
    pub fsync_errors: u64,
    /// Events not journaled, by reason, in a fixed order.
    pub lost: Vec<LossCount>,
    /// The NATS export; `null` when `[export]` is off.
    pub export: Option<ExportStatus>,
}

/// The NATS export in the snapshot (the `sortd_export_*` figures).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportStatus {
    /// `stopped`, `connecting`, `catching_up`, `live` or `backing_off`.
    pub state: &'static str,
    /// Whether the exporter is connected to the broker (catching up or live).
    pub broker_connected: bool,
    /// Highest event sequence the stream acknowledged (the export cursor).
    pub cursor_seq: u64,
    /// Events journaled and not yet acknowledged by the stream.
    pub lag_events: u64,
    /// Age of the oldest event not yet acknowledged, in seconds.
    pub lag_s: f64,
    /// Events the stream acknowledged since start.
    pub exported: u64,
    /// Connect, stream and acknowledgement failures so far.
    pub errors: u64,
}

impl ExportStatus {
    /// Loads the exporter's counters.
    pub fn read(counters: &ExportCounters) -> ExportStatus {
        let state = counters.state();
        ExportStatus {
            state: state.name(),
            broker_connected: matches!(state, ExportState::CatchingUp | ExportState::Live),
            cursor_seq: counters.acked_seq.load(Ordering::Relaxed),
            lag_events: counters.lag_events(),
            lag_s: counters.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            exported: counters.events_exported.load(Ordering::Relaxed),
            errors: crate::export::ExportErrorKind::ALL
                .iter()
                .map(|kind| counters.errors(*kind))
                .sum(),
        }
    }
}

/// What the snapshot reads live besides the counters.
#[derive(Debug, Clone)]
pub struct Live<'a> {
    /// The plan deciding now.
    pub plan: PlanStatus,
    /// The plan's chutes ([`plan_chutes`]).
    pub plan_chutes: &'a [ChuteNumber],
    /// Whether the PLC link is up.
    pub link_up: bool,
    /// Telegrams in flight.
    pub in_flight: u64,
    /// Link-down transitions.
    pub link_downs: u64,
    /// Scanner connections not in the table.
    pub scanners_untracked: u64,
    /// Wall-clock time now, in milliseconds since the Unix epoch.
    pub now_unix_ms: u64,
    /// The NATS export, when it runs.
    pub export: Option<ExportStatus>,
}

/// One reading per [`SAMPLE_PERIOD`] for the last minute, and when the PLC last
/// acknowledged something.
#[derive(Debug, Default)]
pub struct History {
    readings: VecDeque<Reading>,
    last_ack_at: Option<Instant>,
    /// When the journal's durable sequence last advanced.
    last_fsync_at: Option<Instant>,
}

fn per_second(now: u64, then: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(then) as f64 / seconds
}

impl History {
    /// Keeps `reading`, dropping the oldest beyond [`HISTORY_READINGS_MAX`].
    pub fn record(&mut self, reading: Reading) {
        let acked_before = self.readings.back().map(|last| last.acked);
        if acked_before.is_some_and(|before| reading.acked > before) {
            self.last_ack_at = Some(reading.at);
        }
        let durable = |reading: &Reading| reading.journal.map_or(0, |j| j.durable_seq);
        let durable_before = self.readings.back().map_or(0, durable);
        if durable(&reading) > durable_before {
            self.last_fsync_at = Some(reading.at);
        }
        self.readings.push_back(reading);
        while self.readings.len() > HISTORY_READINGS_MAX {
            self.readings.pop_front();
        }
    }

    /// The oldest reading within `window` before `at` (the baseline of a rate).
    fn baseline(&self, at: Instant, window: Duration) -> Option<&Reading> {
        self.readings
            .iter()
            .find(|reading| at.saturating_duration_since(reading.at) <= window)
    }

    /// The snapshot for the reading `now` (taken just before) and the `live` figures.
    pub fn status(&self, now: &Reading, live: &Live<'_>) -> Status {
        let short = self.baseline(now.at, SHORT_RATE_WINDOW);
        let long = self.baseline(now.at, CHUTE_RATE_WINDOW);
        let elapsed = |base: Option<&Reading>| {
            base.map_or(Duration::ZERO, |base| {
                now.at.saturating_duration_since(base.at)
            })
        };
        let short_elapsed = elapsed(short);
        let long_elapsed = elapsed(long);

        let reasons: Vec<ReasonRate> = Reason::ALL
            .iter()
            .zip(now.decided_by_reason)
            .enumerate()
            .map(|(index, (reason, total))| {
                let then = short.map_or(total, |base| base.decided_by_reason[index]);
                ReasonRate {
                    reason: reason.as_str(),
                    per_s: per_second(total, then, short_elapsed),
                    total,
                }
            })
            .collect();
        let decided_per_s = reasons.iter().map(|rate| rate.per_s).sum();

        let mut chutes: Vec<ChuteNumber> = live
            .plan_chutes
            .iter()
            .copied()
            .chain(now.by_chute.iter().map(|(chute, _)| *chute))
            .chain(now.unavailable.iter().map(|(chute, _)| *chute))
            .collect();
        chutes.sort_unstable();
        chutes.dedup();
        let chutes_omitted = chutes.len().saturating_sub(CHUTES_SHOWN_MAX);
        chutes.truncate(CHUTES_SHOWN_MAX);
        let count_in = |reading: &Reading, chute: ChuteNumber| {
            reading
                .by_chute
                .binary_search_by_key(&chute, |(number, _)| *number)
                .ok()
                .and_then(|index| reading.by_chute.get(index))
                .map_or(0, |(_, count)| *count)
        };
        let chutes = chutes
            .into_iter()
            .map(|chute| {
                let total = count_in(now, chute);
                let then = long.map_or(total, |base| count_in(base, chute));
                let state = now
                    .unavailable
                    .binary_search_by_key(&chute, |(number, _)| *number)
                    .ok()
                    .and_then(|index| now.unavailable.get(index))
                    .map_or(ChuteState::Available, |(_, state)| *state);
                ChuteStatus {
                    chute,
                    state: state.as_str(),
                    per_min: 60.0 * per_second(total, then, long_elapsed),
                    total,
                }
            })
            .collect();

        let scanners = now
            .scanners
            .iter()
            .map(|scanner| {
                // The oldest reading in the window that saw this same connection.
                let since = self
                    .readings
                    .iter()
                    .filter(|reading| {
                        now.at.saturating_duration_since(reading.at) <= SHORT_RATE_WINDOW
                    })
                    .find_map(|reading| {
                        reading
                            .scanners
                            .iter()
                            .find(|seen| {
                                seen.slot == scanner.slot && seen.generation == scanner.generation
                            })
                            .map(|seen| (reading.at, seen.scans))
                    });
                let scans_per_s = since.map_or(0.0, |(at, scans)| {
                    per_second(scanner.scans, scans, now.at.saturating_duration_since(at))
                });
                ScannerStatus {
                    scanner_id: scanner.scanner_id,
                    peer: scanner.peer.map(|peer| peer.to_string()),
                    scans_per_s,
                    scans: scanner.scans,
                    bad_inputs: scanner.bad_inputs,
                }
            })
            .collect();

        Status {
            generated_unix_ms: live.now_unix_ms,
            plan: live.plan.clone(),
            plc: PlcStatus {
                link_up: live.link_up,
                in_flight: live.in_flight,
                acked: now.acked,
                last_ack_age_ms: self
                    .last_ack_at
                    .map(|at| now.at.saturating_duration_since(at).as_millis() as u64),
                link_downs: live.link_downs,
            },
            rate_window_s: short_elapsed.as_secs_f64(),
            decided_per_s,
            reasons,
            chute_window_s: long_elapsed.as_secs_f64(),
            chutes,
            chutes_omitted,
            scanners,
            scanners_untracked: live.scanners_untracked,
            journal: now
                .journal
                .map(|journal| self.journal_status(&journal, now.at, live)),
        }
    }

    fn journal_status(&self, j: &JournalCounters, at: Instant, live: &Live<'_>) -> JournalStatus {
        let last_fsync_age_ms = if j.durable_seq != 0 && j.durable_seq >= j.written_seq {
            Some(0)
        } else {
            self.last_fsync_at
                .map(|since| at.saturating_duration_since(since).as_millis() as u64)
        };
        JournalStatus {
            events: j.events_journaled,
            bytes: j.bytes_journaled,
            segments: j.segments,
            segment_bytes: j.segment_bytes,
            written_seq: j.written_seq,
            durable_seq: j.durable_seq,
            last_fsync_age_ms,
            fsync_errors: j.fsync_errors,
            lost: LossReason::ALL
                .iter()
                .map(|reason| LossCount {
                    reason: reason.as_str(),
                    total: j.lost(*reason),
                })
                .collect(),
            export: live.export.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, decided: u64, chute_101: u64, acked: u64) -> Reading {
        let mut decided_by_reason = [0; Reason::ALL.len()];
        decided_by_reason[0] = decided;
        Reading {
            at,
            decided_by_reason,
            by_chute: vec![(101, chute_101)],
            unavailable: vec![(102, ChuteState::Full)],
            acked,
            scanners: vec![ScannerReading {
                slot: 0,
                generation: 1,
                scanner_id: 7,
                peer: None,
                scans: decided,
                bad_inputs: 2,
            }],
            journal: None,
        }
    }

    fn live(plan_chutes: &[ChuteNumber]) -> Live<'_> {
        Live {
            plan: PlanStatus {
                name: "p".into(),
                version: 3,
                since_unix_ms: 5,
            },
            plan_chutes,
            link_up: true,
            in_flight: 1,
            link_downs: 0,
            scanners_untracked: 0,
            now_unix_ms: 1_000,
            export: None,
        }
    }

    #[test]
    fn rates_come_from_the_oldest_reading_in_each_window() {
        let start = Instant::now();
        let mut history = History::default();
        // 100 decisions a second, 60 a second to chute 101, for 70 seconds.
        for second in 0..=70u64 {
            let at = start + Duration::from_secs(second);
            history.record(reading(at, 100 * second, 60 * second, second));
        }
        let now = reading(start + Duration::from_secs(71), 7_100, 60 * 71, 71);
        let status = history.status(&now, &live(&[99]));
        assert_eq!(status.decided_per_s, 100.0);
        assert_eq!(status.reasons[0].per_s, 100.0);
        assert_eq!(status.reasons[1].per_s, 0.0);
        assert_eq!(status.rate_window_s, 10.0);
        assert_eq!(status.chute_window_s, 60.0);
        let chutes: Vec<(ChuteNumber, &str, f64)> = status
            .chutes
            .iter()
            .map(|c| (c.chute, c.state, c.per_min))
            .collect();
        assert_eq!(
            chutes,
            vec![
                (99, "available", 0.0),
                (101, "available", 3_600.0),
                (102, "full", 0.0)
            ]
        );
        assert_eq!(status.scanners[0].scans_per_s, 100.0);
        assert_eq!(status.scanners[0].bad_inputs, 2);
        assert_eq!(status.plc.last_ack_age_ms, Some(1_000));
    }

    #[test]
    fn no_history_means_zero_rates_not_a_division_by_zero() {
        let history = History::default();
        let now = reading(Instant::now(), 10, 10, 0);
        let status = history.status(&now, &live(&[]));
        assert_eq!(status.decided_per_s, 0.0);
        assert!(status.chutes.iter().all(|chute| chute.per_min == 0.0));
        assert_eq!(status.plc.last_ack_age_ms, None);
        assert_eq!(status.journal, None);
    }

    #[test]
    fn the_journal_block_shows_counts_losses_the_fsync_age_and_the_export() {
        let start = Instant::now();
        let mut history = History::default();
        let journaled = |at: Instant, written_seq: u64, durable_seq: u64| {
            let mut reading = reading(at, 0, 0, 0);
            reading.journal = Some(JournalCounters {
                events_journaled: written_seq,
                bytes_journaled: 90 * written_seq,
                written_seq,
                durable_seq,
                lost: [0, 0, 3, 0],
                ..JournalCounters::default()
            });
            reading
        };
        history.record(journaled(start, 0, 0));
        let none_yet = history.status(&journaled(start, 5, 0), &live(&[]));
        assert_eq!(none_yet.journal.map(|j| j.last_fsync_age_ms), Some(None));
        history.record(journaled(start + Duration::from_secs(1), 10, 10));
        history.record(journaled(start + Duration::from_secs(2), 20, 10));
        let now = journaled(start + Duration::from_secs(4), 30, 10);
        let mut with_export = live(&[]);
        let counters = ExportCounters::default();
        counters.set_state(ExportState::Live);
        counters.acked_seq.store(25, Ordering::Relaxed);
        counters.source_last_seq.store(30, Ordering::Relaxed);
        with_export.export = Some(ExportStatus::read(&counters));
        let journal = history
            .status(&now, &with_export)
            .journal
            .expect("events on");
        assert_eq!((journal.events, journal.bytes), (30, 2_700));
        assert_eq!(journal.last_fsync_age_ms, Some(3_000), "durable since +1 s");
        assert_eq!(
            journal.lost.iter().find(|loss| loss.total > 0),
            Some(&LossCount {
                reason: LossReason::IoError.as_str(),
                total: 3
            })
        );
        let export = journal.export.expect("export on");
        assert_eq!((export.state, export.broker_connected), ("live", true));
        assert_eq!((export.cursor_seq, export.lag_events), (25, 5));
        let synced = history.status(
            &journaled(start + Duration::from_secs(4), 30, 30),
            &live(&[]),
        );
        assert_eq!(synced.journal.map(|j| j.last_fsync_age_ms), Some(Some(0)));
    }

    #[test]
    fn history_is_bounded() {
        let start = Instant::now();
        let mut history = History::default();
        for second in 0..500u64 {
            history.record(reading(start + Duration::from_secs(second), 0, 0, 0));
        }
        assert_eq!(history.readings.len(), HISTORY_READINGS_MAX);
    }
}
