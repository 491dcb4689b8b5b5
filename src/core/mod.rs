//! The sans-IO core of the daemon's two loops, in the manner of quinn-proto: bytes and
//! time in, decisions, telegrams and observations out. No socket, thread or clock here.
//!
//! - [`session::ScannerSession`]: one scanner connection (input buffer, framing, scanner
//!   id, resync, frame deadline, idle timeout, ending with salvage), deciding every
//!   complete frame into a [`session::DecisionSink`] (the batch hand-off).
//! - [`egress::EgressCore`]: the PLC side (finalizer with duplicate window and deadline,
//!   the PLC [`crate::plc::HostLink`], chute states), reporting every parcel's fate and
//!   every confirmation to an [`egress::EgressObserver`].
//! - [`idle::IdlePolicy`]: whether a loop with nothing to do spins or parks.
//!
//! Two drivers run this code: the mio shells in [`crate::net`] (sockets, poll, wakers,
//! threads) and the deterministic simulator in [`crate::sim::deterministic`] (a virtual
//! clock and simulated sockets). Neither holds loop logic the other lacks; the codecs,
//! plan lookups and link state machines below are [`crate::wire`], [`crate::plan`],
//! [`crate::pipeline`] and [`crate::plc`].

pub mod egress;
pub mod idle;
pub mod input;
pub mod session;
