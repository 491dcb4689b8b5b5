//! What both ends of the PLC link share once a transport exists: the HELLO exchange,
//! heartbeats and liveness, the outbound window and the inbound sequence, and turning
//! all of that into bytes.
//!
//! [`super::HostLink`] and [`super::PlcPeer`] wrap a `Session` and add their own
//! telegram types, events and (for the host) reconnecting. A session never reads a
//! clock: `now` comes from the caller of every handle method.

use std::time::{Duration, Instant};

use super::config::LinkConfig;
use super::inbound::InboundSequence;
use super::reader::TelegramReader;
use super::stats::LinkStats;
use super::telegram::{Hello, Role, Telegram};
use super::window::{AckEffect, OutboundWindow};

/// Where the connection is, as far as the shared machinery cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No transport.
    Down,
    /// Transport up, our HELLO sent, waiting for theirs.
    AwaitingHello,
    /// HELLOs exchanged: numbered telegrams flow.
    Established,
}

/// Why a connected session gave up on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No HELLO arrived in time after the transport came up.
    ResyncTimedOut,
    /// No valid telegram for `heartbeats_missed_max` heartbeat intervals.
    HeartbeatsMissed,
}

/// Shared state of one end of the link.
#[derive(Debug)]
pub struct Session<T> {
    pub config: LinkConfig,
    pub role: Role,
    pub now: Instant,
    pub window: OutboundWindow<T>,
    pub inbound: InboundSequence,
    pub reader: TelegramReader,
    pub stats: LinkStats,
    hello_pending: bool,
    heartbeat_counter: u32,
    heartbeat_echo: u32,
    heartbeat_pending: bool,
    next_heartbeat_at: Instant,
    live_until: Instant,
}

impl<T: Copy> Session<T> {
    pub fn new(config: LinkConfig, role: Role, now: Instant) -> Self {
        let config = config.clamped();
        Session {
            window: OutboundWindow::new(
                config.window_max,
                config.first_seq,
                Duration::from_millis(u64::from(config.ack_timeout_ms)),
            ),
            inbound: InboundSequence::new(config.ack_policy),
            reader: TelegramReader::new(config.receive_buffer_bytes_max),
            stats: LinkStats::default(),
            config,
            role,
            now,
            hello_pending: false,
            heartbeat_counter: 0,
            heartbeat_echo: 0,
            heartbeat_pending: false,
            next_heartbeat_at: now,
            live_until: now,
        }
    }

    /// Move the session's clock forward (never back).
    pub fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn liveness_timeout(&self) -> Duration {
        Duration::from_millis(self.config.liveness_timeout_ms())
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.heartbeat_interval_ms))
    }

    /// A new transport: start over on framing and acks, send HELLO, resend all held.
    pub fn on_connected(&mut self) {
        self.reader.clear();
        self.inbound.clear_pending_ack();
        self.window.rewind();
        self.hello_pending = true;
        self.heartbeat_pending = false;
        self.live_until = self.now + self.liveness_timeout();
    }

    /// The transport is gone: drop partial input and pending control telegrams.
    pub fn on_disconnected(&mut self) {
        self.reader.clear();
        self.inbound.clear_pending_ack();
        self.window.rewind();
        self.hello_pending = false;
        self.heartbeat_pending = false;
    }

    /// HELLOs exchanged: heartbeats start, liveness counts from now.
    pub fn on_established(&mut self) {
        self.live_until = self.now + self.liveness_timeout();
        self.next_heartbeat_at = self.now + self.heartbeat_interval();
    }

    /// Any valid telegram on an established link proves the other side alive.
    pub fn on_alive(&mut self) {
        self.live_until = self.now + self.liveness_timeout();
    }

    /// Our HELLO as of now.
    pub fn hello(&self) -> Hello {
        Hello {
            role: self.role,
            session: self.config.session,
            ack_session: self.inbound.peer_session(),
            acked_through_seq: self.inbound.acked_through(),
            window_first_seq: self.window.first_seq(),
            next_seq: self.window.next_seq(),
        }
    }

    /// Adopt the other side's HELLO: its acknowledgement of ours (if it refers to this
    /// session), its numbering, and resend everything still unacknowledged. Returns
    /// whether the other side's session changed and how many telegrams it acknowledged.
    pub fn apply_hello(&mut self, hello: &Hello) -> (bool, u32) {
        self.stats.hellos_received += 1;
        let changed = self.inbound.resync(hello);
        let acked = if hello.ack_session == self.config.session {
            self.apply_ack(hello.acked_through_seq)
        } else {
            0
        };
        self.window.rewind();
        (changed, acked)
    }

    /// Apply a cumulative ACK; returns how many telegrams it acknowledged.
    pub fn apply_ack(&mut self, through_seq: u32) -> u32 {
        match self.window.ack(self.now, through_seq) {
            AckEffect::Advanced { count } => {
                self.stats.acks_received += 1;
                self.stats.acked += u64::from(count);
                count
            }
            AckEffect::Stale => {
                self.stats.acks_duplicate += 1;
                0
            }
            AckEffect::Invalid => {
                self.stats.acks_invalid += 1;
                0
            }
        }
    }

    /// Note a HEARTBEAT from the other side.
    pub fn on_heartbeat(&mut self, counter: u32) {
        self.stats.heartbeats_received += 1;
        self.heartbeat_echo = counter;
    }

    /// Fire due timers; says if the session expired.
    pub fn handle_timeout(&mut self, phase: Phase) -> Option<Expiry> {
        let now = self.now;
        match phase {
            Phase::Down => None,
            Phase::AwaitingHello => (self.live_until <= now).then_some(Expiry::ResyncTimedOut),
            Phase::Established => {
                if self.live_until <= now {
                    return Some(Expiry::HeartbeatsMissed);
                }
                if self.next_heartbeat_at <= now {
                    self.heartbeat_pending = true;
                    self.next_heartbeat_at += self.heartbeat_interval();
                    if self.next_heartbeat_at <= now {
                        // Called late: do not send a burst to catch up.
                        self.next_heartbeat_at = now + self.heartbeat_interval();
                    }
                }
                self.window.handle_timeout(now);
                self.inbound.handle_timeout(now);
                None
            }
        }
    }

    /// The earliest timer in this phase.
    pub fn poll_timeout(&self, phase: Phase) -> Option<Instant> {
        match phase {
            Phase::Down => None,
            Phase::AwaitingHello => Some(self.live_until),
            Phase::Established => [
                Some(self.live_until),
                Some(self.next_heartbeat_at),
                self.window.retransmit_at(),
                self.inbound.ack_at(),
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    /// Append everything ready to go: HELLO while resynchronising; ACK, HEARTBEAT and
    /// the window's unsent telegrams (encoded by `encode`) once established.
    /// `now` starts the retransmission timer of what goes out: it must be the time of
    /// this call, not of the last input (after an idle gap that would be long past).
    pub fn transmit(
        &mut self,
        now: Instant,
        phase: Phase,
        out: &mut Vec<u8>,
        encode: impl Fn(u32, T) -> Telegram,
    ) {
        self.advance(now);
        if phase == Phase::Down {
            return;
        }
        if self.hello_pending {
            self.hello_pending = false;
            self.stats.hellos_sent += 1;
            Telegram::Hello(self.hello()).encode_into(out);
        }
        if phase != Phase::Established {
            return;
        }
        if let Some(through_seq) = self.inbound.take_ack() {
            self.stats.acks_sent += 1;
            Telegram::Ack { through_seq }.encode_into(out);
        }
        if self.heartbeat_pending {
            self.heartbeat_pending = false;
            self.heartbeat_counter = self.heartbeat_counter.wrapping_add(1);
            self.stats.heartbeats_sent += 1;
            Telegram::Heartbeat {
                counter: self.heartbeat_counter,
                echo: self.heartbeat_echo,
            }
            .encode_into(out);
        }
        let stats = &mut self.stats;
        self.window.transmit(self.now, |seq, item, again| {
            if again {
                stats.retransmitted += 1;
            } else {
                stats.sent += 1;
            }
            encode(seq, item).encode_into(out);
        });
    }
}
