//! The NATS side of sortd: the sort-event exporter, which carries the journal's records
//! into a JetStream stream, exactly once, on its own thread with its own tokio runtime
//! (the official `async-nats` client). The scanner and PLC threads never wait for it: it
//! reads what the journal already holds, and when NATS is down the journal keeps the
//! events until it is back.
//!
//! [`preadvice_sub`] takes pre-advice batches from the hub's stream into the node's
//! overlay (an async task the daemon runs). [`connection`] is how any part of sortd reaches NATS (credentials, TLS, one client);
//! [`config`] is the `[export]` section, [`hub_config`] the `[hub]` section; [`source`] the two traits the journal's reader
//! and cursor implement (plus an in-memory stand-in for tests); [`ledger`] the pure
//! decisions (in-flight batches, where to resume, lag); [`exporter`] the thread and the
//! connection; [`counters`] what the metrics read. The record format itself belongs to
//! the journal (`events/`); this layer treats records as opaque bytes. See
//! `docs/export.md` for the message format and the exactly-once argument.

pub mod config;
pub mod connection;
pub mod counters;
pub mod exporter;
pub mod hub_config;
pub mod journal_source;
pub mod ledger;
pub mod preadvice_sub;
pub mod source;
pub mod stream_read;

pub use config::{ExportSection, ExportSettings};
pub use counters::{ExportCounters, ExportErrorKind, ExportState};
pub use exporter::Exporter;
pub use hub_config::{HubSection, HubSettings};
pub use journal_source::JournalSource;
pub use source::{CursorStore, ExportSource, MemoryCursor, MemoryLog, ReadBatch};
