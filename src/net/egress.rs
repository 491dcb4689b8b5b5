//! PLC egress: the one thread that owns the PLC socket. It takes decision batches from the
//! ingress workers, applies the duplicate window and the deadline, and hands each decision
//! to the sans-IO [`HostLink`], which numbers, sends, retransmits and heartbeats. It feeds
//! the link what the PLC sends back and applies chute status to the shared table.
//!
//! While the link is up and its window is full, this thread stops taking batches, so the
//! queue fills and ingress stops reading: backpressure instead of loss. While the link is
//! down, decisions are still made and the link holds them until it is back or their
//! deadline passes (then counted undelivered as `late`); once the window is full, further
//! ones are counted undelivered at once: nothing blocks the scanners.
//! Protocol rules live in [`crate::plc`]; this file only moves bytes and events.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::daemon::config::{PlcMode, PlcSettings};
use crate::decision::Reason;
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Batch, BatchReceiver};
use crate::plc::{ChuteStateTable, HostEvent, HostLink, LinkState, Outcome, SortCommand};
use crate::stats::Counters;

use super::link_socket::{ConnectProgress, LinkSocket, ReadOutcome};

/// Token of the waker that ingress workers use to wake this thread.
pub const WAKE_TOKEN: Token = Token(0);
const STREAM_TOKEN: Token = Token(1);
const LISTENER_TOKEN: Token = Token(2);
/// Longest sleep, so timers and the stop flag are looked at regularly.
const PARK_MAX: Duration = Duration::from_millis(50);
/// Bytes read from the PLC socket per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the PLC thread is given.
#[derive(Debug)]
pub struct EgressShared {
    /// PLC link settings.
    pub plc: PlcSettings,
    /// Chute availability, written here, read by the ingress workers.
    pub chute_states: Arc<ChuteStateTable>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Set when the daemon stops; the thread drains the queue and the window first.
    pub stop: Arc<AtomicBool>,
    /// How long to spin for work before parking.
    pub spin_before_park: Duration,
    /// How long a stop may wait for the PLC to acknowledge what was sent.
    pub drain_grace: Duration,
}

/// How sortd reaches the PLC.
enum Transport {
    /// sortd dials the PLC.
    Client(SocketAddr),
    /// The PLC dials sortd.
    Server(TcpListener),
}

/// The PLC thread's state.
pub struct Egress {
    poll: Poll,
    transport: Transport,
    link: HostLink,
    queue: BatchReceiver,
    current: Option<(Batch, usize)>,
    finalizer: Finalizer,
    shared: EgressShared,
    socket: LinkSocket,
    latency_us: hdrhistogram::Histogram<u64>,
    last_latency_publish: Instant,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").finish_non_exhaustive()
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

impl Egress {
    /// A PLC thread. `poll` must already carry the ingress workers' waker at
    /// [`WAKE_TOKEN`]. In listen mode the PLC listener is bound here.
    pub fn new(
        poll: Poll,
        link: HostLink,
        queue: BatchReceiver,
        finalizer: Finalizer,
        shared: EgressShared,
    ) -> io::Result<Egress> {
        let transport = match shared.plc.mode {
            PlcMode::Connect => Transport::Client(shared.plc.address),
            PlcMode::Listen => {
                let mut listener = TcpListener::bind(shared.plc.address)?;
                poll.registry()
                    .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)?;
                Transport::Server(listener)
            }
        };
        let latency_us = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|error| io::Error::other(error.to_string()))?;
        Ok(Egress {
            poll,
            transport,
            link,
            queue,
            current: None,
            finalizer,
            shared,
            socket: LinkSocket::new(READ_CHUNK_BYTES),
            latency_us,
            last_latency_publish: Instant::now(),
        })
    }

    /// Runs until the stop flag is set and the queue is drained.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut idle_since: Option<Instant> = None;
        let mut stop_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let moved = self.pump(now);
            self.drive_link(now);
            self.flush_outbound(now);
            self.shared.counters.publish_plc_turn(
                self.link.stats(),
                self.link_is_up(),
                self.link.unacked(),
                self.queue.queued(),
            );

            if self.shared.stop.load(Ordering::Acquire) {
                let deadline = *stop_at.get_or_insert(now + self.shared.drain_grace);
                if self.queue.is_finished() && self.current.is_none() {
                    let acked = self.link.window_free() == self.shared.plc.window_max;
                    if acked || !self.link_is_up() || now >= deadline {
                        self.link.abandon_held();
                        self.drive_link(now);
                        self.publish_latency();
                        return Ok(());
                    }
                }
            }

            let timeout = if moved > 0 {
                idle_since = None;
                Some(Duration::ZERO)
            } else {
                let since = *idle_since.get_or_insert(now);
                if now.saturating_duration_since(since) < self.shared.spin_before_park {
                    std::hint::spin_loop();
                    Some(Duration::ZERO)
                } else if self.queue.park() {
                    let until_timer = self
                        .link
                        .poll_timeout()
                        .map_or(PARK_MAX, |at| at.saturating_duration_since(now));
                    Some(until_timer.min(PARK_MAX))
                } else {
                    Some(Duration::ZERO)
                }
            };
            let polled = self.poll.poll(&mut events, timeout);
            self.queue.unpark();
            if let Err(error) = polled {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    STREAM_TOKEN => self.on_stream_event(now),
                    LISTENER_TOKEN => self.accept_plc(now),
                    _ => {}
                }
            }
            if now.saturating_duration_since(self.last_latency_publish) >= Duration::from_secs(1) {
                self.publish_latency();
                self.last_latency_publish = now;
            }
        }
    }

    fn link_is_up(&self) -> bool {
        self.link.state() == LinkState::Established
    }

    /// Moves decisions from the queue into the link. Returns how many it moved.
    fn pump(&mut self, now: Instant) -> usize {
        let mut moved = 0;
        let decided_at_us = unix_micros();
        let mut sent = [0u64; Reason::ALL.len()];
        let mut undelivered = [0u64; Reason::ALL.len()];
        loop {
            let (batch, index) = match self.current.take() {
                Some(current) => current,
                None => match self.queue.try_recv() {
                    Some(batch) => {
                        std::hint::black_box(self.finalizer.warm(&batch));
                        (batch, 0)
                    }
                    None => break,
                },
            };
            let mut index = index;
            let link_up = self.link_is_up();
            while let Some(decision) = batch.get(index).copied() {
                if link_up && self.link.window_free() == 0 {
                    break;
                }
                let decision = self.finalizer.finalize(decision, now);
                let slot = usize::from(decision.reason.code()) - 1;
                if decision.reason == Reason::Duplicate {
                    if let Some(count) = sent.get_mut(slot) {
                        *count += 1;
                    }
                } else {
                    let command = SortCommand {
                        parcel_id: decision.parcel_id,
                        scanner_id: decision.scanner_id,
                        chute: decision.chute,
                        reason: decision.reason,
                        plan_version: decision.plan_version,
                        decided_at_us,
                    };
                    // While the link is down the link holds it until the resync or its
                    // deadline (counted then, from the link's events); with no room left
                    // it is undelivered. While up, room was checked above.
                    let deadline = decision.received_at + self.finalizer.deadline();
                    match self.link.submit(command, deadline) {
                        Ok(Some(_)) => {
                            self.shared
                                .counters
                                .sorts_by_chute
                                .count_one(decision.chute);
                            if let Some(count) = sent.get_mut(slot) {
                                *count += 1;
                            }
                        }
                        Ok(None) => {}
                        Err(_) => {
                            if let Some(count) = undelivered.get_mut(slot) {
                                *count += 1;
                            }
                        }
                    }
                }
                let latency = now.saturating_duration_since(decision.received_at);
                let _ = self.latency_us.record((latency.as_micros() as u64).max(1));
                index += 1;
                moved += 1;
            }
            if index < batch.len() {
                self.current = Some((batch, index));
                break;
            }
            self.queue.recycle(batch);
        }
        for reason in Reason::ALL {
            let slot = usize::from(reason.code()) - 1;
            let counters = &self.shared.counters;
            counters
                .decided_sent
                .add(reason, sent.get(slot).copied().unwrap_or(0));
            counters
                .decided_undelivered
                .add(reason, undelivered.get(slot).copied().unwrap_or(0));
        }
        moved
    }

    fn publish_latency(&mut self) {
        if let Ok(mut shared) = self.shared.counters.decision_latency_us.lock() {
            match shared.as_mut() {
                Some(histogram) => {
                    let _ = histogram.add(&self.latency_us);
                }
                None => *shared = Some(self.latency_us.clone()),
            }
        }
        self.latency_us.reset();
    }

    /// Runs the link's timers and applies its events.
    fn drive_link(&mut self, now: Instant) {
        if self.link.poll_timeout().is_some_and(|at| at <= now) {
            self.link.handle_timeout(now);
        }
        // Confirmations arrive one per parcel: count them here, take the lock once.
        let mut confirmed = [0u64; Outcome::ALL.len()];
        while let Some(event) = self.link.poll_event() {
            match event {
                HostEvent::ConnectNow => self.dial(now),
                HostEvent::LinkUp {
                    peer_session_changed,
                    resending,
                } => {
                    tracing::info!(
                        plc = %self.shared.plc.address,
                        peer_session_changed,
                        resending,
                        "PLC link up"
                    );
                    if peer_session_changed {
                        // A PLC new to us announces every chute not available next.
                        self.shared.chute_states.set_all_available();
                    }
                }
                HostEvent::LinkDown { why } => {
                    tracing::warn!(plc = %self.shared.plc.address, why = why.as_str(), "PLC link down");
                    self.drop_connection(now, false);
                }
                HostEvent::ChuteStatusChanged { chute, state } => {
                    tracing::info!(chute, ?state, "chute status");
                    self.shared.chute_states.set(chute, state);
                }
                HostEvent::HeldReleased { sort, .. } => {
                    self.shared.counters.sorts_by_chute.count_one(sort.chute);
                    self.shared.counters.decided_sent.add(sort.reason, 1);
                }
                HostEvent::HeldExpired { .. } => {
                    self.shared
                        .counters
                        .decided_undelivered
                        .add(Reason::Late, 1);
                }
                HostEvent::SortConfirmed { confirm, .. } => {
                    if let Some(count) =
                        confirmed.get_mut(usize::from(confirm.outcome.code()).saturating_sub(1))
                    {
                        *count += 1;
                    }
                }
                _ => {}
            }
        }
        if confirmed.iter().any(|count| *count > 0) {
            if let Ok(mut confirmations) = self.shared.counters.confirmations.lock() {
                for (outcome, count) in Outcome::ALL.iter().zip(confirmed) {
                    if count > 0 {
                        *confirmations.entry(outcome.as_str()).or_insert(0) += count;
                    }
                }
            }
        }
    }

    /// Writes what the link has to send; keeps the rest for the next writable event.
    fn flush_outbound(&mut self, now: Instant) {
        if !self.socket.is_open() {
            return;
        }
        // The link hands out new telegrams only once the earlier ones are on the wire,
        // so a retransmission never queues behind a stale copy.
        if self.socket.outbound_pending() == 0 {
            self.link.poll_transmit(now, self.socket.outbound());
        }
        if !self.socket.flush() {
            self.drop_connection(now, true);
        }
    }

    fn on_stream_event(&mut self, now: Instant) {
        if self.socket.is_connecting() {
            match self.socket.finish_connect() {
                ConnectProgress::Connected => {
                    tracing::info!(plc = %self.shared.plc.address, "PLC connected");
                    self.link.handle_connected(now);
                }
                ConnectProgress::Pending => return,
                ConnectProgress::Failed => {
                    self.drop_connection(now, true);
                    return;
                }
            }
        }
        self.read_stream(now);
        self.flush_outbound(now);
    }

    /// Reads while the link has room, applying its events between reads.
    fn read_stream(&mut self, now: Instant) {
        loop {
            match self.socket.read(self.link.receive_room()) {
                ReadOutcome::Data(bytes) => self.link.handle_input(now, bytes),
                ReadOutcome::WouldBlock => return,
                ReadOutcome::Closed => {
                    self.drop_connection(now, true);
                    return;
                }
            }
            self.drive_link(now);
        }
    }

    /// Forgets the current connection; `tell_link` when the link does not know yet.
    fn drop_connection(&mut self, now: Instant, tell_link: bool) {
        if self.socket.detach(self.poll.registry()) && tell_link {
            self.link.handle_disconnected(now);
        }
    }

    fn dial(&mut self, now: Instant) {
        let Transport::Client(address) = &self.transport else {
            return;
        };
        let address = *address;
        self.drop_connection(now, false);
        let attached = TcpStream::connect(address).and_then(|stream| {
            self.socket
                .attach(self.poll.registry(), stream, STREAM_TOKEN, true)
        });
        if let Err(error) = attached {
            tracing::debug!(%error, plc = %address, "PLC dial failed");
            self.link.handle_disconnected(now);
        }
    }

    fn accept_plc(&mut self, now: Instant) {
        loop {
            let Transport::Server(listener) = &mut self.transport else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    // A PLC that dials again has restarted or lost the old connection:
                    // the newest connection wins.
                    self.drop_connection(now, true);
                    if self
                        .socket
                        .attach(self.poll.registry(), stream, STREAM_TOKEN, false)
                        .is_err()
                    {
                        continue;
                    }
                    tracing::info!(%peer, "PLC connected");
                    self.link.handle_connected(now);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "PLC accept failed");
                    return;
                }
            }
        }
    }
}
