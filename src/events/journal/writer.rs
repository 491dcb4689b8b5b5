//! The journal writer: owned by the PLC (egress) thread, it encodes events into an
//! in-memory batch ([`JournalWriter::append`]) and writes the batch to the page cache
//! with one `write` per turn, or earlier when the batch is full (64 KiB by default, small
//! enough to stay in the cache) ([`JournalWriter::write_batch`]); a separate thread fsyncs
//! every `fsync_interval` (group commit) and runs retention.
//!
//! The promises: an event whose batch was written survives `kill -9` (the page cache
//! belongs to the kernel); one whose batch was fsynced survives power loss, so power loss
//! loses at most one fsync interval. The caller writes the batch before the SORTs it
//! describes leave for the PLC. Nothing here blocks for long or retries: a failed write
//! drops the batch's unwritten events, counts them by [`LossReason`], logs once per
//! interval, and the next batch tries again (sorting goes on). Sequences stay gap-free:
//! dropped events give their sequence numbers back, so a lost event never leaves a hole.
//! On open, the last segment's torn or corrupt tail is cut; a segment with an unreadable
//! header is set aside; segments after a power loss's gap across a roll are set aside
//! (`power_gap.rs`); none of it stops start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::super::record::{self, Event, OUTCOME_BYTES, RECORD_BYTES_MAX};
use super::super::segment::{self, SegmentHeader, check_id, decode_header};
use super::{
    ExportCursor, JournalError, JournalStats, LossReason, RetentionPolicy, list_segments,
    power_gap, read_file, retention, segment_name, sync_dir,
};
use crate::util::rate_limit::RateLimit;

/// How often the fsync thread runs retention.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The journal directory (created if missing).
    pub dir: PathBuf,
    /// This hub's id (segment headers, NATS subject).
    pub hub_id: String,
    /// This sorter's id (segment headers, NATS subject, event ids).
    pub sorter_id: String,
    /// Start a new segment when the current one would grow past this.
    pub segment_bytes: u64,
    /// What is kept.
    pub retention: RetentionPolicy,
    /// Group commit period; power loss loses at most this much.
    pub fsync_interval: Duration,
    /// In-memory batch capacity, allocated at open; a full batch is written early (a
    /// busy turn then writes more than once, each write before the turn's SORTs leave).
    pub batch_bytes_max: usize,
    /// At most one warning per kind of failure in this period.
    pub warning_interval: Duration,
    /// Never hand out a sequence below this (e.g. the last event id the broker holds,
    /// should the journal have lost its tail in a power loss after the export).
    pub next_seq_min: u64,
    /// Start the group-commit thread (the daemon). Without it the owner calls
    /// [`JournalWriter::sync`] itself (the deterministic simulator, which runs no
    /// threads) and retention does not run.
    pub sync_thread: bool,
}

impl WriterConfig {
    /// Defaults for everything but the directory and ids.
    pub fn new(dir: &Path, hub_id: &str, sorter_id: &str) -> WriterConfig {
        WriterConfig {
            dir: dir.to_path_buf(),
            hub_id: hub_id.into(),
            sorter_id: sorter_id.into(),
            segment_bytes: 64 << 20,
            retention: RetentionPolicy {
                bytes_max: 4 << 30,
                age_max: Duration::from_secs(7 * 24 * 3600),
                cursor_required: true,
            },
            fsync_interval: Duration::from_millis(100),
            // Small enough to stay in the PLC thread's L2 cache between the encoding and
            // the kernel's copy into the page cache (a 1 MiB batch did not, flat out).
            batch_bytes_max: 64 << 10,
            warning_interval: Duration::from_secs(10),
            next_seq_min: 1,
            sync_thread: true,
        }
    }
}

/// What one [`JournalWriter::write_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Sequence of the batch's first event (0 for an empty batch).
    pub first_seq: u64,
    /// Events now in the page cache: `first_seq ..first_seq + written`.
    pub written: u64,
    /// Events dropped (counted by reason in the stats); their sequences are reused.
    pub lost: u64,
}

/// The segment being written.
#[derive(Debug)]
struct OpenSegment {
    file: Arc<File>,
    bytes: u64,
    header_bytes: u64,
}

/// What the fsync thread must make durable.
#[derive(Debug, Default)]
struct SyncState {
    current: Option<Arc<File>>,
    sealed: Vec<Arc<File>>,
    dir_dirty: bool,
    stop: bool,
}

#[derive(Debug)]
struct SyncShared {
    state: Mutex<SyncState>,
    wake: Condvar,
}

impl SyncShared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Appends events to the journal. See the module docs for its promises.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    hub_id: String,
    sorter_id: String,
    segment_bytes: u64,
    batch: Vec<u8>,
    batch_bytes_max: usize,
    batch_first_seq: u64,
    batch_records: u64,
    next_seq: u64,
    segment: Option<OpenSegment>,
    must_roll: bool,
    stats: Arc<JournalStats>,
    sync: Arc<SyncShared>,
    sync_thread: Option<JoinHandle<()>>,
    warn: RateLimit,
    header: Vec<u8>,
}

impl JournalWriter {
    /// Opens (or creates) the journal in `config.dir`: recovers the last segment, then
    /// starts the fsync thread.
    pub fn open(config: WriterConfig) -> Result<JournalWriter, JournalError> {
        if check_id(&config.hub_id).is_err() || check_id(&config.sorter_id).is_err() {
            return Err(JournalError::BadConfig {
                message: "hub and sorter ids must be 1 to 64 bytes of A-Z a-z 0-9 _ -",
            });
        }
        if config.batch_bytes_max < 2 * RECORD_BYTES_MAX {
            return Err(JournalError::BadConfig {
                message: "batch must hold at least two of the largest records",
            });
        }
        crate::util::fs::create_private_dir(&config.dir)
            .map_err(|error| JournalError::io("create dir", &config.dir, error))?;
        let stats = Arc::new(JournalStats::default());
        let recovered = recover(&config, &stats)?;
        let acked = match ExportCursor::new(&config.dir).load() {
            Ok(acked) => acked,
            Err(error) => {
                tracing::warn!(%error, "events: cursor unreadable; sequences continue from the journal");
                0
            }
        };
        let next_seq = recovered
            .next_seq
            .max(acked.saturating_add(1))
            .max(config.next_seq_min)
            .max(1);
        let mut must_roll = false;
        let segment = match recovered.segment {
            Some((path, expected_next, header_bytes)) if expected_next == next_seq => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|error| JournalError::io("open segment", &path, error))?;
                let bytes = file
                    .metadata()
                    .map_err(|error| JournalError::io("stat", &path, error))?
                    .len();
                Some(OpenSegment {
                    file: Arc::new(file),
                    bytes,
                    header_bytes,
                })
            }
            Some(_) => {
                must_roll = true;
                None
            }
            None => None,
        };
        let segments = list_segments(&config.dir)?;
        // What a killed process left may be in the page cache only: make it durable
        // before the stats call it so (the exporter ships only durable events). Clean
        // files cost nothing to fsync.
        for segment in &segments {
            File::open(&segment.path)
                .and_then(|file| file.sync_all())
                .map_err(|error| JournalError::io("fsync segment", &segment.path, error))?;
        }
        sync_dir(&config.dir)?;
        stats.set_written_seq(next_seq - 1);
        stats.set_durable_seq(next_seq - 1);
        stats.set_segments(
            segments.len() as u64,
            segments.iter().map(|s| s.bytes).sum(),
        );
        let sync = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                current: segment.as_ref().map(|s| Arc::clone(&s.file)),
                ..SyncState::default()
            }),
            wake: Condvar::new(),
        });
        let sync_thread = if !config.sync_thread {
            None
        } else {
            let sync = Arc::clone(&sync);
            let stats = Arc::clone(&stats);
            let dir = config.dir.clone();
            let (interval, policy, warning) = (
                config.fsync_interval,
                config.retention,
                config.warning_interval,
            );
            std::thread::Builder::new()
                .name("sortd-journal-fsync".into())
                .spawn(move || fsync_loop(&sync, &stats, &dir, interval, policy, warning))
                .map(Some)
                .map_err(|error| JournalError::io("spawn fsync thread", &config.dir, error))?
        };
        Ok(JournalWriter {
            dir: config.dir,
            hub_id: config.hub_id,
            sorter_id: config.sorter_id,
            segment_bytes: config.segment_bytes,
            batch: Vec::with_capacity(config.batch_bytes_max),
            batch_bytes_max: config.batch_bytes_max,
            batch_first_seq: next_seq,
            batch_records: 0,
            next_seq,
            segment,
            must_roll,
            stats,
            sync,
            sync_thread,
            warn: RateLimit::new(config.warning_interval),
            header: Vec::with_capacity(segment::SEGMENT_HEADER_BYTES_MAX),
        })
    }

    /// The shared counters (for metrics).
    pub fn stats(&self) -> Arc<JournalStats> {
        Arc::clone(&self.stats)
    }

    /// The sequence the next appended event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events in the batch, not yet written.
    pub fn pending(&self) -> u64 {
        self.batch_records
    }

    /// Encodes `event` into the batch with the next sequence and returns that sequence,
    /// which becomes final when [`JournalWriter::write_batch`] reports it written. A full
    /// batch is written first. An event the format cannot hold is counted as lost
    /// ([`LossReason::InvalidEvent`]) and gets no sequence.
    pub fn append(&mut self, event: &Event<'_>) -> Option<u64> {
        if self.batch.len() + RECORD_BYTES_MAX > self.batch_bytes_max {
            self.write_batch();
        }
        let seq = self.next_seq;
        match record::encode(seq, event, &mut self.batch) {
            Ok(_) => {
                if self.batch_records == 0 {
                    self.batch_first_seq = seq;
                }
                self.batch_records += 1;
                self.next_seq += 1;
                Some(seq)
            }
            Err(error) => {
                self.stats.add_lost(LossReason::InvalidEvent, 1);
                if let Some(held_back) = self.warn.allow(Instant::now()) {
                    tracing::warn!(%error, held_back, "events: event not journaled: does not fit the record");
                }
                None
            }
        }
    }

    /// Writes the batch to the current segment (rolling to a new one first if it would
    /// grow past the segment size) with one `write`; never retries. Events that did not
    /// reach the page cache are dropped and counted, and their sequences reused.
    pub fn write_batch(&mut self) -> BatchOutcome {
        if self.batch_records == 0 {
            return BatchOutcome::default();
        }
        let first_seq = self.batch_first_seq;
        let records = self.batch_records;
        let batch_bytes = self.batch.len() as u64;
        let roll = match &self.segment {
            None => true,
            Some(segment) => {
                self.must_roll
                    || (segment.bytes > segment.header_bytes
                        && segment.bytes + batch_bytes > self.segment_bytes)
            }
        };
        if roll {
            if let Err(error) = self.roll(first_seq) {
                return self.drop_batch(0, 0, &error, "create segment");
            }
        }
        let Some(segment) = self.segment.as_mut() else {
            return self.drop_batch(0, 0, &io::Error::other("no segment"), "write");
        };
        let mut written = 0usize;
        let failure = loop {
            match (&*segment.file).write(self.batch.get(written..).unwrap_or_default()) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(bytes) => {
                    written += bytes;
                    if written >= self.batch.len() {
                        break None;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Some(error),
            }
        };
        match failure {
            None => {
                segment.bytes += batch_bytes;
                self.stats
                    .add_journaled(records, batch_bytes, first_seq + records - 1);
                self.batch.clear();
                self.batch_records = 0;
                BatchOutcome {
                    first_seq,
                    written: records,
                    lost: 0,
                }
            }
            Some(error) => {
                // Keep the records that made it whole; cut the torn one.
                let (kept_records, kept_bytes) = whole_records(&self.batch, written);
                if written > kept_bytes {
                    let cut_at = segment.bytes + kept_bytes as u64;
                    if segment.file.set_len(cut_at).is_err() {
                        // The torn bytes stay; readers skip them. Write on in a new segment.
                        self.must_roll = true;
                    }
                }
                segment.bytes += kept_bytes as u64;
                self.drop_batch(kept_records, kept_bytes, &error, "write")
            }
        }
    }

    /// Counts the batch's unwritten events as lost, gives their sequences back, logs.
    fn drop_batch(
        &mut self,
        kept_records: u64,
        kept_bytes: usize,
        error: &io::Error,
        op: &'static str,
    ) -> BatchOutcome {
        let first_seq = self.batch_first_seq;
        let lost = self.batch_records - kept_records;
        if kept_records > 0 {
            self.stats.add_journaled(
                kept_records,
                kept_bytes as u64,
                first_seq + kept_records - 1,
            );
        }
        let reason = LossReason::of(error);
        self.stats.add_lost(reason, lost);
        self.next_seq = first_seq + kept_records;
        self.batch.clear();
        self.batch_records = 0;
        if let Some(held_back) = self.warn.allow(Instant::now()) {
            tracing::warn!(
                dir = %self.dir.display(), %error, op, reason = reason.as_str(), lost,
                held_back, "events: journal write failed; sorting goes on, events lost"
            );
        }
        BatchOutcome {
            first_seq,
            written: kept_records,
            lost,
        }
    }

    /// Starts a new segment whose first record is `first_seq`.
    fn roll(&mut self, first_seq: u64) -> Result<(), io::Error> {
        self.header.clear();
        SegmentHeader {
            first_seq,
            hub_id: &self.hub_id,
            sorter_id: &self.sorter_id,
        }
        .encode(&mut self.header)
        .map_err(io::Error::other)?;
        let path = self.dir.join(segment_name(first_seq));
        // A file of that name holds no record at or after `first_seq` (open recovered
        // the journal up to there): at most a header left by a failed roll.
        let mut file = crate::util::fs::create_private_file(&path)?;
        if let Err(error) = file.write_all(&self.header) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        let file = Arc::new(file);
        let old = self.segment.replace(OpenSegment {
            file: Arc::clone(&file),
            bytes: self.header.len() as u64,
            header_bytes: self.header.len() as u64,
        });
        self.must_roll = false;
        self.stats.add_segment(self.header.len() as u64);
        let mut state = self.sync.lock();
        if let Some(old) = old {
            state.sealed.push(old.file);
        }
        state.current = Some(file);
        state.dir_dirty = true;
        Ok(())
    }

    /// One group commit now, as the fsync thread does every interval: fsyncs the
    /// segments written since the last one (and the directory after a new segment),
    /// then reports the sequence that is durable. For a writer opened without its
    /// thread ([`WriterConfig::sync_thread`] false); harmless beside the thread.
    pub fn sync(&mut self) -> Result<u64, io::Error> {
        group_commit(&self.sync, &self.stats, &self.dir)?;
        Ok(self.stats.durable_seq())
    }

    /// Stops as a killed process does: the batch not yet written is lost, nothing is
    /// fsynced. For the simulator's crash points (a writer without its thread).
    #[doc(hidden)]
    pub fn crash(mut self) {
        self.batch.clear();
        self.batch_records = 0;
        let thread = self.sync_thread.take();
        self.sync.lock().stop = true;
        self.sync.wake.notify_all();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Writes what is batched, stops the fsync thread after a last fsync.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.write_batch();
        self.sync.lock().stop = true;
        self.sync.wake.notify_all();
        if let Some(thread) = self.sync_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How many records of `batch` lie wholly within its first `written` bytes, and their
/// bytes.
fn whole_records(batch: &[u8], written: usize) -> (u64, usize) {
    let (mut records, mut bytes) = (0, 0);
    while let Some(Ok(Some(len))) = batch.get(bytes..).map(record::peek_len) {
        if bytes + len > written {
            break;
        }
        records += 1;
        bytes += len;
    }
    (records, bytes)
}

/// What open found in the journal.
struct Recovered {
    /// The last usable segment: path, the sequence its next record must have, header
    /// length.
    segment: Option<(PathBuf, u64, u64)>,
    /// No sequence below this was ever used.
    next_seq: u64,
}

/// Cuts the last segment's damaged tail and sets aside unreadable segments at the end.
fn recover(config: &WriterConfig, stats: &JournalStats) -> Result<Recovered, JournalError> {
    let mut segments = list_segments(&config.dir)?;
    power_gap::cut_power_loss_gap(&config.dir, &mut segments, &mut |segment| {
        set_aside(&segment.path, stats, "after a power-loss gap")
    })?;
    let mut next_seq = 1u64;
    while let Some(last) = segments.pop() {
        let bytes = read_file(&last.path)?;
        let (header, header_bytes) = match decode_header(&bytes) {
            Ok(found) => found,
            Err(error) => {
                // Whatever it held may have used sequences from its name on: never reuse
                // them (each record is at least an outcome's length).
                next_seq = next_seq.max(last.first_seq + bytes.len() as u64 / OUTCOME_BYTES as u64);
                set_aside(&last.path, stats, &error.to_string())?;
                continue;
            }
        };
        if header.hub_id != config.hub_id || header.sorter_id != config.sorter_id {
            return Err(JournalError::IdMismatch {
                path: last.path,
                expected: format!("{}/{}", config.hub_id, config.sorter_id),
                found: format!("{}/{}", header.hub_id, header.sorter_id),
            });
        }
        let body = bytes.get(header_bytes..).unwrap_or_default();
        let scan = segment::scan_records(body, header.first_seq, |_, _| {});
        if let Some(damage) = scan.damage {
            let keep = (header_bytes + scan.valid_bytes) as u64;
            let file = OpenOptions::new()
                .write(true)
                .open(&last.path)
                .map_err(|error| JournalError::io("open segment", &last.path, error))?;
            file.set_len(keep)
                .and_then(|()| file.sync_all())
                .map_err(|error| JournalError::io("truncate", &last.path, error))?;
            stats.add_torn_tail();
            tracing::warn!(
                segment = %last.path.display(), %damage, kept_records = scan.records,
                cut_bytes = bytes.len() as u64 - keep,
                "events: cut the journal's damaged tail; every complete record before it is kept"
            );
        }
        next_seq = next_seq.max(scan.next_seq);
        return Ok(Recovered {
            segment: Some((last.path, scan.next_seq, header_bytes as u64)),
            next_seq,
        });
    }
    Ok(Recovered {
        segment: None,
        next_seq,
    })
}

/// Renames an unreadable segment out of the journal (kept for inspection, deleted by
/// retention's age limit).
fn set_aside(path: &Path, stats: &JournalStats, why: &str) -> Result<(), JournalError> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    fs::rename(path, &aside).map_err(|error| JournalError::io("set aside", path, error))?;
    stats.add_set_aside();
    tracing::warn!(segment = %path.display(), why, "events: segment unreadable; set aside");
    Ok(())
}

/// One group commit on the caller's thread (see [`JournalWriter::sync`]).
fn group_commit(sync: &SyncShared, stats: &JournalStats, dir: &Path) -> Result<(), io::Error> {
    let (target_seq, sealed, current, dir_dirty) = {
        let mut state = sync.lock();
        (
            stats.written_seq(),
            std::mem::take(&mut state.sealed),
            state.current.clone(),
            std::mem::take(&mut state.dir_dirty),
        )
    };
    commit(sync, stats, dir, target_seq, &sealed, current, dir_dirty)
}

/// fsyncs `sealed` and `current` (and `dir` when `dir_dirty`); on success everything up
/// to `target_seq` is durable, on failure the error is counted and the directory stays
/// dirty.
fn commit(
    sync: &SyncShared,
    stats: &JournalStats,
    dir: &Path,
    target_seq: u64,
    sealed: &[Arc<File>],
    current: Option<Arc<File>>,
    dir_dirty: bool,
) -> Result<(), io::Error> {
    let mut result = sealed
        .iter()
        .chain(current.iter())
        .try_for_each(|file| file.sync_data());
    if result.is_ok() && dir_dirty {
        result = File::open(dir).and_then(|handle| handle.sync_all());
    }
    match result {
        Ok(()) => {
            stats.set_durable_seq(target_seq);
            Ok(())
        }
        Err(error) => {
            stats.add_fsync_error();
            if dir_dirty {
                sync.lock().dir_dirty = true;
            }
            Err(error)
        }
    }
}

/// The fsync thread: group commit every `interval`, retention every
/// [`RETENTION_CHECK_INTERVAL`], a last fsync on stop.
fn fsync_loop(
    sync: &SyncShared,
    stats: &JournalStats,
    dir: &Path,
    interval: Duration,
    policy: RetentionPolicy,
    warning_interval: Duration,
) {
    let mut warn = RateLimit::new(warning_interval);
    let mut last_retention: Option<Instant> = None;
    loop {
        let (target_seq, sealed, current, dir_dirty, stop) = {
            let mut state = sync.lock();
            if !state.stop {
                state = sync
                    .wake
                    .wait_timeout(state, interval)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
            (
                stats.written_seq(),
                std::mem::take(&mut state.sealed),
                state.current.clone(),
                std::mem::take(&mut state.dir_dirty),
                state.stop,
            )
        };
        if let Err(error) = commit(sync, stats, dir, target_seq, &sealed, current, dir_dirty) {
            if let Some(held_back) = warn.allow(Instant::now()) {
                tracing::error!(%error, held_back, "events: journal fsync failed; events may not survive a power loss");
            }
        }
        if stop {
            return;
        }
        let due = last_retention.is_none_or(|at| at.elapsed() >= RETENTION_CHECK_INTERVAL);
        if due {
            last_retention = Some(Instant::now());
            match retention::apply(dir, &policy, SystemTime::now()) {
                Ok((deleted, segments, bytes)) => {
                    stats.add_deleted(deleted);
                    stats.set_segments(segments, bytes);
                }
                Err(error) => {
                    if let Some(held_back) = warn.allow(Instant::now()) {
                        tracing::warn!(%error, held_back, "events: retention pass failed");
                    }
                }
            }
        }
    }
}
