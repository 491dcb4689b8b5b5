//! Sort events: what sortd records about every parcel (the decision it sent, the outcome
//! the PLC confirmed) and the local journal that keeps them until the exporter has
//! shipped them.
//!
//! [`record`] is the binary event record (pure encode/decode, documented byte by byte in
//! PROTOCOL.md); [`json`] its one JSON rendering; [`segment`] the segment file format and
//! the scan that finds intact records (pure); [`journal`] the files: writer (owned by the
//! PLC thread, with its fsync thread), reader (for the exporter and the tools), the
//! exporter's durable cursor and retention. Producing events from the sorting loops is
//! the core's job, shipping them to NATS the exporter's.

pub mod fuzzing;
pub mod journal;
pub mod json;
pub mod reconcile;
pub mod record;
pub mod segment;

pub use record::{
    Action, DecisionEvent, Event, OutcomeEvent, Record, RecordDecoded, RecordError, Rule, decode,
    encode,
};
