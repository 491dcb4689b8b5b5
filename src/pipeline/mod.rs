//! The pipeline's pure parts: deciding a parcel's chute, the duplicate window and the
//! deadline, and the bounded hand-off between threads.
//!
//! Threads and sockets live in [`crate::net`]; this module is what they call.

pub mod decide;
pub mod dedup;
pub mod facts;
pub mod finalize;
pub mod queue;
