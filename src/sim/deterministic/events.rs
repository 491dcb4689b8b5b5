//! The sort-event side of a simulated run: the daemon's own journal hook
//! ([`EgressJournal`] around a real [`crate::events::journal::JournalWriter`], writing
//! real segment files into the seed's temporary directory, its group commit run by this
//! driver instead of a thread) and the exporter's own sans-IO core ([`ExportCore`]
//! reading through the real [`JournalSource`], its cursor the real [`ExportCursor`])
//! publishing into [`StreamModel`], a deterministic double of a JetStream stream.
//!
//! It also plays sortd's death: a crash (`kill -9`: the files keep what was written, the
//! unwritten batch and everything in memory is gone) or a power loss (each segment keeps
//! what was fsynced plus a random part of what was not, cut at a random byte, each
//! segment on its own: a later one may keep bytes an earlier one lost). The
//! checks after each are the journal's promises; the check at the end of the run is the
//! export's. It holds no journaling or exporting logic of its own.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::events::journal::{
    ExportCursor, JournalCounters, JournalReader, JournalStats, JournalWriter, RetentionPolicy,
    WriterConfig, list_segments,
};
use crate::events::record::{Action, Event, RecordDecoded, decode};
use crate::export::core::{CoreSettings, ExportCore, StreamEnd};
use crate::export::exporter::message_id;
use crate::export::ledger::Bounds;
use crate::export::{ExportCounters, JournalSource};
use crate::net::egress_events::EgressJournal;

use super::PlantedBug;
use super::check::{Checker, Promise, Violation};

/// The subject of the simulated sorter.
const SUBJECT: &str = "sortd.events.sim.s1";
/// A tmpfs for the journals, when the machine has one.
const SHM_DIR: &str = "/dev/shm";
/// The simulated sorter's id.
const SORTER: &str = "s1";

/// A (scanner id, parcel id, PLC sequence) of a SORT.
pub(super) type SortKey = (u32, u64, u32);

/// Per-seed settings of the event side.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventSettings {
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
    pub core: CoreSettings,
    pub duplicate_window: Duration,
    pub nats_delay_ms_max: u64,
    pub nats_loss_per_mille: u32,
    pub stream_restart_per_mille: u32,
    pub reconnect_ms_max: u64,
}

impl EventSettings {
    pub fn draw(rng: &mut fastrand::Rng) -> EventSettings {
        EventSettings {
            fsync_interval: Duration::from_millis(rng.u64(2..=200)),
            segment_bytes: [2048, 8192, 1 << 20][rng.usize(0..3)],
            core: CoreSettings {
                message_records_max: rng.usize(1..=64),
                message_bytes_max: 512 * 1024,
                publish_window_max: rng.usize(1..=8),
                cursor_store_interval: Duration::from_millis(rng.u64(0..=500)),
            },
            duplicate_window: Duration::from_millis(rng.u64(20..=3000)),
            nats_delay_ms_max: rng.u64(0..=60),
            nats_loss_per_mille: rng.u32(0..=6),
            stream_restart_per_mille: rng.u32(0..=2),
            reconnect_ms_max: rng.u64(5..=500),
        }
    }
}

/// Counts the event side reports.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct EventCounts {
    pub crashes: u64,
    pub power_losses: u64,
    pub events_journaled: u64,
    pub events_in_stream: u64,
    pub messages_stored: u64,
    pub duplicates_refused: u64,
    pub guards_refused: u64,
    pub nats_losses: u64,
    pub torn_tails_cut: u64,
    pub segments_set_aside: u64,
}

/// One message the stream stored.
#[derive(Debug, Clone)]
struct Stored {
    stream_seq: u64,
    subject: &'static str,
    bounds: Bounds,
    payload: Vec<u8>,
}

/// What the stream answers to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PubAck {
    Stored,
    Duplicate,
    WrongLastSequence,
}

/// A JetStream stream, deterministically: messages per subject with stream sequences,
/// `Nats-Msg-Id` de-duplication within a window of virtual time, the expected last
/// subject sequence honoured, and a server that restarts (keeping what it stored).
#[derive(Debug)]
pub(super) struct StreamModel {
    messages: Vec<Stored>,
    ids: HashMap<String, Instant>,
    window: Duration,
    /// The server is down until then.
    down_until: Option<Instant>,
}

impl StreamModel {
    fn new(window: Duration) -> StreamModel {
        StreamModel {
            messages: Vec::new(),
            ids: HashMap::new(),
            window,
            down_until: None,
        }
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|until| now >= until)
    }

    fn end(&self, subject: &str) -> StreamEnd {
        self.messages
            .iter()
            .rev()
            .find(|stored| stored.subject == subject)
            .map_or(
                StreamEnd {
                    last_seq: None,
                    subject_seq: 0,
                },
                |stored| StreamEnd {
                    last_seq: Some(stored.bounds.last_seq),
                    subject_seq: stored.stream_seq,
                },
            )
    }

    fn publish(&mut self, now: Instant, message: &Publish) -> PubAck {
        let window = self.window;
        self.ids
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        if self.ids.contains_key(&message.id) {
            return PubAck::Duplicate;
        }
        if let Some(expected) = message.guard {
            if self.end(message.subject).subject_seq != expected {
                return PubAck::WrongLastSequence;
            }
        }
        self.ids.insert(message.id.clone(), now);
        let stream_seq = self.messages.len() as u64 + 1;
        self.messages.push(Stored {
            stream_seq,
            subject: message.subject,
            bounds: message.bounds,
            payload: message.payload.clone(),
        });
        PubAck::Stored
    }
}

/// A message on its way to the stream.
#[derive(Debug, Clone)]
struct Publish {
    due: Instant,
    subject: &'static str,
    id: String,
    bounds: Bounds,
    guard: Option<u64>,
    payload: Vec<u8>,
}

/// The exporter's connection: publishes in flight to the stream, acks on their way back.
#[derive(Debug, Default)]
struct Connection {
    to_stream: VecDeque<Publish>,
    acks: VecDeque<(Instant, Bounds, PubAck)>,
}

/// Where in a step sortd may die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrashPoint {
    /// Before the turn's journal write and flush to the PLC.
    BeforeFlush,
    /// Between the two (in the daemon's order: written, not yet flushed).
    MidFlush,
    /// After both.
    AfterFlush,
    /// After the group commit.
    AfterFsync,
    /// After the exporter published, before acknowledgements are handled.
    AfterPublish,
    /// After acknowledgements were handled, before the cursor is stored.
    AfterAck,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 6] = [
        CrashPoint::BeforeFlush,
        CrashPoint::MidFlush,
        CrashPoint::AfterFlush,
        CrashPoint::AfterFsync,
        CrashPoint::AfterPublish,
        CrashPoint::AfterAck,
    ];
}

/// The running sortd's event parts (gone at a crash).
struct Running {
    journal: EgressJournal,
    stats: Arc<JournalStats>,
    source: JournalSource,
    cursor: ExportCursor,
    core: ExportCore,
    connection: Option<Connection>,
    reconnect_at: Instant,
    last_sync: Instant,
    /// SORTs that left for the PLC in this life.
    left: Vec<SortKey>,
}

/// The event side of a run.
pub(super) struct EventSide {
    dir: TempDir,
    settings: EventSettings,
    bug: Option<PlantedBug>,
    rng: fastrand::Rng,
    stream: StreamModel,
    running: Option<Running>,
    /// Segment bytes known fsynced, by path.
    durable_bytes: HashMap<PathBuf, u64>,
    /// Records that must never change: kept by a recovery, or stored in the stream.
    committed: BTreeMap<u64, u64>,
    pub counts: EventCounts,
    payload: Vec<u8>,
}

impl std::fmt::Debug for EventSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSide")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Splits concatenated records into (sequence, bytes).
fn split_records(mut bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut records = Vec::new();
    while let RecordDecoded::Complete { record, consumed } = decode(bytes) {
        let (whole, rest) = bytes.split_at(consumed);
        records.push((record.seq, whole));
        bytes = rest;
    }
    records
}

/// Every record the journal in `dir` holds, read with the real reader.
fn read_journal(dir: &Path) -> Result<Vec<u8>, String> {
    let mut reader = JournalReader::open(dir).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let batch = reader
            .read_batch(&mut out, usize::MAX, usize::MAX)
            .map_err(|e| e.to_string())?;
        if batch.records == 0 {
            return Ok(out);
        }
    }
}

impl EventSide {
    pub fn new(
        settings: EventSettings,
        bug: Option<PlantedBug>,
        rng: fastrand::Rng,
        now: Instant,
    ) -> Result<EventSide, String> {
        // In memory where there is a tmpfs: the simulation models durability itself, and
        // a real disk's fsync would make every group commit cost milliseconds.
        let mut builder = tempfile::Builder::new();
        builder.prefix("sortd-sim-journal");
        let shm = Path::new(SHM_DIR);
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm).or_else(|_| builder.tempdir())
        } else {
            builder.tempdir()
        }
        .map_err(|e| format!("journal dir: {e}"))?;
        let mut side = EventSide {
            dir,
            settings,
            bug,
            rng,
            stream: StreamModel::new(settings.duplicate_window),
            running: None,
            durable_bytes: HashMap::new(),
            committed: BTreeMap::new(),
            counts: EventCounts::default(),
            payload: Vec::new(),
        };
        side.start(now)?;
        Ok(side)
    }

    /// sortd starts: opens the journal (recovering it), the source and the exporter.
    fn start(&mut self, now: Instant) -> Result<(), String> {
        let mut config = WriterConfig::new(self.dir.path(), "sim", SORTER);
        config.segment_bytes = self.settings.segment_bytes;
        config.fsync_interval = self.settings.fsync_interval;
        config.sync_thread = false;
        config.batch_bytes_max = 64 * 1024;
        config.retention = RetentionPolicy {
            bytes_max: u64::MAX,
            age_max: Duration::from_secs(365 * 24 * 3600),
            cursor_required: true,
        };
        let writer = JournalWriter::open(config).map_err(|e| format!("journal open: {e}"))?;
        let stats = writer.stats();
        let recovered = stats.snapshot();
        self.counts.torn_tails_cut += recovered.torn_tails_cut;
        self.counts.segments_set_aside += recovered.segments_set_aside;
        let reader = JournalReader::open(self.dir.path()).map_err(|e| e.to_string())?;
        let cursor = ExportCursor::new(self.dir.path());
        let mut core = ExportCore::new(self.settings.core, Arc::new(ExportCounters::default()));
        core.start(cursor.load().ok(), now);
        // Open recovered the journal and made it durable.
        self.record_durable();
        self.running = Some(Running {
            journal: EgressJournal::new(writer),
            source: JournalSource::new(reader, Arc::clone(&stats)),
            stats,
            cursor,
            core,
            connection: None,
            reconnect_at: now,
            last_sync: now,
            left: Vec::new(),
        });
        Ok(())
    }

    /// The journal hook, for the egress observer.
    pub fn journal(&mut self) -> Option<&mut EgressJournal> {
        self.running.as_mut().map(|running| &mut running.journal)
    }

    /// The turn's journal write (before the SORTs leave).
    pub fn write(&mut self) {
        if let Some(running) = self.running.as_mut() {
            running.journal.write();
        }
    }

    /// SORT telegrams left for the PLC.
    pub fn sorts_left(&mut self, keys: impl IntoIterator<Item = SortKey>) {
        if let Some(running) = self.running.as_mut() {
            running.left.extend(keys);
        }
    }

    /// The group commit, every fsync interval.
    pub fn fsync_turn(&mut self, now: Instant) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if now.saturating_duration_since(running.last_sync) < self.settings.fsync_interval {
            return;
        }
        running.last_sync = now;
        if running.journal.writer_mut().sync().is_ok() {
            self.record_durable();
        }
    }

    /// Every segment is durable at its size now.
    fn record_durable(&mut self) {
        if let Ok(segments) = list_segments(self.dir.path()) {
            self.durable_bytes = segments
                .into_iter()
                .map(|segment| (segment.path, segment.bytes))
                .collect();
        }
    }

    /// The exporter's turn, up to `stop_at` (a crash point inside it).
    pub fn export_turn(
        &mut self,
        now: Instant,
        stop_at: Option<CrashPoint>,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        let rng = &mut self.rng;
        let stream = &mut self.stream;
        // Faults: the connection drops, the server restarts.
        if running.connection.is_some() {
            let restart = rng.u32(0..1000) < self.settings.stream_restart_per_mille;
            if restart {
                stream.down_until = Some(now + Duration::from_millis(rng.u64(10..=3000)));
            }
            if restart || !stream.is_up(now) || rng.u32(0..1000) < self.settings.nats_loss_per_mille
            {
                self.counts.nats_losses += 1;
                lose_connection(running, stream, rng, now, self.settings.reconnect_ms_max);
            }
        }
        if running.connection.is_none() {
            if now < running.reconnect_at || !stream.is_up(now) {
                return Ok(());
            }
            let mut end = stream.end(SUBJECT);
            if self.bug == Some(PlantedBug::ExportResumesFromCursor) {
                // The double's bug: the stream's last id is not asked for.
                end.last_seq = None;
            }
            if let Err(error) = running.core.connected(end, &mut running.source) {
                return Err(checker.violation(
                    Promise::ExportExactlyOnce,
                    format!("the exporter could not seek the journal: {error}"),
                ));
            }
            if end.last_seq.is_some() {
                store_cursor(running, now, true);
            }
            running.connection = Some(Connection::default());
            checker.trace(70, &[end.last_seq.unwrap_or(0), end.subject_seq]);
        }
        // Publish up to the window.
        let reconnect_ms_max = self.settings.reconnect_ms_max;
        let Some(connection) = running.connection.as_mut() else {
            return Ok(());
        };
        while running.core.in_flight() < running.core.window() {
            let next = running
                .core
                .next_message(&mut running.source, &mut self.payload);
            let outgoing = match next {
                Ok(Some(outgoing)) => outgoing,
                Ok(None) => break,
                Err(error) => {
                    return Err(checker.violation(
                        Promise::ExportExactlyOnce,
                        format!("the exporter could not read the journal: {error}"),
                    ));
                }
            };
            let bounds = outgoing.bounds;
            let due = connection
                .to_stream
                .back()
                .map_or(now, |last| last.due.max(now))
                + Duration::from_millis(rng.u64(0..=self.settings.nats_delay_ms_max));
            connection.to_stream.push_back(Publish {
                due,
                subject: SUBJECT,
                id: message_id(SORTER, bounds.first_seq, bounds.last_seq),
                bounds,
                guard: outgoing.guard,
                payload: std::mem::take(&mut self.payload),
            });
            running.core.published(bounds);
            checker.trace(71, &[bounds.first_seq, bounds.last_seq]);
        }
        if stop_at == Some(CrashPoint::AfterPublish) {
            return Ok(());
        }
        // The stream takes what is due, in order; its acks come back in order.
        while connection.to_stream.front().is_some_and(|p| p.due <= now) {
            let Some(message) = connection.to_stream.pop_front() else {
                break;
            };
            let ack = stream.publish(now, &message);
            self.counts.duplicates_refused += u64::from(ack == PubAck::Duplicate);
            let back = now + Duration::from_millis(rng.u64(0..=self.settings.nats_delay_ms_max));
            connection.acks.push_back((back, message.bounds, ack));
        }
        let mut refused = false;
        while connection
            .acks
            .front()
            .is_some_and(|(due, _, _)| *due <= now)
        {
            let Some((_, bounds, ack)) = connection.acks.pop_front() else {
                break;
            };
            checker.trace(72, &[bounds.first_seq, ack as u64]);
            if ack == PubAck::WrongLastSequence {
                refused = true;
                break;
            }
            running.core.on_ack(bounds, ack == PubAck::Duplicate);
        }
        if refused {
            self.counts.guards_refused += 1;
            lose_connection(running, stream, rng, now, reconnect_ms_max);
            return Ok(());
        }
        if stop_at == Some(CrashPoint::AfterAck) {
            return Ok(());
        }
        store_cursor(running, now, false);
        Ok(())
    }

    /// Whether the stream holds everything the journal does and nothing is in flight.
    pub fn export_settled(&self) -> bool {
        self.running.as_ref().is_some_and(|running| {
            let written = running.source_written();
            running.connection.as_ref().is_some_and(|connection| {
                connection.to_stream.is_empty() && connection.acks.is_empty()
            }) && running.core.in_flight() == 0
                && running.core.acked_seq() >= written
        })
    }

    /// Heals the NATS side for the final drain.
    pub fn heal(&mut self) {
        self.settings.nats_loss_per_mille = 0;
        self.settings.stream_restart_per_mille = 0;
        self.stream.down_until = None;
    }

    /// sortd dies at `now` (`power_loss`: so does the machine), is checked, and starts
    /// again.
    pub fn crash(
        &mut self,
        now: Instant,
        power_loss: bool,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        self.counts.crashes += 1;
        let stats = running.journal_stats();
        let (written_seq, durable_seq) = (stats.written_seq, stats.durable_seq);
        let Running {
            journal,
            connection,
            left,
            ..
        } = running;
        journal.crash();
        // What the kernel still sends of the dead connection: a prefix of what was on
        // its way to the stream.
        if let Some(mut connection) = connection {
            let delivered = self.rng.usize(0..=connection.to_stream.len());
            for message in connection.to_stream.drain(..).take(delivered) {
                self.stream.publish(now, &message);
            }
        }
        let before = read_journal(self.dir.path())
            .map_err(|detail| checker.violation(Promise::JournalDurable, detail))?;
        let before_records = split_records(&before);
        // Every SORT that left was journaled before it did.
        let journaled: HashSet<SortKey> = before_records
            .iter()
            .filter_map(|(_, bytes)| match decode(bytes) {
                RecordDecoded::Complete { record, .. } => match record.event {
                    Event::Decision(d) if d.action == Action::Sent => {
                        Some((d.scanner_id, d.parcel_id, d.plc_seq))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        if let Some(missing) = left.iter().find(|key| !journaled.contains(key)) {
            return Err(checker.violation(
                Promise::JournalDurable,
                format!(
                    "SORT {missing:?} left for the PLC but its decision event is not in the \
                     journal at the crash"
                ),
            ));
        }
        if before_records.last().map_or(0, |(seq, _)| *seq) < written_seq {
            return Err(checker.violation(
                Promise::JournalDurable,
                format!("events up to {written_seq} were written, the journal ends earlier"),
            ));
        }
        let kept_seq = if power_loss {
            self.counts.power_losses += 1;
            self.lose_power();
            durable_seq
        } else {
            written_seq
        };
        checker.trace(73, &[u64::from(power_loss), written_seq, durable_seq]);
        self.start(now).map_err(|detail| {
            checker.violation(Promise::JournalDurable, format!("restart: {detail}"))
        })?;
        let after = read_journal(self.dir.path()).map_err(|detail| {
            checker.violation(Promise::JournalDurable, format!("after restart: {detail}"))
        })?;
        let after_records = split_records(&after);
        self.check_journal(&after_records, kept_seq, checker)?;
        for (seq, bytes) in &after_records {
            self.committed.insert(*seq, hash(bytes));
        }
        Ok(())
    }

    /// Power loss: each segment keeps its fsynced bytes; of what was not fsynced, the
    /// kernel wrote back a random prefix per file, each file on its own (the page cache
    /// of a later segment may reach the disk before an earlier one's: a journal that
    /// rolled between two fsyncs can lose an earlier segment's last records and keep a
    /// later segment's). A segment that lost anything is cut at a random byte after its
    /// fsynced bytes (a torn tail); one with nothing fsynced may lose its directory
    /// entry too.
    fn lose_power(&mut self) {
        let Ok(segments) = list_segments(self.dir.path()) else {
            return;
        };
        for segment in segments {
            let durable = self.durable_bytes.get(&segment.path).copied().unwrap_or(0);
            if durable >= segment.bytes {
                continue;
            }
            let keep = self.rng.u64(durable..=segment.bytes);
            if keep == segment.bytes {
                continue;
            }
            if keep == 0 && self.rng.bool() {
                // Its directory entry never reached the disk either.
                let _ = std::fs::remove_file(&segment.path);
            } else if let Ok(file) = OpenOptions::new().write(true).open(&segment.path) {
                let _ = file.set_len(keep);
            }
        }
    }

    /// The journal after a restart (or at the end): gap-free from 1, every record up to
    /// `kept_seq` there, no committed record changed.
    fn check_journal(
        &self,
        records: &[(u64, &[u8])],
        kept_seq: u64,
        checker: &Checker,
    ) -> Result<(), Violation> {
        for (index, (seq, bytes)) in records.iter().enumerate() {
            if *seq != index as u64 + 1 {
                return Err(checker.violation(
                    Promise::JournalDurable,
                    format!("journal record {index} has sequence {seq}: a gap"),
                ));
            }
            if let Some(old) = self.committed.get(seq) {
                if *old != hash(bytes) {
                    return Err(checker.violation(
                        Promise::JournalDurable,
                        format!("sequence {seq} reused for a different event"),
                    ));
                }
            }
        }
        let last = records.last().map_or(0, |(seq, _)| *seq);
        if last < kept_seq {
            return Err(checker.violation(
                Promise::JournalDurable,
                format!("the journal ends at {last}; {kept_seq} should have survived"),
            ));
        }
        Ok(())
    }

    /// At the end of the run: the journal is whole, and the stream holds every
    /// journaled event exactly once, in order, no gap.
    pub fn check_final(&mut self, checker: &mut Checker) -> Result<(), Violation> {
        if let Some(running) = self.running.as_mut() {
            running.journal.write();
        }
        let journal = read_journal(self.dir.path())
            .map_err(|detail| checker.violation(Promise::JournalDurable, detail))?;
        let records = split_records(&journal);
        self.check_journal(&records, 0, checker)?;
        let stats = self.running.as_ref().map(Running::journal_stats);
        self.counts.events_journaled = records.len() as u64;
        if let Some(stats) = stats {
            if stats.written_seq != records.len() as u64 {
                return Err(checker.violation(
                    Promise::JournalDurable,
                    format!(
                        "the writer wrote up to {}, the journal holds {}",
                        stats.written_seq,
                        records.len()
                    ),
                ));
            }
        }
        let mut next_seq = 1u64;
        let mut previous: Option<Bounds> = None;
        for stored in self.stream.messages.iter().filter(|m| m.subject == SUBJECT) {
            self.counts.messages_stored += 1;
            let violation = |detail: String| {
                checker.violation(
                    Promise::ExportExactlyOnce,
                    format!(
                        "stream message {} ({:?}, after {previous:?}): {detail}",
                        stored.stream_seq, stored.bounds
                    ),
                )
            };
            let in_message = split_records(&stored.payload);
            if stored.bounds.first_seq != next_seq {
                return Err(violation(format!("expected event {next_seq} next")));
            }
            for (seq, bytes) in &in_message {
                if *seq != next_seq {
                    return Err(violation(format!("holds event {seq}, expected {next_seq}")));
                }
                let journaled = usize::try_from(seq - 1)
                    .ok()
                    .and_then(|index| records.get(index));
                match journaled {
                    Some((_, journal_bytes)) if journal_bytes == bytes => {}
                    Some(_) => {
                        return Err(violation(format!(
                            "event {seq} differs from the journal's event {seq}"
                        )));
                    }
                    None => return Err(violation(format!("event {seq} is not in the journal"))),
                }
                next_seq += 1;
            }
            if next_seq - 1 != stored.bounds.last_seq {
                return Err(violation("its records do not match its bounds".into()));
            }
            previous = Some(stored.bounds);
            self.counts.events_in_stream += in_message.len() as u64;
        }
        if next_seq - 1 != records.len() as u64 {
            return Err(checker.violation(
                Promise::ExportExactlyOnce,
                format!(
                    "the stream holds events 1..={}, the journal 1..={}",
                    next_seq - 1,
                    records.len()
                ),
            ));
        }
        Ok(())
    }

    /// Closes the writer at the end of the run.
    pub fn close(mut self) {
        if let Some(running) = self.running.take() {
            running.journal.close();
        }
    }
}

impl Running {
    fn journal_stats(&self) -> JournalCounters {
        self.stats.snapshot()
    }

    fn source_written(&self) -> u64 {
        self.stats.snapshot().written_seq
    }
}

/// The exporter's connection is lost: a prefix of what was on its way reaches the
/// stream, the acks are gone; the exporter reconnects after a while.
fn lose_connection(
    running: &mut Running,
    stream: &mut StreamModel,
    rng: &mut fastrand::Rng,
    now: Instant,
    reconnect_ms_max: u64,
) {
    if let Some(mut connection) = running.connection.take() {
        if stream.is_up(now) {
            let delivered = rng.usize(0..=connection.to_stream.len());
            for message in connection.to_stream.drain(..).take(delivered) {
                stream.publish(now, &message);
            }
        }
    }
    running.core.connection_lost();
    running.reconnect_at = now + Duration::from_millis(rng.u64(1..=reconnect_ms_max));
}

fn store_cursor(running: &mut Running, now: Instant, force: bool) {
    if let Some(acked_seq) = running.core.cursor_due(now, force) {
        if running.cursor.store(acked_seq).is_ok() {
            running.core.cursor_stored(acked_seq, now);
        }
    }
}
