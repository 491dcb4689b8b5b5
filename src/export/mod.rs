//! The NATS side of sortd: the sort-event exporter, which carries the journal's records
//! into a JetStream stream, exactly once, on its own thread with its own tokio runtime
//! (the official `async-nats` client). The scanner and PLC threads never wait for it: it
//! reads what the journal already holds, and when NATS is down the journal keeps the
//! events until it is back.
//!
//! [`config`] is the `[export]` section; [`source`] the two traits the journal's reader
//! and cursor implement (plus an in-memory stand-in for tests); [`ledger`] the pure
//! bookkeeping (in-flight batches, where to resume, lag); [`core`] the loop's decisions
//! over it, sans IO (what to publish next, the guard and window, what an ack changes,
//! when the cursor is due), driven by [`exporter`] (the thread and the connection) and
//! by the deterministic simulator; [`counters`] what the metrics read. The record format itself belongs to
//! the journal (`events/`); this layer treats records as opaque bytes. See
//! `docs/export.md` for the message format and the exactly-once argument.

pub mod config;
pub mod core;
pub mod counters;
pub mod exporter;
pub mod journal_source;
pub mod ledger;
pub mod source;

pub use config::{ExportSection, ExportSettings};
pub use counters::{ExportCounters, ExportErrorKind, ExportState};
pub use exporter::Exporter;
pub use journal_source::JournalSource;
pub use source::{CursorStore, ExportSource, MemoryCursor, MemoryLog, ReadBatch};
