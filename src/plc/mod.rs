//! The PLC link: sortd's host side and the PLC's side of a sequenced, acknowledged,
//! heartbeated link over one TCP connection, as pure (sans-IO) code.
//!
//! - [`telegram`]: the fixed 40-byte big-endian telegrams with CRC-16 (PROTOCOL.md,
//!   "PLC link", documents every byte).
//! - [`HostLink`]: sortd's end — a window of SORTs with retransmission, resync after
//!   reconnect, heartbeats, reconnect backoff.
//! - [`PlcPeer`]: the PLC's end — exactly-once delivery by sequence number, numbered
//!   confirmations and chute status; used by the simulator and tests.
//! - [`ChuteStateTable`]: the lock-free table workers read to avoid full chutes.
//!
//! Not here: sockets, threads, the clock, the daemon's event loop and the simulator
//! binary. Drivers feed bytes and `now` in and take bytes, timers and events out.

pub mod admission;
pub mod backoff;
pub mod checksum;
pub mod chute_state;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod host;
mod inbound;
pub mod peer;
mod reader;
mod seq;
mod session;
pub mod stats;
pub mod telegram;
mod window;

pub use chute_state::ChuteStateTable;
pub use config::{AckPolicy, LinkConfig, PeerConfig};
pub use error::{PlcConfigError, TelegramDecodeError, WindowFull};
pub use host::{HostEvent, HostLink, LinkDownReason, LinkState};
pub use peer::{HostLostReason, PeerEvent, PeerState, PlcPeer};
pub use stats::LinkStats;
pub use telegram::{
    ChuteState, Hello, Outcome, Role, SortCommand, SortConfirm, TELEGRAM_BYTES, Telegram,
};
