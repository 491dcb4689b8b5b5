//! Scanner ingress: one mio event loop per worker thread. It accepts scanner
//! connections, reads their bytes, decodes frames, decides each parcel against the current
//! plan and hands the decisions to the PLC thread in batches.
//!
//! Decoding and resolving run on the thread that read the bytes: frames borrow from the
//! connection's buffer, and copying them to another thread would cost more than resolving
//! them. When the hand-off queue is full the worker stops reading (the bytes wait in the
//! kernel and TCP pushes back on the scanner); nothing is dropped.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::daemon::config::{Config, Listener};
use crate::pipeline::decide::{Decision, decide};
use crate::pipeline::queue::{Batch, BatchSender};
use crate::plan::{DefaultKind, PlanHandle};
use crate::plc::ChuteStateTable;
use crate::stats::Counters;
use crate::util::rate_limit::RateLimit;
use crate::wire::{Decoded, Frame, Framing};

/// Token of the waker that tells a worker to look at its stop flag.
pub const WAKE_TOKEN: Token = Token(usize::MAX);
/// How often deadlines and idle timeouts are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// Reads per connection per turn before the next connection gets its turn.
const READS_PER_TURN_MAX: usize = 4;
/// How long a blocked worker waits before retrying the hand-off.
const BLOCKED_RETRY: Duration = Duration::from_micros(200);
/// Complete frames decoded ahead, so their plan lookups' cache misses overlap.
const WARM_AHEAD_FRAMES: usize = 16;
/// Synthetic scanner ids (for text connections without a configured id) start here.
const SYNTHETIC_SCANNER_ID_BASE: u32 = 0x8000_0000;

/// What every ingress worker shares.
#[derive(Debug, Clone)]
pub struct IngressShared {
    /// The validated configuration.
    pub config: Arc<Config>,
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
    listener_index: usize,
    input: super::input::InputBuffer,
    /// Scanner id for frames that carry none (text), or announced by HELLO.
    scanner_id: u32,
    /// Whether the slot is in the ready queue.
    queued: bool,
    scans: u64,
    /// Set when the connection must close (peer closed, error, deadline); its last
    /// complete frames are still decided first.
    ending: Option<&'static str>,
}

/// Decisions waiting to be handed off, and the hand-off itself.
struct Sink {
    batch: Batch,
    sender: BatchSender,
    next_synthetic_parcel_id: u64,
}

impl Sink {
    fn is_full(&self) -> bool {
        self.batch.len() >= self.sender.batch_parcels_max()
    }

    /// Decisions the batch can still take.
    fn room(&self) -> usize {
        self.sender
            .batch_parcels_max()
            .saturating_sub(self.batch.len())
    }

    /// Hands the batch over; false when the queue is full (the batch stays).
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let full = std::mem::take(&mut self.batch);
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
}

/// Counts accumulated during one turn and added to the shared counters at its end.
#[derive(Default)]
struct TurnCounts {
    bytes_in: u64,
    frames_in: u64,
    scans_in: u64,
    bytes_skipped: u64,
}

enum Served {
    /// Read until the socket had nothing more.
    Drained,
    /// Has more to read; give it another turn.
    More,
    /// The hand-off queue is full; resume this connection later.
    Blocked,
    /// Closed by the peer or by an error.
    Closed,
}

/// One ingress worker thread's state.
pub struct IngressWorker {
    index: usize,
    poll: Poll,
    listeners: Vec<TcpListener>,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    ready: VecDeque<usize>,
    sink: Sink,
    shared: IngressShared,
    counts: TurnCounts,
    warn_decode: RateLimit,
    warn_refused: RateLimit,
    last_sweep: Instant,
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
    /// A worker serving these listeners (clones of the daemon's bound sockets).
    pub fn new(
        index: usize,
        poll: Poll,
        listeners: Vec<TcpListener>,
        sender: BatchSender,
        shared: IngressShared,
    ) -> io::Result<IngressWorker> {
        let mut listeners = listeners;
        for (listener_index, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(listener_index), Interest::READABLE)?;
        }
        let warning_interval = shared.config.bad_input_warning_interval;
        let now = Instant::now();
        Ok(IngressWorker {
            index,
            poll,
            listeners,
            connections: Vec::new(),
            free_slots: Vec::new(),
            ready: VecDeque::new(),
            sink: Sink {
                batch: sender.empty_batch(),
                sender,
                next_synthetic_parcel_id: (1 << 63) | ((index as u64) << 48),
            },
            shared,
            counts: TurnCounts::default(),
            warn_decode: RateLimit::new(warning_interval),
            warn_refused: RateLimit::new(warning_interval),
            last_sweep: now,
        })
    }

    fn listener_count(&self) -> usize {
        self.listeners.len()
    }

    /// Runs until the stop flag is set, then hands off what it decided and returns.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut blocked = false;
        while !self.shared.stop.load(Ordering::Acquire) {
            self.shared.counters.liveness.ingress_turn(self.index);
            let timeout = if blocked {
                BLOCKED_RETRY
            } else if !self.ready.is_empty() {
                Duration::ZERO
            } else {
                SWEEP_INTERVAL
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token();
                if token == WAKE_TOKEN {
                    continue;
                }
                if token.0 < self.listener_count() {
                    self.accept_all(token.0, now);
                } else {
                    self.mark_ready(token.0 - self.listener_count());
                }
            }
            if blocked && !self.sink.flush() {
                continue;
            }
            blocked = self.serve_ready(now);
            if !blocked && !self.sink.flush() {
                blocked = true;
            }
            self.publish_counts();
            if now.saturating_duration_since(self.last_sweep) >= SWEEP_INTERVAL {
                self.sweep(now);
                self.last_sweep = now;
            }
        }
        self.finish()
    }

    /// On stop: decide every complete frame already buffered, hand everything off, close.
    fn finish(mut self) -> io::Result<()> {
        let now = Instant::now();
        let plan = self.shared.plan.load();
        for slot in 0..self.connections.len() {
            loop {
                let mut turn = Turn {
                    shared: &self.shared,
                    plan: &plan,
                    sink: &mut self.sink,
                    counts: &mut self.counts,
                    warn_decode: &mut self.warn_decode,
                    now,
                };
                let drained = match self.connections.get_mut(slot).and_then(Option::as_mut) {
                    Some(connection) => turn.drain(connection, true),
                    None => true,
                };
                if drained {
                    break;
                }
                while !self.sink.flush() {
                    std::thread::sleep(BLOCKED_RETRY);
                }
            }
        }
        while !self.sink.flush() {
            std::thread::sleep(BLOCKED_RETRY);
        }
        self.publish_counts();
        for slot in 0..self.connections.len() {
            self.close(slot, "daemon stopping");
        }
        Ok(())
    }

    fn mark_ready(&mut self, slot: usize) {
        if let Some(Some(connection)) = self.connections.get_mut(slot) {
            if !connection.queued {
                connection.queued = true;
                self.ready.push_back(slot);
            }
        }
    }

    /// Serves each ready connection once. Returns true when the hand-off blocked.
    fn serve_ready(&mut self, now: Instant) -> bool {
        if self.ready.is_empty() {
            return false;
        }
        let plan = self.shared.plan.load();
        let turns = self.ready.len();
        for _ in 0..turns {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            let mut turn = Turn {
                shared: &self.shared,
                plan: &plan,
                sink: &mut self.sink,
                counts: &mut self.counts,
                warn_decode: &mut self.warn_decode,
                now,
            };
            let served = match self.connections.get_mut(slot).and_then(Option::as_mut) {
                Some(connection) => turn.serve(connection),
                None => continue,
            };
            match served {
                Served::Drained => {
                    if let Some(Some(connection)) = self.connections.get_mut(slot) {
                        connection.queued = false;
                    }
                }
                Served::More => self.ready.push_back(slot),
                Served::Blocked => {
                    self.ready.push_front(slot);
                    return true;
                }
                Served::Closed => {
                    let why = self
                        .connections
                        .get(slot)
                        .and_then(Option::as_ref)
                        .and_then(|connection| connection.ending)
                        .unwrap_or("closed");
                    self.close(slot, why);
                }
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
        if !self.shared.config.allow.allows(peer.ip()) {
            Counters::add(&counters.connections_refused_address, 1);
            if let Some(held_back) = self.warn_refused.allow(now) {
                tracing::warn!(%peer, held_back, "scanner refused: address not in scanners.allow");
            }
            return;
        }
        let open_max = self.shared.config.limits.connections_max as u64;
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
        let token = Token(self.listener_count() + slot);
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            tracing::warn!(%peer, %error, "could not register scanner connection");
            counters.connections_open.fetch_sub(1, Ordering::AcqRel);
            self.free_slots.push(slot);
            return;
        }
        let listener = self.listener_config(listener_index);
        let scanner_id = listener.and_then(|l| l.scanner_id).unwrap_or_else(|| {
            SYNTHETIC_SCANNER_ID_BASE
                | self
                    .shared
                    .next_synthetic_scanner_id
                    .fetch_add(1, Ordering::Relaxed)
        });
        let protocol = listener.map_or("?", |l| l.protocol_name.as_str());
        tracing::info!(%peer, worker = self.index, protocol, "scanner connected");
        Counters::add(&counters.connections_accepted, 1);
        if let Some(entry) = self.connections.get_mut(slot) {
            *entry = Some(Connection {
                stream,
                peer,
                listener_index,
                input: super::input::InputBuffer::new(self.shared.config.limits.buffer_bytes, now),
                scanner_id,
                queued: false,
                scans: 0,
                ending: None,
            });
        }
        // Bytes may have arrived before registration; edge-triggered polling would not
        // report them, so give the connection a turn now.
        self.mark_ready(slot);
    }

    fn listener_config(&self, listener_index: usize) -> Option<&Listener> {
        self.shared.config.listeners.get(listener_index)
    }

    fn close(&mut self, slot: usize, why: &str) {
        let Some(entry) = self.connections.get_mut(slot) else {
            return;
        };
        let Some(mut connection) = entry.take() else {
            return;
        };
        let leftover = connection.input.unread().len() as u64;
        if leftover > 0 {
            self.counts.bytes_skipped += leftover;
            self.shared
                .counters
                .count_decode_error("truncated_at_close", 1);
        }
        let _ = self.poll.registry().deregister(&mut connection.stream);
        self.shared
            .counters
            .connections_open
            .fetch_sub(1, Ordering::AcqRel);
        Counters::add(&self.shared.counters.connections_closed, 1);
        tracing::info!(peer = %connection.peer, scans = connection.scans, why, "scanner disconnected");
        self.free_slots.push(slot);
    }

    /// Marks connections past a deadline for closing; their turn decides the complete
    /// frames they still hold, then closes them.
    fn sweep(&mut self, now: Instant) {
        let limits = self.shared.config.limits;
        for slot in 0..self.connections.len() {
            let Some(Some(connection)) = self.connections.get_mut(slot) else {
                continue;
            };
            if connection.ending.is_some() {
                continue;
            }
            let expiry = connection
                .input
                .expiry(now, limits.frame_deadline, limits.idle_timeout);
            let (counter, why) = match expiry {
                Some(super::input::Expiry::FrameDeadline) => (
                    &self.shared.counters.connections_closed_frame_deadline,
                    "frame not completed within scanners.frame_deadline_ms",
                ),
                Some(super::input::Expiry::Idle) => (
                    &self.shared.counters.connections_closed_idle,
                    "idle longer than scanners.idle_timeout_ms",
                ),
                None => continue,
            };
            Counters::add(counter, 1);
            connection.ending = Some(why);
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

/// The parts of a connection a decoded frame may change (the frame itself borrows the
/// connection's buffer).
struct ScannerState<'a> {
    scanner_id: &'a mut u32,
    scans: &'a mut u64,
    peer: SocketAddr,
}

/// One worker's context for serving connections during a turn.
struct Turn<'a> {
    shared: &'a IngressShared,
    plan: &'a crate::plan::Plan,
    sink: &'a mut Sink,
    counts: &'a mut TurnCounts,
    warn_decode: &'a mut RateLimit,
    now: Instant,
}

impl Turn<'_> {
    /// Reads what the connection has (a few reads at most) and decides every complete
    /// frame. A connection that is ending decides what it holds and closes.
    fn serve(&mut self, connection: &mut Connection) -> Served {
        if connection.ending.is_some() {
            return if self.drain(connection, true) {
                Served::Closed
            } else {
                Served::Blocked
            };
        }
        // Frames left over from a blocked turn go first.
        if !self.drain(connection, false) {
            return Served::Blocked;
        }
        for _ in 0..READS_PER_TURN_MAX {
            let spare = connection.input.spare();
            match connection.stream.read(spare) {
                Ok(0) => return self.end(connection, "closed by scanner"),
                Ok(count) => {
                    connection.input.commit(count, self.now);
                    self.counts.bytes_in += count as u64;
                    if !self.drain(connection, false) {
                        return Served::Blocked;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Served::Drained;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.end(connection, "connection error"),
            }
        }
        Served::More
    }

    fn end(&mut self, connection: &mut Connection, why: &'static str) -> Served {
        connection.ending = Some(why);
        if self.drain(connection, true) {
            Served::Closed
        } else {
            Served::Blocked
        }
    }

    /// Decodes and decides every complete frame in the buffer. When the connection is
    /// `ending`, an incomplete frame at the front is dropped (counted) so that complete
    /// frames behind it are still found. Returns false when the hand-off queue is full;
    /// the undecided frames stay in the buffer.
    fn drain(&mut self, connection: &mut Connection, ending: bool) -> bool {
        let Some(listener) = self.shared.config.listeners.get(connection.listener_index) else {
            return true;
        };
        let framing = &listener.framing;
        loop {
            if self.sink.is_full() && !self.sink.flush() {
                return false;
            }
            let unread = connection.input.unread();
            // Decode a window of complete frames ahead and warm the plan for all of them
            // before deciding any: their cache misses overlap instead of queueing.
            let room = self.sink.room().clamp(1, WARM_AHEAD_FRAMES);
            let mut ahead: [Option<Frame<'_>>; WARM_AHEAD_FRAMES] =
                [const { None }; WARM_AHEAD_FRAMES];
            let mut decoded = 0;
            let mut offset = 0;
            let mut warmed = 0u64;
            let mut stopped_at = Decoded::NeedMore;
            while decoded < room {
                match framing.decode(unread.get(offset..).unwrap_or_default()) {
                    Decoded::Frame { frame, consumed } => {
                        if let Frame::Scan(scan) = &frame {
                            warmed ^= self.plan.warm(scan.barcodes.as_slice(), scan.destination);
                        }
                        if let Some(slot) = ahead.get_mut(decoded) {
                            *slot = Some(frame);
                        }
                        decoded += 1;
                        offset += consumed;
                    }
                    other => {
                        stopped_at = other;
                        break;
                    }
                }
            }
            std::hint::black_box(warmed);
            if decoded > 0 {
                for frame in ahead.iter().take(decoded).flatten() {
                    let scanner = ScannerState {
                        scanner_id: &mut connection.scanner_id,
                        scans: &mut connection.scans,
                        peer: connection.peer,
                    };
                    self.decide_frame(scanner, framing, frame);
                }
                connection.input.consume(offset, self.now);
                continue;
            }
            // No complete frame at the front: act on what the decoder said instead.
            let consumed = match stopped_at {
                Decoded::Frame { consumed, .. } => consumed,
                Decoded::NeedMore if unread.is_empty() => return true,
                Decoded::NeedMore if ending || connection.input.is_full() => {
                    // Nothing more will complete this frame (or it cannot fit): skip to
                    // where the next frame could start.
                    let skip = framing.resync_offset(unread).max(1);
                    self.counts.bytes_skipped += skip as u64;
                    self.shared.counters.count_decode_error("truncated", 1);
                    skip
                }
                Decoded::NeedMore => return true,
                Decoded::Skip { error, skip } => {
                    self.counts.bytes_skipped += skip as u64;
                    self.shared.counters.count_decode_error(error.kind(), 1);
                    if let Some(held_back) = self.warn_decode.allow(self.now) {
                        tracing::warn!(peer = %connection.peer, ?error, skip, held_back, "bad scanner input skipped");
                    }
                    skip.max(1)
                }
            };
            connection.input.consume(consumed, self.now);
        }
    }

    fn decide_frame(&mut self, connection: ScannerState<'_>, framing: &Framing, frame: &Frame<'_>) {
        self.counts.frames_in += 1;
        match frame {
            Frame::Scan(scan) => {
                self.counts.scans_in += 1;
                *connection.scans += 1;
                let scanner_id = match framing {
                    Framing::Binary => scan.scanner_id,
                    Framing::Text(_) => *connection.scanner_id,
                };
                let parcel_id = if scan.parcel_id == 0 {
                    self.sink.next_synthetic_parcel_id += 1;
                    self.sink.next_synthetic_parcel_id
                } else {
                    scan.parcel_id
                };
                let (chute, reason) = decide(
                    self.plan,
                    &self.shared.chute_states,
                    scan.flags,
                    scan.barcodes.as_slice(),
                    scan.destination,
                );
                self.sink.batch.push(Decision {
                    parcel_id,
                    scanner_id,
                    chute,
                    reason,
                    plan_version: self.plan.version(),
                    late_chute: self.plan.default_chute(DefaultKind::Late),
                    received_at: self.now,
                });
            }
            Frame::Hello(hello) => {
                if *connection.scanner_id != hello.scanner_id {
                    tracing::info!(peer = %connection.peer, scanner_id = hello.scanner_id, "scanner said hello");
                }
                *connection.scanner_id = hello.scanner_id;
            }
            Frame::Heartbeat(_) => {}
        }
    }
}
