//! Test harness for the PLC link: a `HostLink` and a `PlcPeer` joined by an in-memory
//! transport on a virtual clock (quinn-proto's `Pair`, for our link).
//!
//! The transport can be made hostile with [`Faults`]: it corrupts, drops, duplicates and
//! swaps whole telegrams and cuts the byte stream into random chunks, all from a seeded
//! generator, so a failing seed replays exactly. It never reads the real clock after
//! taking its base instant.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sortd::decision::Reason;
use sortd::plc::{
    HostEvent, HostLink, LinkConfig, PeerEvent, PlcPeer, SortCommand, TELEGRAM_BYTES,
};

/// Probabilities (in percent) of each fault per telegram, plus chunking.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub corrupt_percent: u32,
    pub drop_percent: u32,
    pub duplicate_percent: u32,
    pub swap_percent: u32,
    /// Deliver bytes in random chunks of 1..=chunk_bytes_max (0 = all at once).
    pub chunk_bytes_max: usize,
}

/// One direction of the transport.
#[derive(Debug, Default)]
pub struct Pipe {
    bytes: VecDeque<u8>,
}

impl Pipe {
    fn send(&mut self, out: &[u8], faults: &Faults, rng: &mut fastrand::Rng) {
        let mut telegrams: Vec<Vec<u8>> = out.chunks(TELEGRAM_BYTES).map(<[u8]>::to_vec).collect();
        let mut index = 0;
        while index < telegrams.len() {
            if rng.u32(0..100) < faults.swap_percent && index + 1 < telegrams.len() {
                telegrams.swap(index, index + 1);
            }
            index += 1;
        }
        for mut telegram in telegrams {
            if rng.u32(0..100) < faults.drop_percent {
                continue;
            }
            if rng.u32(0..100) < faults.corrupt_percent {
                let at = rng.usize(0..telegram.len());
                telegram[at] ^= 1 << rng.u32(0..8);
            }
            let copies = if rng.u32(0..100) < faults.duplicate_percent {
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.bytes.extend(telegram.iter().copied());
            }
        }
    }

    fn take(&mut self, faults: &Faults, rng: &mut fastrand::Rng) -> Vec<u8> {
        let count = if faults.chunk_bytes_max == 0 {
            self.bytes.len()
        } else {
            rng.usize(1..=faults.chunk_bytes_max).min(self.bytes.len())
        };
        self.bytes.drain(..count).collect()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// A host and a PLC on one virtual transport.
pub struct Pair {
    pub base: Instant,
    pub now: Instant,
    pub host: HostLink,
    pub plc: PlcPeer,
    pub connected: bool,
    /// When false, `ConnectNow` is not answered (the PLC is unreachable).
    pub reachable: bool,
    pub to_plc: Pipe,
    pub to_host: Pipe,
    pub faults: Faults,
    pub rng: fastrand::Rng,
    pub host_events: Vec<HostEvent>,
    pub plc_events: Vec<PeerEvent>,
    /// SORTs the PLC delivered, in order: (host seq, command).
    pub delivered: Vec<(u32, SortCommand)>,
    /// Raw telegram bytes each side wrote, for inspection.
    pub host_wrote: Vec<u8>,
    pub plc_wrote: Vec<u8>,
}

/// A deadline that never passes in these tests.
pub const HOUR: Duration = Duration::from_secs(3600);

pub fn host_config() -> LinkConfig {
    LinkConfig {
        session: 0x0500_0001,
        ..LinkConfig::default()
    }
}

pub fn plc_config() -> LinkConfig {
    LinkConfig {
        session: 0x0B1C_0001,
        first_seq: 1000,
        ..LinkConfig::default()
    }
}

pub fn sort(parcel_id: u64) -> SortCommand {
    SortCommand {
        parcel_id,
        scanner_id: 7,
        chute: (parcel_id % 400) as u16 + 1,
        reason: Reason::SortedPrimary,
        plan_version: 3,
        decided_at_us: parcel_id * 10,
    }
}

impl Pair {
    pub fn new(host_config: LinkConfig, plc_config: LinkConfig) -> Pair {
        let base = Instant::now();
        Pair {
            base,
            now: base,
            host: HostLink::new(host_config, base),
            plc: PlcPeer::new(plc_config, base),
            connected: false,
            reachable: true,
            to_plc: Pipe::default(),
            to_host: Pipe::default(),
            faults: Faults::default(),
            rng: fastrand::Rng::with_seed(1),
            host_events: Vec::new(),
            plc_events: Vec::new(),
            delivered: Vec::new(),
            host_wrote: Vec::new(),
            plc_wrote: Vec::new(),
        }
    }

    pub fn default_pair() -> Pair {
        Pair::new(host_config(), plc_config())
    }

    /// Milliseconds of virtual time since the start.
    pub fn elapsed_ms(&self) -> u128 {
        (self.now - self.base).as_millis()
    }

    pub fn connect(&mut self) {
        self.connected = true;
        self.host.handle_connected(self.now);
        self.plc.handle_connected(self.now);
    }

    /// Both ends see the transport close; bytes in flight are lost.
    pub fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.to_plc = Pipe::default();
        self.to_host = Pipe::default();
        self.host.handle_disconnected(self.now);
        self.plc.handle_disconnected(self.now);
    }

    /// The PLC power-cycles: the transport drops and a new PLC end with `session` (and
    /// no memory of the link) takes its place.
    pub fn restart_plc(&mut self, session: u64) {
        self.disconnect();
        self.plc = PlcPeer::new(
            LinkConfig {
                session,
                ..plc_config()
            },
            self.now,
        );
    }

    /// Drain the host's events into `host_events` without acting on them.
    pub fn collect_host_only(&mut self) {
        while let Some(event) = self.host.poll_event() {
            self.host_events.push(event);
        }
    }

    fn collect_events(&mut self) {
        let mut close = false;
        let mut dial = false;
        while let Some(event) = self.host.poll_event() {
            match event {
                HostEvent::ConnectNow => dial = true,
                HostEvent::LinkDown { .. } => close = true,
                _ => {}
            }
            self.host_events.push(event);
        }
        while let Some(event) = self.plc.poll_event() {
            match event {
                PeerEvent::SortReceived { sort, seq } => self.delivered.push((seq, sort)),
                PeerEvent::HostLost { .. } => close = true,
                _ => {}
            }
            self.plc_events.push(event);
        }
        if close {
            self.disconnect();
        }
        if dial {
            if self.reachable && !self.connected {
                self.connect();
            } else if !self.connected {
                self.host.handle_disconnected(self.now);
            }
        }
    }

    /// Move bytes both ways until neither side has anything to send. Returns the
    /// number of bytes written by both sides.
    pub fn drive(&mut self) -> usize {
        let mut written = 0;
        for _ in 0..100_000 {
            self.collect_events();
            let mut from_host = Vec::new();
            self.host.poll_transmit(self.now, &mut from_host);
            let mut from_plc = Vec::new();
            self.plc.poll_transmit(self.now, &mut from_plc);
            written += from_host.len() + from_plc.len();
            self.host_wrote.extend_from_slice(&from_host);
            self.plc_wrote.extend_from_slice(&from_plc);
            if self.connected {
                self.to_plc.send(&from_host, &self.faults, &mut self.rng);
                self.to_host.send(&from_plc, &self.faults, &mut self.rng);
            }
            if from_host.is_empty() && from_plc.is_empty() {
                break;
            }
            while self.connected && (self.to_plc.len() > 0 || self.to_host.len() > 0) {
                let chunk = self.to_plc.take(&self.faults, &mut self.rng);
                self.plc.handle_input(self.now, &chunk);
                let chunk = self.to_host.take(&self.faults, &mut self.rng);
                self.host.handle_input(self.now, &chunk);
                self.collect_events();
            }
        }
        written
    }

    /// Advance virtual time to `until`, firing timers on the way and driving traffic.
    pub fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            self.drive();
            let next = [self.host.poll_timeout(), self.plc.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.host.handle_timeout(self.now);
                    self.plc.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.host.handle_timeout(self.now);
        self.plc.handle_timeout(self.now);
        self.drive();
    }

    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Connect and run until both sides are established.
    pub fn established() -> Pair {
        let mut pair = Pair::default_pair();
        pair.drive();
        assert_eq!(pair.host.state(), sortd::plc::LinkState::Established);
        assert_eq!(pair.plc.state(), sortd::plc::PeerState::Established);
        pair
    }

    pub fn delivered_seqs(&self) -> Vec<u32> {
        self.delivered.iter().map(|(seq, _)| *seq).collect()
    }
}
