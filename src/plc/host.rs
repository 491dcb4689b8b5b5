//! sortd's end of the PLC link as a sans-IO state machine: numbers SORTs, keeps them in
//! a bounded window until the PLC acknowledges them, resends on timeout and after every
//! reconnect (only what the PLC's HELLO says it lacks), heartbeats, declares the link
//! down, and asks its driver to redial with capped exponential backoff. SORTs submitted
//! while the link is down are held unnumbered until the resync, and dropped (with an
//! event) if their parcel's deadline passes first, so no sequence number is wasted.
//!
//! The driver (the daemon's event loop, or a test) owns the socket and the clock: it
//! feeds bytes and `now` in, writes what `poll_transmit` appends, arms a timer from
//! `poll_timeout`, and acts on events (`ConnectNow`: dial; `LinkDown`: close the
//! socket). This module never blocks, reads a clock or touches a socket.
//!
//! Call `poll_transmit` when the transport can take more bytes and earlier output has
//! been written; it appends everything due, and unacknowledged SORTs are appended again
//! only after a retransmission timeout or a reconnect, so output stays within about one
//! window per `ack_timeout_ms`.

use std::collections::VecDeque;
use std::time::Instant;

use crate::decision::ChuteNumber;

use super::backoff::Backoff;
use super::config::LinkConfig;
use super::error::WindowFull;
use super::inbound::Arrival;
use super::session::{Expiry, Phase, Session};
use super::stats::LinkStats;
use super::telegram::{ChuteState, Role, SortCommand, SortConfirm, TELEGRAM_BYTES, Telegram};

/// What the host link waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The reconnect backoff is running; `ConnectNow` follows when it expires.
    AwaitingReconnect {
        /// When the next `ConnectNow` is due.
        connect_at: Instant,
    },
    /// `ConnectNow` was issued: waiting for the driver's `handle_connected` (or
    /// `handle_disconnected` if the attempt failed).
    AwaitingTransport,
    /// Connected and HELLO sent: waiting for the PLC's HELLO.
    AwaitingResync,
    /// SORTs flow.
    Established,
}

/// Why the link went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDownReason {
    /// The driver reported the transport closed or failed.
    TransportLost,
    /// The PLC sent no HELLO in time after the transport came up.
    ResyncTimedOut,
    /// Nothing valid arrived for `heartbeats_missed_max` heartbeat intervals.
    HeartbeatsMissed,
}

impl LinkDownReason {
    /// snake_case name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkDownReason::TransportLost => "transport_lost",
            LinkDownReason::ResyncTimedOut => "resync_timed_out",
            LinkDownReason::HeartbeatsMissed => "heartbeats_missed",
        }
    }
}

impl From<Expiry> for LinkDownReason {
    fn from(expiry: Expiry) -> Self {
        match expiry {
            Expiry::ResyncTimedOut => LinkDownReason::ResyncTimedOut,
            Expiry::HeartbeatsMissed => LinkDownReason::HeartbeatsMissed,
        }
    }
}

/// What the host link tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// Dial the PLC now (ignored when sortd is the listening side).
    ConnectNow,
    /// Resync done: SORTs flow again.
    LinkUp {
        /// The PLC's session differs from the one last seen (first connect, or the PLC
        /// restarted and forgot its state).
        peer_session_changed: bool,
        /// SORTs still unacknowledged after the PLC's HELLO, about to be (re)sent. SORTs
        /// held while the link was down follow, as `HeldReleased` events.
        resending: u32,
    },
    /// The link is down; close the transport if it is still open. SORTs stay queued.
    LinkDown {
        /// Why.
        why: LinkDownReason,
    },
    /// The PLC acknowledged SORTs up to and including `through_seq` (by ACK, or by the
    /// HELLO after a reconnect). Summing `count` gives every SORT the PLC holds.
    SortsAcked {
        /// Cumulative sequence number acknowledged.
        through_seq: u32,
        /// SORTs newly acknowledged by this ACK.
        count: u32,
    },
    /// The PLC reported what happened to a parcel (exactly once per PLC sequence).
    SortConfirmed {
        /// The report.
        confirm: SortConfirm,
        /// The PLC's sequence number of the report.
        plc_seq: u32,
    },
    /// A SORT held while the link was down is numbered now that the link is up (after
    /// the resync) and goes out with the next `poll_transmit`.
    HeldReleased {
        /// The command.
        sort: SortCommand,
        /// Its sequence number.
        seq: u32,
    },
    /// A SORT held while the link was down reached its deadline first: it was never
    /// numbered nor sent, and never will be. The parcel is late.
    HeldExpired {
        /// The command.
        sort: SortCommand,
    },
    /// The PLC reported a chute's new state (exactly once per PLC sequence).
    ChuteStatusChanged {
        /// The chute.
        chute: ChuteNumber,
        /// Its new state.
        state: ChuteState,
    },
}

/// A SORT submitted while the link was down: not numbered until the link is up, so one
/// that expires leaves no gap in the sequence.
#[derive(Debug, Clone, Copy)]
struct Held {
    sort: SortCommand,
    deadline: Instant,
}

/// sortd's end of the PLC link.
#[derive(Debug)]
pub struct HostLink {
    session: Session<SortCommand>,
    state: LinkState,
    backoff: Backoff,
    events: VecDeque<HostEvent>,
    /// SORTs submitted while the link was down; with the window, at most `window_max`.
    held: VecDeque<Held>,
    /// The earliest deadline in `held`.
    held_expiry_at: Option<Instant>,
}

impl HostLink {
    /// A link that immediately asks to be connected (`ConnectNow`). Out-of-range
    /// configuration values are clamped; validate the configuration first.
    pub fn new(config: LinkConfig, now: Instant) -> HostLink {
        let session = Session::new(config, Role::Host, now);
        let config = session.config;
        let mut link = HostLink {
            backoff: Backoff::new(
                config.reconnect_backoff_min_ms,
                config.reconnect_backoff_max_ms,
                config.jitter_seed,
            ),
            events: VecDeque::with_capacity(config.events_max),
            state: LinkState::AwaitingTransport,
            held: VecDeque::with_capacity(config.window_max),
            held_expiry_at: None,
            session,
        };
        link.request_connect();
        link
    }

    /// Queue a SORT that is worth sending until `deadline` (when the parcel passes its
    /// chute). While the link is up it is numbered at once: `Ok(Some(seq))`. While the
    /// link is down (or resynchronising) it is held unnumbered, `Ok(None)`, and
    /// numbered after the resync ([`HostEvent::HeldReleased`]), or dropped unsent if
    /// `deadline` comes first ([`HostEvent::HeldExpired`]); the deadline does not
    /// apply once numbered. Held and numbered SORTs together fill at most the window.
    /// `WindowFull` is backpressure: keep the command, stop pulling work, and retry
    /// when `window_free` is non-zero (or, while the link is down, give the parcel up).
    pub fn submit(
        &mut self,
        sort: SortCommand,
        deadline: Instant,
    ) -> Result<Option<u32>, WindowFull> {
        if self.window_free() == 0 {
            self.session.stats.window_full += 1;
            return Err(WindowFull {
                window_max: self.session.config.window_max,
            });
        }
        if self.state == LinkState::Established {
            return self.number(sort).map(Some);
        }
        self.held.push_back(Held { sort, deadline });
        self.session.stats.held += 1;
        self.held_expiry_at = Some(self.held_expiry_at.map_or(deadline, |at| at.min(deadline)));
        Ok(None)
    }

    /// Room for more SORTs (numbered or held), in SORTs.
    pub fn window_free(&self) -> usize {
        self.session.window.free().saturating_sub(self.held.len())
    }

    /// SORTs held unnumbered while the link is down.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The driver stops for good: every held SORT expires now, a `HeldExpired` each.
    pub fn abandon_held(&mut self) {
        for held in self.held.iter_mut() {
            held.deadline = self.session.now;
        }
        self.expire_held();
    }

    /// SORTs submitted and not yet acknowledged (sent or waiting).
    pub fn unacked(&self) -> usize {
        self.session.window.len()
    }

    /// The sequence number the next submitted SORT gets.
    pub fn next_seq(&self) -> u32 {
        self.session.window.next_seq()
    }

    /// Bytes `handle_input` can take now without dropping any. The driver should read
    /// at most this much from the socket.
    pub fn receive_room(&self) -> usize {
        self.session.reader.room()
    }

    /// The transport is up (dialled or accepted): start the HELLO exchange.
    pub fn handle_connected(&mut self, now: Instant) {
        self.session.advance(now);
        if matches!(
            self.state,
            LinkState::AwaitingResync | LinkState::Established
        ) {
            // A new transport replaces the old one.
            self.go_down(LinkDownReason::TransportLost);
        }
        self.session.on_connected();
        self.state = LinkState::AwaitingResync;
    }

    /// The transport closed or a connect attempt failed: keep every unacknowledged SORT
    /// and schedule the next `ConnectNow` after a backoff.
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.session.advance(now);
        match self.state {
            LinkState::AwaitingResync | LinkState::Established => {
                self.go_down(LinkDownReason::TransportLost);
                self.schedule_reconnect();
            }
            LinkState::AwaitingTransport => self.schedule_reconnect(),
            // Already scheduled (e.g. the driver closing after our own LinkDown).
            LinkState::AwaitingReconnect { .. } => {}
        }
    }

    /// Bytes from the transport, in any chunking. Bad telegrams are counted and
    /// skipped; nothing here panics on input. Bytes beyond `receive_room` (or arriving
    /// while no transport is up) are dropped and counted.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.session.advance(now);
        if self.phase() == Phase::Down {
            self.session.stats.input_bytes_dropped += bytes.len() as u64;
            return;
        }
        let mut rest = bytes;
        loop {
            let taken = self.session.reader.push(rest);
            rest = rest.get(taken..).unwrap_or(&[]);
            self.process_buffered();
            if rest.is_empty() {
                break;
            }
            if taken == 0 || self.phase() == Phase::Down {
                self.session.stats.input_bytes_dropped += rest.len() as u64;
                break;
            }
        }
    }

    /// Fire whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.advance(now);
        if self.held_expiry_at.is_some_and(|at| at <= now) {
            self.expire_held();
        }
        match self.state {
            LinkState::AwaitingReconnect { connect_at } if connect_at <= now => {
                self.request_connect();
            }
            LinkState::AwaitingReconnect { .. } | LinkState::AwaitingTransport => {}
            LinkState::AwaitingResync | LinkState::Established => {
                if let Some(expiry) = self.session.handle_timeout(self.phase()) {
                    self.go_down(expiry.into());
                    self.schedule_reconnect();
                }
            }
        }
    }

    /// When `handle_timeout` should be called next, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = match self.state {
            LinkState::AwaitingReconnect { connect_at } => Some(connect_at),
            _ => self.session.poll_timeout(self.phase()),
        };
        [link, self.held_expiry_at].into_iter().flatten().min()
    }

    /// Append every telegram ready to send (HELLO, ACK, HEARTBEAT, SORTs) to `out`.
    /// `now` is when the bytes go out: the retransmission timer of a SORT sent now
    /// runs from it.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        let phase = self.phase();
        self.session
            .transmit(now, phase, out, |seq, sort| Telegram::Sort { seq, sort });
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        let event = self.events.pop_front();
        if self.session.reader.buffered() >= TELEGRAM_BYTES {
            // Input paused for a full event queue resumes as room appears.
            self.process_buffered();
        }
        event
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.session.stats
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &LinkConfig {
        &self.session.config
    }

    fn phase(&self) -> Phase {
        match self.state {
            LinkState::AwaitingReconnect { .. } | LinkState::AwaitingTransport => Phase::Down,
            LinkState::AwaitingResync => Phase::AwaitingHello,
            LinkState::Established => Phase::Established,
        }
    }

    /// Number a SORT into the window (it goes out with the next `poll_transmit`).
    fn number(&mut self, sort: SortCommand) -> Result<u32, WindowFull> {
        let result = self.session.window.push(sort);
        if result.is_ok() {
            self.session.stats.submitted += 1;
        }
        result
    }

    /// Drop, with an event each, every held SORT whose deadline has come.
    fn expire_held(&mut self) {
        let now = self.session.now;
        let mut expiry_at: Option<Instant> = None;
        let stats = &mut self.session.stats;
        let events = &mut self.events;
        self.held.retain(|held| {
            if held.deadline <= now {
                stats.held_expired += 1;
                events.push_back(HostEvent::HeldExpired { sort: held.sort });
                false
            } else {
                expiry_at = Some(expiry_at.map_or(held.deadline, |at| at.min(held.deadline)));
                true
            }
        });
        self.held_expiry_at = expiry_at;
    }

    /// The link is up: number every held SORT still within its deadline, in order.
    fn release_held(&mut self) {
        self.expire_held();
        while let Some(held) = self.held.pop_front() {
            // Held and numbered together never exceed the window, so this fits.
            let event = match self.number(held.sort) {
                Ok(seq) => HostEvent::HeldReleased {
                    sort: held.sort,
                    seq,
                },
                Err(_) => {
                    self.session.stats.held_expired += 1;
                    HostEvent::HeldExpired { sort: held.sort }
                }
            };
            self.events.push_back(event);
        }
        self.held_expiry_at = None;
    }

    fn request_connect(&mut self) {
        self.state = LinkState::AwaitingTransport;
        self.session.stats.connect_requests += 1;
        self.events.push_back(HostEvent::ConnectNow);
    }

    fn go_down(&mut self, why: LinkDownReason) {
        self.session.stats.link_downs += 1;
        self.session.on_disconnected();
        self.state = LinkState::AwaitingTransport;
        self.events.push_back(HostEvent::LinkDown { why });
    }

    fn schedule_reconnect(&mut self) {
        let connect_at = self.session.now + self.backoff.next_delay();
        self.state = LinkState::AwaitingReconnect { connect_at };
    }

    fn process_buffered(&mut self) {
        while self.events.len() < self.session.config.events_max && self.phase() != Phase::Down {
            let Some(telegram) = self.session.reader.next(&mut self.session.stats) else {
                break;
            };
            self.handle_telegram(telegram);
        }
    }

    fn handle_telegram(&mut self, telegram: Telegram) {
        let established = self.state == LinkState::Established;
        if established {
            self.session.on_alive();
        }
        match telegram {
            Telegram::Hello(hello) if hello.role == Role::Plc => {
                let (peer_session_changed, acked) = self.session.apply_hello(&hello);
                if acked > 0 {
                    self.events.push_back(HostEvent::SortsAcked {
                        through_seq: hello.acked_through_seq,
                        count: acked,
                    });
                }
                if !established {
                    self.state = LinkState::Established;
                    self.session.on_established();
                    self.session.stats.link_ups += 1;
                    self.backoff.reset();
                    self.events.push_back(HostEvent::LinkUp {
                        peer_session_changed,
                        resending: self.session.window.len() as u32,
                    });
                    self.release_held();
                }
            }
            Telegram::Heartbeat { counter, .. } => self.session.on_heartbeat(counter),
            Telegram::Ack { through_seq } if established => {
                let count = self.session.apply_ack(through_seq);
                if count > 0 {
                    self.events
                        .push_back(HostEvent::SortsAcked { through_seq, count });
                }
            }
            Telegram::SortConfirm { seq, confirm } if established => {
                if self.accept(seq) {
                    self.events.push_back(HostEvent::SortConfirmed {
                        confirm,
                        plc_seq: seq,
                    });
                }
            }
            Telegram::ChuteStatus { seq, chute, state } if established => {
                if self.accept(seq) {
                    self.events
                        .push_back(HostEvent::ChuteStatusChanged { chute, state });
                }
            }
            _ => self.session.stats.telegrams_unexpected += 1,
        }
    }

    /// Sequence check for the PLC's numbered telegrams; true when new.
    fn accept(&mut self, seq: u32) -> bool {
        let stats = &mut self.session.stats;
        match self.session.inbound.receive(self.session.now, seq) {
            Arrival::New => {
                stats.delivered += 1;
                true
            }
            Arrival::Duplicate => {
                stats.duplicates += 1;
                false
            }
            Arrival::Gap => {
                stats.out_of_order += 1;
                false
            }
        }
    }
}
