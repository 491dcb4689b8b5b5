//! Pre-advice from the hub: a JetStream durable pull consumer (`sortd-preadvice-<node>`)
//! on the pre-advice stream, filtered to the group's subject. Each message is one batch in
//! the JSON-lines format of PLAN.md ("Pre-advice"); the message's stream sequence becomes
//! the batch's pre-advice sequence, so a decision's event names the stream message that
//! answered it.
//!
//! Exactly-once apply: the node's pre-advice log is the truth, not the consumer. A batch
//! is applied through [`PreAdvice::apply_unsynced`] (written to the log, then published:
//! in effect without waiting for the disk), then the log is synced
//! ([`PreAdvice::sync`]), and only then is the message acknowledged: the broker only ever
//! hears of durable batches. Messages already delivered when a batch is in effect are
//! applied too and share that one sync (a group commit, at most [`GROUP_MESSAGES_MAX`]).
//! A message at or below the durable sequence is a redelivery, acknowledged and skipped;
//! one that is applied but not durable (its sync failed) is synced again before it is
//! acknowledged ([`classify`]). At every (re)connection the log is synced first, then
//! [`consumer_action`] compares the durable consumer's position with the log's last
//! sequence and recreates the consumer at `last + 1` when it would skip something or sits
//! on unacknowledged deliveries. A failed apply or sync, or a broken consumer, ends the
//! task unacknowledged; the hub thread ([`super::hub`]) then tears the session down,
//! reconnects with backoff, and the next session resumes from the log. Sorting never
//! waits for any of it: the decide path only reads the published view.
//!
//! [`task`] is the [`HubTask`] the daemon gives the hub thread; [`publish_batch`] is the
//! operator's side (`sortd plan preadvice publish`). This module does not parse the
//! configuration ([`super::hub_config`]) and does not own the overlay
//! ([`crate::plan::preadvice`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use futures_util::{FutureExt, StreamExt};

use super::connection::connect;
use super::counters::ExportState;
use super::hub::{HubSession, HubTask, TaskEnd};
use super::hub_config::{HubSettings, PREADVICE_STREAM_SUBJECTS_DEFAULT};
use crate::plan::PreAdvice;
use crate::plan::preadvice::{Applied, LogSeqs, Synced};
use crate::plan::preadvice_msg::parse_message;

/// How long the pre-advice stream keeps a batch when sortd creates it: a node offline
/// longer than this misses the batches that aged out (it keeps what it applied).
pub const PREADVICE_STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// De-duplication window of a stream sortd creates (publishers may set `Nats-Msg-Id`).
pub const PREADVICE_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Bad lines reported in the log per batch (all are counted).
const BAD_LINES_LOGGED_MAX: usize = 5;
/// Unacknowledged deliveries the consumer allows: a batch is acknowledged right after
/// it is applied, so a few are enough and a redelivery storm stays small.
const ACK_PENDING_MAX: i64 = 256;
/// Messages per pull request. The client asks again when half are delivered, so with a
/// small batch a new request is already waiting before the old one is used up, and while
/// batches flow (8 per 30 s or more) no request ends by expiring. A request that expires
/// has a race: a message published just as it expires waited, in the 50-node run, for
/// async-nats's fallback re-pull 5 s later (docs/hub-run.md); async-nats's default
/// batch of 200 made every request expire at the hub's rate of a batch a second.
const PULL_BATCH_MESSAGES: usize = 16;
/// How long a pull request waits on the server (async-nats's default).
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Idle heartbeat of a pull request (async-nats's default for `messages()`): a broken
/// consumer is noticed after twice this.
const PULL_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long the server waits for an acknowledgement before delivering again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Most messages applied before one sync makes them durable and they are acknowledged
/// (the messages already delivered when the first one is in effect; one pull request's
/// worth).
pub const GROUP_MESSAGES_MAX: usize = PULL_BATCH_MESSAGES;

/// The durable consumer's name for `node`.
pub fn consumer_name(node: &str) -> String {
    format!("sortd-preadvice-{node}")
}

/// The stream sortd creates for pre-advice when it is missing (`[hub] create = true`, and
/// `sortd plan preadvice publish`): file storage, every group's subject, 7 days.
pub fn stream_config(name: &str) -> StreamConfig {
    StreamConfig {
        name: name.to_string(),
        subjects: vec![PREADVICE_STREAM_SUBJECTS_DEFAULT.to_string()],
        storage: StorageType::File,
        max_age: PREADVICE_STREAM_MAX_AGE,
        duplicate_window: PREADVICE_DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PreadviceErrorKind {
    /// Could not connect.
    Connect = 0,
    /// The stream or the consumer API failed (or the stream is missing and may not be
    /// created).
    Stream = 1,
    /// The connection or the consumer's message flow broke.
    Disconnected = 2,
    /// A batch could not be written to the local log (it is not in effect, not
    /// acknowledged, and comes again).
    Apply = 3,
    /// A message without JetStream metadata (no stream sequence).
    Message = 4,
    /// The log could not be synced: the batches are in effect, not durable, not
    /// acknowledged; they come again and are synced before they are acknowledged.
    Sync = 5,
}

impl PreadviceErrorKind {
    /// Every kind, in value order.
    pub const ALL: [PreadviceErrorKind; 6] = [
        PreadviceErrorKind::Connect,
        PreadviceErrorKind::Stream,
        PreadviceErrorKind::Disconnected,
        PreadviceErrorKind::Apply,
        PreadviceErrorKind::Message,
        PreadviceErrorKind::Sync,
    ];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            PreadviceErrorKind::Connect => "connect",
            PreadviceErrorKind::Stream => "stream",
            PreadviceErrorKind::Disconnected => "disconnected",
            PreadviceErrorKind::Apply => "apply",
            PreadviceErrorKind::Message => "message",
            PreadviceErrorKind::Sync => "sync",
        }
    }
}

/// Upper bounds of the pre-advice latency histogram's buckets, in microseconds (the
/// exposition converts them to seconds): fine from 100 us, where a loopback batch lands,
/// through the 100 ms goal, to 5 s, where a stalled node lands.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

const _: () = {
    let mut index = 1;
    while index < LATENCY_BUCKET_BOUNDS_US.len() {
        assert!(LATENCY_BUCKET_BOUNDS_US[index - 1] < LATENCY_BUCKET_BOUNDS_US[index]);
        index += 1;
    }
};

/// A stage of a batch on its way from publication to the sorting threads' view, then to
/// the disk; each is timed on its own, `Total` end to end to the view (in effect),
/// `Durable` end to end to the disk (PLAN.md and docs/preadvice.md, "Speed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LatencyStage {
    /// Publication (the broker's receive time, from the JetStream metadata) to the
    /// subscriber holding the message: the consumer's delivery and the hub thread's
    /// scheduling.
    Delivery = 0,
    /// Held by the subscriber to its apply starting on a blocking thread.
    Wait = 1,
    /// Parsing the JSON lines.
    Parse = 2,
    /// Writing the batch to the local log, not synced (including the writer lock).
    Log = 3,
    /// Building the new overlay and publishing it to the sorting threads.
    Publish = 4,
    /// Publication to the batch being in the view the node sorts with: in effect.
    Total = 5,
    /// The sync that made the batch durable (shared by its group; writer lock included),
    /// after it was in effect.
    Sync = 6,
    /// Publication to the batch being synced to the local log: what may be acknowledged.
    Durable = 7,
}

impl LatencyStage {
    /// Every stage, in value order.
    pub const ALL: [LatencyStage; 8] = [
        LatencyStage::Delivery,
        LatencyStage::Wait,
        LatencyStage::Parse,
        LatencyStage::Log,
        LatencyStage::Publish,
        LatencyStage::Total,
        LatencyStage::Sync,
        LatencyStage::Durable,
    ];

    /// The stages timed when the batch is in effect (the first six).
    pub const TO_VISIBLE: &[LatencyStage] = LatencyStage::ALL.split_at(6).0;

    /// The stages timed when the batch is durable (the last two).
    pub const TO_DURABLE: &[LatencyStage] = LatencyStage::ALL.split_at(6).1;

    /// The label value in metrics.
    pub fn name(self) -> &'static str {
        match self {
            LatencyStage::Delivery => "delivery",
            LatencyStage::Wait => "wait",
            LatencyStage::Parse => "parse",
            LatencyStage::Log => "log",
            LatencyStage::Publish => "publish",
            LatencyStage::Total => "total",
            LatencyStage::Sync => "sync",
            LatencyStage::Durable => "durable",
        }
    }
}

/// One lock-free histogram over [`LATENCY_BUCKET_BOUNDS_US`]: per-bucket (not
/// cumulative) counts, the last one above every bound.
#[derive(Debug, Default)]
pub struct LatencyBuckets {
    counts: [AtomicU64; LATENCY_BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyBuckets {
    fn record(&self, us: u64) {
        let index = LATENCY_BUCKET_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BUCKET_BOUNDS_US.len());
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Per-bucket counts, in the order of [`LATENCY_BUCKET_BOUNDS_US`] then the overflow.
    pub fn counts(&self) -> [u64; LATENCY_BUCKET_BOUNDS_US.len() + 1] {
        std::array::from_fn(|index| self.counts[index].load(Ordering::Relaxed))
    }

    /// Sum of every recorded value, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }
}

/// The subscriber's live figures; the task is the only writer, the metrics read them.
#[derive(Debug, Default)]
pub struct PreadviceCounters {
    state: AtomicU8,
    /// The last pre-advice sequence applied, i.e. in effect (= the stream sequence of its
    /// message).
    pub last_applied_seq: AtomicU64,
    /// The last pre-advice sequence synced to the local log (what may be acknowledged).
    pub last_durable_seq: AtomicU64,
    /// Batches applied from the stream.
    pub batches_applied: AtomicU64,
    /// Entries stored in the overlay.
    pub entries_applied: AtomicU64,
    /// Entries refused because the overlay was full.
    pub entries_refused: AtomicU64,
    /// Bad lines skipped (the rest of their batch was applied).
    pub bad_lines: AtomicU64,
    /// Messages over the size limit (applied as empty batches, so they are not retried).
    pub batches_too_large: AtomicU64,
    /// Deliveries at or below the last applied sequence (skipped; acknowledged once
    /// durable).
    pub redeliveries: AtomicU64,
    /// Batches on the subject not yet delivered to this node (from the last delivery).
    pub pending_batches: AtomicU64,
    /// Publication (server time) to applied, of the last batch, in microseconds.
    pub delay_us_last: AtomicU64,
    /// The largest such delay seen, in microseconds.
    pub delay_us_max: AtomicU64,
    /// Sum of the delays of every batch applied, in microseconds.
    pub delay_us_sum: AtomicU64,
    /// Successful connections.
    pub connections: AtomicU64,
    errors: [AtomicU64; PreadviceErrorKind::ALL.len()],
    latency: [LatencyBuckets; LatencyStage::ALL.len()],
    anomalies: [AtomicU64; StreamAnomaly::ALL.len()],
    /// The last sequence of the last gap reported (a gap is reported once).
    gap_reported_through: AtomicU64,
    /// Sequences reported gone unread, summed over the gaps.
    pub gap_sequences: AtomicU64,
    /// The last sync of the log failed (a failure is logged when this turns true).
    sync_failing: AtomicBool,
}

impl PreadviceCounters {
    /// The current state (the exporter's state names).
    pub fn state(&self) -> ExportState {
        let value = self.state.load(Ordering::Relaxed);
        ExportState::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(ExportState::Stopped)
    }

    fn set_state(&self, state: ExportState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Errors of `kind` so far.
    pub fn errors(&self, kind: PreadviceErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    fn count_error(&self, kind: PreadviceErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Anomalies of `kind` found so far.
    pub fn anomalies(&self, kind: StreamAnomaly) -> u64 {
        self.anomalies[kind as usize].load(Ordering::Relaxed)
    }

    fn count_anomaly(&self, kind: StreamAnomaly) {
        self.anomalies[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency histogram of `stage`: one value per batch applied (the
    /// [`LatencyStage::TO_DURABLE`] ones when its sync succeeded).
    pub fn latency(&self, stage: LatencyStage) -> &LatencyBuckets {
        &self.latency[stage as usize]
    }

    fn record_delay(&self, delay_us: u64) {
        self.delay_us_last.store(delay_us, Ordering::Relaxed);
        self.delay_us_max.fetch_max(delay_us, Ordering::Relaxed);
        self.delay_us_sum.fetch_add(delay_us, Ordering::Relaxed);
    }
}

/// Something the subscriber found wrong with the stream against the node's log, at the
/// start of a session (docs/preadvice.md, "When the stream changes under the node").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamAnomaly {
    /// The stream is not the one the log came from (its creation time or name changed:
    /// deleted and created again). The node resets its pre-advice and reads the stream
    /// from the start.
    Recreated = 0,
    /// The stream's last sequence is below the node's last applied one, and the node has
    /// no record of the stream it read (a log from before sortd recorded it): treated as
    /// recreated.
    Rewound = 1,
    /// The stream no longer holds sequences the node never read (aged out by retention,
    /// or purged): they are reported, what was applied is kept.
    Gap = 2,
}

impl StreamAnomaly {
    /// Every anomaly, in value order.
    pub const ALL: [StreamAnomaly; 3] = [
        StreamAnomaly::Recreated,
        StreamAnomaly::Rewound,
        StreamAnomaly::Gap,
    ];

    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            StreamAnomaly::Recreated => "recreated",
            StreamAnomaly::Rewound => "rewound",
            StreamAnomaly::Gap => "gap",
        }
    }
}

/// Which stream a node's log came from: its name and creation time. Kept in the
/// pre-advice directory ([`STREAM_ID_FILE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    /// The stream's name.
    pub name: String,
    /// Its creation time (server clock), nanoseconds since the Unix epoch.
    pub created_ns: i128,
}

impl StreamId {
    /// `NAME CREATED_NS\n`.
    pub fn encode(&self) -> String {
        format!("{} {}\n", self.name, self.created_ns)
    }

    /// The inverse of [`StreamId::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<StreamId> {
        let (name, created) = text.trim_end().split_once(' ')?;
        Some(StreamId {
            name: name.to_string(),
            created_ns: created.parse().ok()?,
        })
    }
}

/// The file in the pre-advice directory that records [`StreamId`].
pub const STREAM_ID_FILE: &str = "stream-id";

/// The stream as the server reports it at the start of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFacts {
    /// Its name and creation time.
    pub id: StreamId,
    /// First sequence it still holds (last + 1 when empty after a purge; 0 when never
    /// written).
    pub first_seq: u64,
    /// Last sequence it assigned.
    pub last_seq: u64,
}

/// What to do about the stream before consuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamVerdict {
    /// Read on after the last applied batch.
    Continue,
    /// Forget every batch applied and read the stream from the start
    /// ([`StreamAnomaly::Recreated`] or [`StreamAnomaly::Rewound`]).
    Reset(StreamAnomaly),
    /// Sequences `first..=last` are gone unread ([`StreamAnomaly::Gap`]): keep what was
    /// applied, report them, read on. Some may have been other groups' batches: the
    /// stream cannot say whose they were.
    Gap {
        /// The first sequence gone.
        first: u64,
        /// The last sequence gone.
        last: u64,
    },
}

/// Judges the stream against the node's record of it and its last applied sequence.
/// Pure.
pub fn judge_stream(
    recorded: Option<&StreamId>,
    facts: &StreamFacts,
    last_applied: u64,
) -> StreamVerdict {
    if let Some(recorded) = recorded {
        if *recorded != facts.id {
            return StreamVerdict::Reset(StreamAnomaly::Recreated);
        }
    }
    if facts.last_seq < last_applied {
        return StreamVerdict::Reset(if recorded.is_some() {
            // Same identity but fewer sequences: cannot happen in JetStream; read the
            // stream again rather than skip its batches.
            StreamAnomaly::Recreated
        } else {
            StreamAnomaly::Rewound
        });
    }
    // A node that never applied anything has nothing to miss: batches that aged out
    // before it first connected are old news.
    if last_applied > 0 && facts.first_seq > last_applied + 1 {
        return StreamVerdict::Gap {
            first: last_applied + 1,
            last: facts.first_seq - 1,
        };
    }
    StreamVerdict::Continue
}

/// Where the durable consumer stands, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPosition {
    /// Stream sequence of the last message delivered.
    pub delivered_stream_seq: u64,
    /// Stream sequence below which everything is acknowledged.
    pub ack_floor_stream_seq: u64,
    /// Its filter subject.
    pub filter_subject: String,
}

/// What to do with the durable consumer before consuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerAction {
    /// It resumes right after the last durable batch (or before it: redeliveries are
    /// skipped): use it.
    Use,
    /// Missing: create it, delivering from this stream sequence.
    Create {
        /// First stream sequence to deliver.
        start_seq: u64,
    },
    /// It would skip batches the log lacks, holds unacknowledged deliveries past the
    /// log, or filters another subject: delete it and create it from this sequence.
    Recreate {
        /// First stream sequence to deliver.
        start_seq: u64,
    },
}

/// Decides, from the log's last durable sequence (the session syncs the log first, so it
/// is also the last applied one) and the consumer's position, whether the durable consumer
/// can be used as it is. Pure.
pub fn consumer_action(
    last_durable: u64,
    subject: &str,
    existing: Option<&ConsumerPosition>,
) -> ConsumerAction {
    let start_seq = last_durable + 1;
    match existing {
        None => ConsumerAction::Create { start_seq },
        Some(position)
            if position.filter_subject != subject
                || position.ack_floor_stream_seq > last_durable
                || position.delivered_stream_seq > last_durable =>
        {
            ConsumerAction::Recreate { start_seq }
        }
        Some(_) => ConsumerAction::Use,
    }
}

/// What to do with one delivered message. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// At or below the durable sequence: skip, acknowledge.
    Redelivery,
    /// Applied but not durable (an earlier sync failed): skip, sync, then acknowledge.
    RedeliveryNotDurable,
    /// New: apply at this sequence, sync, then acknowledge.
    Apply(u64),
}

impl Delivery {
    /// True when the log must be synced before this message is acknowledged.
    pub fn needs_sync(self) -> bool {
        !matches!(self, Delivery::Redelivery)
    }
}

/// Classifies a message by its stream sequence against the log's applied and durable
/// sequences.
pub fn classify(stream_seq: u64, log: LogSeqs) -> Delivery {
    if stream_seq <= log.durable {
        Delivery::Redelivery
    } else if stream_seq <= log.applied {
        Delivery::RedeliveryNotDurable
    } else {
        Delivery::Apply(stream_seq)
    }
}

/// The hub task that takes the group's pre-advice into `preadvice`: spawned by the hub
/// thread on every connection ([`super::hub`]), sharing its client, runtime and
/// reconnects.
pub fn task(preadvice: Arc<PreAdvice>, counters: Arc<PreadviceCounters>) -> HubTask {
    let seqs = preadvice.seqs();
    counters
        .last_applied_seq
        .store(seqs.applied, Ordering::Relaxed);
    counters
        .last_durable_seq
        .store(seqs.durable, Ordering::Relaxed);
    HubTask {
        name: "preadvice",
        start: Box::new(move |session| {
            Box::pin(run_preadvice(
                session,
                Arc::clone(&preadvice),
                Arc::clone(&counters),
            ))
        }),
    }
}

/// Marks the subscriber not connected when its session's future ends or is dropped (the
/// hub drops every task of a lost connection).
struct StateGuard(Arc<PreadviceCounters>);

impl Drop for StateGuard {
    fn drop(&mut self) {
        self.0.set_state(ExportState::BackingOff);
    }
}

/// One session of the subscriber on the hub's connection: positions the durable
/// consumer after the local log, then applies and acknowledges batches until something
/// breaks. Returns why it ended (the failure is counted); the hub then reconnects with
/// backoff and starts it again.
pub async fn run_preadvice(
    session: HubSession,
    preadvice: Arc<PreAdvice>,
    counters: Arc<PreadviceCounters>,
) -> TaskEnd {
    let _state = StateGuard(Arc::clone(&counters));
    counters.set_state(ExportState::Connecting);
    let subscriber = Subscriber {
        settings: &session.settings,
        preadvice: &preadvice,
        counters: &counters,
    };
    let (kind, detail) = subscriber.run(&session.js).await;
    counters.count_error(kind);
    TaskEnd {
        detail: format!("pre-advice ({}): {detail}", kind.name()),
    }
}

struct Subscriber<'a> {
    settings: &'a HubSettings,
    preadvice: &'a Arc<PreAdvice>,
    counters: &'a Arc<PreadviceCounters>,
}

impl Subscriber<'_> {
    async fn run(&self, js: &Context) -> (PreadviceErrorKind, String) {
        // A session starts with everything applied durable (a sync that failed in the
        // last session is retried here), so the consumer is positioned after a durable
        // log.
        if let Err(end) = self.sync().await {
            return end;
        }
        let stream = match self.stream(js).await {
            Ok(stream) => stream,
            Err(detail) => return (PreadviceErrorKind::Stream, detail),
        };
        if let Err(end) = self.settle(&stream).await {
            return end;
        }
        let consumer = match self.consumer(&stream).await {
            Ok(consumer) => consumer,
            Err(detail) => return (PreadviceErrorKind::Stream, detail),
        };
        let pulling = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH_MESSAGES)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages();
        let mut messages = match pulling.await {
            Ok(messages) => messages,
            Err(error) => return (PreadviceErrorKind::Stream, error.to_string()),
        };
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            subject = %self.settings.preadvice_subject,
            last_seq = self.preadvice.last_seq(),
            "pre-advice from NATS connected"
        );
        self.counters.set_state(ExportState::Live);
        loop {
            let mut group = Vec::with_capacity(GROUP_MESSAGES_MAX);
            let mut end = self.take(messages.next().await, &mut group).await;
            // Group commit: messages already delivered are applied too (each in effect at
            // once) and share the first one's sync.
            while end.is_none() && group.len() < GROUP_MESSAGES_MAX {
                let Some(next) = messages.next().now_or_never() else {
                    break;
                };
                end = self.take(next, &mut group).await;
            }
            // What was applied before something broke is still synced and acknowledged.
            if let Err(end) = self.commit(group).await {
                return end;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// The stream (created when missing and allowed), with fresh info.
    async fn stream(&self, js: &Context) -> Result<jetstream::stream::Stream, String> {
        let settings = self.settings;
        let failed = |error: &dyn std::fmt::Display| {
            format!("stream {}: {error}", settings.preadvice_stream)
        };
        if settings.create {
            js.get_or_create_stream(stream_config(&settings.preadvice_stream))
                .await
                .map_err(|error| failed(&error))
        } else {
            js.get_stream(&settings.preadvice_stream)
                .await
                .map_err(|error| failed(&error))
        }
    }

    /// Compares the stream with the node's record of it ([`judge_stream`]): resets the
    /// local pre-advice for a stream created anew, reports a gap once, and records the
    /// stream. The file work runs on a blocking thread.
    async fn settle(
        &self,
        stream: &jetstream::stream::Stream,
    ) -> Result<(), (PreadviceErrorKind, String)> {
        let info = stream.cached_info();
        let facts = StreamFacts {
            id: StreamId {
                name: info.config.name.clone(),
                created_ns: info.created.unix_timestamp_nanos(),
            },
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
        };
        let preadvice = Arc::clone(self.preadvice);
        let settled = tokio::task::spawn_blocking(move || settle_stream(&preadvice, &facts))
            .await
            .map_err(|error| (PreadviceErrorKind::Apply, error.to_string()))?;
        let (verdict, forgotten) = settled.map_err(|detail| (PreadviceErrorKind::Apply, detail))?;
        let counters = self.counters;
        let stream_name = &info.config.name;
        match verdict {
            StreamVerdict::Continue => {}
            StreamVerdict::Reset(kind) => {
                counters.count_anomaly(kind);
                counters.last_applied_seq.store(0, Ordering::Relaxed);
                counters.last_durable_seq.store(0, Ordering::Relaxed);
                counters.gap_reported_through.store(0, Ordering::Relaxed);
                tracing::warn!(
                    stream = %stream_name,
                    reason = kind.name(),
                    forgotten_through_seq = forgotten,
                    stream_last_seq = info.state.last_sequence,
                    "pre-advice stream is not the one the log came from; pre-advice reset, reading it from the start"
                );
            }
            StreamVerdict::Gap { first, last } => {
                if counters.gap_reported_through.load(Ordering::Relaxed) < last {
                    counters.gap_reported_through.store(last, Ordering::Relaxed);
                    counters.count_anomaly(StreamAnomaly::Gap);
                    counters
                        .gap_sequences
                        .fetch_add(last - first + 1, Ordering::Relaxed);
                    tracing::warn!(
                        stream = %stream_name,
                        first_missing_seq = first,
                        last_missing_seq = last,
                        "pre-advice batches aged out or purged before this node read them; what was applied is kept"
                    );
                }
            }
        }
        Ok(())
    }

    /// The durable consumer, positioned after the last durable batch.
    async fn consumer(
        &self,
        stream: &jetstream::stream::Stream,
    ) -> Result<jetstream::consumer::PullConsumer, String> {
        let settings = self.settings;
        let name = consumer_name(&settings.node);
        let existing = match stream.consumer_info(&name).await {
            Ok(info) => Some(ConsumerPosition {
                delivered_stream_seq: info.delivered.stream_sequence,
                ack_floor_stream_seq: info.ack_floor.stream_sequence,
                filter_subject: info.config.filter_subject.clone(),
            }),
            Err(error) if is_not_found(&error) => None,
            Err(error) => return Err(format!("consumer {name}: {error}")),
        };
        // The session's first sync made everything applied durable: resume after it.
        let last_durable = self.preadvice.seqs().durable;
        let action = consumer_action(last_durable, &settings.preadvice_subject, existing.as_ref());
        let start_seq = match action {
            ConsumerAction::Use => {
                return stream
                    .get_consumer(&name)
                    .await
                    .map_err(|error| format!("consumer {name}: {error}"));
            }
            ConsumerAction::Create { start_seq } => start_seq,
            ConsumerAction::Recreate { start_seq } => {
                tracing::info!(
                    consumer = %name,
                    ?existing,
                    last_durable,
                    "pre-advice consumer does not resume after the local log; recreating it"
                );
                stream
                    .delete_consumer(&name)
                    .await
                    .map_err(|error| format!("deleting consumer {name}: {error}"))?;
                start_seq
            }
        };
        let deliver_policy = if start_seq <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: start_seq,
            }
        };
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: settings.preadvice_subject.clone(),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: ACK_PENDING_MAX,
                ..Default::default()
            })
            .await
            .map_err(|error| format!("creating consumer {name}: {error}"))
    }

    /// Takes one delivered message into `group`: applies a new batch (in effect when this
    /// returns, not yet durable) or skips a redelivery; nothing is acknowledged yet.
    /// Returns why the session ends, if it does (the message is then not in `group`).
    async fn take<E: std::fmt::Display>(
        &self,
        next: Option<Result<jetstream::Message, E>>,
        group: &mut Vec<Taken>,
    ) -> Option<(PreadviceErrorKind, String)> {
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                return Some((PreadviceErrorKind::Disconnected, error.to_string()));
            }
            None => return Some((PreadviceErrorKind::Disconnected, "consumer ended".into())),
        };
        let received = Instant::now();
        let received_ns = unix_now_ns();
        let (stream_seq, pending, published_ns) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.pending,
                info.published.unix_timestamp_nanos(),
            ),
            Err(error) => return Some((PreadviceErrorKind::Message, error.to_string())),
        };
        self.counters
            .pending_batches
            .store(pending, Ordering::Relaxed);
        let delivery = classify(stream_seq, self.preadvice.seqs());
        let mut applied_published_ns = None;
        match delivery {
            Delivery::Redelivery | Delivery::RedeliveryNotDurable => {
                self.counters.redeliveries.fetch_add(1, Ordering::Relaxed);
            }
            Delivery::Apply(seq) => {
                let times = Arrival {
                    published_ns,
                    received_ns,
                    received,
                };
                if let Err(end) = self.apply(seq, message.payload.clone(), times).await {
                    return Some(end);
                }
                applied_published_ns = Some(published_ns);
            }
        }
        group.push(Taken {
            message,
            pending,
            needs_sync: delivery.needs_sync(),
            applied_published_ns,
        });
        None
    }

    /// Makes `group` durable (one sync, when any of it needs one), times the sync of the
    /// batches it applied, then acknowledges its messages in order. A failed sync ends the
    /// session with none of them acknowledged.
    async fn commit(&self, group: Vec<Taken>) -> Result<(), (PreadviceErrorKind, String)> {
        let Some(last) = group.last() else {
            return Ok(());
        };
        let pending = last.pending;
        if group.iter().any(|taken| taken.needs_sync) {
            let synced = self.sync().await?;
            let synced_ns = unix_now_ns();
            for published_ns in group.iter().filter_map(|taken| taken.applied_published_ns) {
                let times = durable_stage_times(published_ns, synced_ns, synced.duration);
                for (&stage, us) in LatencyStage::TO_DURABLE.iter().zip(times) {
                    self.counters.latency(stage).record(us);
                }
            }
        }
        for taken in group {
            // A lost acknowledgement only means a redelivery, which is skipped.
            if let Err(error) = taken.message.ack().await {
                return Err((PreadviceErrorKind::Disconnected, error.to_string()));
            }
        }
        self.counters.set_state(if pending > 0 {
            ExportState::CatchingUp
        } else {
            ExportState::Live
        });
        Ok(())
    }

    /// Syncs the log on a blocking thread. A failure is logged when failures start, and
    /// the recovery once; each is counted as the session's end ([`PreadviceErrorKind::Sync`]).
    async fn sync(&self) -> Result<Synced, (PreadviceErrorKind, String)> {
        let preadvice = Arc::clone(self.preadvice);
        let result = tokio::task::spawn_blocking(move || preadvice.sync())
            .await
            .map_err(|error| (PreadviceErrorKind::Sync, error.to_string()))?;
        let counters = self.counters;
        match result {
            Ok(synced) => {
                counters
                    .last_durable_seq
                    .store(synced.durable_seq, Ordering::Relaxed);
                if counters.sync_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        durable_seq = synced.durable_seq,
                        "pre-advice log synced again; its batches are acknowledged"
                    );
                }
                Ok(synced)
            }
            Err(error) => {
                if !counters.sync_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        %error,
                        "pre-advice: log sync failed; its batches are in effect but not acknowledged: they come again and are synced then"
                    );
                }
                Err((PreadviceErrorKind::Sync, error.to_string()))
            }
        }
    }

    /// Parses and applies one batch (not synced) and records its
    /// [`LatencyStage::TO_VISIBLE`] stages.
    async fn apply(
        &self,
        seq: u64,
        payload: bytes::Bytes,
        arrival: Arrival,
    ) -> Result<(), (PreadviceErrorKind, String)> {
        // Parsing and the log write block: off the hub's runtime thread, so the other hub
        // tasks are not held up by the disk.
        let preadvice = Arc::clone(self.preadvice);
        let (parsed, applied, steps) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let parsed = parse_message(&payload);
            let parsed_at = Instant::now();
            let applied = preadvice.apply_unsynced(&parsed.entries, seq);
            let steps = BlockingSteps {
                started,
                parse: parsed_at - started,
                visible_ns: unix_now_ns(),
            };
            (parsed, applied, steps)
        })
        .await
        .map_err(|error| (PreadviceErrorKind::Apply, error.to_string()))?;
        let subject = &self.settings.preadvice_subject;
        for error in parsed.errors.iter().take(BAD_LINES_LOGGED_MAX) {
            tracing::warn!(seq, %subject, line = error.line, error = %error.kind, "pre-advice: bad line skipped");
        }
        let counters = self.counters;
        if parsed.too_large {
            tracing::warn!(seq, %subject, "pre-advice: message over the size limit skipped");
            counters.batches_too_large.fetch_add(1, Ordering::Relaxed);
        }
        let applied = match applied {
            Ok(applied) => applied,
            Err(error) => {
                tracing::error!(seq, %error, "pre-advice: batch not applied; it will come again");
                return Err((PreadviceErrorKind::Apply, error.to_string()));
            }
        };
        counters
            .bad_lines
            .fetch_add(parsed.bad_lines, Ordering::Relaxed);
        if applied.duplicate {
            counters.redeliveries.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        counters.batches_applied.fetch_add(1, Ordering::Relaxed);
        counters
            .entries_applied
            .fetch_add(applied.counts.stored, Ordering::Relaxed);
        counters
            .entries_refused
            .fetch_add(applied.counts.refused_full, Ordering::Relaxed);
        counters.last_applied_seq.store(seq, Ordering::Relaxed);
        let stages = StageTimes::of(&arrival, &steps, &applied);
        for &stage in LatencyStage::TO_VISIBLE {
            counters.latency(stage).record(stages.us(stage));
        }
        let delay_us = stages.us(LatencyStage::Total);
        counters.record_delay(delay_us);
        tracing::debug!(
            seq,
            stored = applied.counts.stored,
            refused = applied.counts.refused_full,
            bad_lines = parsed.bad_lines,
            delay_us,
            delivery_us = stages.us(LatencyStage::Delivery),
            wait_us = stages.us(LatencyStage::Wait),
            log_us = stages.us(LatencyStage::Log),
            "pre-advice batch applied"
        );
        Ok(())
    }
}

/// A message taken into a group: acknowledged after the group's sync.
struct Taken {
    message: jetstream::Message,
    /// Messages pending on the consumer when it was delivered.
    pending: u64,
    /// It must be durable before it is acknowledged ([`Delivery::needs_sync`]).
    needs_sync: bool,
    /// Its publication time (broker clock) when this session applied it.
    applied_published_ns: Option<i128>,
}

/// When a message was published (broker clock) and received by the subscriber.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    published_ns: i128,
    received_ns: i128,
    received: Instant,
}

/// What the blocking apply measured.
#[derive(Debug, Clone, Copy)]
struct BlockingSteps {
    started: Instant,
    parse: Duration,
    /// Wall clock right after the batch was published to the sorting threads.
    visible_ns: i128,
}

/// Microseconds from `from_ns` to `to_ns` (wall clock). Differences against the broker's
/// clock can be negative (clock steps, another host): they count as 0.
fn wall_us(from_ns: i128, to_ns: i128) -> u64 {
    u64::try_from((to_ns - from_ns).max(0) / 1_000).unwrap_or(u64::MAX)
}

fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The [`LatencyStage::TO_DURABLE`] times of a batch published at `published_ns` and
/// synced by a sync of `sync` that ended at `synced_ns`, in microseconds. Pure.
fn durable_stage_times(published_ns: i128, synced_ns: i128, sync: Duration) -> [u64; 2] {
    [duration_us(sync), wall_us(published_ns, synced_ns)]
}

/// The [`LatencyStage::TO_VISIBLE`] durations of one batch, in microseconds. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StageTimes([u64; LatencyStage::ALL.len()]);

impl StageTimes {
    fn of(arrival: &Arrival, steps: &BlockingSteps, applied: &Applied) -> StageTimes {
        let us = duration_us;
        let mut times = [0; LatencyStage::ALL.len()];
        times[LatencyStage::Delivery as usize] = wall_us(arrival.published_ns, arrival.received_ns);
        times[LatencyStage::Wait as usize] =
            us(steps.started.saturating_duration_since(arrival.received));
        times[LatencyStage::Parse as usize] = us(steps.parse);
        times[LatencyStage::Log as usize] = us(applied.timings.log);
        times[LatencyStage::Publish as usize] = us(applied.timings.publish);
        times[LatencyStage::Total as usize] = wall_us(arrival.published_ns, steps.visible_ns);
        StageTimes(times)
    }

    fn us(&self, stage: LatencyStage) -> u64 {
        self.0[stage as usize]
    }
}

/// Reads the recorded [`StreamId`], judges the stream, resets the pre-advice when the
/// verdict says so, then records the stream (after a reset, so a crash in between
/// resets again at the next start). Returns the verdict and the last sequence a reset
/// forgot.
fn settle_stream(
    preadvice: &PreAdvice,
    facts: &StreamFacts,
) -> Result<(StreamVerdict, u64), String> {
    let path = preadvice.dir().join(STREAM_ID_FILE);
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => StreamId::decode(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(format!("reading {}: {error}", path.display())),
    };
    let verdict = judge_stream(recorded.as_ref(), facts, preadvice.last_seq());
    let mut forgotten = 0;
    if let StreamVerdict::Reset(_) = verdict {
        forgotten = preadvice.reset().map_err(|error| error.to_string())?;
    }
    if recorded.as_ref() != Some(&facts.id) {
        write_stream_id(&path, &facts.id)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
    }
    Ok((verdict, forgotten))
}

/// Temporary file, sync, rename, directory sync.
fn write_stream_id(path: &std::path::Path, id: &StreamId) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = crate::util::fs::create_private_file(&temporary)?;
    file.write_all(id.encode().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    match path.parent() {
        Some(dir) => crate::util::fs::sync_dir(dir),
        None => Ok(()),
    }
}

fn unix_now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128)
}

/// Why [`publish_batch`] failed.
#[derive(Debug)]
pub enum PublishError {
    /// The server could not be reached.
    Connect(super::connection::ConnectError),
    /// The stream could not be found or created.
    Stream(String),
    /// The message was not stored (no acknowledgement, or refused).
    Publish(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Connect(error) => write!(f, "connecting: {error}"),
            PublishError::Stream(detail) => write!(f, "stream: {detail}"),
            PublishError::Publish(detail) => write!(f, "publishing: {detail}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Connect(error) => Some(error),
            PublishError::Stream(_) | PublishError::Publish(_) => None,
        }
    }
}

/// What the stream said about a published batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The stream sequence: the batch's pre-advice sequence on every node.
    pub stream_seq: u64,
    /// The stream already held a message with this `Nats-Msg-Id` (nothing was added).
    pub duplicate: bool,
}

/// Publishes one pre-advice batch (`payload`, JSON lines) on `subject` of `stream`,
/// creating the stream ([`stream_config`]) when it is missing, and waits for the
/// stream's acknowledgement. `msg_id` (`Nats-Msg-Id`) makes a retried publish harmless
/// within the stream's duplicate window.
pub async fn publish_batch(
    connection: &super::connection::NatsConnection,
    stream: &str,
    subject: &str,
    payload: Vec<u8>,
    msg_id: Option<&str>,
) -> Result<Published, PublishError> {
    let client = connect(connection, "sortd-preadvice-publish".into(), None)
        .await
        .map_err(PublishError::Connect)?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(connection.request_timeout)
        .build(client.clone());
    js.get_or_create_stream(stream_config(stream))
        .await
        .map_err(|error| PublishError::Stream(format!("{stream}: {error}")))?;
    let mut message = jetstream::message::PublishMessage::build().payload(payload.into());
    if let Some(id) = msg_id {
        message = message.message_id(id);
    }
    let ack = js
        .send_publish(subject.to_string(), message)
        .await
        .map_err(|error| PublishError::Publish(error.to_string()))?
        .await
        .map_err(|error| PublishError::Publish(error.to_string()))?;
    if ack.stream != stream {
        return Err(PublishError::Publish(format!(
            "{subject} is stored by stream {}, not {stream}",
            ack.stream
        )));
    }
    // Flush before the client goes: the acknowledgement already came, nothing is lost.
    let _ = client.flush().await;
    Ok(Published {
        stream_seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

fn is_not_found(error: &jetstream::context::ConsumerInfoError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::ConsumerInfoErrorKind::NotFound
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "sortd.preadvice.north";

    fn at(delivered: u64, ack_floor: u64, filter: &str) -> ConsumerPosition {
        ConsumerPosition {
            delivered_stream_seq: delivered,
            ack_floor_stream_seq: ack_floor,
            filter_subject: filter.into(),
        }
    }

    #[test]
    fn the_consumer_is_kept_only_when_it_resumes_after_the_log() {
        let cases = [
            (0, None, ConsumerAction::Create { start_seq: 1 }),
            (41, None, ConsumerAction::Create { start_seq: 42 }),
            (41, Some(at(41, 41, SUBJECT)), ConsumerAction::Use),
            // Behind the log: the redeliveries are skipped.
            (41, Some(at(30, 30, SUBJECT)), ConsumerAction::Use),
            // Ahead of the log (log lost or restored from a backup): would skip batches.
            (
                41,
                Some(at(50, 50, SUBJECT)),
                ConsumerAction::Recreate { start_seq: 42 },
            ),
            // Delivered past the log but not acknowledged: recreate rather than wait
            // for the redelivery timer.
            (
                41,
                Some(at(45, 41, SUBJECT)),
                ConsumerAction::Recreate { start_seq: 42 },
            ),
            (
                41,
                Some(at(41, 41, "sortd.preadvice.south")),
                ConsumerAction::Recreate { start_seq: 42 },
            ),
        ];
        for (last, position, expected) in cases {
            assert_eq!(
                consumer_action(last, SUBJECT, position.as_ref()),
                expected,
                "last {last}, {position:?}"
            );
        }
    }

    fn facts(created_ns: i128, first_seq: u64, last_seq: u64) -> StreamFacts {
        StreamFacts {
            id: StreamId {
                name: "SORTD_PREADVICE".into(),
                created_ns,
            },
            first_seq,
            last_seq,
        }
    }

    #[test]
    fn the_stream_is_judged_against_the_record_and_the_log() {
        let recorded = facts(100, 0, 0).id;
        let renamed = StreamId {
            name: "OTHER".into(),
            created_ns: 100,
        };
        let cases = [
            // (recorded, facts, last applied, verdict)
            (None, facts(100, 0, 0), 0, StreamVerdict::Continue),
            (
                Some(&recorded),
                facts(100, 1, 50),
                40,
                StreamVerdict::Continue,
            ),
            // Caught up, then purged: first = last + 1, nothing unread is gone.
            (
                Some(&recorded),
                facts(100, 51, 50),
                50,
                StreamVerdict::Continue,
            ),
            // Behind, then purged or aged out: 41..=50 gone unread.
            (
                Some(&recorded),
                facts(100, 51, 50),
                40,
                StreamVerdict::Gap {
                    first: 41,
                    last: 50,
                },
            ),
            (
                Some(&recorded),
                facts(100, 45, 60),
                40,
                StreamVerdict::Gap {
                    first: 41,
                    last: 44,
                },
            ),
            // A fresh node has nothing to miss.
            (None, facts(100, 45, 60), 0, StreamVerdict::Continue),
            // Created anew, whatever its sequences.
            (
                Some(&recorded),
                facts(200, 1, 90),
                40,
                StreamVerdict::Reset(StreamAnomaly::Recreated),
            ),
            (
                Some(&renamed),
                facts(100, 1, 90),
                40,
                StreamVerdict::Reset(StreamAnomaly::Recreated),
            ),
            // No record (a log from before sortd kept one) and the sequence went back.
            (
                None,
                facts(200, 1, 3),
                40,
                StreamVerdict::Reset(StreamAnomaly::Rewound),
            ),
            (
                Some(&recorded),
                facts(100, 1, 3),
                40,
                StreamVerdict::Reset(StreamAnomaly::Recreated),
            ),
        ];
        for (recorded, facts, last, expected) in cases {
            assert_eq!(
                judge_stream(recorded, &facts, last),
                expected,
                "{recorded:?} {facts:?} {last}"
            );
        }
    }

    #[test]
    fn the_stream_id_round_trips_and_refuses_junk() {
        let id = facts(1_764_150_000_123_456_789, 0, 0).id;
        assert_eq!(StreamId::decode(&id.encode()), Some(id));
        for junk in ["", "SORTD_PREADVICE", "SORTD_PREADVICE x", "\n"] {
            assert_eq!(StreamId::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn stage_times_split_publication_to_visible() {
        let received = Instant::now();
        let arrival = Arrival {
            published_ns: 1_000_000_000,
            received_ns: 1_003_000_000,
            received,
        };
        let steps = BlockingSteps {
            started: received + Duration::from_micros(200),
            parse: Duration::from_micros(50),
            visible_ns: 1_010_000_000,
        };
        let applied = Applied {
            timings: crate::plan::preadvice::ApplyTimings {
                log: Duration::from_micros(6_000),
                publish: Duration::from_micros(300),
                sync: Duration::ZERO,
            },
            ..Applied::default()
        };
        let times = StageTimes::of(&arrival, &steps, &applied);
        let expected = [3_000, 200, 50, 6_000, 300, 10_000];
        for (&stage, us) in LatencyStage::TO_VISIBLE.iter().zip(expected) {
            assert_eq!(times.us(stage), us, "{}", stage.name());
        }
        // A broker clock ahead of ours counts as 0, never as a huge value.
        let early = Arrival {
            published_ns: 2_000_000_000,
            ..arrival
        };
        assert_eq!(
            StageTimes::of(&early, &steps, &applied).us(LatencyStage::Total),
            0
        );
    }

    #[test]
    fn the_durable_stages_run_from_publication_to_the_sync() {
        let sync = Duration::from_micros(14_000);
        assert_eq!(
            durable_stage_times(1_000_000_000, 1_025_000_000, sync),
            [14_000, 25_000]
        );
        assert_eq!(
            durable_stage_times(2_000_000_000, 1_000_000_000, sync)[1],
            0
        );
        assert_eq!(LatencyStage::TO_VISIBLE.last(), Some(&LatencyStage::Total));
        assert_eq!(
            LatencyStage::TO_DURABLE,
            [LatencyStage::Sync, LatencyStage::Durable]
        );
    }

    #[test]
    fn deliveries_at_or_below_the_durable_log_are_redeliveries() {
        let log = |applied, durable| LogSeqs { applied, durable };
        assert_eq!(classify(5, log(5, 5)), Delivery::Redelivery);
        assert_eq!(classify(4, log(5, 5)), Delivery::Redelivery);
        assert_eq!(classify(6, log(5, 5)), Delivery::Apply(6));
        assert_eq!(classify(1, log(0, 0)), Delivery::Apply(1));
        // Applied, but its sync failed: never acknowledged before a sync.
        assert_eq!(classify(5, log(5, 3)), Delivery::RedeliveryNotDurable);
        assert_eq!(classify(4, log(5, 3)), Delivery::RedeliveryNotDurable);
        assert_eq!(classify(3, log(5, 3)), Delivery::Redelivery);
        assert_eq!(classify(6, log(5, 3)), Delivery::Apply(6));
        assert!(!Delivery::Redelivery.needs_sync());
        assert!(Delivery::RedeliveryNotDurable.needs_sync());
        assert!(Delivery::Apply(6).needs_sync());
    }
}
