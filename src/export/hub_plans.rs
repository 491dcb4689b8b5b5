//! Plans from the hub, on the node: the two [`HubTask`]s that watch the group's object in
//! the plan bucket and report the running plan in the status bucket, and the node's copy
//! of the last good plan in `[hub] dir`.
//!
//! The watcher judges each revision of the group's object by the version rule
//! ([`super::hub_plan::judge`]); a plan it takes is downloaded into `plan.sortplan.part`
//! (bounded by `plan_bytes_max`, fsynced, files 0640), checked against its metadata, and
//! handed to the daemon's [`PlanInstaller`], the same code SIGHUP runs: it opens, fully
//! verifies and swaps the plan (under the pre-advice overlay). Only then is the file
//! renamed to `plan.sortplan`, with its metadata in `plan.json`, and the directory
//! fsynced: the plan on disk is always one that verified and ran. A plan that does not
//! verify is refused, counted and logged once; the old one keeps sorting, and that
//! revision is not downloaded again (a new one is, when published).
//!
//! A failure that is not the plan's is retried, counted by [`PlanRetry`] and logged once
//! per run of failures: when `[hub] dir` cannot be written (disk full, permissions) the
//! watcher tries the same revision again after a backoff capped at `[hub]
//! reconnect_backoff_max_ms`, for as long as it stays the newest; when the download
//! breaks off (the broker went away) the session ends and the next one downloads it again.
//!
//! The status task writes a [`NodeStatus`] under the node's id at every connection and
//! after every swap (whatever its origin: the daemon updates the [`RunningPlanCell`]).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectStore};
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use async_nats::jetstream::{Context, kv};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::hub::{HubSession, HubTask, PlanRefusal, PlanRetry, TaskEnd};
use super::hub_config::HubSettings;
use super::hub_plan::{NodeStatus, PlanIdentity, PublishedPlan, RunningPlan, Verdict, judge};
use crate::plan::{Plan, PlanError, SwapReport};
use crate::plc::backoff::Backoff;
use crate::util::fs::{create_private_dir, create_private_file, sync_dir};

/// The last good plan from the hub, in `[hub] dir`.
pub const PLAN_FILE: &str = "plan.sortplan";
/// Its metadata (a [`PublishedPlan`] as JSON).
pub const META_FILE: &str = "plan.json";
/// A download in progress.
const PART_FILE: &str = "plan.sortplan.part";
/// `plan.json` larger than this is refused.
const META_BYTES_MAX: u64 = 64 * 1024;
/// Bytes read from the object per read call.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Swaps a downloaded plan in: the daemon's plan path, the one SIGHUP runs.
pub trait PlanInstaller: Send + Sync + 'static {
    /// Opens and fully verifies the compiled plan at `path` and swaps it in (under the
    /// pre-advice overlay), recording it as running from the hub; on any error the old
    /// plan stays and the error says why.
    fn install(&self, path: &Path, published: &PublishedPlan) -> Result<SwapReport, InstallError>;
}

/// Why an installer refused a plan: the daemon's own typed error (this layer sits below
/// the daemon and cannot name it), kept whole with its `source()` chain for the log.
pub type InstallError = Box<dyn std::error::Error + Send + Sync>;

/// The base plan the node runs, shared by the daemon (which sets it at start and after
/// every swap) and the hub tasks (which judge against it and report it).
#[derive(Debug)]
pub struct RunningPlanCell(watch::Sender<RunningPlan>);

impl RunningPlanCell {
    /// A cell holding `running`.
    pub fn new(running: RunningPlan) -> RunningPlanCell {
        RunningPlanCell(watch::Sender::new(running))
    }

    /// The plan running now.
    pub fn get(&self) -> RunningPlan {
        self.0.borrow().clone()
    }

    /// Records a new running plan (wakes the status task).
    pub fn set(&self, running: RunningPlan) {
        self.0.send_replace(running);
    }

    fn subscribe(&self) -> watch::Receiver<RunningPlan> {
        self.0.subscribe()
    }
}

/// The last good plan from the hub found on disk at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlan {
    /// `<dir>/plan.sortplan`.
    pub path: PathBuf,
    /// Its metadata (from `plan.json`, or from the plan itself when `plan.json` does not
    /// describe it: then not a rollback).
    pub published: PublishedPlan,
}

/// The last good plan from the hub in `dir`, if there is one. Only the cheap open is
/// done here; the daemon verifies the plan fully before it uses it.
pub fn stored_plan(dir: &Path) -> Result<Option<StoredPlan>, String> {
    let path = dir.join(PLAN_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let plan = Plan::open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    let identity = PlanIdentity {
        name: plan.name().to_string(),
        version: plan.version(),
        checksum: plan.checksum(),
    };
    let recorded = read_meta(&dir.join(META_FILE));
    let published = match recorded {
        Some(published) if published.identity == identity => published,
        // Crash between the plan's rename and its metadata's: the plan is the truth.
        _ => PublishedPlan {
            identity,
            published_unix_ms: 0,
            rollback: false,
        },
    };
    Ok(Some(StoredPlan { path, published }))
}

fn read_meta(path: &Path) -> Option<PublishedPlan> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    file.take(META_BYTES_MAX).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes `published` as `<dir>/plan.json`: temporary file, fsync, rename, fsync dir.
fn write_meta(dir: &Path, published: &PublishedPlan) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(published).map_err(io::Error::other)?;
    let part = dir.join(format!("{META_FILE}.part"));
    let mut file = create_private_file(&part)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&part, dir.join(META_FILE))?;
    sync_dir(dir)
}

/// The watcher's memory across connections: the object revision it last refused or
/// ignored, so a reconnect does not refuse (count, log) the same revision again; and
/// whether a session ended in the middle of taking a plan (counted by the next one).
#[derive(Debug, Default)]
struct Memory {
    judged_nuid: Option<String>,
    taking: bool,
}

/// The plan watcher: watches `[hub] plan_bucket` for the group's object and takes new
/// plans through `installer`.
pub fn plan_task(running: Arc<RunningPlanCell>, installer: Arc<dyn PlanInstaller>) -> HubTask {
    let memory = Arc::new(Mutex::new(Memory::default()));
    HubTask {
        name: "plans",
        start: Box::new(move |session| {
            let watcher = Watcher {
                session,
                running: Arc::clone(&running),
                installer: Arc::clone(&installer),
                memory: Arc::clone(&memory),
            };
            Box::pin(watcher.run())
        }),
    }
}

/// The status reporter: writes the node's [`NodeStatus`] to `[hub] status_bucket` at
/// every connection and after every swap.
pub fn status_task(running: Arc<RunningPlanCell>) -> HubTask {
    HubTask {
        name: "status",
        start: Box::new(move |session| Box::pin(report_status(session, running.subscribe()))),
    }
}

fn end(what: &str, error: impl std::fmt::Display) -> TaskEnd {
    TaskEnd {
        detail: format!("{what}: {error}"),
    }
}

/// The plan bucket, created when missing and `[hub] create` allows.
pub async fn plan_bucket(js: &Context, bucket: &str, create: bool) -> Result<ObjectStore, String> {
    match js.get_object_store(bucket).await {
        Ok(store) => Ok(store),
        Err(_) if create => js
            .create_object_store(object_store::Config {
                bucket: bucket.to_string(),
                description: Some("sortd: compiled sort plans, one object per group".into()),
                ..Default::default()
            })
            .await
            .map_err(|error| format!("creating plan bucket {bucket}: {error}")),
        Err(error) => Err(format!("plan bucket {bucket}: {error}")),
    }
}

/// The status bucket, created when missing and `[hub] create` allows. The bucket's stream
/// is created here with the layout of a Key-Value bucket of history 1 (`KV_<bucket>`,
/// subjects `$KV.<bucket>.>`): async-nats' own `create_key_value` first reads account
/// information in a form nats-server 2.9 does not answer.
pub async fn status_bucket(js: &Context, bucket: &str, create: bool) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    if create {
        js.get_or_create_stream(StreamConfig {
            name: format!("KV_{bucket}"),
            description: Some("sortd: the plan each node runs".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|error| format!("creating status bucket {bucket}: {error}"))?;
    }
    js.get_key_value(bucket)
        .await
        .map_err(|error| format!("status bucket {bucket}: {error}"))
}

async fn report_status(session: HubSession, mut running: watch::Receiver<RunningPlan>) -> TaskEnd {
    let settings = &session.settings;
    let store = match status_bucket(&session.js, &settings.status_bucket, settings.create).await {
        Ok(store) => store,
        Err(detail) => return TaskEnd { detail },
    };
    loop {
        let status = NodeStatus::new(&settings.group, &running.borrow_and_update());
        let value = match serde_json::to_vec(&status) {
            Ok(value) => value,
            Err(error) => return end("encoding the node status", error),
        };
        if let Err(error) = store.put(&settings.node, value.into()).await {
            return end("writing the node status", error);
        }
        session
            .counters
            .status_reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if running.changed().await.is_err() {
            // The daemon dropped the cell: it is stopping.
            std::future::pending::<()>().await;
        }
    }
}

/// What became of one revision of the group's object.
enum Outcome {
    Taken(SwapReport),
    Running,
    Ignored,
    Refused(PlanRefusal, String),
    /// Not the plan's fault: try the same revision again after a backoff.
    Retry(PlanRetry, String),
}

struct Watcher {
    session: HubSession,
    running: Arc<RunningPlanCell>,
    installer: Arc<dyn PlanInstaller>,
    memory: Arc<Mutex<Memory>>,
}

impl Watcher {
    fn settings(&self) -> &HubSettings {
        &self.session.settings
    }

    async fn run(self) -> TaskEnd {
        let settings = self.settings();
        let store =
            match plan_bucket(&self.session.js, &settings.plan_bucket, settings.create).await {
                Ok(store) => store,
                Err(detail) => return TaskEnd { detail },
            };
        {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::take(&mut memory.taking) {
                // The last session ended (or was torn down) mid-download: this one
                // downloads the revision again.
                self.session.counters.count_retry(PlanRetry::Interrupted);
            }
        }
        if let Err(error) = create_private_dir(&settings.dir) {
            return end(&format!("hub dir {}", settings.dir.display()), error);
        }
        // The newest revision of every object first, then each new one.
        let mut watch = match store.watch_with_history().await {
            Ok(watch) => watch,
            Err(error) => return end("watching the plan bucket", error),
        };
        while let Some(next) = watch.next().await {
            let info = match next {
                Ok(info) => info,
                Err(error) => return end("watching the plan bucket", error),
            };
            if info.name != settings.group {
                continue;
            }
            if let Err(end) = self.revision(&store, info).await {
                return end;
            }
        }
        TaskEnd {
            detail: "plan bucket watch ended".into(),
        }
    }

    /// Handles one revision of the group's object; `Err` ends the session.
    async fn revision(&self, store: &ObjectStore, info: ObjectInfo) -> Result<(), TaskEnd> {
        let counters = &self.session.counters;
        if info.deleted {
            tracing::warn!(group = %self.settings().group, "the group's published plan was deleted; keeping the running plan");
            return Ok(());
        }
        {
            let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            if memory.judged_nuid.as_deref() == Some(info.nuid.as_str()) {
                return Ok(());
            }
        }
        let outcome = self.take_retrying(store, &info).await?;
        let remember = match outcome {
            Outcome::Taken(report) => {
                counters
                    .plans_taken
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    plan = %report.new_name,
                    version = report.new_version,
                    old_version = report.old_version,
                    "plan from the hub taken"
                );
                false
            }
            Outcome::Running | Outcome::Retry(..) => false,
            Outcome::Ignored => true,
            Outcome::Refused(reason, detail) => {
                counters.count_refused(reason);
                let running = self.running.get();
                tracing::error!(
                    reason = reason.name(),
                    detail = %detail.replace('\n', "; "),
                    plan = %running.identity.name,
                    version = running.identity.version,
                    "plan from the hub refused; still serving the running plan"
                );
                true
            }
        };
        if remember {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory.judged_nuid = Some(info.nuid.clone());
        }
        Ok(())
    }

    /// [`Self::take`], again after a capped backoff while it fails for a reason that is
    /// not the plan's (each failure counted, the first of a run logged). A newer revision
    /// ends the retries: the download finds it superseded and the watch brings it next.
    async fn take_retrying(
        &self,
        store: &ObjectStore,
        info: &ObjectInfo,
    ) -> Result<Outcome, TaskEnd> {
        let settings = self.settings();
        let mut backoff = Backoff::new(
            settings.reconnect_backoff_min_ms,
            settings.reconnect_backoff_max_ms,
            u64::from(std::process::id()),
        );
        let mut failures = 0u64;
        loop {
            // Left set when the session ends before `take` returns: the next one counts it.
            self.memory.lock().unwrap_or_else(|e| e.into_inner()).taking = true;
            let outcome = self.take(store, info).await?;
            self.memory.lock().unwrap_or_else(|e| e.into_inner()).taking = false;
            let (reason, detail) = match outcome {
                Outcome::Retry(reason, detail) => (reason, detail),
                outcome => {
                    if failures > 0 {
                        tracing::info!(failures, "plan from the hub: the retries are over");
                    }
                    return Ok(outcome);
                }
            };
            self.session.counters.count_retry(reason);
            failures += 1;
            let delay = backoff.next_delay();
            if failures == 1 {
                tracing::warn!(
                    reason = reason.name(),
                    detail = %detail,
                    dir = %settings.dir.display(),
                    "cannot take the plan from the hub (not the plan's fault); retrying with backoff"
                );
            } else {
                tracing::debug!(failures, detail = %detail, "plan from the hub: still retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn take(&self, store: &ObjectStore, info: &ObjectInfo) -> Result<Outcome, TaskEnd> {
        let settings = self.settings();
        let published = match PublishedPlan::from_metadata(&info.metadata) {
            Ok(published) => published,
            Err(error) => return Ok(Outcome::Refused(PlanRefusal::Metadata, error.to_string())),
        };
        self.session.counters.published_version.store(
            u64::from(published.identity.version),
            std::sync::atomic::Ordering::Relaxed,
        );
        let running = self.running.get();
        match judge(&running.identity, &published) {
            Verdict::Running => return Ok(Outcome::Running),
            Verdict::NotNewer => {
                self.session
                    .counters
                    .plans_ignored
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    published_version = published.identity.version,
                    running_version = running.identity.version,
                    "published plan is not newer than the running one and not a rollback; ignored"
                );
                return Ok(Outcome::Ignored);
            }
            Verdict::Take => {}
        }
        if info.size as u64 > settings.plan_bytes_max {
            return Ok(Outcome::Refused(
                PlanRefusal::TooLarge,
                format!(
                    "{} bytes, plan_bytes_max is {}",
                    info.size, settings.plan_bytes_max
                ),
            ));
        }
        let part = settings.dir.join(PART_FILE);
        match self.download(store, info, &part).await {
            Ok(()) => {}
            Err(Download::Refused(detail)) => {
                let _ = std::fs::remove_file(&part);
                return Ok(Outcome::Refused(PlanRefusal::Download, detail));
            }
            Err(Download::Unwritable(detail)) => {
                let _ = std::fs::remove_file(&part);
                return Ok(Outcome::Retry(PlanRetry::Write, detail));
            }
            Err(Download::Lost(detail)) => {
                let _ = std::fs::remove_file(&part);
                return Err(TaskEnd { detail });
            }
            Err(Download::Superseded) => {
                let _ = std::fs::remove_file(&part);
                return Ok(Outcome::Running);
            }
        }
        let outcome = self.install(&part, published).await;
        if !matches!(outcome, Outcome::Taken(_)) {
            let _ = std::fs::remove_file(&part);
        }
        Ok(outcome)
    }

    /// Checks the download against its metadata, swaps it in through the installer (on
    /// a blocking thread: a full verify reads the whole plan), then keeps it on disk.
    async fn install(&self, part: &Path, published: PublishedPlan) -> Outcome {
        let identity = match Plan::open(part) {
            Ok(plan) => PlanIdentity {
                name: plan.name().to_string(),
                version: plan.version(),
                checksum: plan.checksum(),
            },
            // The file just written cannot be read back: the disk's fault, not the plan's.
            Err(PlanError::Io { kind }) => {
                return Outcome::Retry(
                    PlanRetry::Write,
                    format!("{}: reading it back: {kind}", part.display()),
                );
            }
            Err(error) => return Outcome::Refused(PlanRefusal::Verify, error.to_string()),
        };
        if identity != published.identity {
            return Outcome::Refused(
                PlanRefusal::Verify,
                format!(
                    "the object holds plan {:?} version {} checksum {:016x}, its metadata names \
                     {:?} version {} checksum {:016x}",
                    identity.name,
                    identity.version,
                    identity.checksum,
                    published.identity.name,
                    published.identity.version,
                    published.identity.checksum
                ),
            );
        }
        let installer = Arc::clone(&self.installer);
        let path = part.to_path_buf();
        let meta = published.clone();
        let installed = tokio::task::spawn_blocking(move || installer.install(&path, &meta)).await;
        let report = match installed {
            Ok(Ok(report)) => report,
            Ok(Err(error)) if is_io(error.as_ref()) => {
                return Outcome::Retry(PlanRetry::Write, error.to_string());
            }
            Ok(Err(error)) => return Outcome::Refused(PlanRefusal::Verify, error.to_string()),
            Err(error) => return Outcome::Refused(PlanRefusal::Verify, error.to_string()),
        };
        // Running now: make it the last good plan on disk (the mapping follows the file).
        let dir = &self.settings().dir;
        let kept = std::fs::rename(part, dir.join(PLAN_FILE))
            .and_then(|()| sync_dir(dir))
            .and_then(|()| write_meta(dir, &published));
        if let Err(error) = kept {
            tracing::error!(%error, dir = %dir.display(), "the plan from the hub runs but could not be kept on disk; a restart uses the previous one");
        }
        Outcome::Taken(report)
    }

    /// Downloads the object into `part` (0640), at most `plan_bytes_max` bytes and no more
    /// than the object's size, and fsyncs it.
    async fn download(
        &self,
        store: &ObjectStore,
        info: &ObjectInfo,
        part: &Path,
    ) -> Result<(), Download> {
        let settings = self.settings();
        self.session
            .counters
            .plan_downloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut object = store
            .get(&settings.group)
            .await
            .map_err(|error| Download::Lost(format!("getting the plan object: {error}")))?;
        if object.info().nuid != info.nuid {
            // A newer revision replaced it meanwhile; the watch brings it next.
            return Err(Download::Superseded);
        }
        let limit = (info.size as u64).min(settings.plan_bytes_max);
        let unwritable =
            |error: io::Error| Download::Unwritable(format!("{}: {error}", part.display()));
        let mut file = create_private_file(part).map_err(unwritable)?;
        let mut buffer = vec![0u8; READ_CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            let read = match object.read(&mut buffer).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    return Err(Download::Refused(format!("plan object: {error}")));
                }
                Err(error) => {
                    return Err(Download::Lost(format!("reading the plan object: {error}")));
                }
            };
            total += read as u64;
            if total > limit {
                return Err(Download::Refused(format!(
                    "the object sends more than its {limit} bytes"
                )));
            }
            file.write_all(&buffer[..read]).map_err(unwritable)?;
        }
        if total != info.size as u64 {
            return Err(Download::Refused(format!(
                "got {total} of the object's {} bytes",
                info.size
            )));
        }
        file.sync_all().map_err(unwritable)?;
        Ok(())
    }
}

enum Download {
    /// The object is bad (digest, size): refuse it.
    Refused(String),
    /// The state directory could not be written: not the object's fault.
    Unwritable(String),
    /// The connection failed: end the session.
    Lost(String),
    /// A newer revision replaced it.
    Superseded,
}

/// Whether an installer's error comes from the operating system (reading the file),
/// not from the plan's content: anywhere in its `source()` chain, an I/O error.
fn is_io(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<io::Error>() || matches!(error.downcast_ref(), Some(PlanError::Io { .. })) {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::compile_str;

    fn plan_bytes(version: u32) -> Vec<u8> {
        compile_str(
            "t.csv",
            &format!(
                "kind,key,chutes\nmeta,name,hub test\nmeta,version,{version}\nprefix,33,1\n\
                 default,no_read,9\ndefault,no_rule,9\ndefault,multi_read,9\ndefault,late,9\n"
            ),
        )
        .expect("compiles")
    }

    #[test]
    fn an_installer_error_is_the_disks_when_an_io_error_is_in_its_chain() {
        #[derive(Debug)]
        struct Wrapped(io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "installing: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let disk: InstallError = Box::new(Wrapped(io::Error::other("EIO")));
        assert!(is_io(disk.as_ref()));
        let plan: InstallError = Box::new(PlanError::Io {
            kind: io::ErrorKind::Other,
        });
        assert!(is_io(plan.as_ref()));
        let content: InstallError = "checksum mismatch".into();
        assert!(!is_io(content.as_ref()));
    }

    #[test]
    fn the_stored_plan_carries_its_metadata_or_falls_back_to_the_plans_own() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_plan(dir.path()), Ok(None));
        std::fs::write(dir.path().join(PLAN_FILE), plan_bytes(4)).unwrap();
        let found = stored_plan(dir.path()).unwrap().unwrap();
        assert_eq!(found.published.identity.version, 4);
        assert!(!found.published.rollback);
        let rollback = PublishedPlan {
            rollback: true,
            published_unix_ms: 9,
            ..found.published.clone()
        };
        write_meta(dir.path(), &rollback).unwrap();
        assert_eq!(
            stored_plan(dir.path()).unwrap().unwrap().published,
            rollback
        );
        // A plan.json describing another plan (a crash between the renames) is ignored.
        std::fs::write(dir.path().join(PLAN_FILE), plan_bytes(5)).unwrap();
        let found = stored_plan(dir.path()).unwrap().unwrap();
        assert_eq!(found.published.identity.version, 5);
        assert!(!found.published.rollback);
    }
}
