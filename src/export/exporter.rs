//! The exporter thread: reads batches of records from an [`ExportSource`], publishes
//! each batch as one NATS message into JetStream with a bounded window of
//! unacknowledged messages, and resumes from the stream itself after every start and
//! every lost connection. The decisions (what to replay, where to resume, how old the
//! oldest unexported event is) are in [`super::ledger`]; this file is the IO around
//! them. Why a session ended is a `SessionError` (typed, with its cause), counted by
//! its [`ExportErrorKind`].
//!
//! One connection, one tokio runtime: each connection attempt runs in a fresh
//! current-thread runtime that is dropped when the connection is lost. async-nats would
//! otherwise reconnect by itself and send, on the new connection, messages that sat in
//! its buffers while an earlier one was lost on the old connection: a gap. Dropping the
//! runtime destroys the client, its tasks and every buffer, so nothing from a dead
//! connection can be sent later by this process; then the stream is asked what it holds.
//! (The client's own reconnect is disabled by a reconnect delay of a day.)

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{
    CreateStreamError, GetStreamError, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    Config as StreamConfig, LastRawMessageError, LastRawMessageErrorKind, StorageType,
};
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{Notify, watch};

use super::config::ExportSettings;
use super::connection::{ConnectError, connect};
use super::core::{CoreSettings, ExportCore, Outgoing, StreamEnd};
use super::counters::{ExportCounters, ExportErrorKind, ExportState};
use super::ledger::Bounds;
use super::source::{CursorStore, ExportSource};
use crate::plc::backoff::Backoff;

/// Header with the first event sequence in the message.
pub const HEADER_FIRST_SEQ: &str = "Sortd-First-Seq";
/// Header with the last event sequence in the message.
pub const HEADER_LAST_SEQ: &str = "Sortd-Last-Seq";
/// Header with the number of events in the message.
pub const HEADER_RECORDS: &str = "Sortd-Records";

/// The `Nats-Msg-Id` of the message holding events `first_seq..=last_seq` of `sorter`.
pub fn message_id(sorter: &str, first_seq: u64, last_seq: u64) -> String {
    format!("{sorter}:{first_seq}-{last_seq}")
}

/// While backing off, refresh the lag figures this often.
const BACKOFF_TICK: Duration = Duration::from_millis(100);

/// A running exporter; dropping it stops it.
#[derive(Debug)]
pub struct Exporter {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<ExportCounters>,
}

impl Exporter {
    /// Starts the exporter thread over `source`, storing acknowledged positions in
    /// `cursor`. It never blocks the caller: connecting happens on the thread.
    pub fn start<S, C>(
        settings: ExportSettings,
        source: S,
        cursor: C,
        counters: Arc<ExportCounters>,
    ) -> io::Result<Exporter>
    where
        S: ExportSource + 'static,
        C: CursorStore + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        let shell = Shell::new(settings, source, cursor, Arc::clone(&counters));
        let thread = std::thread::Builder::new()
            .name("sortd-export".into())
            .spawn(move || shell.run(stop_rx))?;
        Ok(Exporter {
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// The exporter's counters.
    pub fn counters(&self) -> &Arc<ExportCounters> {
        &self.counters
    }

    /// Stops: waits up to the ack timeout for what is in flight, stores the cursor and
    /// joins the thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("export thread panicked");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    Stopped,
    Lost {
        kind: ExportErrorKind,
        progressed: bool,
    },
}

/// Why one connection's session ended, with what the library said: counted by its
/// [`ExportErrorKind`], logged once per kind. `E` is the source's error.
#[derive(Debug)]
enum SessionError<E> {
    /// The connection could not be opened.
    Connect(ConnectError),
    /// The stream could not be created (`create_stream = true`).
    CreateStream {
        stream: String,
        error: CreateStreamError,
    },
    /// The stream could not be found (`create_stream = false`) or read.
    GetStream {
        stream: String,
        error: GetStreamError,
    },
    /// The last message on the subject could not be read.
    LastMessage {
        subject: String,
        error: LastRawMessageError,
    },
    /// The newest message on the subject was not written by a sortd exporter.
    ForeignMessage { subject: String, stream_seq: u64 },
    /// The source (journal) could not be read.
    Source(E),
    /// A publish was not sent or not acknowledged.
    Publish(PublishError),
    /// The connection dropped.
    Disconnected,
}

impl<E> SessionError<E> {
    /// The counter it goes to.
    fn kind(&self) -> ExportErrorKind {
        match self {
            SessionError::Connect(_) => ExportErrorKind::Connect,
            SessionError::CreateStream { .. }
            | SessionError::GetStream { .. }
            | SessionError::LastMessage { .. } => ExportErrorKind::Stream,
            SessionError::ForeignMessage { .. } => ExportErrorKind::ForeignMessage,
            SessionError::Source(_) => ExportErrorKind::Source,
            SessionError::Publish(error) => publish_error_kind(error.kind()),
            SessionError::Disconnected => ExportErrorKind::Disconnected,
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for SessionError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Connect(error) => write!(f, "connecting: {error}"),
            SessionError::CreateStream { stream, error } => {
                write!(f, "creating stream {stream}: {error}")
            }
            SessionError::GetStream { stream, error } => write!(f, "stream {stream}: {error}"),
            SessionError::LastMessage { subject, error } => {
                write!(f, "last message on {subject}: {error}")
            }
            SessionError::ForeignMessage {
                subject,
                stream_seq,
            } => write!(
                f,
                "stream message {stream_seq} on {subject} has no {HEADER_LAST_SEQ} header"
            ),
            SessionError::Source(error) => write!(f, "reading the journal: {error}"),
            SessionError::Publish(error) => write!(f, "publishing: {error}"),
            SessionError::Disconnected => write!(f, "connection lost"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SessionError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Connect(error) => Some(error),
            SessionError::CreateStream { error, .. } => Some(error),
            SessionError::GetStream { error, .. } => Some(error),
            SessionError::LastMessage { error, .. } => Some(error),
            SessionError::Source(error) => Some(error),
            SessionError::Publish(error) => Some(error),
            SessionError::ForeignMessage { .. } | SessionError::Disconnected => None,
        }
    }
}

type AckFuture = std::pin::Pin<
    Box<dyn Future<Output = (Bounds, Result<jetstream::publish::PublishAck, PublishError>)>>,
>;

/// The core's settings from the `[export]` section.
pub fn core_settings(settings: &ExportSettings) -> CoreSettings {
    CoreSettings {
        message_records_max: settings.message_records_max,
        message_bytes_max: settings.message_bytes_max,
        publish_window_max: settings.publish_window_max,
        cursor_store_interval: settings.cursor_store_interval,
    }
}

struct Shell<S, C> {
    settings: ExportSettings,
    source: S,
    cursor: C,
    counters: Arc<ExportCounters>,
    core: ExportCore,
    last_logged: Option<ExportErrorKind>,
}

impl<S: ExportSource, C: CursorStore> Shell<S, C> {
    fn new(settings: ExportSettings, source: S, cursor: C, counters: Arc<ExportCounters>) -> Self {
        Shell {
            core: ExportCore::new(core_settings(&settings), Arc::clone(&counters)),
            settings,
            source,
            cursor,
            counters,
            last_logged: None,
        }
    }

    fn run(mut self, mut stop: watch::Receiver<bool>) {
        let stored = match self.cursor.load() {
            Ok(cursor) => Some(cursor),
            Err(error) => {
                self.counters.count_error(ExportErrorKind::Source);
                tracing::error!(%error, "export cursor unreadable; the stream decides where to resume");
                None
            }
        };
        self.core.start(stored, Instant::now());
        let seed = u64::from(std::process::id()) ^ self.core.acked_seq();
        let mut backoff = Backoff::new(
            self.settings.reconnect_backoff_min_ms,
            self.settings.reconnect_backoff_max_ms,
            seed,
        );
        let mut first = true;
        loop {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "export runtime failed to start");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let delay = if first {
                None
            } else {
                Some(backoff.next_delay())
            };
            first = false;
            let end = runtime.block_on(async {
                if let Some(delay) = delay {
                    self.counters.set_state(ExportState::BackingOff);
                    if self.wait(delay, &mut stop).await {
                        return SessionEnd::Stopped;
                    }
                }
                self.session(&mut stop).await
            });
            // Dropping the runtime drops the client, its tasks and its buffers: nothing
            // of this connection can be sent any more.
            drop(runtime);
            self.core.connection_lost();
            match end {
                SessionEnd::Stopped => break,
                SessionEnd::Lost { kind, progressed } => {
                    self.counters.count_error(kind);
                    if progressed {
                        backoff.reset();
                    }
                }
            }
        }
        self.store_cursor(true);
        self.counters.set_state(ExportState::Stopped);
    }

    /// Sleeps `delay` while keeping the lag figures fresh; true when asked to stop.
    async fn wait(&mut self, delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        let until = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < until {
            if *stop.borrow() {
                return true;
            }
            self.refresh_lag();
            let tick = until.min(tokio::time::Instant::now() + BACKOFF_TICK);
            tokio::select! {
                _ = tokio::time::sleep_until(tick) => {}
                _ = stop.changed() => {}
            }
        }
        *stop.borrow()
    }

    fn refresh_lag(&mut self) -> u64 {
        let last = self.source.last_seq();
        self.core.observe_source(last, Instant::now());
        last
    }

    fn log_loss(&mut self, kind: ExportErrorKind, error: &SessionError<S::Error>) {
        // One line per kind until the exporter makes progress again: a long outage does
        // not flood the log.
        if self.last_logged != Some(kind) {
            tracing::warn!(
                kind = kind.name(),
                detail = %error,
                "NATS export interrupted; retrying with backoff"
            );
            self.last_logged = Some(kind);
        } else {
            tracing::debug!(kind = kind.name(), detail = %error, "NATS export still interrupted");
        }
    }

    fn lost(&mut self, error: SessionError<S::Error>, progressed: bool) -> SessionEnd {
        let kind = error.kind();
        self.log_loss(kind, &error);
        SessionEnd::Lost { kind, progressed }
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> SessionEnd {
        self.counters.set_state(ExportState::Connecting);
        let lost = Arc::new(Notify::new());
        // A stop is not held up by a slow connect or a slow stream API.
        let connecting = tokio::select! {
            result = connect(
                &self.settings.connection,
                format!("sortd-export-{}", self.settings.sorter),
                Some(Arc::clone(&lost)),
            ) => Some(result),
            _ = stop.changed() => None,
        };
        let client = match connecting {
            None => return SessionEnd::Stopped,
            Some(Ok(client)) => client,
            Some(Err(error)) => return self.lost(SessionError::Connect(error), false),
        };
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        let js = jetstream::context::ContextBuilder::new()
            .timeout(self.settings.ack_timeout)
            .ack_timeout(self.settings.ack_timeout)
            .max_ack_inflight(self.settings.publish_window_max + 1)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let reading = tokio::select! {
            result = self.read_stream_end(&js) => Some(result),
            _ = stop.changed() => None,
        };
        let end = match reading {
            None => return SessionEnd::Stopped,
            Some(Ok(end)) => end,
            Some(Err(error)) => return self.lost(error, false),
        };
        let resume = match self.core.connected(end, &mut self.source) {
            Ok(resume) => resume,
            Err(error) => return self.lost(SessionError::Source(error), false),
        };
        if end.last_seq.is_some() {
            self.store_cursor(true);
        }
        tracing::info!(
            next_seq = resume.next_seq,
            replays = resume.replays,
            stream_seq = end.subject_seq,
            "NATS export connected"
        );
        self.publish_loop(&js, &lost, stop).await
    }

    /// The last event sequence the stream holds for this subject (None when the subject
    /// is empty) and the stream sequence of that message (0 when none).
    async fn read_stream_end(&self, js: &Context) -> Result<StreamEnd, SessionError<S::Error>> {
        let settings = &self.settings;
        let stream = if settings.create_stream {
            js.get_or_create_stream(StreamConfig {
                name: settings.stream.clone(),
                subjects: settings.stream_subjects.clone(),
                storage: StorageType::File,
                max_age: settings.stream_max_age,
                duplicate_window: settings.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|error| SessionError::CreateStream {
                stream: settings.stream.clone(),
                error,
            })?
        } else {
            js.get_stream(&settings.stream)
                .await
                .map_err(|error| SessionError::GetStream {
                    stream: settings.stream.clone(),
                    error,
                })?
        };
        match stream
            .get_last_raw_message_by_subject(&settings.subject)
            .await
        {
            Ok(message) => {
                let last = message
                    .headers
                    .get(HEADER_LAST_SEQ)
                    .and_then(|value| value.as_str().parse::<u64>().ok());
                match last {
                    Some(last) => Ok(StreamEnd {
                        last_seq: Some(last),
                        subject_seq: message.sequence,
                    }),
                    None => Err(SessionError::ForeignMessage {
                        subject: settings.subject.clone(),
                        stream_seq: message.sequence,
                    }),
                }
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                Ok(StreamEnd {
                    last_seq: None,
                    subject_seq: 0,
                })
            }
            Err(error) => Err(SessionError::LastMessage {
                subject: settings.subject.clone(),
                error,
            }),
        }
    }

    async fn publish_loop(
        &mut self,
        js: &Context,
        lost: &Notify,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let mut in_flight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        // The first message of a connection says which stream message it must follow,
        // and goes alone (the core's guard and window): if anything else appended to the
        // subject since the stream was read (a late message of an old connection, a
        // second exporter), JetStream refuses it and this connection resyncs.
        let mut payload = Vec::new();
        loop {
            if *stop.borrow() {
                self.drain(&mut in_flight).await;
                return SessionEnd::Stopped;
            }
            let window = self.core.window();
            let mut caught_up = false;
            while in_flight.len() < window {
                let outgoing = match self.core.next_message(&mut self.source, &mut payload) {
                    Ok(Some(outgoing)) => outgoing,
                    Ok(None) => {
                        caught_up = true;
                        break;
                    }
                    Err(error) => {
                        let progressed = self.core.progressed();
                        return self.lost(SessionError::Source(error), progressed);
                    }
                };
                let bounds = outgoing.bounds;
                let message = self.message(outgoing, std::mem::take(&mut payload));
                let sent = js
                    .send_publish(self.settings.subject.clone(), message)
                    .await;
                self.core.published(bounds);
                match sent {
                    Ok(ack) => in_flight.push_back(ack_future(bounds, ack)),
                    Err(error) => {
                        let progressed = self.core.progressed();
                        return self.lost(SessionError::Publish(error), progressed);
                    }
                }
            }
            let source_last = self.refresh_lag();
            self.counters
                .set_state(self.core.state(caught_up, source_last));
            self.store_cursor(false);
            let can_read_more = in_flight.len() < window;
            tokio::select! {
                biased;
                _ = lost.notified() => {
                    let progressed = self.core.progressed();
                    return self.lost(SessionError::Disconnected, progressed);
                }
                Some((bounds, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(ack) => {
                            self.last_logged = None;
                            self.core.on_ack(bounds, ack.duplicate);
                        }
                        Err(error) => {
                            let progressed = self.core.progressed();
                            return self.lost(SessionError::Publish(error), progressed);
                        }
                    }
                }
                _ = tokio::time::sleep(self.settings.idle_poll), if can_read_more => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn message(&self, outgoing: Outgoing, payload: Vec<u8>) -> PublishMessage {
        let bounds = outgoing.bounds;
        let id = message_id(&self.settings.sorter, bounds.first_seq, bounds.last_seq);
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(id)
            .header(HEADER_FIRST_SEQ, bounds.first_seq.to_string().as_str())
            .header(HEADER_LAST_SEQ, bounds.last_seq.to_string().as_str())
            .header(HEADER_RECORDS, bounds.records().to_string().as_str());
        if let Some(subject_seq) = outgoing.guard {
            message = message.expected_last_subject_sequence(subject_seq);
        }
        message
    }

    fn store_cursor(&mut self, force: bool) {
        let now = Instant::now();
        let Some(acked_seq) = self.core.cursor_due(now, force) else {
            return;
        };
        match self.cursor.store(acked_seq) {
            Ok(()) => self.core.cursor_stored(acked_seq, now),
            Err(error) => {
                self.counters.count_error(ExportErrorKind::Source);
                tracing::warn!(%error, "export cursor not stored");
            }
        }
    }

    /// On stop: waits up to the ack timeout for what is in flight.
    async fn drain(&mut self, in_flight: &mut FuturesOrdered<AckFuture>) {
        let deadline = tokio::time::Instant::now() + self.settings.ack_timeout;
        while let Ok(Some((bounds, result))) =
            tokio::time::timeout_at(deadline, in_flight.next()).await
        {
            match result {
                Ok(ack) => self.core.on_ack(bounds, ack.duplicate),
                Err(_) => break,
            }
        }
    }
}

fn ack_future(bounds: Bounds, ack: PublishAckFuture) -> AckFuture {
    Box::pin(async move { (bounds, ack.await) })
}

fn publish_error_kind(kind: PublishErrorKind) -> ExportErrorKind {
    match kind {
        PublishErrorKind::TimedOut => ExportErrorKind::AckTimeout,
        PublishErrorKind::BrokenPipe => ExportErrorKind::Disconnected,
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::Other => ExportErrorKind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_session_error_names_its_counter_and_keeps_its_cause() {
        let cases: [(SessionError<io::Error>, ExportErrorKind); 6] = [
            (
                SessionError::Publish(PublishError::new(PublishErrorKind::TimedOut)),
                ExportErrorKind::AckTimeout,
            ),
            (
                SessionError::Publish(PublishError::new(PublishErrorKind::BrokenPipe)),
                ExportErrorKind::Disconnected,
            ),
            (
                SessionError::Publish(PublishError::new(PublishErrorKind::WrongLastSequence)),
                ExportErrorKind::Rejected,
            ),
            (
                SessionError::ForeignMessage {
                    subject: "sortd.events.h.s".into(),
                    stream_seq: 7,
                },
                ExportErrorKind::ForeignMessage,
            ),
            (
                SessionError::Source(io::Error::other("segment unreadable")),
                ExportErrorKind::Source,
            ),
            (SessionError::Disconnected, ExportErrorKind::Disconnected),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
        let source = SessionError::Source(io::Error::other("segment unreadable"));
        assert_eq!(
            source.to_string(),
            "reading the journal: segment unreadable"
        );
        let cause = source.source().expect("a cause");
        assert!(cause.downcast_ref::<io::Error>().is_some());
        let foreign = SessionError::<io::Error>::ForeignMessage {
            subject: "sortd.events.h.s".into(),
            stream_seq: 7,
        };
        assert_eq!(
            foreign.to_string(),
            "stream message 7 on sortd.events.h.s has no Sortd-Last-Seq header"
        );
        assert!(foreign.source().is_none());
    }
}
