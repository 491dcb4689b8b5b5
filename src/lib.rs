//! sortd: a parcel sorter controller.
//!
//! Scanners send one frame per parcel ([`wire`]); the parcel's chute is resolved in a
//! memory-mapped sort plan ([`plan`]); the decision goes to the sorter's PLC over a
//! sequenced, acknowledged link ([`plc`]). Every parcel gets exactly one
//! [`decision::Reason`].
//!
//! The sans-IO core (codecs, lookups, protocol state machines: [`wire`], [`plan`],
//! [`plc`], [`pipeline`]) never touches a socket or a clock. The thin shells that do
//! ([`net`], [`daemon`], [`web`]) drive it, and [`metrics`] formats the counters for
//! [`web`]; the `sortd` binary adds the command line and signals. The tools that exercise it live beside it: the PLC simulator and the
//! deterministic simulation of the core ([`sim`]) and the load generator ([`loadgen`]).

#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod core;
pub mod daemon;
pub mod decision;
pub mod events;
pub mod export;
pub mod loadgen;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod plan;
pub mod plc;
pub mod sim;
pub mod stats;
pub mod util;
pub mod web;
pub mod wire;
