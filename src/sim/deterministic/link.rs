//! The simulated PLC and the transport between it and sortd: a byte pipe each way that
//! delays, drops, duplicates, corrupts and reorders whole telegrams and delivers them in
//! arbitrary chunks, a connection that is cut, refused while the PLC is unreachable, and
//! a PLC that stops reading, confirms parcels late and marks chutes full.
//!
//! The PLC's behaviour is [`PlcModel`], the same model `sortd plc-sim` drives over real
//! sockets; this module is its driver here, and adds what only the simulation does: a
//! random outcome per parcel, random chute events, stuck reading and power cycles.
//! sortd's side ([`crate::plc::HostLink`]) is driven by the egress core, not here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::plc::{ChuteState, Outcome, PeerConfig, PeerEvent, PeerState, PlcPeer, TELEGRAM_BYTES};
use crate::sim::plc_model::PlcModel;

use super::check::{Checker, Violation};
use super::fixtures::RULE_CHUTES_MAX;

/// What the transport does to telegrams, per seed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LinkFaults {
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub corrupt_per_mille: u32,
    pub reorder_per_mille: u32,
    pub delay_ms_max: u64,
    pub chunk_bytes_max: usize,
}

/// One direction of the transport: bytes with the time they may be read.
#[derive(Debug)]
pub(super) struct Pipe {
    bytes: VecDeque<(Instant, u8)>,
    last_due: Option<Instant>,
    /// Bytes the pipe holds at most (socket buffers on both ends).
    pub bytes_max: usize,
}

impl Pipe {
    pub fn new(bytes_max: usize) -> Pipe {
        Pipe {
            bytes: VecDeque::new(),
            last_due: None,
            bytes_max,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.last_due = None;
    }

    /// Accepts whole telegrams from `out` while there is room; returns the bytes taken.
    /// Faults apply per telegram.
    pub fn send(
        &mut self,
        now: Instant,
        out: &[u8],
        faults: &LinkFaults,
        rng: &mut fastrand::Rng,
    ) -> usize {
        let room = self.bytes_max.saturating_sub(self.bytes.len());
        let take = (room.min(out.len()) / TELEGRAM_BYTES) * TELEGRAM_BYTES;
        let mut telegrams: Vec<Vec<u8>> = out
            .get(..take)
            .unwrap_or_default()
            .chunks(TELEGRAM_BYTES)
            .map(<[u8]>::to_vec)
            .collect();
        for index in 1..telegrams.len() {
            if rng.u32(0..1000) < faults.reorder_per_mille {
                telegrams.swap(index - 1, index);
            }
        }
        for mut telegram in telegrams {
            if rng.u32(0..1000) < faults.drop_per_mille {
                continue;
            }
            if rng.u32(0..1000) < faults.corrupt_per_mille {
                let at = rng.usize(0..telegram.len());
                if let Some(byte) = telegram.get_mut(at) {
                    *byte ^= 1 << rng.u32(0..8);
                }
            }
            let copies = if rng.u32(0..1000) < faults.duplicate_per_mille {
                2
            } else {
                1
            };
            let delay = Duration::from_millis(rng.u64(0..=faults.delay_ms_max));
            let due = self
                .last_due
                .map_or(now + delay, |last| last.max(now + delay));
            self.last_due = Some(due);
            for _ in 0..copies {
                if self.bytes.len() + telegram.len() > self.bytes_max {
                    break;
                }
                self.bytes.extend(telegram.iter().map(|byte| (due, *byte)));
            }
        }
        take
    }

    /// Up to `count_max` bytes that are due at `now`.
    pub fn take(&mut self, now: Instant, count_max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < count_max {
            match self.bytes.front() {
                Some((due, byte)) if *due <= now => {
                    out.push(*byte);
                    self.bytes.pop_front();
                }
                _ => break,
            }
        }
        out
    }
}

/// The connection between sortd and the PLC.
#[derive(Debug)]
pub(super) struct Transport {
    /// A TCP connection exists.
    pub connected: bool,
    /// sortd dialled; the connection completes at the next egress turn.
    pub connecting: bool,
    /// The PLC closed or the network cut the connection; sortd notices on its next read.
    pub closed_under_sortd: bool,
    /// Dials fail until then.
    pub unreachable_until: Option<Instant>,
    pub to_plc: Pipe,
    pub to_host: Pipe,
    pub faults: LinkFaults,
    pub rng: fastrand::Rng,
}

impl Transport {
    pub fn new(pipe_bytes_max: usize, faults: LinkFaults, rng: fastrand::Rng) -> Transport {
        Transport {
            connected: false,
            connecting: false,
            closed_under_sortd: false,
            unreachable_until: None,
            to_plc: Pipe::new(pipe_bytes_max),
            to_host: Pipe::new(pipe_bytes_max),
            faults,
            rng,
        }
    }

    pub fn is_reachable(&self, now: Instant) -> bool {
        self.unreachable_until.is_none_or(|until| now >= until)
    }

    /// The connection is gone: bytes in flight are lost.
    pub fn close(&mut self) {
        self.connected = false;
        self.connecting = false;
        self.to_plc.clear();
        self.to_host.clear();
    }

    /// A chunk size for one delivery.
    pub fn chunk(&mut self) -> usize {
        self.rng.usize(1..=self.faults.chunk_bytes_max.max(1))
    }
}

/// The simulated PLC: the shared model and what drives it here.
#[derive(Debug)]
pub(super) struct Plc {
    pub model: PlcModel,
    rng: fastrand::Rng,
    /// Telegrams written by the peer that the pipe did not take yet.
    out: Vec<u8>,
    /// Reading is suspended until then (a stuck PLC program).
    pub reading_paused_until: Option<Instant>,
    /// Chute status changes per mille per step (0 in isolation runs).
    pub chute_event_per_mille: u32,
    pub sorts_received: u64,
}

/// Most confirmations the conveyor holds.
pub(super) const CONFIRMS_MAX: usize = 1 << 16;

impl Plc {
    pub fn new(
        config: PeerConfig,
        chute_event_per_mille: u32,
        rng: fastrand::Rng,
        now: Instant,
    ) -> Plc {
        Plc {
            model: PlcModel::new(config, CONFIRMS_MAX, now),
            rng,
            out: Vec::new(),
            reading_paused_until: None,
            chute_event_per_mille,
            sorts_received: 0,
        }
    }

    /// The link end.
    pub fn peer(&mut self) -> &mut PlcPeer {
        self.model.peer_mut()
    }

    /// Reports still to be sent or acknowledged.
    pub fn is_settled(&self) -> bool {
        self.out.is_empty() && self.model.is_settled()
    }

    /// Confirmations waiting for the conveyor.
    pub fn confirms_pending(&self) -> usize {
        self.model.confirms_pending()
    }

    /// A power cycle: the PLC forgets every SORT and confirmation; the connection
    /// drops (sortd sees it on its next read).
    pub fn restart(&mut self, now: Instant, transport: &mut Transport, checker: &mut Checker) {
        let session = self.rng.u64(1..);
        self.model.restart(now, session);
        self.out.clear();
        checker.on_plc_restart();
        checker.trace(14, &[session]);
        if transport.connected {
            transport.close();
            transport.closed_under_sortd = true;
        }
    }

    /// One turn of the PLC at `now`.
    pub fn turn(
        &mut self,
        now: Instant,
        transport: &mut Transport,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        if self.peer().poll_timeout().is_some_and(|at| at <= now) {
            self.peer().handle_timeout(now);
        }
        let reading = self.reading_paused_until.is_none_or(|until| now >= until);
        if transport.connected && reading {
            for _ in 0..64 {
                let room = self.peer().receive_room().min(transport.chunk());
                let bytes = transport.to_plc.take(now, room);
                if bytes.is_empty() {
                    break;
                }
                self.peer().handle_input(now, &bytes);
                self.events(now, transport, checker)?;
            }
        }
        self.events(now, transport, checker)?;
        let rng = &mut self.rng;
        self.model.release_confirms(now, |_| match rng.u32(0..100) {
            0..=89 => Outcome::Diverted,
            90..=94 => Outcome::Missed,
            95..=97 => Outcome::Aborted,
            _ => Outcome::Lost,
        });
        if self.rng.u32(0..1000) < self.chute_event_per_mille && self.peer().window_free() > 0 {
            let chute = self.rng.u16(1..=RULE_CHUTES_MAX);
            let state = match self.rng.u32(0..10) {
                0..=4 => ChuteState::Available,
                5..=7 => ChuteState::Full,
                _ => ChuteState::Disabled,
            };
            let _ = self.peer().set_chute_state(chute, state);
        }
        if transport.connected {
            if self.out.is_empty() {
                self.model.peer_mut().poll_transmit(now, &mut self.out);
            }
            let Transport {
                to_host,
                faults,
                rng,
                ..
            } = transport;
            let taken = to_host.send(now, &self.out, faults, rng);
            self.out.drain(..taken.min(self.out.len()));
        } else {
            self.out.clear();
        }
        Ok(())
    }

    fn events(
        &mut self,
        now: Instant,
        transport: &mut Transport,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        while let Some(event) = self.peer().poll_event() {
            match event {
                PeerEvent::SortReceived { sort, seq } => {
                    self.sorts_received += 1;
                    checker.trace(10, &[u64::from(seq)]);
                    checker.on_actuated(&sort)?;
                    let delay = Duration::from_millis(self.rng.u64(0..300));
                    self.model.on_sort(sort, Some(now + delay));
                }
                PeerEvent::HostLost { .. } => {
                    checker.trace(11, &[]);
                    // The PLC closes its end; sortd sees it on its next read. A loss
                    // reported for a connection already gone (sortd closed it, and a new
                    // one came up before this turn) leaves the new one alone.
                    if self.model.peer().state() == PeerState::AwaitingTransport {
                        transport.close();
                        transport.closed_under_sortd = true;
                    }
                }
                PeerEvent::HostUp {
                    host_session_changed,
                } => {
                    checker.trace(12, &[u64::from(host_session_changed)]);
                }
                PeerEvent::ReportsAcked { count, .. } => checker.trace(13, &[u64::from(count)]),
            }
        }
        Ok(())
    }
}
