//! Pre-advice on a node: the durable log, the published plan-plus-overlay view, and
//! compaction into a new compiled plan.
//!
//! [`PreAdvice::apply_unsynced`] writes the batch to the log in `<dir>` (the page cache:
//! it survives a kill of the process), then publishes a new [`PlanView`] (the plan and an
//! [`OverlaySnapshot`] with the batch) in one `arc-swap` store: the batch takes effect for
//! the next [`PreAdvice::view`] without waiting for the disk. [`PreAdvice::sync`] then
//! makes every batch written so far durable (one `fdatasync` for all of them: a group
//! commit); only a durable batch may be acknowledged to its source. The two sequences
//! are kept apart ([`PreAdvice::seqs`]): `applied` (in the view) and `durable` (synced).
//! A failed write or sync leaves the segment to be cut back to its durable length and the
//! unsynced records written again before the next write or sync, so neither a torn write
//! nor a sync error that the kernel reports once can leave a hole in the log.
//! [`PreAdvice::apply`] is both steps in one call. [`PreAdvice::open`] rebuilds the view
//! after a restart: the compacted plan if there is one for this base plan, then every log
//! record after it (a torn tail is cut, and what the last run wrote is synced before it
//! counts as durable). [`PreAdvice::compact`] folds the overlay into a new compiled plan,
//! swaps plan and remaining overlay in one store, then deletes the folded log segments.
//! [`PreAdvice::merge_delta`] keeps the overlay's small update layer small. The owner
//! runs both from one background thread when [`PreAdvice::merge_due`] /
//! [`PreAdvice::compaction_due`] say so.
//!
//! Files in `<dir>`: `log-<first seq, 20 digits>.padv` segments of
//! [`super::preadvice_log`] records, and `compacted.sortplan`, whose name records the
//! base plan and the last sequence folded into it. This module does no networking and
//! starts no threads: the NATS subscriber calls `apply_unsynced` and `sync`, and whoever
//! owns the schedule calls `compact` (on its own thread) when
//! [`PreAdvice::compaction_due`] says so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use super::build::PlanBuilder;
use super::csv::write_atomically;
use super::error::{CompileErrors, PlanError};
use super::format::NAME_BYTES_MAX;
use super::open::Plan;
use super::overlay::{
    BatchCounts, EntryError, OverlayReplay, OverlayResolution, OverlaySnapshot, PreAdviceEntry,
    folded_chutes, resolve_with_overlay, validate_entry, warm_records_with_overlay,
    warm_with_overlay,
};
use super::preadvice_log::{BATCH_ENTRIES_MAX, RecordError, decode_record, encode_record};
use super::types::{DefaultKind, RuleKind};

/// The compacted plan's file name inside the pre-advice directory.
pub const COMPACTED_FILE: &str = "compacted.sortplan";
/// What a compacted plan's name carries after the base name.
const NAME_MARK: &str = " +preadvice(base v";

/// Limits and compaction thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreAdviceSettings {
    /// Most distinct tracking numbers in the overlay (removals included); new ones
    /// beyond it are refused and counted.
    pub entries_max: usize,
    /// Compaction is due when the overlay holds this many entries...
    pub compact_entries: usize,
    /// ...or the log holds this many bytes.
    pub compact_log_bytes: u64,
}

impl Default for PreAdviceSettings {
    fn default() -> PreAdviceSettings {
        PreAdviceSettings {
            entries_max: 4_000_000,
            compact_entries: 1_000_000,
            compact_log_bytes: 256 << 20,
        }
    }
}

/// The errors of this module.
#[derive(Debug)]
pub enum PreAdviceError {
    /// A file operation failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A log record before the last segment's tail is damaged.
    LogCorrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        error: RecordError,
    },
    /// The batch has more than [`BATCH_ENTRIES_MAX`] entries.
    BatchTooLarge {
        /// Entries in the batch.
        entries: usize,
    },
    /// An entry is invalid (nothing of the batch was applied).
    Entry {
        /// Its index in the batch.
        index: usize,
        /// What is wrong.
        error: EntryError,
    },
    /// Sequence 0 is reserved for "no pre-advice".
    ZeroSequence,
    /// The compacted plan could not be opened or did not verify.
    Plan(PlanError),
    /// The compacted plan could not be built.
    Build(CompileErrors),
}

impl std::fmt::Display for PreAdviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreAdviceError::Io { what, path, .. } => {
                write!(f, "pre-advice: {what} {}", path.display())
            }
            PreAdviceError::LogCorrupt {
                path,
                offset,
                error,
            } => write!(
                f,
                "pre-advice log {} corrupt at byte {offset}: {error}",
                path.display()
            ),
            PreAdviceError::BatchTooLarge { entries } => write!(
                f,
                "pre-advice batch of {entries} entries (at most {BATCH_ENTRIES_MAX})"
            ),
            PreAdviceError::Entry { index, error } => {
                write!(f, "pre-advice entry {index}: {error}")
            }
            PreAdviceError::ZeroSequence => write!(f, "pre-advice sequence 0 is reserved"),
            PreAdviceError::Plan(error) => write!(f, "compacted plan: {error}"),
            PreAdviceError::Build(errors) => write!(f, "building the compacted plan: {errors}"),
        }
    }
}

impl std::error::Error for PreAdviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PreAdviceError::Io { source, .. } => Some(source),
            PreAdviceError::LogCorrupt { error, .. } => Some(error),
            PreAdviceError::Entry { error, .. } => Some(error),
            PreAdviceError::Plan(error) => Some(error),
            PreAdviceError::Build(errors) => Some(errors),
            PreAdviceError::BatchTooLarge { .. } | PreAdviceError::ZeroSequence => None,
        }
    }
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> PreAdviceError + 'a {
    move |source| PreAdviceError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A plan and the overlay over it, published together: readers load one of these per
/// batch of parcels and resolve through it.
#[derive(Debug)]
pub struct PlanView {
    /// The compiled plan (the base plan or a compacted one).
    pub plan: Arc<Plan>,
    /// The pre-advice not yet folded into `plan`.
    pub overlay: OverlaySnapshot,
}

impl PlanView {
    /// Resolve a parcel: [`resolve_with_overlay`] over this view.
    #[inline]
    pub fn resolve(&self, barcodes: &[&[u8]], destination: Option<&[u8]>) -> OverlayResolution {
        resolve_with_overlay(&self.plan, &self.overlay, barcodes, destination)
    }

    /// Prefetch what [`PlanView::resolve`] of the same parcel reads first
    /// ([`warm_with_overlay`]).
    #[inline]
    pub fn warm(&self, barcodes: &[&[u8]], destination: Option<&[u8]>) {
        warm_with_overlay(&self.plan, &self.overlay, barcodes, destination);
    }

    /// Prefetch the records [`PlanView::resolve`] of the same parcel compares
    /// ([`warm_records_with_overlay`]); call after [`PlanView::warm`] of the whole
    /// window. The delta layer's entries are not prefetched: they are few and recent.
    #[inline]
    pub fn warm_records(&self, barcodes: &[&[u8]], destination: Option<&[u8]>) {
        warm_records_with_overlay(&self.plan, &self.overlay, barcodes, destination);
    }
}

/// What [`PreAdvice::apply`] and [`PreAdvice::apply_unsynced`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries stored and refused for lack of room.
    pub counts: BatchCounts,
    /// True when the sequence was not above the last one applied: a redelivery, ignored
    /// (nothing logged or applied).
    pub duplicate: bool,
    /// Entries in the overlay afterwards.
    pub overlay_entries: usize,
    /// How long the steps took (zero for a duplicate's write and publish).
    pub timings: ApplyTimings,
}

/// Where [`PreAdvice::apply`] spent its time, for the subscriber's per-stage latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyTimings {
    /// Waiting for the writer lock, encoding and writing the record (no sync).
    pub log: Duration,
    /// Building the new overlay snapshot and publishing it to the sorting threads.
    pub publish: Duration,
    /// The sync that made it durable ([`PreAdvice::apply`] only; zero from
    /// [`PreAdvice::apply_unsynced`]).
    pub sync: Duration,
}

/// The two sequences of the log ([`PreAdvice::seqs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSeqs {
    /// The last sequence written and published: in effect (0 = none).
    pub applied: u64,
    /// The last sequence synced to disk: what may be acknowledged (0 = none). Never above
    /// `applied`.
    pub durable: u64,
}

/// What [`PreAdvice::sync`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Every batch through this sequence is durable.
    pub durable_seq: u64,
    /// False when there was nothing to sync (everything applied was durable already).
    pub synced: bool,
    /// Writer lock, any rewrite after an earlier failure, and the sync itself.
    pub duration: Duration,
}

/// What [`PreAdvice::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Log records replayed into the overlay.
    pub records: u64,
    /// Records skipped because the compacted plan already holds them.
    pub records_folded: u64,
    /// Bytes cut from the end of the last segment (a torn or damaged tail).
    pub tail_cut_bytes: u64,
    /// The compacted plan used as the base, with the last sequence folded into it.
    pub compacted_through: Option<u64>,
    /// A compacted plan was present but for a different base plan, and was ignored.
    pub compacted_ignored: bool,
    /// New entries refused during replay because the overlay was full.
    pub refused_full: u64,
}

/// What [`PreAdvice::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Sequence through which pre-advice is now in the plan.
    pub through_seq: u64,
    /// Name of the new plan.
    pub plan_name: String,
    /// Version of the new plan.
    pub plan_version: u32,
    /// Exact entries in the new plan.
    pub exact_keys: u64,
    /// Overlay entries folded (removals and unresolvable destinations included).
    pub folded: u64,
    /// Destinations that matched no prefix, dropped (they resolved to nothing anyway).
    pub unresolved: u64,
    /// Entries left in the overlay (applied while the compaction ran).
    pub overlay_left: usize,
    /// Log segments deleted.
    pub segments_deleted: usize,
}

/// How the writer puts records into a log segment and syncs it: the file itself in the
/// daemon; a unit test's version fails or observes the two steps.
trait SegmentIo: Send + Sync + std::fmt::Debug {
    /// Append `bytes` at the end of `segment` (opened in append mode).
    fn append(&self, segment: &File, bytes: &[u8]) -> io::Result<()>;
    /// Make everything written to `segment` durable.
    fn sync(&self, segment: &File) -> io::Result<()>;
}

/// [`SegmentIo`] on the file: `write_all` and `fdatasync`.
#[derive(Debug)]
struct FileIo;

impl SegmentIo for FileIo {
    fn append(&self, mut segment: &File, bytes: &[u8]) -> io::Result<()> {
        segment.write_all(bytes)
    }

    fn sync(&self, segment: &File) -> io::Result<()> {
        segment.sync_data()
    }
}

/// Unsynced log bytes beyond which [`PreAdvice::apply_unsynced`] syncs before writing (a
/// caller that never syncs still keeps the copy in memory bounded).
const UNSYNCED_BYTES_MAX: usize = 64 << 20;

/// The writer side: the open log segment and counters. One at a time.
///
/// The segment holds `durable_bytes` synced bytes, then `unsynced` (the records written
/// since, `segment_bytes - durable_bytes` bytes); with `rewrite` set, a write or sync
/// failed and what follows `durable_bytes` on disk is unknown until
/// [`PreAdvice::repair`] cuts it and writes `unsynced` again. Every record above
/// `durable_seq` is in the current segment (a segment switch syncs first).
#[derive(Debug)]
struct Writer {
    segment: File,
    segment_path: PathBuf,
    /// Bytes of whole records written to the segment: where the next one goes.
    segment_bytes: u64,
    /// Bytes of the segment known to be on disk.
    durable_bytes: u64,
    /// The records written after `durable_bytes`, kept to write again after a failure.
    unsynced: Vec<u8>,
    /// A write or sync failed: repair before the next write or sync.
    rewrite: bool,
    /// The last sequence written and published (applied).
    last_seq: u64,
    /// The last sequence synced.
    durable_seq: u64,
    log_bytes: u64,
    /// The base plan's version as configured (carried through compactions).
    base_version: u32,
    /// The base plan (configured or last swapped in): what [`PreAdvice::reset`] goes
    /// back to.
    base: Arc<Plan>,
}

/// Pre-advice for one node: see the module docs.
#[derive(Debug)]
pub struct PreAdvice {
    dir: PathBuf,
    settings: PreAdviceSettings,
    io: Box<dyn SegmentIo>,
    view: ArcSwap<PlanView>,
    writer: Mutex<Writer>,
    /// Held through a whole [`PreAdvice::compact`] and [`PreAdvice::reset`], so a reset
    /// never races a compaction that would bring the forgotten batches back.
    rewriting: Mutex<()>,
}

/// What [`load`] rebuilt from a directory.
struct Loaded {
    view: PlanView,
    recovery: Recovery,
    last_seq: u64,
    log_bytes: u64,
    last_segment: Option<PathBuf>,
    /// Bytes of whole records in the last segment.
    last_segment_bytes: u64,
}

/// Rebuild the view from `dir` over `base`; with `for_writing`, cut a damaged tail of
/// the last segment off the file too, and sync every segment (a previous run may have
/// been killed after writing a record and before its sync: what is applied at start is
/// durable).
fn load(
    dir: &Path,
    base: Arc<Plan>,
    settings: PreAdviceSettings,
    for_writing: bool,
) -> Result<Loaded, PreAdviceError> {
    let mut recovery = Recovery::default();
    let base_version = base.version();
    let mut plan = base;
    let mut folded_through = 0u64;
    let compacted_path = dir.join(COMPACTED_FILE);
    if compacted_path.exists() {
        let compacted = Plan::open(&compacted_path).map_err(PreAdviceError::Plan)?;
        compacted.verify().map_err(PreAdviceError::Plan)?;
        match parse_compacted_name(compacted.name()) {
            Some((_, version, seq)) if version == base_version => {
                folded_through = seq;
                recovery.compacted_through = Some(seq);
                plan = Arc::new(compacted);
            }
            _ => recovery.compacted_ignored = true,
        }
    }
    let mut replay = OverlayReplay::new(settings.entries_max);
    let mut last_seq = folded_through;
    let mut log_bytes = 0u64;
    let found = if dir.exists() {
        segments(dir)?
    } else {
        Vec::new()
    };
    let last_index = found.len().checked_sub(1);
    let mut last_segment_bytes = 0;
    for (index, (_, path)) in found.iter().enumerate() {
        let (records, good_bytes, damage) = read_segment(path)?;
        last_segment_bytes = good_bytes;
        if let Some(error) = damage {
            if Some(index) != last_index {
                return Err(PreAdviceError::LogCorrupt {
                    path: path.clone(),
                    offset: good_bytes,
                    error,
                });
            }
            let length = fs::metadata(path).map_err(io_error("reading", path))?.len();
            recovery.tail_cut_bytes = length - good_bytes;
            if for_writing {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|file| {
                        file.set_len(good_bytes)?;
                        file.sync_all()
                    })
                    .map_err(io_error("cutting the torn tail of", path))?;
            }
        }
        if for_writing {
            File::open(path)
                .and_then(|file| file.sync_data())
                .map_err(io_error("syncing", path))?;
        }
        log_bytes += good_bytes;
        for (seq, entries) in records {
            if seq <= last_seq {
                recovery.records_folded += 1;
                continue;
            }
            replay.add_batch(&entries, seq);
            recovery.records += 1;
            last_seq = seq;
        }
    }
    recovery.refused_full = replay.refused_full;
    Ok(Loaded {
        view: PlanView {
            plan,
            overlay: replay.finish(),
        },
        recovery,
        last_seq,
        log_bytes,
        last_segment: found.last().map(|(_, path)| path.clone()),
        last_segment_bytes,
    })
}

/// The base name, version and folded sequence a compacted plan's name records.
pub fn parse_compacted_name(name: &str) -> Option<(&str, u32, u64)> {
    let (base, rest) = name.rsplit_once(NAME_MARK)?;
    let rest = rest.strip_suffix(')')?;
    let (version, seq) = rest.split_once(" through ")?;
    Some((base, version.parse().ok()?, seq.parse().ok()?))
}

/// The name of a plan with pre-advice through `seq` folded into base version
/// `base_version`, e.g. `Hangzhou wave 2 +preadvice(base v12 through 5081)`.
pub fn compacted_name(base_name: &str, base_version: u32, seq: u64) -> String {
    let suffix = format!("{NAME_MARK}{base_version} through {seq})");
    let mut base = base_name;
    while base.len() + suffix.len() > NAME_BYTES_MAX {
        let mut cut = base.len() - 1;
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        base = &base[..cut];
    }
    format!("{base}{suffix}")
}

/// A panic while holding one of the locks leaves the state consistent (the log is
/// append-only and the view is replaced whole), so a poisoned lock is usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn segment_name(first_seq: u64) -> String {
    format!("log-{first_seq:020}.padv")
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, PreAdviceError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(first) = name
            .strip_prefix("log-")
            .and_then(|rest| rest.strip_suffix(".padv"))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((first, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn sync_dir(dir: &Path) -> Result<(), PreAdviceError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(io_error("syncing", dir))
}

fn open_segment(path: &Path) -> Result<File, PreAdviceError> {
    crate::util::fs::open_private_append(path).map_err(io_error("opening", path))
}

/// Every record of one segment; a damaged record ends the segment. Returns the records
/// and the length of the good part.
type SegmentRecords = (Vec<(u64, Vec<PreAdviceEntry>)>, u64, Option<RecordError>);

fn read_segment(path: &Path) -> Result<SegmentRecords, PreAdviceError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error("reading", path))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match decode_record(bytes.get(offset..).unwrap_or_default()) {
            Ok((seq, entries, used)) => {
                records.push((seq, entries));
                offset += used;
            }
            Err(error) => return Ok((records, offset as u64, Some(error))),
        }
    }
    Ok((records, offset as u64, None))
}

impl PreAdvice {
    /// Open (or create) the pre-advice directory over `base`: use the compacted plan if
    /// it was made from this base plan, replay the log after it, cut a torn tail.
    pub fn open(
        dir: &Path,
        base: Plan,
        settings: PreAdviceSettings,
    ) -> Result<(PreAdvice, Recovery), PreAdviceError> {
        PreAdvice::open_with(dir, base, settings, Box::new(FileIo))
    }

    /// [`PreAdvice::open`] with the log's writes and syncs going through `io`.
    fn open_with(
        dir: &Path,
        base: Plan,
        settings: PreAdviceSettings,
        io: Box<dyn SegmentIo>,
    ) -> Result<(PreAdvice, Recovery), PreAdviceError> {
        crate::util::fs::create_private_dir(dir).map_err(io_error("creating", dir))?;
        let base_version = base.version();
        let base = Arc::new(base);
        let loaded = load(dir, Arc::clone(&base), settings, true)?;
        let segment_path = loaded
            .last_segment
            .unwrap_or_else(|| dir.join(segment_name(loaded.last_seq + 1)));
        let segment = open_segment(&segment_path)?;
        sync_dir(dir)?;
        let preadvice = PreAdvice {
            dir: dir.to_path_buf(),
            settings,
            io,
            view: ArcSwap::from_pointee(loaded.view),
            writer: Mutex::new(Writer {
                segment,
                segment_path,
                segment_bytes: loaded.last_segment_bytes,
                durable_bytes: loaded.last_segment_bytes,
                unsynced: Vec::new(),
                rewrite: false,
                // load() synced what it replayed.
                last_seq: loaded.last_seq,
                durable_seq: loaded.last_seq,
                log_bytes: loaded.log_bytes,
                base_version,
                base,
            }),
            rewriting: Mutex::new(()),
        };
        Ok((preadvice, loaded.recovery))
    }

    /// The view [`PreAdvice::open`] would publish, without changing anything on disk
    /// (no torn tail is cut: a live node may be writing it). For tools that inspect a
    /// node's directory.
    pub fn read_view(
        dir: &Path,
        base: Plan,
        settings: PreAdviceSettings,
    ) -> Result<(PlanView, Recovery), PreAdviceError> {
        let loaded = load(dir, Arc::new(base), settings, false)?;
        Ok((loaded.view, loaded.recovery))
    }

    /// The current plan and overlay. Never blocks; load once per batch of parcels and
    /// keep the guard short-lived.
    #[inline]
    pub fn view(&self) -> Guard<Arc<PlanView>> {
        self.view.load()
    }

    /// The directory holding the log and the compacted plan.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last sequence applied, i.e. in the view (0 = none); it may not be durable yet
    /// ([`PreAdvice::seqs`]).
    pub fn last_seq(&self) -> u64 {
        self.writer().last_seq
    }

    /// The applied and the durable sequence, read together.
    pub fn seqs(&self) -> LogSeqs {
        let writer = self.writer();
        LogSeqs {
            applied: writer.last_seq,
            durable: writer.durable_seq,
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.writer)
    }

    /// Log `batch` at sequence `seq`, publish it, and sync the log: durable when this
    /// returns ([`PreAdvice::apply_unsynced`] then [`PreAdvice::sync`]). A redelivery (at
    /// or below the last applied sequence) is ignored but still made durable.
    pub fn apply(&self, batch: &[PreAdviceEntry], seq: u64) -> Result<Applied, PreAdviceError> {
        let mut applied = self.apply_unsynced(batch, seq)?;
        applied.timings.sync = self.sync()?.duration;
        Ok(applied)
    }

    /// Write `batch` at sequence `seq` to the log (not synced: it survives a kill of the
    /// process, not a power loss), then publish it: in effect when this returns, durable
    /// after the next [`PreAdvice::sync`]. Sequences must increase; a batch at or below
    /// the last sequence is a redelivery and is ignored. An invalid entry refuses the
    /// whole batch (the parser drops bad lines before). A failed write publishes nothing;
    /// the partial record is cut before the next write.
    pub fn apply_unsynced(
        &self,
        batch: &[PreAdviceEntry],
        seq: u64,
    ) -> Result<Applied, PreAdviceError> {
        if seq == 0 {
            return Err(PreAdviceError::ZeroSequence);
        }
        if batch.len() > BATCH_ENTRIES_MAX {
            return Err(PreAdviceError::BatchTooLarge {
                entries: batch.len(),
            });
        }
        for (index, entry) in batch.iter().enumerate() {
            validate_entry(entry).map_err(|error| PreAdviceError::Entry { index, error })?;
        }
        let started = Instant::now();
        let mut writer = self.writer();
        if seq <= writer.last_seq {
            return Ok(Applied {
                duplicate: true,
                overlay_entries: self.view.load().overlay.len(),
                ..Applied::default()
            });
        }
        if writer.unsynced.len() >= UNSYNCED_BYTES_MAX {
            self.make_durable(&mut writer)?;
        }
        self.repair(&mut writer)?;
        let writer = &mut *writer;
        let start = writer.unsynced.len();
        encode_record(seq, batch, &mut writer.unsynced);
        let record = writer.unsynced.get(start..).unwrap_or_default();
        let record_bytes = record.len() as u64;
        if let Err(source) = self.io.append(&writer.segment, record) {
            // Part of the record may be in the file: cut it before anything else.
            writer.unsynced.truncate(start);
            writer.rewrite = true;
            return Err(io_error("appending to", &writer.segment_path)(source));
        }
        writer.segment_bytes += record_bytes;
        writer.log_bytes += record_bytes;
        writer.last_seq = seq;
        let logged = Instant::now();
        let current = self.view.load_full();
        let (overlay, counts) = current
            .overlay
            .with_batch(batch, seq, self.settings.entries_max);
        let overlay_entries = overlay.len();
        let merge_now = overlay.must_merge().then(|| overlay.clone());
        self.view.store(Arc::new(PlanView {
            plan: Arc::clone(&current.plan),
            overlay,
        }));
        if let Some(overlay) = merge_now {
            // Nobody ran merge_delta: merge here, after publishing (the batch is already
            // in effect), holding the lock so no other publication is lost.
            self.view.store(Arc::new(PlanView {
                plan: Arc::clone(&current.plan),
                overlay: overlay.merged(),
            }));
        }
        let published = Instant::now();
        Ok(Applied {
            counts,
            duplicate: false,
            overlay_entries,
            timings: ApplyTimings {
                log: logged - started,
                publish: published - logged,
                sync: Duration::ZERO,
            },
        })
    }

    /// Make every batch applied so far durable: one sync for all of them (a group
    /// commit), or nothing when they are durable already. Only then may they be
    /// acknowledged. After a failure the batches stay in effect and not durable; the
    /// next call writes them again and syncs (a failed sync is not trusted to have kept
    /// anything, and a retried sync alone could report success for pages the kernel
    /// dropped).
    pub fn sync(&self) -> Result<Synced, PreAdviceError> {
        let started = Instant::now();
        let mut writer = self.writer();
        let synced = writer.durable_seq < writer.last_seq;
        if synced {
            self.make_durable(&mut writer)?;
        }
        Ok(Synced {
            durable_seq: writer.durable_seq,
            synced,
            duration: started.elapsed(),
        })
    }

    /// Repair if needed, sync the segment, and move the durable point to the end.
    fn make_durable(&self, writer: &mut Writer) -> Result<(), PreAdviceError> {
        self.repair(writer)?;
        if let Err(source) = self.io.sync(&writer.segment) {
            writer.rewrite = true;
            return Err(io_error("syncing", &writer.segment_path)(source));
        }
        writer.durable_bytes = writer.segment_bytes;
        writer.durable_seq = writer.last_seq;
        writer.unsynced.clear();
        Ok(())
    }

    /// After a failed write or sync: cut the segment back to its durable length and
    /// write the unsynced records again, so the file holds exactly the records applied.
    fn repair(&self, writer: &mut Writer) -> Result<(), PreAdviceError> {
        if !writer.rewrite {
            return Ok(());
        }
        writer
            .segment
            .set_len(writer.durable_bytes)
            .and_then(|()| self.io.append(&writer.segment, &writer.unsynced))
            .map_err(io_error(
                "rewriting the unsynced tail of",
                &writer.segment_path,
            ))?;
        writer.rewrite = false;
        Ok(())
    }

    /// True when the overlay's delta layer should be merged, or its base layer has no
    /// joint index for the plan yet ([`PreAdvice::merge_delta`]).
    pub fn merge_due(&self) -> bool {
        let view = self.view.load();
        view.overlay.needs_merge() || view.overlay.needs_index(&view.plan)
    }

    /// Merge the overlay's delta layer into a new base layer and build the base layer's
    /// joint index with the plan ([`OverlaySnapshot::indexed`]), without holding the
    /// writer lock meanwhile (linear in plan plus overlay: see benches/plan.rs), so
    /// applies keep taking effect at once. Run it from the same background thread as
    /// [`PreAdvice::compact`] when [`PreAdvice::merge_due`]. Returns false when nothing
    /// was due, or a compaction or plan swap replaced what it worked on meanwhile.
    pub fn merge_delta(&self) -> bool {
        let from = {
            let _writer = self.writer();
            self.view.load_full()
        };
        let merged = if from.overlay.needs_merge() {
            from.overlay.merged()
        } else if from.overlay.needs_index(&from.plan) {
            from.overlay.clone()
        } else {
            return false;
        };
        let merged = merged.indexed(&from.plan);
        let _writer = self.writer();
        let current = self.view.load_full();
        if !Arc::ptr_eq(&current.plan, &from.plan) {
            return false;
        }
        let Some(overlay) = current.overlay.rebase(&from.overlay, &merged) else {
            return false;
        };
        self.view.store(Arc::new(PlanView {
            plan: Arc::clone(&current.plan),
            overlay,
        }));
        true
    }

    /// Publish a new base plan (a plan swap, e.g. SIGHUP) under the current overlay.
    /// Pre-advice already folded into a compacted plan is not carried over: the hub's
    /// new plan is expected to include it (PLAN.md, "Pre-advice").
    pub fn swap_plan(&self, plan: Plan) {
        let mut writer = self.writer();
        writer.base_version = plan.version();
        let plan = Arc::new(plan);
        writer.base = Arc::clone(&plan);
        let current = self.view.load_full();
        self.view.store(Arc::new(PlanView {
            plan,
            overlay: current.overlay.clone(),
        }));
    }

    /// Forget every batch: delete the log and the compacted plan, start a new log at
    /// sequence 1, and publish the base plan with an empty overlay. For a source whose
    /// sequences started again (the hub's stream was deleted and created anew): its
    /// batches are read again from the start. Returns the last sequence forgotten.
    /// Crash-safe in the sense that a crash midway leaves a directory that opens (what
    /// is left of the old log replays); the caller repeats the reset after restart
    /// because it records the new source only once this returns.
    pub fn reset(&self) -> Result<u64, PreAdviceError> {
        let _rewriting = lock(&self.rewriting);
        let mut writer = self.writer();
        let forgotten = writer.last_seq;
        let first_path = self.dir.join(segment_name(1));
        // The new segment first (it may have the name of an old one: truncate it), then
        // the old segments and the compacted plan go.
        let segment = crate::util::fs::private_options()
            .write(true)
            .truncate(true)
            .create(true)
            .open(&first_path)
            .map_err(io_error("creating", &first_path))?;
        segment
            .sync_all()
            .map_err(io_error("syncing", &first_path))?;
        for (_, path) in segments(&self.dir)? {
            if path != first_path {
                fs::remove_file(&path).map_err(io_error("deleting", &path))?;
            }
        }
        let compacted = self.dir.join(COMPACTED_FILE);
        if compacted.exists() {
            fs::remove_file(&compacted).map_err(io_error("deleting", &compacted))?;
        }
        sync_dir(&self.dir)?;
        // Appends go to the end of the (empty) segment.
        writer.segment = open_segment(&first_path)?;
        writer.segment_path = first_path;
        writer.segment_bytes = 0;
        writer.durable_bytes = 0;
        writer.unsynced.clear();
        writer.rewrite = false;
        writer.last_seq = 0;
        writer.durable_seq = 0;
        writer.log_bytes = 0;
        self.view.store(Arc::new(PlanView {
            plan: Arc::clone(&writer.base),
            overlay: OverlaySnapshot::empty(),
        }));
        Ok(forgotten)
    }

    /// True when the overlay or the log has reached its compaction threshold.
    pub fn compaction_due(&self) -> bool {
        let log_bytes = self.writer().log_bytes;
        self.view.load().overlay.len() >= self.settings.compact_entries
            || log_bytes >= self.settings.compact_log_bytes
    }

    /// Fold the overlay into a new compiled plan and swap it in with what is left of the
    /// overlay, then delete the folded log. Applies continue meanwhile (they only wait
    /// for the two short steps that hold the writer lock). Crash-safe order: the plan is
    /// written to a temporary file, synced, renamed and the directory synced before any
    /// log segment is deleted; after a crash in between, [`PreAdvice::open`] skips the
    /// records the compacted plan already holds. Returns `None` when there is nothing to
    /// fold.
    pub fn compact(&self) -> Result<Option<Compaction>, PreAdviceError> {
        let _rewriting = lock(&self.rewriting);
        // Step 1: fix the fold point and start a new segment for later batches.
        let (through_seq, view, old_segments, base_version) = {
            let mut writer = self.writer();
            let view = self.view.load_full();
            if view.overlay.is_empty() {
                return Ok(None);
            }
            let through_seq = writer.last_seq;
            let old_segments = segments(&self.dir)?;
            let next_path = self.dir.join(segment_name(through_seq + 1));
            if next_path != writer.segment_path {
                // Every record above the durable point must stay in the current segment
                // (one sync makes them durable): sync the old one before leaving it.
                self.make_durable(&mut writer)?;
                writer.segment = open_segment(&next_path)?;
                writer.segment_path = next_path;
                writer.segment_bytes = 0;
                writer.durable_bytes = 0;
                sync_dir(&self.dir)?;
            }
            let current = writer.segment_path.clone();
            let old_segments: Vec<PathBuf> = old_segments
                .into_iter()
                .map(|(_, path)| path)
                .filter(|path| *path != current)
                .collect();
            (through_seq, view, old_segments, writer.base_version)
        };
        // Step 2: build, write durably, verify (no lock held).
        let (builder, folded, unresolved) =
            fold(&view.plan, &view.overlay, base_version, through_seq)?;
        let built = builder.finish().map_err(PreAdviceError::Build)?;
        let path = self.dir.join(COMPACTED_FILE);
        write_atomically(&built, &path).map_err(|(what, source)| PreAdviceError::Io {
            what,
            path: path.clone(),
            source,
        })?;
        drop(built);
        let plan = Plan::open(&path).map_err(PreAdviceError::Plan)?;
        plan.verify().map_err(PreAdviceError::Plan)?;
        let plan_name = plan.name().to_string();
        let plan_version = plan.version();
        let exact_keys = plan.stats().exact_keys;
        // Step 3: swap plan and the rest of the overlay in one store.
        let overlay_left = {
            let mut writer = self.writer();
            let current = self.view.load_full();
            if !Arc::ptr_eq(&current.plan, &view.plan) {
                // A new base plan was swapped in meanwhile: keep it and the whole
                // overlay; the log stays (the next compaction folds it).
                return Ok(None);
            }
            let rest = current.overlay.after(through_seq);
            let left = rest.len();
            self.view.store(Arc::new(PlanView {
                plan: Arc::new(plan),
                overlay: rest,
            }));
            // Step 4: the plan is durable, so the folded segments can go.
            for segment in &old_segments {
                fs::remove_file(segment).map_err(io_error("deleting", segment))?;
            }
            sync_dir(&self.dir)?;
            writer.log_bytes = writer.segment_bytes;
            left
        };
        Ok(Some(Compaction {
            through_seq,
            plan_name,
            plan_version,
            exact_keys,
            folded,
            unresolved,
            overlay_left,
            segments_deleted: old_segments.len(),
        }))
    }
}

/// A builder holding `plan` with `overlay` folded in: exact entries the overlay does
/// not mention keep their line; overlay entries follow, numbered after the last line.
fn fold(
    plan: &Plan,
    overlay: &OverlaySnapshot,
    base_version: u32,
    through_seq: u64,
) -> Result<(PlanBuilder, u64, u64), PreAdviceError> {
    let build_error = |kind| {
        let mut errors = CompileErrors::new("compaction");
        errors.push(0, kind);
        PreAdviceError::Build(errors)
    };
    let mut builder = PlanBuilder::new();
    let base_name = parse_compacted_name(plan.name()).map_or(plan.name(), |(base, _, _)| base);
    builder
        .set_name(&compacted_name(base_name, base_version, through_seq))
        .map_err(build_error)?;
    for which in DefaultKind::ALL {
        builder.set_default(which, plan.default_chute(which));
    }
    let mut line_max = 0u32;
    for (key, chutes, rule) in plan.entries(RuleKind::Prefix) {
        builder
            .add(RuleKind::Prefix, key, chutes, rule.line)
            .map_err(build_error)?;
        line_max = line_max.max(rule.line);
    }
    for (key, chutes, rule) in plan.entries(RuleKind::Exact) {
        line_max = line_max.max(rule.line);
        if overlay.get(key).is_none() {
            builder
                .add(RuleKind::Exact, key, chutes, rule.line)
                .map_err(build_error)?;
        }
    }
    let (mut folded, mut unresolved) = (0u64, 0u64);
    let mut line = line_max;
    for (key, value, _) in overlay.entries() {
        folded += 1;
        let Some(chutes) = folded_chutes(plan, value) else {
            if matches!(value, super::overlay::OverlayValue::Destination(_)) {
                unresolved += 1;
            }
            continue;
        };
        line = line.saturating_add(1);
        builder
            .add(RuleKind::Exact, key, chutes, line)
            .map_err(build_error)?;
    }
    Ok((builder, folded, unresolved))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::plan::{Chutes, PreAdviceValue, compile_str};

    const CSV: &str = "kind,key,chutes
meta,name,durability test
meta,version,3
prefix,33,101
exact,YT1,7
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
";

    fn plan() -> Plan {
        Plan::from_bytes(compile_str("plan.csv", CSV).expect("compiles")).expect("opens")
    }

    fn add(barcode: &str, chute: u16) -> PreAdviceEntry {
        PreAdviceEntry {
            barcode: barcode.as_bytes().into(),
            value: PreAdviceValue::Chutes(Chutes::new(&[chute]).expect("valid")),
        }
    }

    /// (primary chute, pre-advice seq) for a barcode.
    fn answer(preadvice: &PreAdvice, barcode: &str) -> (u16, u64) {
        let resolved = preadvice.view().resolve(&[barcode.as_bytes()], None);
        (resolved.resolution.chutes.primary(), resolved.preadvice_seq)
    }

    /// The file operations with faults on demand; counts the syncs that reached the file.
    #[derive(Debug, Default)]
    struct Faults {
        syncs: AtomicUsize,
        /// The next N syncs fail (and do nothing).
        failing_syncs: AtomicUsize,
        /// The next append writes only this many bytes, then fails (a torn write).
        torn_append_bytes: Mutex<Option<usize>>,
    }

    impl SegmentIo for Arc<Faults> {
        fn append(&self, segment: &File, bytes: &[u8]) -> io::Result<()> {
            if let Some(keep) = lock(&self.torn_append_bytes).take() {
                FileIo.append(segment, bytes.get(..keep).unwrap_or(bytes))?;
                return Err(io::Error::other("torn write (test)"));
            }
            FileIo.append(segment, bytes)
        }

        fn sync(&self, segment: &File) -> io::Result<()> {
            let failing = self.failing_syncs.load(Ordering::Relaxed);
            if failing > 0 {
                self.failing_syncs.store(failing - 1, Ordering::Relaxed);
                return Err(io::Error::other("sync failed (test)"));
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
            FileIo.sync(segment)
        }
    }

    fn open_faulty(dir: &Path) -> (PreAdvice, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let (preadvice, _) = PreAdvice::open_with(
            dir,
            plan(),
            PreAdviceSettings::default(),
            Box::new(Arc::clone(&faults)),
        )
        .expect("opens");
        (preadvice, faults)
    }

    /// The sequences a fresh reader finds in the directory's log (what a kill -9 keeps).
    fn logged_seqs(dir: &Path) -> Vec<u64> {
        let mut seqs = Vec::new();
        for (_, path) in segments(dir).expect("lists") {
            let (records, _, damage) = read_segment(&path).expect("reads");
            assert!(damage.is_none(), "{path:?}: {damage:?}");
            seqs.extend(records.into_iter().map(|(seq, _)| seq));
        }
        seqs
    }

    fn the_segment(dir: &Path) -> PathBuf {
        let found = segments(dir).expect("lists");
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].1.clone()
    }

    #[test]
    fn a_batch_is_written_then_in_effect_before_any_sync_and_one_sync_covers_a_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (preadvice, faults) = open_faulty(dir.path());
        preadvice
            .apply_unsynced(&[add("A", 40)], 1)
            .expect("applies");
        // In effect and in the log file (the page cache), with no sync yet.
        assert_eq!(answer(&preadvice, "A"), (40, 1));
        assert_eq!(logged_seqs(dir.path()), [1]);
        assert_eq!(faults.syncs.load(Ordering::Relaxed), 0);
        assert_eq!(
            preadvice.seqs(),
            LogSeqs {
                applied: 1,
                durable: 0
            }
        );
        preadvice
            .apply_unsynced(&[add("B", 41)], 2)
            .expect("applies");
        let synced = preadvice.sync().expect("syncs");
        assert_eq!((synced.durable_seq, synced.synced), (2, true));
        assert_eq!(faults.syncs.load(Ordering::Relaxed), 1);
        assert_eq!(
            preadvice.seqs(),
            LogSeqs {
                applied: 2,
                durable: 2
            }
        );
        // Nothing left to sync: no second sync.
        let again = preadvice.sync().expect("syncs");
        assert_eq!((again.durable_seq, again.synced), (2, false));
        assert_eq!(faults.syncs.load(Ordering::Relaxed), 1);
        // apply() is durable on return, a redelivery included.
        preadvice.apply(&[add("C", 42)], 3).expect("applies");
        assert_eq!(preadvice.seqs().durable, 3);
    }

    #[test]
    fn a_failed_sync_leaves_the_batch_in_effect_not_durable_and_the_retry_writes_it_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (preadvice, faults) = open_faulty(dir.path());
        preadvice.apply(&[add("A", 40)], 1).expect("applies");
        let durable_bytes = fs::metadata(the_segment(dir.path())).expect("stat").len();
        preadvice
            .apply_unsynced(&[add("B", 41)], 2)
            .expect("applies");
        faults.failing_syncs.store(1, Ordering::Relaxed);
        preadvice.sync().expect_err("the sync fails");
        assert_eq!(answer(&preadvice, "B"), (41, 2));
        assert_eq!(
            preadvice.seqs(),
            LogSeqs {
                applied: 2,
                durable: 1
            }
        );
        // The kernel may have dropped the pages whose writeback failed: the retry must
        // not trust them.
        OpenOptions::new()
            .write(true)
            .open(the_segment(dir.path()))
            .and_then(|file| file.set_len(durable_bytes))
            .expect("drops the unsynced tail");
        assert_eq!(logged_seqs(dir.path()), [1]);
        let synced = preadvice.sync().expect("the retry syncs");
        assert_eq!((synced.durable_seq, synced.synced), (2, true));
        assert_eq!(logged_seqs(dir.path()), [1, 2]);
        preadvice.apply(&[add("C", 42)], 3).expect("applies");
        drop(preadvice);
        let (preadvice, _) = open_faulty(dir.path());
        assert_eq!(logged_seqs(dir.path()), [1, 2, 3]);
        assert_eq!(answer(&preadvice, "B"), (41, 2));
    }

    #[test]
    fn a_torn_write_is_cut_before_the_batch_comes_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (preadvice, faults) = open_faulty(dir.path());
        preadvice.apply(&[add("A", 40)], 1).expect("applies");
        *lock(&faults.torn_append_bytes) = Some(7);
        preadvice
            .apply_unsynced(&[add("B", 41)], 2)
            .expect_err("the write fails");
        // Nothing of it is in effect; the redelivery applies it.
        assert_eq!(answer(&preadvice, "B"), (999, 0));
        assert_eq!(preadvice.seqs().applied, 1);
        preadvice.apply(&[add("B", 41)], 2).expect("applies");
        drop(preadvice);
        // The torn bytes are gone, not left between records 1 and 2 (where a restart
        // would have cut record 2 off with them).
        assert_eq!(logged_seqs(dir.path()), [1, 2]);
        let (preadvice, recovery) =
            PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("opens");
        assert_eq!((recovery.records, recovery.tail_cut_bytes), (2, 0));
        assert_eq!(answer(&preadvice, "B"), (41, 2));
    }

    #[test]
    fn a_lost_unsynced_tail_is_applied_again_to_the_same_overlay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (preadvice, _) = open_faulty(dir.path());
        preadvice.apply(&[add("A", 40)], 1).expect("applies");
        let durable_bytes = fs::metadata(the_segment(dir.path())).expect("stat").len();
        let batch = [add("A", 41), add("B", 42)];
        preadvice.apply_unsynced(&batch, 2).expect("applies");
        let before = [answer(&preadvice, "A"), answer(&preadvice, "B")];
        drop(preadvice);
        // Power loss before the sync: half of record 2 reached the disk.
        let segment = the_segment(dir.path());
        let written = fs::metadata(&segment).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .and_then(|file| file.set_len((durable_bytes + written) / 2))
            .expect("loses the tail");
        let (preadvice, recovery) =
            PreAdvice::open(dir.path(), plan(), PreAdviceSettings::default()).expect("opens");
        assert!(recovery.tail_cut_bytes > 0);
        assert_eq!(
            preadvice.seqs(),
            LogSeqs {
                applied: 1,
                durable: 1
            }
        );
        assert_eq!(answer(&preadvice, "A"), (40, 1));
        // JetStream redelivers the unacknowledged batch: same sequence, same result.
        preadvice.apply(&batch, 2).expect("applies again");
        assert_eq!([answer(&preadvice, "A"), answer(&preadvice, "B")], before);
    }

    #[test]
    fn compaction_makes_the_batches_of_the_segment_it_leaves_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (preadvice, faults) = open_faulty(dir.path());
        preadvice
            .apply_unsynced(&[add("A", 40)], 1)
            .expect("applies");
        preadvice
            .apply_unsynced(&[add("B", 41)], 2)
            .expect("applies");
        // The sync before the segment switch fails: no compaction, nothing lost.
        faults.failing_syncs.store(1, Ordering::Relaxed);
        preadvice.compact().expect_err("the sync fails");
        assert_eq!(preadvice.seqs().durable, 0);
        let compaction = preadvice.compact().expect("compacts").expect("folds");
        assert_eq!(compaction.through_seq, 2);
        assert_eq!(preadvice.seqs().durable, 2);
        preadvice
            .apply_unsynced(&[add("C", 42)], 3)
            .expect("applies");
        assert_eq!(preadvice.sync().expect("syncs").durable_seq, 3);
        // Folded into the plan, and the later batch over it.
        assert_eq!(answer(&preadvice, "A").0, 40);
        assert_eq!(answer(&preadvice, "C"), (42, 3));
    }
}
