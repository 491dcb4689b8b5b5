//! Reading the sort-event stream back, as the hub's reconciliation does: an ordered
//! (ephemeral) consumer over `SORTD_EVENTS` filtered to `sortd.events.>` (or narrower),
//! from the first message to the last one the stream held when reading started. Each
//! message goes to a callback with its sorter (the subject's last token), its
//! `Sortd-First-Seq` / `Sortd-Last-Seq` headers and its payload; what to make of them is
//! the caller's (`crate::events::reconcile`).

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self};
use futures_util::StreamExt;

use super::connection::{ConnectError, NatsConnection, connect};
use super::exporter::{HEADER_FIRST_SEQ, HEADER_LAST_SEQ};

/// No message for this long while the stream says more are pending: give up.
const IDLE_MAX: Duration = Duration::from_secs(10);

/// Why the stream could not be read to its end.
#[derive(Debug)]
pub enum ReadError {
    /// The server could not be reached.
    Connect(ConnectError),
    /// The stream is missing or its API failed.
    Stream(String),
    /// The consumer broke or went silent before the end.
    Consume(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Connect(error) => write!(f, "connecting: {error}"),
            ReadError::Stream(detail) => write!(f, "stream: {detail}"),
            ReadError::Consume(detail) => write!(f, "reading: {detail}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Connect(error) => Some(error),
            ReadError::Stream(_) | ReadError::Consume(_) => None,
        }
    }
}

/// Reads every message of `stream` on `filter` up to the stream's last message at the
/// start, in stream order, calling `on_message(sorter, headers, payload)`. Returns the
/// number of messages read.
pub async fn read_events(
    connection: &NatsConnection,
    stream: &str,
    filter: &str,
    mut on_message: impl FnMut(&str, Option<(u64, u64)>, &[u8]),
) -> Result<u64, ReadError> {
    let client = connect(connection, "sortd-events-reconcile".into(), None)
        .await
        .map_err(ReadError::Connect)?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(connection.request_timeout)
        .build(client);
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|error| ReadError::Stream(format!("{stream}: {error}")))?;
    let last = handle
        .info()
        .await
        .map_err(|error| ReadError::Stream(format!("{stream}: {error}")))?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let consumer = handle
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|error| ReadError::Stream(format!("consumer on {stream}: {error}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| ReadError::Consume(error.to_string()))?;
    let mut read = 0u64;
    loop {
        let next = match tokio::time::timeout(IDLE_MAX, messages.next()).await {
            Ok(next) => next,
            // Nothing more on the filter (the stream's last message is another subject's).
            Err(_) if read > 0 => return Ok(read),
            Err(_) => return Err(ReadError::Consume("no message within 10 s".into())),
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(ReadError::Consume(error.to_string())),
            None => return Ok(read),
        };
        let (stream_seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(error) => return Err(ReadError::Consume(error.to_string())),
        };
        let sorter = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or_default();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .and_then(|value| value.as_str().parse::<u64>().ok())
        };
        let bounds = header(HEADER_FIRST_SEQ).zip(header(HEADER_LAST_SEQ));
        on_message(sorter, bounds, &message.payload);
        read += 1;
        if stream_seq >= last || pending == 0 {
            return Ok(read);
        }
    }
}
