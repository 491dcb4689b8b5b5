//! The Prometheus exposition: reads the daemon's live counters at scrape time and encodes
//! them in the OpenMetrics text format through `prometheus-client`, or in the classic
//! Prometheus text format made from it ([`super::format`]).
//!
//! Nothing is recorded here: the threads keep counting in [`Counters`] as they always do
//! (once per turn), and a scrape only loads those atomics, so an idle endpoint costs the
//! pipeline nothing and a busy one costs it a few cache misses. This module serves no
//! sockets; `crate::web` does.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::format::{Format, openmetrics_to_classic};
use crate::decision::Reason;
use crate::events::journal::{JournalStats, LossReason};
use crate::export::preadvice_sub::{
    LATENCY_BUCKET_BOUNDS_US as PREADVICE_LATENCY_BOUNDS_US, LatencyStage, PreadviceCounters,
    PreadviceErrorKind, StreamAnomaly,
};
use crate::export::{
    ExportCounters, ExportErrorKind, ExportState, HubCounters, HubState, PlanRefusal, PlanRetry,
};
use crate::plan::PlanHandle;
use crate::plc::{ChuteState, ChuteStateTable};
use crate::stats::{Counters, Stage};

/// Upper bounds of the decision-latency histogram's buckets, in microseconds (the
/// exposition converts them to seconds). Fine below 1 ms, so that a p99 of 150 us (the
/// stretch goal) and a p99.9 under 1 ms (the bar) can be read off them; coarse above, up
/// to the deadline (500 ms by default) and 1 s.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 19] = [
    25, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
    250_000, 500_000, 1_000_000,
];

const _: () = {
    let mut index = 1;
    while index < LATENCY_BUCKET_BOUNDS_US.len() {
        assert!(LATENCY_BUCKET_BOUNDS_US[index - 1] < LATENCY_BUCKET_BOUNDS_US[index]);
        index += 1;
    }
};

/// What a scrape reads: the counters, the current plan and how many ingress workers run.
#[derive(Debug, Clone)]
pub struct Exposition {
    registry: Arc<Registry>,
}

impl Exposition {
    /// An exposition of `counters` and `plan` for a daemon with `ingress_workers` workers.
    pub fn new(counters: Arc<Counters>, plan: Arc<PlanHandle>, ingress_workers: usize) -> Self {
        Self::with_parts(
            counters,
            plan,
            ingress_workers,
            None,
            None,
            None,
            None,
            None,
        )
    }

    /// As [`Exposition::new`], also reporting `chute_states` as `sortd_chute_state`.
    pub fn with_chute_states(
        counters: Arc<Counters>,
        plan: Arc<PlanHandle>,
        ingress_workers: usize,
        chute_states: Arc<ChuteStateTable>,
    ) -> Self {
        Self::with_parts(
            counters,
            plan,
            ingress_workers,
            Some(chute_states),
            None,
            None,
            None,
            None,
        )
    }

    /// Everything the daemon exposes: the counters and plan, the chute states when given,
    /// the NATS exporter's state and counters when it runs, and the sort-event journal's
    /// counters when it is on, the hub connection's when the node joins a hub, and the
    /// hub pre-advice subscriber's when it runs. One optional part per subsystem, each
    /// named at the call.
    #[allow(clippy::too_many_arguments)]
    pub fn with_parts(
        counters: Arc<Counters>,
        plan: Arc<PlanHandle>,
        ingress_workers: usize,
        chute_states: Option<Arc<ChuteStateTable>>,
        export: Option<Arc<ExportCounters>>,
        journal: Option<Arc<JournalStats>>,
        hub: Option<Arc<HubCounters>>,
        hub_preadvice: Option<Arc<PreadviceCounters>>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(DaemonCollector {
            counters,
            plan,
            ingress_workers,
            chute_states,
        }));
        if let Some(export) = export {
            registry.register_collector(Box::new(ExportCollector(export)));
        }
        if let Some(journal) = journal {
            registry.register_collector(Box::new(JournalCollector(journal)));
        }
        if let Some(hub) = hub {
            registry.register_collector(Box::new(HubCollector(hub)));
        }
        if let Some(feed) = hub_preadvice {
            registry.register_collector(Box::new(HubPreadviceCollector(feed)));
        }
        Exposition {
            registry: Arc::new(registry),
        }
    }

    /// Encodes every metric as OpenMetrics text, ending with `# EOF`.
    pub fn render(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::text::encode(out, &self.registry)
    }

    /// Encodes every metric in `format`; `scratch` holds the OpenMetrics text on the way
    /// to the classic format (kept by the caller so a scrape need not allocate).
    pub fn render_as(&self, format: Format, out: &mut String, scratch: &mut String) -> fmt::Result {
        match format {
            Format::OpenMetrics => self.render(out),
            Format::Classic => {
                scratch.clear();
                self.render(scratch)?;
                openmetrics_to_classic(scratch, out);
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
struct DaemonCollector {
    counters: Arc<Counters>,
    plan: Arc<PlanHandle>,
    ingress_workers: usize,
    chute_states: Option<Arc<ChuteStateTable>>,
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One descriptor and its series, each a label set and a value.
/// A `{state="..."}` gauge family: 1 for the current state of a NATS-side task, 0 for
/// the others (the exporter and the pre-advice subscriber share the states).
fn state_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    current: ExportState,
) -> fmt::Result {
    family(
        encoder,
        name,
        help,
        None,
        MetricType::Gauge,
        ExportState::ALL.map(|s| {
            (
                [("state", s.name())],
                ConstGauge::new(i64::from(s == current)),
            )
        }),
    )
}

fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The latency histogram as Prometheus buckets: seconds, per-bucket (not cumulative)
/// counts, the encoder accumulates them.
struct LatencyHistogram {
    sum_seconds: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    fn from_hdr(histogram: Option<&hdrhistogram::Histogram<u64>>) -> LatencyHistogram {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKET_BOUNDS_US
            .iter()
            .map(|bound_us| (*bound_us as f64 / 1e6, 0))
            .chain(std::iter::once((f64::INFINITY, 0)))
            .collect();
        let mut sum_us = 0.0;
        let mut count = 0;
        if let Some(histogram) = histogram {
            for value in histogram.iter_recorded() {
                let at_us = value.value_iterated_to();
                let times = value.count_at_value();
                sum_us += at_us as f64 * times as f64;
                count += times;
                let index = LATENCY_BUCKET_BOUNDS_US
                    .iter()
                    .position(|bound_us| at_us <= *bound_us)
                    .unwrap_or(LATENCY_BUCKET_BOUNDS_US.len());
                if let Some(bucket) = buckets.get_mut(index) {
                    bucket.1 += times;
                }
            }
        }
        LatencyHistogram {
            sum_seconds: sum_us / 1e6,
            count,
            buckets,
        }
    }
}

impl LatencyHistogram {
    /// From per-bucket counts over `bounds_us` (then one above every bound).
    fn from_buckets(bounds_us: &[u64], counts: &[u64], sum_us: u64) -> LatencyHistogram {
        let buckets = bounds_us
            .iter()
            .map(|bound_us| *bound_us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied())
            .collect();
        LatencyHistogram {
            sum_seconds: sum_us as f64 / 1e6,
            count: counts.iter().sum(),
            buckets,
        }
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_seconds,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for DaemonCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let c = &*self.counters;
        let e = &mut encoder;
        let bytes = Unit::Bytes;

        counter(
            e,
            "sortd_scanner_read",
            "Bytes read from scanner connections.",
            Some(&bytes),
            load(&c.bytes_in),
        )?;
        counter(
            e,
            "sortd_scanner_frames",
            "Frames decoded from scanners (scans, hellos, heartbeats).",
            None,
            load(&c.frames_in),
        )?;
        counter(
            e,
            "sortd_scanner_scans",
            "Scan frames decoded; each gets exactly one decision.",
            None,
            load(&c.scans_in),
        )?;
        counter(
            e,
            "sortd_scanner_skipped",
            "Bytes the decoders skipped (garbage, bad frames, partial frames at close).",
            Some(&bytes),
            load(&c.bytes_skipped),
        )?;
        let decode_errors: Vec<(&'static str, u64)> = c
            .decode_errors
            .lock()
            .map(|errors| errors.iter().map(|(kind, count)| (*kind, *count)).collect())
            .unwrap_or_default();
        family(
            e,
            "sortd_scanner_decode_errors",
            "Scanner input that failed to decode, by kind.",
            None,
            MetricType::Counter,
            decode_errors
                .into_iter()
                .map(|(kind, count)| ([("kind", kind)], ConstCounter::new(count))),
        )?;

        counter(
            e,
            "sortd_scanner_connections_accepted",
            "Scanner connections accepted and served.",
            None,
            load(&c.connections_accepted),
        )?;
        gauge(
            e,
            "sortd_scanner_connections_open",
            "Scanner connections open now.",
            load(&c.connections_open) as i64,
        )?;
        family(
            e,
            "sortd_scanner_connections_refused",
            "Scanner connections closed at accept, by cause.",
            None,
            MetricType::Counter,
            [
                ("limit", load(&c.connections_refused_limit)),
                ("address", load(&c.connections_refused_address)),
            ]
            .map(|(cause, count)| ([("cause", cause)], ConstCounter::new(count))),
        )?;
        counter(
            e,
            "sortd_scanner_connections_closed",
            "Scanner connections closed for any cause (peer, timeout, shutdown).",
            None,
            load(&c.connections_closed),
        )?;
        family(
            e,
            "sortd_scanner_connections_timed_out",
            "Scanner connections sortd closed for a timeout, by cause.",
            None,
            MetricType::Counter,
            [
                ("frame_deadline", load(&c.connections_closed_frame_deadline)),
                ("idle", load(&c.connections_closed_idle)),
            ]
            .map(|(cause, count)| ([("cause", cause)], ConstCounter::new(count))),
        )?;

        let decided = Reason::ALL.iter().flat_map(|reason| {
            let series = if *reason == Reason::Duplicate {
                vec![("not_actuated", load(&c.decided_duplicate))]
            } else {
                vec![
                    ("sent", c.decided_sent.get(*reason)),
                    ("undelivered", c.decided_undelivered.get(*reason)),
                ]
            };
            series.into_iter().map(|(delivery, count)| {
                (
                    [("reason", reason.as_str()), ("delivery", delivery)],
                    ConstCounter::new(count),
                )
            })
        });
        family(
            e,
            "sortd_parcels_decided",
            "Decisions by reason; delivery: sent to the PLC, undelivered (link down), or \
             not_actuated (duplicates).",
            None,
            MetricType::Counter,
            decided,
        )?;
        family(
            e,
            "sortd_parcels_by_chute",
            "SORT telegrams handed to the PLC link, by chute.",
            None,
            MetricType::Counter,
            c.sorts_by_chute
                .nonzero()
                .map(|(chute, count)| ([("chute", chute)], ConstCounter::new(count))),
        )?;
        if let Some(table) = &self.chute_states {
            // A state set per chute (1 for its state, 0 for the others), for every chute
            // that is not available or has had a SORT: the chutes in use, not all 65,536.
            let mut chutes: Vec<(u16, ChuteState)> = table.unavailable().collect();
            chutes.extend(
                c.sorts_by_chute
                    .nonzero()
                    .map(|(chute, _)| (chute, table.get(chute))),
            );
            chutes.sort_unstable_by_key(|(chute, _)| *chute);
            chutes.dedup_by_key(|(chute, _)| *chute);
            family(
                e,
                "sortd_chute_state",
                "1 for the state each chute is in (as the PLC last reported), 0 for the \
                 others; chutes that are not available or have had a SORT.",
                None,
                MetricType::Gauge,
                chutes.into_iter().flat_map(|(chute, now)| {
                    ChuteState::ALL.map(|state| {
                        (
                            [
                                ("chute", chute.to_string()),
                                ("state", state.as_str().into()),
                            ],
                            ConstGauge::new(i64::from(state == now)),
                        )
                    })
                }),
            )?;
        }
        let latency = c
            .decision_latency_us
            .lock()
            .map(|histogram| LatencyHistogram::from_hdr(histogram.as_ref()))
            .unwrap_or_else(|_| LatencyHistogram::from_hdr(None));
        let seconds = Unit::Seconds;
        latency.encode(e.encode_descriptor(
            "sortd_decision_latency",
            "Receipt of a scan to hand-off of its decision to the PLC link (merged every second).",
            Some(&seconds),
            MetricType::Histogram,
        )?)?;
        let stages = c.stage_latency_us.lock().map_or_else(
            |_| Stage::ALL.map(|_| LatencyHistogram::from_hdr(None)),
            |by_stage| {
                Stage::ALL.map(|stage| {
                    LatencyHistogram::from_hdr(by_stage.get(stage.index()).and_then(Option::as_ref))
                })
            },
        );
        family(
            e,
            "sortd_stage_latency",
            "Time parcels spent in each stage: decide (read to hand-off), handoff (to the PLC side's turn), send (that turn to its write); timed per batch or turn, merged every second.",
            Some(&seconds),
            MetricType::Histogram,
            Stage::ALL
                .iter()
                .zip(stages)
                .map(|(stage, histogram)| ([("stage", stage.as_str())], histogram)),
        )?;
        gauge(
            e,
            "sortd_queue_batches",
            "Decision batches waiting for the PLC thread.",
            load(&c.plc.queued_batches) as i64,
        )?;

        let plc = &c.plc;
        gauge(
            e,
            "sortd_plc_link_up",
            "1 while the PLC link is established and SORTs flow, else 0.",
            i64::from(plc.link_up.load(Ordering::Relaxed)),
        )?;
        gauge(
            e,
            "sortd_plc_in_flight_telegrams",
            "SORT telegrams sent and not yet acknowledged.",
            load(&plc.in_flight) as i64,
        )?;
        counter(
            e,
            "sortd_plc_sorts_sent",
            "SORT telegrams sent for the first time.",
            None,
            load(&plc.sent),
        )?;
        counter(
            e,
            "sortd_plc_sorts_acked",
            "SORT telegrams acknowledged by the PLC.",
            None,
            load(&plc.acked),
        )?;
        gauge(
            e,
            "sortd_plc_held_sorts",
            "SORTs held now while the PLC link is down (sent when it is up, or expired).",
            load(&plc.held_now) as i64,
        )?;
        counter(
            e,
            "sortd_plc_sorts_held",
            "SORTs decided while the PLC link was down and held for it.",
            None,
            load(&plc.held),
        )?;
        counter(
            e,
            "sortd_plc_sorts_held_expired",
            "Held SORTs whose deadline passed before the PLC link came back; never sent \
             (each also counts as an undelivered decision).",
            None,
            load(&plc.held_expired),
        )?;
        counter(
            e,
            "sortd_plc_retransmissions",
            "SORT telegrams sent again after an ACK timeout or a reconnect.",
            None,
            load(&plc.retransmitted),
        )?;
        counter(
            e,
            "sortd_plc_duplicate_acks",
            "ACKs from the PLC that acknowledged nothing new.",
            None,
            load(&plc.acks_duplicate),
        )?;
        counter(
            e,
            "sortd_plc_bad_telegrams",
            "Telegrams from the PLC that failed to decode.",
            None,
            load(&plc.telegrams_bad),
        )?;
        family(
            e,
            "sortd_plc_link_transitions",
            "Times the PLC link came up or went down.",
            None,
            MetricType::Counter,
            [("up", load(&plc.link_ups)), ("down", load(&plc.link_downs))]
                .map(|(to, count)| ([("to", to)], ConstCounter::new(count))),
        )?;
        family(
            e,
            "sortd_plc_connections_refused",
            "Listen mode: PLC connections closed without touching the live session, by cause.",
            None,
            MetricType::Counter,
            plc.refused
                .all()
                .map(|(cause, count)| ([("cause", cause)], ConstCounter::new(count))),
        )?;
        let confirmations: Vec<(&'static str, u64)> = c
            .confirmations
            .lock()
            .map(|seen| seen.iter().map(|(kind, count)| (*kind, *count)).collect())
            .unwrap_or_default();
        family(
            e,
            "sortd_plc_sort_confirmations",
            "Sort confirmations from the PLC, by outcome.",
            None,
            MetricType::Counter,
            confirmations
                .into_iter()
                .map(|(outcome, count)| ([("outcome", outcome)], ConstCounter::new(count))),
        )?;

        let plan = self.plan.load();
        let info = Info::new([
            ("name", plan.name().to_string()),
            ("version", plan.version().to_string()),
        ]);
        info.encode(e.encode_descriptor(
            "sortd_plan",
            "The sort plan deciding parcels now.",
            None,
            MetricType::Info,
        )?)?;
        gauge(
            e,
            "sortd_plan_version",
            "Version of the sort plan deciding parcels now.",
            i64::from(plan.version()),
        )?;
        let view = self.plan.view();
        gauge(
            e,
            "sortd_preadvice_overlay_entries",
            "Pre-advised tracking numbers in the overlay over the plan (not yet compacted \
             into it).",
            i64::try_from(view.overlay.len()).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "sortd_preadvice_index_bytes",
            "Memory of the overlay's joint index with the plan; 0 while the filter path \
             answers (no index built yet for this plan, or declined as too large).",
            i64::try_from(view.overlay.index_bytes()).unwrap_or(i64::MAX),
        )?;
        drop(view);
        let since = ConstGauge::new(load(&c.plan_since_unix_ms) as f64 / 1000.0);
        since.encode(e.encode_descriptor(
            "sortd_plan_loaded_timestamp_seconds",
            "When the sort plan deciding now was swapped in (Unix time).",
            None,
            since.metric_type(),
        )?)?;
        family(
            e,
            "sortd_plan_reloads",
            "Plan swaps (SIGHUP, or a plan from the hub) by result; a failed one keeps the \
             previous plan.",
            None,
            MetricType::Counter,
            [
                ("ok", load(&c.plan_reloads_ok)),
                ("failed", load(&c.plan_reloads_failed)),
            ]
            .map(|(result, count)| ([("result", result)], ConstCounter::new(count))),
        )?;

        let web = &c.web;
        counter(
            e,
            "sortd_web_requests",
            "HTTP requests the web endpoint answered (any status).",
            None,
            load(&web.requests),
        )?;
        family(
            e,
            "sortd_web_refusals",
            "Web endpoint refusals by cause: unauthorized (401), connection limit, TLS \
             handshake failure, per-connection time limit.",
            None,
            MetricType::Counter,
            [
                ("unauthorized", load(&web.unauthorized)),
                ("limit", load(&web.refused_limit)),
                ("tls", load(&web.tls_failed)),
                ("timeout", load(&web.timed_out)),
            ]
            .map(|(cause, count)| ([("cause", cause)], ConstCounter::new(count))),
        )?;

        let turns = std::iter::once(("plc".to_string(), c.liveness.plc_turns())).chain(
            (0..self.ingress_workers)
                .map(|index| (format!("ingress-{index}"), c.liveness.ingress_turns(index))),
        );
        family(
            e,
            "sortd_thread_loop_turns",
            "Event-loop turns per daemon thread (the watchdog feeds only while all move).",
            None,
            MetricType::Counter,
            turns.map(|(thread, count)| ([("thread", thread)], ConstCounter::new(count))),
        )
    }
}

/// The NATS exporter's figures (`sortd_export_*`).
#[derive(Debug)]
struct ExportCollector(Arc<ExportCounters>);

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let x = &*self.0;
        let e = &mut encoder;
        counter(
            e,
            "sortd_export_events",
            "Sort events the JetStream stream acknowledged.",
            None,
            load(&x.events_exported),
        )?;
        counter(
            e,
            "sortd_export_messages",
            "NATS messages (batches of events) the stream acknowledged.",
            None,
            load(&x.messages_acked),
        )?;
        counter(
            e,
            "sortd_export_duplicate_acks",
            "Acknowledgements of a replayed batch the stream already held.",
            None,
            load(&x.duplicates_acked),
        )?;
        counter(
            e,
            "sortd_export_connections",
            "Successful connections to NATS.",
            None,
            load(&x.connections),
        )?;
        family(
            e,
            "sortd_export_errors",
            "Export failures by kind; each ends a connection and the exporter resyncs.",
            None,
            MetricType::Counter,
            ExportErrorKind::ALL
                .map(|kind| ([("kind", kind.name())], ConstCounter::new(x.errors(kind)))),
        )?;
        let acked = i64::try_from(load(&x.acked_seq)).unwrap_or(i64::MAX);
        gauge(
            e,
            "sortd_export_acked_sequence",
            "Highest event sequence the stream holds (the exporter's cursor).",
            acked,
        )?;
        let lag = i64::try_from(x.lag_events()).unwrap_or(i64::MAX);
        gauge(
            e,
            "sortd_export_lag_events",
            "Events journaled and not yet acknowledged by the stream.",
            lag,
        )?;
        let lag_seconds = ConstGauge::new(load(&x.lag_ms) as f64 / 1000.0);
        lag_seconds.encode(e.encode_descriptor(
            "sortd_export_lag_seconds",
            "Age of the oldest event not yet acknowledged by the stream.",
            None,
            lag_seconds.metric_type(),
        )?)?;
        state_family(
            e,
            "sortd_export_state",
            "The exporter's state: 1 for the current one.",
            x.state(),
        )
    }
}

/// The hub connection's figures (`sortd_hub_*`).
#[derive(Debug)]
struct HubCollector(Arc<HubCounters>);

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let x = &*self.0;
        let e = &mut encoder;
        let state = x.state();
        family(
            e,
            "sortd_hub_state",
            "The hub connection's state: 1 for the current one.",
            None,
            MetricType::Gauge,
            HubState::ALL.map(|s| {
                (
                    [("state", s.name())],
                    ConstGauge::new(i64::from(s == state)),
                )
            }),
        )?;
        counter(
            e,
            "sortd_hub_connections",
            "Successful connections to the hub's NATS.",
            None,
            load(&x.connections),
        )?;
        counter(
            e,
            "sortd_hub_sessions_lost",
            "Hub sessions that ended (connection lost, or a hub task failed) and reconnected.",
            None,
            load(&x.sessions_lost),
        )?;
        counter(
            e,
            "sortd_hub_plans_taken",
            "Plans from the hub verified and swapped in.",
            None,
            load(&x.plans_taken),
        )?;
        counter(
            e,
            "sortd_hub_plans_ignored",
            "Published plans ignored: not newer than the running plan and not a rollback.",
            None,
            load(&x.plans_ignored),
        )?;
        family(
            e,
            "sortd_hub_plans_refused",
            "Plans from the hub refused by reason; the running plan keeps sorting.",
            None,
            MetricType::Counter,
            PlanRefusal::ALL.map(|reason| {
                (
                    [("reason", reason.name())],
                    ConstCounter::new(x.refused(reason)),
                )
            }),
        )?;
        family(
            e,
            "sortd_hub_plan_retries",
            "Failed attempts to take a plan from the hub that were not the plan's fault, by \
             reason (write: the hub dir; interrupted: the download broke off); each is retried.",
            None,
            MetricType::Counter,
            PlanRetry::ALL.map(|reason| {
                (
                    [("reason", reason.name())],
                    ConstCounter::new(x.retried(reason)),
                )
            }),
        )?;
        counter(
            e,
            "sortd_hub_plan_downloads",
            "Plan downloads from the hub started, retries included.",
            None,
            load(&x.plan_downloads),
        )?;
        gauge(
            e,
            "sortd_hub_published_plan_version",
            "Version of the plan published for this node's group, as last seen (0: none).",
            i64::try_from(load(&x.published_version)).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "sortd_hub_status_reports",
            "Running-plan reports written to the hub's status bucket.",
            None,
            load(&x.status_reports),
        )
    }
}

/// The hub pre-advice subscriber's figures (`sortd_hub_preadvice_*`).
#[derive(Debug)]
struct HubPreadviceCollector(Arc<PreadviceCounters>);

impl Collector for HubPreadviceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let x = &*self.0;
        let e = &mut encoder;
        let as_gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        gauge(
            e,
            "sortd_hub_preadvice_last_seq",
            "Stream sequence of the last pre-advice batch applied, i.e. in effect (its pre-advice sequence).",
            as_gauge(load(&x.last_applied_seq)),
        )?;
        gauge(
            e,
            "sortd_hub_preadvice_durable_seq",
            "Stream sequence of the last pre-advice batch synced to the local log (acknowledged after this).",
            as_gauge(load(&x.last_durable_seq)),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_batches",
            "Pre-advice batches applied from the hub's stream.",
            None,
            load(&x.batches_applied),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_entries",
            "Pre-advice entries stored in the overlay from the hub's stream.",
            None,
            load(&x.entries_applied),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_refused_entries",
            "Pre-advice entries refused because the overlay was full.",
            None,
            load(&x.entries_refused),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_bad_lines",
            "Bad pre-advice lines skipped (the rest of the batch was applied).",
            None,
            load(&x.bad_lines),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_too_large_batches",
            "Pre-advice messages over the size limit, skipped.",
            None,
            load(&x.batches_too_large),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_redeliveries",
            "Deliveries at or below the last applied batch, skipped (acknowledged once synced).",
            None,
            load(&x.redeliveries),
        )?;
        gauge(
            e,
            "sortd_hub_preadvice_lag_batches",
            "Pre-advice batches on the group's subject not yet delivered to this node.",
            as_gauge(load(&x.pending_batches)),
        )?;
        let seconds = |us: u64| ConstGauge::new(us as f64 / 1e6);
        for (name, help, value) in [
            (
                "sortd_hub_preadvice_delay_seconds_last",
                "Publication (broker clock) to applied, of the last batch.",
                load(&x.delay_us_last),
            ),
            (
                "sortd_hub_preadvice_delay_seconds_max",
                "Largest publication-to-applied delay seen.",
                load(&x.delay_us_max),
            ),
            (
                "sortd_hub_preadvice_delay_seconds_sum",
                "Sum of the publication-to-applied delays (divide by the batches).",
                load(&x.delay_us_sum),
            ),
        ] {
            let metric = seconds(value);
            metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        family(
            e,
            "sortd_hub_preadvice_latency",
            "Pre-advice batches by stage: delivery (publication, broker clock, to the \
             subscriber), wait (to the apply starting), parse, log (write, no sync), publish \
             (into the view the node sorts with), total (publication to that view: in \
             effect), sync (the log sync after it, shared by the batches delivered \
             together), durable (publication to synced: acknowledged after this).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            LatencyStage::ALL.map(|stage| {
                let buckets = x.latency(stage);
                (
                    [("stage", stage.name())],
                    LatencyHistogram::from_buckets(
                        &PREADVICE_LATENCY_BOUNDS_US,
                        &buckets.counts(),
                        buckets.sum_us(),
                    ),
                )
            }),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_connections",
            "Successful connections of the pre-advice subscriber.",
            None,
            load(&x.connections),
        )?;
        family(
            e,
            "sortd_hub_preadvice_errors",
            "Pre-advice subscriber failures by kind; each ends a session, which resumes from the local log.",
            None,
            MetricType::Counter,
            PreadviceErrorKind::ALL
                .map(|kind| ([("kind", kind.name())], ConstCounter::new(x.errors(kind)))),
        )?;
        family(
            e,
            "sortd_hub_preadvice_stream_anomalies",
            "The pre-advice stream against the node's log at a session's start: recreated or rewound (pre-advice reset, read again from the start), gap (batches aged out or purged unread; what was applied is kept).",
            None,
            MetricType::Counter,
            StreamAnomaly::ALL.map(|kind| {
                (
                    [("reason", kind.name())],
                    ConstCounter::new(x.anomalies(kind)),
                )
            }),
        )?;
        counter(
            e,
            "sortd_hub_preadvice_gap_sequences",
            "Stream sequences found gone before this node read them, over every gap reported (some may have been other groups' batches).",
            None,
            load(&x.gap_sequences),
        )?;
        state_family(
            e,
            "sortd_hub_preadvice_state",
            "The pre-advice subscriber's state: 1 for the current one.",
            x.state(),
        )
    }
}

/// The sort-event journal's counters.
#[derive(Debug)]
struct JournalCollector(Arc<JournalStats>);

impl Collector for JournalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let x = self.0.snapshot();
        let e = &mut encoder;
        counter(
            e,
            "sortd_events_journaled",
            "Sort events written to the journal (page cache).",
            None,
            x.events_journaled,
        )?;
        counter(
            e,
            "sortd_events_journaled_bytes",
            "Bytes of the sort events written to the journal.",
            None,
            x.bytes_journaled,
        )?;
        family(
            e,
            "sortd_events_lost",
            "Sort events not journaled, by reason.",
            None,
            MetricType::Counter,
            LossReason::ALL.map(|reason| {
                (
                    [("reason", reason.as_str())],
                    ConstCounter::new(x.lost(reason)),
                )
            }),
        )?;
        counter(
            e,
            "sortd_events_torn_tails_cut",
            "Torn or corrupt journal tails cut at open.",
            None,
            x.torn_tails_cut,
        )?;
        counter(
            e,
            "sortd_events_fsync_errors",
            "Journal fsync failures (what was written may not be durable).",
            None,
            x.fsync_errors,
        )?;
        let to_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        gauge(
            e,
            "sortd_events_segments",
            "Journal segment files on disk.",
            to_i64(x.segments),
        )?;
        gauge(
            e,
            "sortd_events_segment_bytes",
            "Bytes of the journal segment files on disk.",
            to_i64(x.segment_bytes),
        )?;
        gauge(
            e,
            "sortd_events_written_sequence",
            "Highest sort-event sequence in the page cache.",
            to_i64(x.written_seq),
        )?;
        gauge(
            e,
            "sortd_events_durable_sequence",
            "Highest sort-event sequence known fsynced.",
            to_i64(x.durable_seq),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_place_each_value_at_the_first_bound_not_below_it() {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .expect("valid bounds");
        for (value_us, times) in [(40, 3), (100, 2), (700, 1), (2_000_000, 4)] {
            histogram.record_n(value_us, times).expect("in range");
        }
        let latency = LatencyHistogram::from_hdr(Some(&histogram));
        assert_eq!(latency.count, 10);
        let counts: Vec<u64> = latency.buckets.iter().map(|(_, count)| *count).collect();
        // Bounds 25, 50, 75, 100, 150, 200, 300, 500, 750 us, 1 ms, ... 1 s, +Inf.
        let mut expected = vec![0; LATENCY_BUCKET_BOUNDS_US.len() + 1];
        expected[1] = 3; // 40 us: the 50 us bucket
        expected[3] = 2; // 100 us: its own bound
        expected[8] = 1; // 700 us: the 750 us bucket
        expected[LATENCY_BUCKET_BOUNDS_US.len()] = 4; // 2 s: +Inf
        assert_eq!(counts, expected);
        assert_eq!(latency.buckets.last().map(|b| b.0), Some(f64::INFINITY));
        // The sum is within hdrhistogram's precision (3 significant digits).
        let exact_seconds = (40.0 * 3.0 + 200.0 + 700.0 + 8_000_000.0) / 1e6;
        assert!((latency.sum_seconds - exact_seconds).abs() / exact_seconds < 1e-3);
    }

    #[test]
    fn chute_states_are_a_state_set_for_unavailable_and_used_chutes_only() {
        let bytes = crate::plan::compile_str(
            "test",
            "kind,key,chutes\nprefix,33,101\ndefault,no_read,998\ndefault,no_rule,999\n\
             default,multi_read,997\ndefault,late,996\n",
        )
        .expect("test plan compiles");
        let plan = crate::plan::Plan::from_bytes(bytes).expect("test plan opens");
        let counters = Arc::new(Counters::default());
        counters.sorts_by_chute.count_one(101);
        let table = Arc::new(ChuteStateTable::new());
        table.set(12, ChuteState::Full);
        table.set(14, ChuteState::Disabled);
        let exposition =
            Exposition::with_chute_states(counters, Arc::new(PlanHandle::new(plan)), 1, table);
        let mut text = String::new();
        assert!(exposition.render(&mut text).is_ok());
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("sortd_chute_state{"))
            .collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "sortd_chute_state{chute=\"101\",state=\"available\"} 1",
                "sortd_chute_state{chute=\"101\",state=\"disabled\"} 0",
                "sortd_chute_state{chute=\"101\",state=\"full\"} 0",
                "sortd_chute_state{chute=\"12\",state=\"available\"} 0",
                "sortd_chute_state{chute=\"12\",state=\"disabled\"} 0",
                "sortd_chute_state{chute=\"12\",state=\"full\"} 1",
                "sortd_chute_state{chute=\"14\",state=\"available\"} 0",
                "sortd_chute_state{chute=\"14\",state=\"disabled\"} 1",
                "sortd_chute_state{chute=\"14\",state=\"full\"} 0",
            ]
        );
    }

    #[test]
    fn no_histogram_yet_means_empty_buckets() {
        let latency = LatencyHistogram::from_hdr(None);
        assert_eq!(latency.count, 0);
        assert_eq!(latency.buckets.len(), LATENCY_BUCKET_BOUNDS_US.len() + 1);
        assert!(latency.buckets.iter().all(|(_, count)| *count == 0));
    }

    #[test]
    fn the_exporter_figures_are_exposed_when_it_runs() {
        let csv = "kind,key,chutes\ndefault,no_read,998\ndefault,no_rule,999\n\
                   default,multi_read,997\ndefault,late,996\n";
        let bytes = crate::plan::compile_str("t.csv", csv).expect("plan compiles");
        let plan = Arc::new(PlanHandle::new(
            crate::plan::Plan::from_bytes(bytes).expect("plan opens"),
        ));
        let export = Arc::new(ExportCounters::default());
        export.set_state(ExportState::CatchingUp);
        export.source_last_seq.store(120, Ordering::Relaxed);
        export.acked_seq.store(100, Ordering::Relaxed);
        export.lag_ms.store(1_500, Ordering::Relaxed);
        export.count_error(ExportErrorKind::AckTimeout);
        let exposition = Exposition::with_parts(
            Arc::new(Counters::default()),
            plan,
            1,
            None,
            Some(export),
            None,
            None,
            None,
        );
        let mut text = String::new();
        exposition.render(&mut text).expect("renders");
        for line in [
            "sortd_export_lag_events 20",
            "sortd_export_lag_seconds 1.5",
            "sortd_export_acked_sequence 100",
            "sortd_export_state{state=\"catching_up\"} 1",
            "sortd_export_state{state=\"live\"} 0",
            "sortd_export_errors_total{kind=\"ack_timeout\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn the_overlay_and_its_joint_index_are_exposed() {
        use crate::plan::{Chutes, PreAdvice, PreAdviceEntry, PreAdviceSettings, PreAdviceValue};
        let csv = "kind,key,chutes\nexact,YT1,7\ndefault,no_read,998\ndefault,no_rule,999\n\
                   default,multi_read,997\ndefault,late,996\n";
        let bytes = crate::plan::compile_str("t.csv", csv).expect("plan compiles");
        let plan = crate::plan::Plan::from_bytes(bytes).expect("plan opens");
        let dir = tempfile::tempdir().expect("temp dir");
        let (preadvice, _) =
            PreAdvice::open(dir.path(), plan, PreAdviceSettings::default()).expect("opens");
        let preadvice = Arc::new(preadvice);
        let chutes = Chutes::new(&[5]).expect("valid chutes");
        let batch: Vec<PreAdviceEntry> = (0..9_000u32)
            .map(|index| PreAdviceEntry {
                barcode: format!("N{index}").into_bytes().into(),
                value: PreAdviceValue::Chutes(chutes),
            })
            .collect();
        preadvice.apply(&batch, 1).expect("applies");
        let handle = Arc::new(PlanHandle::with_preadvice(Arc::clone(&preadvice)));
        let render = || {
            let exposition = Exposition::new(Arc::new(Counters::default()), Arc::clone(&handle), 1);
            let mut text = String::new();
            exposition.render(&mut text).expect("renders");
            text
        };
        let before = render();
        assert!(
            before.contains("sortd_preadvice_overlay_entries 9000\n"),
            "{before}"
        );
        assert!(
            before.contains("sortd_preadvice_index_bytes 0\n"),
            "{before}"
        );
        assert!(preadvice.merge_delta(), "the delta is merged and indexed");
        let after = render();
        let bytes = after
            .lines()
            .find_map(|line| line.strip_prefix("sortd_preadvice_index_bytes "))
            .and_then(|value| value.parse::<u64>().ok());
        assert!(bytes.is_some_and(|bytes| bytes >= 9_001 * 16), "{after}");
    }
}
