//! sortd: a parcel sorter controller.
//!
//! Scanners send one frame per parcel ([`wire`]); the parcel's chute is resolved in a
//! memory-mapped sort plan ([`plan`]); the decision goes to the sorter's PLC over a
//! sequenced, acknowledged link ([`plc`]). Every parcel gets exactly one
//! [`decision::Reason`].
//!
//! The library holds the sans-IO core (codecs, lookups, protocol state machines); the
//! `sortd` binary adds sockets, threads, signals and the command line.

#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod decision;
pub mod plan;
pub mod plc;
pub mod wire;
