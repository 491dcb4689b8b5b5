//! Scanner ingress: one mio event loop per worker thread (or, with one worker, a share
//! of the pipeline thread's loop: [`super::single`]). It accepts scanner connections,
//! reads their bytes, decodes frames, decides each parcel against the current plan and
//! hands the decisions to the PLC side in batches, each stamped when handed over.
//!
//! Decoding and resolving run on the thread that read the bytes, inside each connection's
//! sans-IO [`ScannerSession`]: frames borrow from the session's buffer, and copying them
//! to another thread would cost more than resolving them. This file accepts, reads,
//! schedules connections and counts; the session decides. When the hand-off queue is full
//! the worker stops reading (the bytes wait in the kernel and TCP pushes back on the
//! scanner); nothing is dropped.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

use crate::core::session::{
    Decider, DecisionSink, Ending, ReadResult, SWEEP_INTERVAL, ScannerSession, Served,
    SessionObserver, Skipped,
};
use crate::pipeline::decide::Decision;
use crate::pipeline::queue::{Batch, BatchSender};
use crate::plan::{PlanHandle, PlanView};
use crate::plc::ChuteStateTable;
use crate::stats::Counters;
use crate::util::rate_limit::RateLimit;
use crate::wire::ScanFrame;

use super::settings::{IngressSettings, Listener};

/// Token of the waker that tells a worker to look at its stop flag.
pub const WAKE_TOKEN: Token = Token(usize::MAX);
/// A worker's listeners and connections have tokens from here on, so that one poll can
/// also carry the PLC side's (below it; see [`super::single`]).
pub const TOKEN_FIRST: usize = 1 << 30;
/// How long a blocked worker waits before retrying the hand-off.
const BLOCKED_RETRY: Duration = Duration::from_micros(200);
/// Synthetic scanner ids (for text connections without a configured id) start here.
const SYNTHETIC_SCANNER_ID_BASE: u32 = 0x8000_0000;

/// What every ingress worker shares.
#[derive(Debug, Clone)]
pub struct IngressShared {
    /// Listeners, limits and who may connect.
    pub settings: Arc<IngressSettings>,
    /// The current sort plan.
    pub plan: Arc<PlanHandle>,
    /// Chute availability reported by the PLC.
    pub chute_states: Arc<ChuteStateTable>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Set to stop accepting and reading.
    pub stop: Arc<AtomicBool>,
    /// Hands out synthetic scanner ids.
    pub next_synthetic_scanner_id: Arc<AtomicU32>,
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    session: ScannerSession,
    /// Whether the slot is in the ready queue.
    queued: bool,
    /// The peer has shut down its side (or the socket failed): read to the end instead
    /// of stopping at a short read.
    read_closed: bool,
    /// Slot in the per-scanner table of the operator page.
    stats_slot: Option<usize>,
}

/// Decisions waiting to be handed off, and the hand-off itself.
struct Sink {
    batch: Batch,
    sender: BatchSender,
}

impl DecisionSink for Sink {
    /// Decisions the batch can still take.
    fn room(&self) -> usize {
        self.batch.room()
    }

    /// Hands the batch over; false when the queue is full (the batch stays).
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let mut full = std::mem::take(&mut self.batch);
        full.stamp_handed(Instant::now());
        match self.sender.try_send(full) {
            Ok(()) => {
                self.batch = self.sender.empty_batch();
                true
            }
            Err(back) => {
                self.batch = back;
                false
            }
        }
    }

    fn push(&mut self, decision: Decision, scan: &ScanFrame<'_>, plan_name: &str) {
        self.batch.push_scan(decision, scan, plan_name);
    }
}

/// Counts accumulated during one turn and added to the shared counters at its end.
#[derive(Default)]
struct TurnCounts {
    bytes_in: u64,
    frames_in: u64,
    scans_in: u64,
    bytes_skipped: u64,
}

/// One ingress worker thread's state.
pub struct IngressWorker {
    index: usize,
    registry: Registry,
    listeners: Vec<TcpListener>,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    ready: VecDeque<usize>,
    sink: Sink,
    next_synthetic_parcel_id: u64,
    shared: IngressShared,
    counts: TurnCounts,
    warn_decode: RateLimit,
    warn_refused: RateLimit,
    last_sweep: Instant,
    /// The hand-off could not take a batch: reading waits until it can.
    blocked: bool,
    /// Stopping: the next connection to drain (see [`IngressWorker::stop_step`]).
    draining: Option<usize>,
}

impl std::fmt::Debug for IngressWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressWorker")
            .field("index", &self.index)
            .field(
                "connections",
                &(self.connections.len() - self.free_slots.len()),
            )
            .finish()
    }
}

impl IngressWorker {
    /// A worker serving these listeners (clones of the daemon's bound sockets),
    /// registering its sockets with `registry` (the poll that drives it).
    pub fn new(
        index: usize,
        registry: &Registry,
        listeners: Vec<TcpListener>,
        sender: BatchSender,
        shared: IngressShared,
    ) -> io::Result<IngressWorker> {
        let registry = registry.try_clone()?;
        let mut listeners = listeners;
        for (listener_index, listener) in listeners.iter_mut().enumerate() {
            registry.register(
                listener,
                Token(TOKEN_FIRST + listener_index),
                Interest::READABLE,
            )?;
        }
        let warning_interval = shared.settings.bad_input_warning_interval;
        let now = Instant::now();
        Ok(IngressWorker {
            index,
            registry,
            listeners,
            connections: Vec::new(),
            free_slots: Vec::new(),
            ready: VecDeque::new(),
            sink: Sink {
                batch: sender.empty_batch(),
                sender,
            },
            next_synthetic_parcel_id: (1 << 63) | ((index as u64) << 48),
            shared,
            counts: TurnCounts::default(),
            warn_decode: RateLimit::new(warning_interval),
            warn_refused: RateLimit::new(warning_interval),
            last_sweep: now,
            blocked: false,
            draining: None,
        })
    }

    fn listener_count(&self) -> usize {
        self.listeners.len()
    }

    /// Runs on its own thread with its own `poll` until the stop flag is set, then hands
    /// off what it decided and returns.
    pub fn run(mut self, mut poll: Poll) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.shared.stop.load(Ordering::Acquire) {
            if let Err(error) = poll.poll(&mut events, Some(self.poll_timeout())) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            for event in events.iter() {
                self.handle_event(event, now);
            }
            self.turn(now);
        }
        while !self.stop_step(Instant::now()) {
            std::thread::sleep(BLOCKED_RETRY);
        }
        Ok(())
    }

    /// Whether `token` is one of a worker's (a listener or a connection).
    pub fn owns(token: Token) -> bool {
        token.0 >= TOKEN_FIRST && token != WAKE_TOKEN
    }

    /// How long the poll that drives this worker may sleep: not at all while connections
    /// wait for their turn, briefly while the hand-off is blocked, else until the sweep.
    pub fn poll_timeout(&self) -> Duration {
        if self.blocked {
            BLOCKED_RETRY
        } else if !self.ready.is_empty() {
            Duration::ZERO
        } else {
            SWEEP_INTERVAL
        }
    }

    /// Takes one poll event of a listener or connection (others are ignored).
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        let token = event.token();
        if !IngressWorker::owns(token) {
            return;
        }
        let index = token.0 - TOKEN_FIRST;
        if index < self.listener_count() {
            self.accept_all(index, now);
        } else {
            let slot = index - self.listener_count();
            if event.is_read_closed() || event.is_error() {
                self.mark_read_closed(slot);
            }
            self.mark_ready(slot);
        }
    }

    /// One turn after the poll: serves the ready connections and hands off what they
    /// decided, publishes counts, sweeps idle connections.
    pub fn turn(&mut self, now: Instant) {
        self.shared.counters.liveness.ingress_turn(self.index);
        if self.blocked && !self.sink.flush() {
            return;
        }
        self.blocked = self.serve_ready(now);
        if !self.blocked && !self.sink.flush() {
            self.blocked = true;
        }
        self.publish_counts();
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_INTERVAL {
            self.sweep(now);
            self.last_sweep = now;
        }
    }

    /// On stop, one step of the drain: decides every complete frame already buffered,
    /// hands everything off and closes. Returns false while the hand-off is full (call
    /// again once the PLC side has taken batches), true when done.
    pub fn stop_step(&mut self, now: Instant) -> bool {
        let first = match self.draining {
            Some(next) => next,
            None => {
                for connection in self.connections.iter_mut().flatten() {
                    connection.session.handle_eof(Ending::Stopping);
                }
                0
            }
        };
        self.draining = Some(first);
        if !self.sink.flush() {
            return false;
        }
        let plan = self.shared.plan.view();
        for slot in first..self.connections.len() {
            self.draining = Some(slot);
            while self.serve_slot(slot, now, &plan) == Some(Served::Blocked) {
                if !self.sink.flush() {
                    return false;
                }
            }
        }
        self.draining = Some(self.connections.len());
        if !self.sink.flush() {
            return false;
        }
        self.publish_counts();
        for slot in 0..self.connections.len() {
            self.close(slot, now);
        }
        true
    }

    fn mark_ready(&mut self, slot: usize) {
        if let Some(Some(connection)) = self.connections.get_mut(slot) {
            if !connection.queued {
                connection.queued = true;
                self.ready.push_back(slot);
            }
        }
    }

    fn mark_read_closed(&mut self, slot: usize) {
        if let Some(Some(connection)) = self.connections.get_mut(slot) {
            connection.read_closed = true;
        }
    }

    /// Gives the connection in `slot` one turn of its session; `None` when it is empty.
    fn serve_slot(&mut self, slot: usize, now: Instant, plan: &PlanView) -> Option<Served> {
        let connection = self.connections.get_mut(slot)?.as_mut()?;
        let mut decider = Decider {
            plan,
            chute_states: &self.shared.chute_states,
            synthetic_parcel_id: &mut self.next_synthetic_parcel_id,
        };
        let mut observer = ConnectionObserver {
            counts: &mut self.counts,
            counters: &self.shared.counters,
            warn_decode: &mut self.warn_decode,
            peer: connection.peer,
            stats_slot: connection.stats_slot,
        };
        let Connection {
            stream,
            session,
            stats_slot,
            read_closed,
            ..
        } = connection;
        let stats_slot = *stats_slot;
        let mut reader = DrainingReader::new(stream, *read_closed);
        let served = session.serve(
            now,
            |spare| reader.read(spare),
            &mut decider,
            &mut self.sink,
            &mut observer,
        );
        self.shared
            .counters
            .scanners
            .publish(stats_slot, session.scanner_id(), session.scans());
        Some(served)
    }

    /// Serves each ready connection once. Returns true when the hand-off blocked.
    fn serve_ready(&mut self, now: Instant) -> bool {
        if self.ready.is_empty() {
            return false;
        }
        let plan = self.shared.plan.view();
        let turns = self.ready.len();
        for _ in 0..turns {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            match self.serve_slot(slot, now, &plan) {
                None => {}
                Some(Served::Drained) => {
                    if let Some(Some(connection)) = self.connections.get_mut(slot) {
                        connection.queued = false;
                    }
                }
                Some(Served::More) => self.ready.push_back(slot),
                Some(Served::Blocked) => {
                    self.ready.push_front(slot);
                    return true;
                }
                Some(Served::Closed) => self.close(slot, now),
            }
        }
        false
    }

    fn accept_all(&mut self, listener_index: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(listener_index) else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving who we have.
                    if let Some(held_back) = self.warn_refused.allow(now) {
                        tracing::warn!(%error, held_back, "accept failed");
                    }
                    return;
                }
            };
            self.admit(stream, peer, listener_index, now);
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, listener_index: usize, now: Instant) {
        let counters = &self.shared.counters;
        let Some(listener) = self.listener_settings(listener_index).cloned() else {
            return;
        };
        // A peer must pass both the global list and the listener's own.
        let refused_by = if !self.shared.settings.allow.allows(peer.ip()) {
            Some("scanners.allow")
        } else if !listener.allow.allows(peer.ip()) {
            Some("the listener's allow")
        } else {
            None
        };
        if let Some(list) = refused_by {
            Counters::add(&counters.connections_refused_address, 1);
            if let Some(held_back) = self.warn_refused.allow(now) {
                tracing::warn!(%peer, listener = %listener.address, held_back, "scanner refused: address not in {list}");
            }
            return;
        }
        let open_max = self.shared.settings.limits.connections_max as u64;
        if counters.connections_open.fetch_add(1, Ordering::AcqRel) >= open_max {
            counters.connections_open.fetch_sub(1, Ordering::AcqRel);
            Counters::add(&counters.connections_refused_limit, 1);
            if let Some(held_back) = self.warn_refused.allow(now) {
                tracing::warn!(%peer, held_back, open_max, "scanner refused: connection limit reached");
            }
            return;
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        let mut stream = stream;
        let token = Token(TOKEN_FIRST + self.listener_count() + slot);
        if let Err(error) = self
            .registry
            .register(&mut stream, token, Interest::READABLE)
        {
            tracing::warn!(%peer, %error, "could not register scanner connection");
            counters.connections_open.fetch_sub(1, Ordering::AcqRel);
            self.free_slots.push(slot);
            return;
        }
        let scanner_id = listener.scanner_id.unwrap_or_else(|| {
            SYNTHETIC_SCANNER_ID_BASE
                | self
                    .shared
                    .next_synthetic_scanner_id
                    .fetch_add(1, Ordering::Relaxed)
        });
        tracing::info!(%peer, worker = self.index, protocol = listener.protocol_name.as_str(), "scanner connected");
        Counters::add(&counters.connections_accepted, 1);
        let session = ScannerSession::new(
            listener.framing,
            scanner_id,
            self.shared.settings.limits.session(),
            now,
        );
        if let Some(entry) = self.connections.get_mut(slot) {
            *entry = Some(Connection {
                stream,
                peer,
                session,
                queued: false,
                read_closed: false,
                stats_slot: self.shared.counters.scanners.open(peer),
            });
        }
        // Bytes may have arrived before registration; edge-triggered polling would not
        // report them, so give the connection a turn now.
        self.mark_ready(slot);
    }

    fn listener_settings(&self, listener_index: usize) -> Option<&Listener> {
        self.shared.settings.listeners.get(listener_index)
    }

    fn close(&mut self, slot: usize, now: Instant) {
        let Some(entry) = self.connections.get_mut(slot) else {
            return;
        };
        let Some(mut connection) = entry.take() else {
            return;
        };
        let mut observer = ConnectionObserver {
            counts: &mut self.counts,
            counters: &self.shared.counters,
            warn_decode: &mut self.warn_decode,
            peer: connection.peer,
            stats_slot: connection.stats_slot,
        };
        connection.session.close(now, &mut observer);
        self.shared.counters.scanners.close(connection.stats_slot);
        let _ = self.registry.deregister(&mut connection.stream);
        self.shared
            .counters
            .connections_open
            .fetch_sub(1, Ordering::AcqRel);
        Counters::add(&self.shared.counters.connections_closed, 1);
        let why = connection.session.ending().map_or("closed", Ending::as_str);
        tracing::info!(peer = %connection.peer, scans = connection.session.scans(), why, "scanner disconnected");
        self.free_slots.push(slot);
    }

    /// Lets each session look at its clocks; one that ran out is served next, which
    /// decides the complete frames it still holds, then closes it.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.connections.len() {
            let Some(Some(connection)) = self.connections.get_mut(slot) else {
                continue;
            };
            let counter = match connection.session.handle_timeout(now) {
                Some(Ending::FrameDeadline) => {
                    &self.shared.counters.connections_closed_frame_deadline
                }
                Some(Ending::Idle) => &self.shared.counters.connections_closed_idle,
                Some(_) | None => continue,
            };
            Counters::add(counter, 1);
            self.mark_ready(slot);
        }
    }

    fn publish_counts(&mut self) {
        let counts = std::mem::take(&mut self.counts);
        let counters = &self.shared.counters;
        Counters::add(&counters.bytes_in, counts.bytes_in);
        Counters::add(&counters.frames_in, counts.frames_in);
        Counters::add(&counters.scans_in, counts.scans_in);
        Counters::add(&counters.bytes_skipped, counts.bytes_skipped);
    }
}

/// Reads a scanner socket for one turn, without the read that would only say `EAGAIN`.
///
/// mio polls edge-triggered: a connection is reported again only when new bytes arrive
/// after it was read dry. For a stream socket a read that returns fewer bytes than asked
/// has emptied the receive queue (epoll(7)), so the read after it could only say
/// `EAGAIN`; this reader answers [`ReadResult::WouldBlock`] itself instead. Once the peer
/// has shut down its side the end must still be read, so then it reads until the socket
/// says so.
struct DrainingReader<'a> {
    stream: &'a mut TcpStream,
    read_to_end: bool,
    drained: bool,
}

impl<'a> DrainingReader<'a> {
    fn new(stream: &'a mut TcpStream, read_to_end: bool) -> DrainingReader<'a> {
        DrainingReader {
            stream,
            read_to_end,
            drained: false,
        }
    }

    fn read(&mut self, spare: &mut [u8]) -> ReadResult {
        if self.drained {
            return ReadResult::WouldBlock;
        }
        let asked = spare.len();
        let result = read_some(self.stream, spare);
        if let ReadResult::Data(count) = result {
            self.drained = count < asked && !self.read_to_end;
        }
        result
    }
}

/// One read from a scanner socket, retried when interrupted; 0 bytes is the end.
fn read_some(stream: &mut TcpStream, spare: &mut [u8]) -> ReadResult {
    loop {
        return match stream.read(spare) {
            Ok(0) => ReadResult::Eof,
            Ok(count) => ReadResult::Data(count),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => ReadResult::WouldBlock,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => ReadResult::Error,
        };
    }
}

/// Counts a session's work into the worker's turn counts (published once per turn) and
/// warns, rate-limited, about bad input.
struct ConnectionObserver<'a> {
    counts: &'a mut TurnCounts,
    counters: &'a Counters,
    warn_decode: &'a mut RateLimit,
    peer: SocketAddr,
    /// The connection's slot in the operator page's per-scanner table.
    stats_slot: Option<usize>,
}

impl SessionObserver for ConnectionObserver<'_> {
    fn on_bytes(&mut self, count: usize) {
        self.counts.bytes_in += count as u64;
    }

    fn on_frame(&mut self) {
        self.counts.frames_in += 1;
    }

    fn on_scan(&mut self, _scan: &crate::wire::ScanFrame<'_>, _decision: &Decision) {
        self.counts.scans_in += 1;
    }

    fn on_hello(&mut self, scanner_id: u32, changed: bool) {
        if changed {
            tracing::info!(peer = %self.peer, scanner_id, "scanner said hello");
        }
    }

    fn on_skipped(&mut self, now: Instant, skipped: Skipped) {
        self.counts.bytes_skipped += skipped.bytes as u64;
        self.counters.count_decode_error(skipped.kind, 1);
        self.counters.scanners.bad_input(self.stats_slot, 1);
        if let Some(error) = skipped.error {
            if let Some(held_back) = self.warn_decode.allow(now) {
                tracing::warn!(peer = %self.peer, ?error, skip = skipped.bytes, held_back, "bad scanner input skipped");
            }
        }
    }
}
