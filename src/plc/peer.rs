//! The PLC's end of the link as a sans-IO state machine, for the PLC simulator and for
//! tests; it is also the reference for what a PLC program must do.
//!
//! It accepts SORTs strictly in sequence order and delivers each sequence number exactly
//! once (duplicates are re-ACKed and counted, never re-delivered), acknowledges them per
//! its [`AckPolicy`](super::AckPolicy), numbers its own SORT_CONFIRM and CHUTE_STATUS
//! telegrams and resends them until the host acknowledges them, and heartbeats. It
//! remembers every chute that is not available and announces each again (a
//! CHUTE_STATUS) whenever a host session it has not seen before says HELLO, so a sortd
//! that restarted learns the chute states it forgot. It does not dial or redial: a PLC usually listens, and a simulator that dials does so on its
//! own schedule. No sockets, no clock, no threads.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::decision::ChuteNumber;

use super::config::PeerConfig;
use super::error::WindowFull;
use super::inbound::Arrival;
use super::session::{Expiry, Phase, Session};
use super::stats::LinkStats;
use super::telegram::{
    ChuteState, Outcome, Role, SortCommand, SortConfirm, TELEGRAM_BYTES, Telegram,
};

/// What the PLC side waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// No transport.
    AwaitingTransport,
    /// Connected and HELLO sent: waiting for the host's HELLO.
    AwaitingResync,
    /// SORTs and reports flow.
    Established,
}

/// Why the PLC side lost the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLostReason {
    /// The driver reported the transport closed.
    TransportLost,
    /// The host sent no HELLO in time.
    ResyncTimedOut,
    /// Nothing valid arrived for `heartbeats_missed_max` heartbeat intervals.
    HeartbeatsMissed,
}

impl From<Expiry> for HostLostReason {
    fn from(expiry: Expiry) -> Self {
        match expiry {
            Expiry::ResyncTimedOut => HostLostReason::ResyncTimedOut,
            Expiry::HeartbeatsMissed => HostLostReason::HeartbeatsMissed,
        }
    }
}

/// What the PLC side tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The host's HELLO arrived: SORTs flow.
    HostUp {
        /// The host's session differs from the one last seen (first connect, or sortd
        /// restarted): sequence numbering restarted at the host's window.
        host_session_changed: bool,
    },
    /// The host is gone; close the transport if it is still open.
    HostLost {
        /// Why.
        why: HostLostReason,
    },
    /// A SORT, delivered exactly once per host sequence number.
    SortReceived {
        /// The command.
        sort: SortCommand,
        /// The host's sequence number.
        seq: u32,
    },
    /// The host acknowledged our reports up to `through_seq`.
    ReportsAcked {
        /// Cumulative PLC sequence number acknowledged.
        through_seq: u32,
        /// Reports newly acknowledged.
        count: u32,
    },
}

/// A numbered PLC-to-host telegram waiting for the host's ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Confirm(SortConfirm),
    Status {
        chute: ChuteNumber,
        state: ChuteState,
    },
}

/// The PLC's end of the link.
#[derive(Debug)]
pub struct PlcPeer {
    session: Session<Report>,
    state: PeerState,
    events: VecDeque<PeerEvent>,
    /// Every chute whose last reported state is not `Available` (at most one entry
    /// per chute number).
    chutes_unavailable: BTreeMap<ChuteNumber, ChuteState>,
    /// Chutes still to announce to a new host session, as window room appears.
    announce: VecDeque<ChuteNumber>,
}

impl PlcPeer {
    /// A PLC side waiting for a transport. Out-of-range values are clamped.
    pub fn new(config: PeerConfig, now: Instant) -> PlcPeer {
        let session = Session::new(config, Role::Plc, now);
        PlcPeer {
            events: VecDeque::with_capacity(session.config.events_max),
            session,
            state: PeerState::AwaitingTransport,
            chutes_unavailable: BTreeMap::new(),
            announce: VecDeque::new(),
        }
    }

    /// Queue a SORT_CONFIRM; returns its PLC sequence number.
    pub fn confirm(
        &mut self,
        parcel_id: u64,
        scanner_id: u32,
        chute: ChuteNumber,
        outcome: Outcome,
    ) -> Result<u32, WindowFull> {
        self.queue(Report::Confirm(SortConfirm {
            parcel_id,
            scanner_id,
            chute,
            outcome,
        }))
    }

    /// Queue a CHUTE_STATUS; returns its PLC sequence number. The state is remembered
    /// (when the window takes it) for announcing to a new host session.
    pub fn set_chute_state(
        &mut self,
        chute: ChuteNumber,
        state: ChuteState,
    ) -> Result<u32, WindowFull> {
        let seq = self.queue(Report::Status { chute, state })?;
        if state == ChuteState::Available {
            self.chutes_unavailable.remove(&chute);
        } else {
            self.chutes_unavailable.insert(chute, state);
        }
        Ok(seq)
    }

    /// Records chute states without reporting them: what a PLC knows as it powers on
    /// (bin sensors, retentive memory of disabled chutes). A state `Available` is not
    /// recorded. They are announced, as ever, to the next host session that says HELLO
    /// for the first time, which for a PLC just powered on is any host.
    pub fn remember_chute_states(
        &mut self,
        states: impl IntoIterator<Item = (ChuteNumber, ChuteState)>,
    ) {
        for (chute, state) in states {
            if state == ChuteState::Available {
                self.chutes_unavailable.remove(&chute);
            } else {
                self.chutes_unavailable.insert(chute, state);
            }
        }
    }

    /// Chutes not available, as last reported, in chute order.
    pub fn chutes_unavailable(&self) -> impl Iterator<Item = (ChuteNumber, ChuteState)> + '_ {
        self.chutes_unavailable
            .iter()
            .map(|(chute, state)| (*chute, *state))
    }

    /// Room in the report window.
    pub fn window_free(&self) -> usize {
        self.session.window.free()
    }

    /// Bytes `handle_input` can take now without dropping any.
    pub fn receive_room(&self) -> usize {
        self.session.reader.room()
    }

    /// The host's sequence number of the last SORT delivered in order.
    pub fn last_sort_seq(&self) -> u32 {
        self.session.inbound.acked_through()
    }

    /// The transport is up: send HELLO and wait for the host's.
    pub fn handle_connected(&mut self, now: Instant) {
        self.session.advance(now);
        if self.state != PeerState::AwaitingTransport {
            self.go_down(HostLostReason::TransportLost);
        }
        self.session.on_connected();
        self.state = PeerState::AwaitingResync;
    }

    /// The transport closed. Unacknowledged reports stay queued.
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.session.advance(now);
        if self.state != PeerState::AwaitingTransport {
            self.go_down(HostLostReason::TransportLost);
        }
    }

    /// Bytes from the transport, in any chunking; bad telegrams counted and skipped.
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
        if let Some(expiry) = self.session.handle_timeout(self.phase()) {
            self.go_down(expiry.into());
        }
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout(self.phase())
    }

    /// Append every telegram ready to send to `out`; `now` is when they go out.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.queue_announcements();
        let phase = self.phase();
        self.session
            .transmit(now, phase, out, |seq, report| match report {
                Report::Confirm(confirm) => Telegram::SortConfirm { seq, confirm },
                Report::Status { chute, state } => Telegram::ChuteStatus { seq, chute, state },
            });
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        let event = self.events.pop_front();
        if self.session.reader.buffered() >= TELEGRAM_BYTES {
            self.process_buffered();
        }
        event
    }

    /// Where the PLC side is.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.session.stats
    }

    fn queue(&mut self, report: Report) -> Result<u32, WindowFull> {
        let result = self.session.window.push(report);
        match result {
            Ok(_) => self.session.stats.submitted += 1,
            Err(_) => self.session.stats.window_full += 1,
        }
        result
    }

    /// Queue what is left to announce to a new host session, as far as the window
    /// allows. A chute's current state is read now, so an announcement never undoes a
    /// later change; a chute available again by now needs none.
    fn queue_announcements(&mut self) {
        while self.session.window.free() > 0 {
            let Some(chute) = self.announce.pop_front() else {
                return;
            };
            if let Some(state) = self.chutes_unavailable.get(&chute).copied() {
                let _ = self.queue(Report::Status { chute, state });
            }
        }
    }

    fn phase(&self) -> Phase {
        match self.state {
            PeerState::AwaitingTransport => Phase::Down,
            PeerState::AwaitingResync => Phase::AwaitingHello,
            PeerState::Established => Phase::Established,
        }
    }

    fn go_down(&mut self, why: HostLostReason) {
        self.session.stats.link_downs += 1;
        self.session.on_disconnected();
        self.state = PeerState::AwaitingTransport;
        self.events.push_back(PeerEvent::HostLost { why });
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
        let established = self.state == PeerState::Established;
        if established {
            self.session.on_alive();
        }
        match telegram {
            Telegram::Hello(hello) if hello.role == Role::Host => {
                let (host_session_changed, acked) = self.session.apply_hello(&hello);
                if acked > 0 {
                    self.events.push_back(PeerEvent::ReportsAcked {
                        through_seq: hello.acked_through_seq,
                        count: acked,
                    });
                }
                if host_session_changed {
                    // A host that does not know us (first contact, or sortd restarted)
                    // learns every chute that is not available, before new reports.
                    self.announce.clear();
                    self.announce
                        .extend(self.chutes_unavailable.keys().copied());
                    self.queue_announcements();
                }
                if !established {
                    self.state = PeerState::Established;
                    self.session.on_established();
                    self.session.stats.link_ups += 1;
                    self.events.push_back(PeerEvent::HostUp {
                        host_session_changed,
                    });
                }
            }
            Telegram::Heartbeat { counter, .. } => self.session.on_heartbeat(counter),
            Telegram::Ack { through_seq } if established => {
                let count = self.session.apply_ack(through_seq);
                if count > 0 {
                    self.events
                        .push_back(PeerEvent::ReportsAcked { through_seq, count });
                }
            }
            Telegram::Sort { seq, sort } if established => {
                let stats = &mut self.session.stats;
                match self.session.inbound.receive(self.session.now, seq) {
                    Arrival::New => {
                        stats.delivered += 1;
                        self.events.push_back(PeerEvent::SortReceived { sort, seq });
                    }
                    Arrival::Duplicate => stats.duplicates += 1,
                    Arrival::Gap => stats.out_of_order += 1,
                }
            }
            _ => self.session.stats.telegrams_unexpected += 1,
        }
    }
}
