//! `sortd plc-sim`: a PLC simulator speaking the PLC link of PROTOCOL.md, for the demo,
//! the load generator and fault tests.
//!
//! Its behaviour is the shared [`PlcModel`] (the deterministic simulator drives the same
//! one): it acknowledges every SORT (through the sans-IO [`crate::plc::PlcPeer`], which
//! also de-duplicates retransmissions), confirms each one after a conveyor delay, marks chutes full or
//! disabled at seeded random moments, and can drop or stall the link on a schedule. It
//! counts what it received by chute and reason and records each SORT's latency from the
//! moment sortd received the scan. It is a test tool: it does not model belt positions.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::decision::{ChuteNumber, Reason};
use crate::net::link_socket::{ConnectProgress, LinkSocket, ReadOutcome};
use crate::plc::{ChuteState, Outcome, PeerConfig, PeerEvent, SortCommand};

use super::plc_model::PlcModel;
use crate::stats::{ByReason, Counters};

const LISTENER_TOKEN: Token = Token(0);
const STREAM_TOKEN: Token = Token(1);
const TICK: Duration = Duration::from_millis(5);
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Confirmations waiting for their conveyor delay, at most; beyond it the oldest are
/// reported `lost` at once (the simulated belt cannot hold more parcels; see
/// [`PlcModel::on_sort`]).
const PENDING_CONFIRMS_MAX: usize = 1 << 20;

/// Whether the simulator listens for sortd or dials it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMode {
    /// Listen on this address (sortd's default `plc.mode = "connect"`).
    Listen(SocketAddr),
    /// Dial sortd here (`plc.mode = "listen"`).
    Connect(SocketAddr),
}

/// A scheduled link fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFaultKind {
    /// Close the connection (the simulator dials or accepts again).
    Drop,
    /// Stop reading and writing for this long, keeping the connection open.
    Stall(Duration),
}

/// A link fault at a time after the host first connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFault {
    /// When, from the first host connection (so a slow start does not eat the schedule).
    pub at: Duration,
    /// What.
    pub kind: LinkFaultKind,
}

/// Random chute trouble: every `interval_mean` on average, one chute among `chutes` goes
/// full (or disabled, `disabled_percent` of the time) for `hold`.
#[derive(Debug, Clone)]
pub struct ChuteFaults {
    /// Seed for the choices and intervals.
    pub seed: u64,
    /// Mean time between faults.
    pub interval_mean: Duration,
    /// How long a chute stays full or disabled.
    pub hold: Duration,
    /// Share of faults that disable rather than fill, in percent.
    pub disabled_percent: u8,
    /// The chutes that may fault.
    pub chutes: Vec<ChuteNumber>,
}

/// A scripted chute state change at a time after the host connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChuteEvent {
    /// When, from the first host connection.
    pub at: Duration,
    /// Which chute.
    pub chute: ChuteNumber,
    /// Its new state.
    pub state: ChuteState,
}

/// Everything the simulator is told.
#[derive(Debug, Clone)]
pub struct PlcSimOptions {
    /// Listen or dial.
    pub mode: SimMode,
    /// Link settings of the PLC side.
    pub link: PeerConfig,
    /// Time from SORT to SORT_CONFIRM; `None` sends no confirmations.
    pub confirm_delay: Option<Duration>,
    /// Random chute faults.
    pub chute_faults: Option<ChuteFaults>,
    /// Scheduled link faults.
    pub link_faults: Vec<LinkFault>,
    /// Scripted chute state changes.
    pub chute_events: Vec<ChuteEvent>,
}

/// Told about every SORT as it arrives (the load generator measures latency with it).
pub trait SortObserver: Send + Sync {
    /// A SORT arrived at `arrived_at`.
    fn on_sort(&self, sort: &SortCommand, arrived_at: Instant);

    /// SORTs that arrived together (one read); override to take a lock once per batch.
    fn on_sorts(&self, sorts: &[SortCommand], arrived_at: Instant) {
        for sort in sorts {
            self.on_sort(sort, arrived_at);
        }
    }
}

/// How often counts kept by the simulator's thread are added to the shared ones.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// What the simulator counted. Shared, readable while it runs.
#[derive(Debug)]
pub struct PlcSimCounters {
    /// SORTs received (exactly once per sequence number).
    pub sorts: AtomicU64,
    /// SORTs by reason.
    pub by_reason: ByReason,
    /// SORTs by chute.
    pub by_chute: Mutex<BTreeMap<ChuteNumber, u64>>,
    /// Retransmitted SORTs the link recognised and did not deliver again.
    pub duplicates_ignored: AtomicU64,
    /// SORT_CONFIRMs queued, by outcome name.
    pub confirms: Mutex<BTreeMap<&'static str, u64>>,
    /// Times a host connection came up.
    pub connections: AtomicU64,
    /// Reports (confirmations, chute status) the host acknowledged: it has applied them.
    pub reports_acked: AtomicU64,
    /// Latency from sortd's receipt of the scan to the SORT's arrival, microseconds.
    pub latency_us: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for PlcSimCounters {
    fn default() -> Self {
        PlcSimCounters {
            sorts: AtomicU64::new(0),
            by_reason: ByReason::default(),
            by_chute: Mutex::new(BTreeMap::new()),
            duplicates_ignored: AtomicU64::new(0),
            confirms: Mutex::new(BTreeMap::new()),
            connections: AtomicU64::new(0),
            reports_acked: AtomicU64::new(0),
            latency_us: Mutex::new(new_latency_histogram()),
        }
    }
}

/// A histogram for latencies from 1 us to 1 minute at 3 significant digits.
pub fn new_latency_histogram() -> hdrhistogram::Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

enum Endpoint {
    Listen(TcpListener),
    Connect(SocketAddr),
}

/// The simulator's event loop state.
pub struct PlcSim {
    poll: Poll,
    endpoint: Endpoint,
    socket: LinkSocket,
    model: PlcModel,
    options: PlcSimOptions,
    counters: Arc<PlcSimCounters>,
    observer: Option<Arc<dyn SortObserver>>,
    chute_rng: fastrand::Rng,
    next_chute_fault: Option<Instant>,
    chute_restores: VecDeque<(Instant, ChuteNumber)>,
    faults: VecDeque<LinkFault>,
    chute_events: VecDeque<ChuteEvent>,
    first_host_up: Option<Instant>,
    stalled_until: Option<Instant>,
    redial_at: Option<Instant>,
    local_address: Option<SocketAddr>,
    // Counts kept by this thread and published every PUBLISH_INTERVAL, so a SORT
    // costs no lock and no atomic read-modify-write.
    arrived: Vec<SortCommand>,
    sorts_local: u64,
    by_reason_local: [u64; Reason::ALL.len()],
    by_chute_local: Box<[u64]>,
    chutes_touched: Vec<ChuteNumber>,
    latency_local: hdrhistogram::Histogram<u64>,
    last_publish: Instant,
}

impl std::fmt::Debug for PlcSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlcSim")
            .field("local_address", &self.local_address)
            .finish_non_exhaustive()
    }
}

impl PlcSim {
    /// Binds (in listen mode) and prepares the simulator.
    pub fn new(
        options: PlcSimOptions,
        counters: Arc<PlcSimCounters>,
        observer: Option<Arc<dyn SortObserver>>,
    ) -> io::Result<PlcSim> {
        let poll = Poll::new()?;
        let now = Instant::now();
        let (endpoint, local_address) = match options.mode {
            SimMode::Listen(address) => {
                let mut listener = TcpListener::bind(address)?;
                let local = listener.local_addr()?;
                poll.registry()
                    .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)?;
                (Endpoint::Listen(listener), Some(local))
            }
            SimMode::Connect(address) => (Endpoint::Connect(address), None),
        };
        let mut faults: Vec<LinkFault> = options.link_faults.clone();
        faults.sort_by_key(|fault| fault.at);
        let mut chute_events = options.chute_events.clone();
        chute_events.sort_by_key(|event| event.at);
        let chute_rng = fastrand::Rng::with_seed(
            options
                .chute_faults
                .as_ref()
                .map_or(0, |faults| faults.seed),
        );
        let mut sim = PlcSim {
            poll,
            endpoint,
            socket: LinkSocket::new(READ_CHUNK_BYTES),
            model: PlcModel::new(options.link, PENDING_CONFIRMS_MAX, now),
            counters,
            observer,
            chute_rng,
            next_chute_fault: None,
            chute_restores: VecDeque::new(),
            faults: faults.into(),
            chute_events: chute_events.into(),
            first_host_up: None,
            stalled_until: None,
            redial_at: Some(now),
            local_address,
            arrived: Vec::with_capacity(4096),
            sorts_local: 0,
            by_reason_local: [0; Reason::ALL.len()],
            by_chute_local: vec![0; usize::from(ChuteNumber::MAX) + 1].into_boxed_slice(),
            chutes_touched: Vec::new(),
            latency_local: new_latency_histogram(),
            last_publish: now,
            options,
        };
        sim.schedule_chute_fault(now);
        Ok(sim)
    }

    /// Attaches an observer told about every SORT.
    pub fn set_observer(&mut self, observer: Arc<dyn SortObserver>) {
        self.observer = Some(observer);
    }

    /// Its counters.
    pub fn counters(&self) -> Arc<PlcSimCounters> {
        self.counters.clone()
    }

    /// The address it listens on (listen mode).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.local_address
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let timeout = self.next_wakeup(now);
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER_TOKEN => self.accept(now),
                    STREAM_TOKEN if self.socket.is_connecting() => {
                        match self.socket.finish_connect() {
                            ConnectProgress::Connected => {
                                self.model.peer_mut().handle_connected(now)
                            }
                            ConnectProgress::Pending => {}
                            ConnectProgress::Failed => self.lose_connection(now),
                        }
                    }
                    _ => {}
                }
            }
            self.turn(now);
        }
        self.publish(Instant::now(), true);
        Ok(())
    }

    fn next_wakeup(&self, now: Instant) -> Duration {
        let mut next = now + TICK;
        // Reports wait for room in the window; room comes with the host's ACK, which is
        // a socket event, so a full window must not make the loop spin.
        let reports_can_go = self.model.peer().window_free() > 0;
        let candidates = [
            self.model.peer().poll_timeout(),
            self.model.next_confirm_due().filter(|_| reports_can_go),
            self.next_chute_fault,
            self.chute_restores.front().map(|(due, _)| *due),
            self.first_host_up
                .and_then(|up| self.faults.front().map(|fault| up + fault.at)),
            self.first_host_up
                .filter(|_| reports_can_go)
                .and_then(|up| self.chute_events.front().map(|event| up + event.at)),
            self.redial_at,
        ];
        for at in candidates.into_iter().flatten() {
            next = next.min(at);
        }
        next.saturating_duration_since(now)
    }

    fn is_stalled(&mut self, now: Instant) -> bool {
        match self.stalled_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.stalled_until = None;
                false
            }
            None => false,
        }
    }

    /// One pass: faults, input, timers, confirmations, output.
    fn turn(&mut self, now: Instant) {
        self.apply_link_faults(now);
        if self.redial_at.is_some_and(|at| at <= now) {
            self.redial_at = None;
            self.dial(now);
        }
        let stalled = self.is_stalled(now);
        if !stalled {
            self.read(now);
        }
        if self
            .model
            .peer_mut()
            .poll_timeout()
            .is_some_and(|at| at <= now)
        {
            self.model.peer_mut().handle_timeout(now);
        }
        self.drain_events(now);
        self.release_confirms(now);
        self.apply_chute_faults(now);
        self.apply_chute_events(now);
        if !stalled && self.socket.is_open() {
            if self.socket.outbound_pending() == 0 {
                self.model
                    .peer_mut()
                    .poll_transmit(now, self.socket.outbound());
            }
            if !self.socket.flush() {
                self.lose_connection(now);
            }
        }
        self.publish(now, false);
    }

    fn read(&mut self, now: Instant) {
        loop {
            match self.socket.read(self.model.peer_mut().receive_room()) {
                ReadOutcome::Data(bytes) => self.model.peer_mut().handle_input(now, bytes),
                ReadOutcome::WouldBlock => return,
                ReadOutcome::Closed => {
                    self.lose_connection(now);
                    return;
                }
            }
            self.drain_events(now);
        }
    }

    fn drain_events(&mut self, now: Instant) {
        let now_us = unix_micros();
        while let Some(event) = self.model.peer_mut().poll_event() {
            match event {
                PeerEvent::SortReceived { sort, .. } => self.on_sort(sort, now, now_us),
                PeerEvent::HostUp { .. } => {
                    self.first_host_up.get_or_insert(now);
                    Counters::add(&self.counters.connections, 1);
                }
                PeerEvent::ReportsAcked { count, .. } => {
                    Counters::add(&self.counters.reports_acked, u64::from(count));
                }
                PeerEvent::HostLost { why } => {
                    tracing::info!(?why, "plc-sim: host lost");
                    if self.socket.detach(self.poll.registry()) {
                        self.schedule_redial(now);
                    }
                }
            }
        }
        if !self.arrived.is_empty() {
            if let Some(observer) = &self.observer {
                observer.on_sorts(&self.arrived, now);
            }
            self.arrived.clear();
        }
        self.counters
            .duplicates_ignored
            .store(self.model.peer().stats().duplicates, Ordering::Relaxed);
    }

    fn on_sort(&mut self, sort: SortCommand, now: Instant, now_us: u64) {
        self.sorts_local += 1;
        self.by_reason_local[sort.reason.index()] += 1;
        if let Some(count) = self.by_chute_local.get_mut(usize::from(sort.chute)) {
            if *count == 0 {
                self.chutes_touched.push(sort.chute);
            }
            *count += 1;
        }
        let _ = self
            .latency_local
            .record(now_us.saturating_sub(sort.decided_at_us).max(1));
        if self.observer.is_some() {
            self.arrived.push(sort);
        }
        let due = self.options.confirm_delay.map(|delay| now + delay);
        self.model.on_sort(sort, due);
    }

    fn release_confirms(&mut self, now: Instant) {
        let restores = &self.chute_restores;
        self.model.release_confirms(now, |sort| {
            if restores.iter().any(|(_, faulted)| *faulted == sort.chute) {
                Outcome::Aborted
            } else {
                Outcome::Diverted
            }
        });
    }

    fn is_chute_faulted(&self, chute: ChuteNumber) -> bool {
        self.chute_restores
            .iter()
            .any(|(_, faulted)| *faulted == chute)
    }

    fn schedule_chute_fault(&mut self, now: Instant) {
        let Some(faults) = &self.options.chute_faults else {
            return;
        };
        let mean_us = faults.interval_mean.as_micros().max(1) as u64;
        let wait_us = self.chute_rng.u64(mean_us / 2..=mean_us + mean_us / 2);
        self.next_chute_fault = Some(now + Duration::from_micros(wait_us));
    }

    fn apply_chute_events(&mut self, now: Instant) {
        let Some(up) = self.first_host_up else {
            return;
        };
        while let Some(event) = self.chute_events.front().copied() {
            if up + event.at > now || self.model.peer().window_free() == 0 {
                return;
            }
            self.chute_events.pop_front();
            let _ = self
                .model
                .peer_mut()
                .set_chute_state(event.chute, event.state);
        }
    }

    fn apply_chute_faults(&mut self, now: Instant) {
        while let Some((due, chute)) = self.chute_restores.front().copied() {
            if due > now {
                break;
            }
            self.chute_restores.pop_front();
            if !self.is_chute_faulted(chute) {
                let _ = self
                    .model
                    .peer_mut()
                    .set_chute_state(chute, ChuteState::Available);
            }
        }
        if self.next_chute_fault.is_none_or(|at| at > now) {
            return;
        }
        let Some(faults) = self.options.chute_faults.clone() else {
            return;
        };
        if !faults.chutes.is_empty() {
            let chute = faults
                .chutes
                .get(self.chute_rng.usize(..faults.chutes.len()))
                .copied()
                .unwrap_or(1);
            let state = if self.chute_rng.u8(..100) < faults.disabled_percent {
                ChuteState::Disabled
            } else {
                ChuteState::Full
            };
            if self.model.peer_mut().set_chute_state(chute, state).is_ok() {
                self.chute_restores.push_back((now + faults.hold, chute));
            }
        }
        self.schedule_chute_fault(now);
    }

    fn apply_link_faults(&mut self, now: Instant) {
        let Some(up) = self.first_host_up else {
            return;
        };
        while let Some(fault) = self.faults.front().copied() {
            if up + fault.at > now {
                return;
            }
            self.faults.pop_front();
            match fault.kind {
                LinkFaultKind::Drop => {
                    tracing::info!("plc-sim: dropping the link (scheduled fault)");
                    self.lose_connection(now);
                }
                LinkFaultKind::Stall(length) => {
                    tracing::info!(?length, "plc-sim: stalling the link (scheduled fault)");
                    self.stalled_until = Some(now + length);
                }
            }
        }
    }

    fn lose_connection(&mut self, now: Instant) {
        if self.socket.detach(self.poll.registry()) {
            self.model.peer_mut().handle_disconnected(now);
        }
        self.schedule_redial(now);
    }

    fn schedule_redial(&mut self, now: Instant) {
        if let Endpoint::Connect(_) = self.endpoint {
            self.redial_at = Some(now + Duration::from_millis(100));
        }
    }

    fn dial(&mut self, now: Instant) {
        let Endpoint::Connect(address) = self.endpoint else {
            return;
        };
        let attached = TcpStream::connect(address).and_then(|stream| {
            self.socket
                .attach(self.poll.registry(), stream, STREAM_TOKEN, true)
        });
        if attached.is_err() {
            self.schedule_redial(now);
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Endpoint::Listen(listener) = &self.endpoint else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.socket.detach(self.poll.registry()) {
                        self.model.peer_mut().handle_disconnected(now);
                    }
                    if self
                        .socket
                        .attach(self.poll.registry(), stream, STREAM_TOKEN, false)
                        .is_ok()
                    {
                        tracing::info!(%peer, "plc-sim: sortd connected");
                        self.model.peer_mut().handle_connected(now);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Adds this thread's counts to the shared ones: the plain counts every turn, the
    /// maps and the histogram every PUBLISH_INTERVAL (or when `finished`).
    fn publish(&mut self, now: Instant, finished: bool) {
        Counters::add(&self.counters.sorts, std::mem::take(&mut self.sorts_local));
        for (reason, count) in Reason::ALL.iter().zip(self.by_reason_local.iter_mut()) {
            self.counters.by_reason.add(*reason, std::mem::take(count));
        }
        if !finished && now.saturating_duration_since(self.last_publish) < PUBLISH_INTERVAL {
            return;
        }
        self.last_publish = now;
        if !self.chutes_touched.is_empty() {
            if let Ok(mut by_chute) = self.counters.by_chute.lock() {
                for chute in self.chutes_touched.drain(..) {
                    if let Some(count) = self.by_chute_local.get_mut(usize::from(chute)) {
                        *by_chute.entry(chute).or_insert(0) += std::mem::take(count);
                    }
                }
            }
        }
        let confirmed = self.model.take_confirmed();
        if confirmed.iter().any(|count| *count > 0) {
            if let Ok(mut confirms) = self.counters.confirms.lock() {
                for (outcome, count) in Outcome::ALL.iter().zip(confirmed) {
                    if count > 0 {
                        *confirms.entry(outcome.as_str()).or_insert(0) += count;
                    }
                }
            }
        }
        if !self.latency_local.is_empty() {
            if let Ok(mut latency) = self.counters.latency_us.lock() {
                let _ = latency.add(&self.latency_local);
            }
            self.latency_local.reset();
        }
    }
}
