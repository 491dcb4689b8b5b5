//! The NATS side of sortd: the sort-event exporter, which carries the journal's records
//! into a JetStream stream, exactly once, on its own thread with its own tokio runtime
//! (the official `async-nats` client). The scanner and PLC threads never wait for it: it
//! reads what the journal already holds, and when NATS is down the journal keeps the
//! events until it is back.
//!
//! The hub side ([`hub`]): the `sortd-hub` thread, one connection to the hub's NATS
//! running the node's hub tasks: [`hub_plans`] watches the group's published plan and
//! reports the running plan, by the pure rules of [`hub_plan`]; [`hub_admin`] is the
//! operator's side (`sortd plan publish`, `sortd plan status`). See `docs/hub.md`.
//! [`preadvice_sub`] is the hub task that takes the group's pre-advice batches into the
//! node's overlay; [`stream_read`] reads the event stream back for the hub's
//! reconciliation.
//!
//! [`connection`] is how any part of sortd reaches NATS (credentials, TLS, one client);
//! [`config`] is the `[export]` section, [`hub_config`] the `[hub]` section; [`source`] the two traits the journal's reader
//! and cursor implement (plus an in-memory stand-in for tests); [`ledger`] the pure
//! bookkeeping (in-flight batches, where to resume, lag); [`core`] the loop's decisions
//! over it, sans IO (what to publish next, the guard and window, what an ack changes,
//! when the cursor is due), driven by [`exporter`] (the thread and the connection) and
//! by the deterministic simulator; [`counters`] what the metrics read. The record format itself belongs to
//! the journal (`events/`); this layer treats records as opaque bytes. See
//! `docs/export.md` for the message format and the exactly-once argument.

pub mod config;
pub mod connection;
pub mod core;
pub mod counters;
pub mod exporter;
pub mod hub;
pub mod hub_admin;
pub mod hub_config;
pub mod hub_plan;
pub mod hub_plans;
pub mod journal_source;
pub mod ledger;
pub mod preadvice_sub;
pub mod source;
pub mod stream_read;

pub use config::{ExportSection, ExportSettings};
pub use counters::{ExportCounters, ExportErrorKind, ExportState};
pub use exporter::Exporter;
pub use hub::{Hub, HubCounters, HubSession, HubState, HubTask, PlanRefusal, PlanRetry, TaskEnd};
pub use hub_config::{HubSection, HubSettings};
pub use journal_source::JournalSource;
pub use source::{CursorStore, ExportSource, MemoryCursor, MemoryLog, ReadBatch};
