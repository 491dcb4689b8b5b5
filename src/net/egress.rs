//! PLC egress: the one loop that owns the PLC socket, on a thread of its own or sharing
//! the pipeline thread with the only ingress worker ([`super::single`]). It drives the
//! sans-IO [`EgressCore`], which takes decision batches from the ingress workers, applies
//! the duplicate window and the deadline, and hands each decision to the
//! [`crate::plc::HostLink`] (numbering, sending, retransmitting, heartbeats). This loop
//! moves the link's bytes, dials or accepts the PLC, parks, and turns what the core
//! observes into counters, the latency and stage histograms and logs.
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

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

use crate::core::egress::{EgressCore, EgressObserver, Fate, LinkAction};
use crate::core::idle::{IdlePolicy, IdleStep, LINK_READ_DEFER_MAX, window_refilled};
use crate::decision::{ChuteNumber, Reason};
use crate::pipeline::decide::Decision;
use crate::pipeline::facts::ScanFacts;
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Batch, BatchReceiver};
use crate::plc::{ChuteState, ChuteStateTable, HostLink, LinkDownReason, Outcome, SortConfirm};
use crate::stats::{Counters, Stage};

use super::egress_events::EgressJournal;
use super::link_socket::{ConnectProgress, LinkSocket, ReadOutcome};
use super::plc_admission::{PlcAdmission, Promoted};
use super::settings::{PlcMode, PlcSettings};

/// Token of the waker that ingress workers use to wake this thread.
pub const WAKE_TOKEN: Token = Token(0);
const STREAM_TOKEN: Token = Token(1);
const LISTENER_TOKEN: Token = Token(2);
/// Listen mode: the candidate connections' tokens start here.
const CANDIDATE_TOKEN_FIRST: usize = 3;
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
    /// Whether an idle turn spins or parks.
    pub idle: IdlePolicy,
    /// How long a stop may wait for the PLC to acknowledge what was sent.
    pub drain_grace: Duration,
    /// The sort-event journal; `None` when `[events]` is off.
    pub journal: Option<crate::events::journal::JournalWriter>,
    /// Listen mode: at most one warning about refused PLC connections per period.
    pub warning_interval: Duration,
}

/// How sortd reaches the PLC.
enum Transport {
    /// sortd dials the PLC.
    Client(SocketAddr),
    /// The PLC dials sortd: the listener with its allow-list and HELLO gate.
    Server(Box<PlcAdmission>),
}

/// The PLC thread's state.
pub struct Egress {
    registry: Registry,
    transport: Transport,
    core: EgressCore,
    queue: BatchReceiver,
    shared: EgressShared,
    socket: LinkSocket,
    observer: DaemonObserver,
    last_latency_publish: Instant,
    /// When the last turn that moved decisions began.
    last_handoff: Option<Instant>,
    /// Time between the last two such turns.
    handoff_gap: Duration,
    /// The link's window filled up and has not yet freed a quarter of itself.
    window_waiting: bool,
    /// Decisions the last [`Egress::work`] moved.
    moved: usize,
    /// Since when the thread has had nothing to do.
    idle_since: Option<Instant>,
    /// Stopping: when the drain gives up waiting for the PLC.
    stop_at: Option<Instant>,
}

/// What a turn of [`Egress::work`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Go on: poll, then take the events.
    Continue,
    /// Stopped and drained: the PLC side is done.
    Finished,
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
    /// A PLC side registering its sockets with `registry` (the poll that drives it, which
    /// must already carry the waker of the ingress hand-off at [`WAKE_TOKEN`]). In
    /// listen mode the PLC listener is bound here.
    pub fn new(
        registry: &Registry,
        link: HostLink,
        queue: BatchReceiver,
        finalizer: Finalizer,
        mut shared: EgressShared,
    ) -> io::Result<Egress> {
        let registry = registry.try_clone()?;
        let transport = match shared.plc.mode {
            PlcMode::Connect => Transport::Client(shared.plc.address),
            PlcMode::Listen => {
                let mut listener = TcpListener::bind(shared.plc.address)?;
                registry.register(&mut listener, LISTENER_TOKEN, Interest::READABLE)?;
                Transport::Server(Box::new(PlcAdmission::new(
                    listener,
                    shared.plc.allow.clone(),
                    shared.plc.hello_timeout(),
                    CANDIDATE_TOKEN_FIRST,
                    Arc::clone(&shared.counters),
                    shared.warning_interval,
                )))
            }
        };
        let observer = DaemonObserver::new(
            Arc::clone(&shared.counters),
            shared.plc.address,
            shared.journal.take().map(EgressJournal::new),
        )?;
        Ok(Egress {
            registry,
            transport,
            core: EgressCore::new(link, finalizer, Arc::clone(&shared.chute_states)),
            queue,
            shared,
            socket: LinkSocket::new(READ_CHUNK_BYTES),
            observer,
            last_latency_publish: Instant::now(),
            last_handoff: None,
            handoff_gap: Duration::MAX,
            window_waiting: false,
            moved: 0,
            idle_since: None,
            stop_at: None,
        })
    }

    /// Runs on its own thread with its own `poll` until the stop flag is set and the
    /// queue is drained.
    pub fn run(mut self, mut poll: Poll) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            if self.work(now) == Work::Finished {
                return Ok(());
            }
            let timeout = self.wait_timeout(now);
            let polled = poll.poll(&mut events, timeout);
            self.woke();
            if let Err(error) = polled {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                self.handle_event(event, now);
            }
            self.after_events(now);
        }
    }

    /// The turn's work before the poll: deferred reads, decisions from the queue into
    /// the link, timers, the write; on stop, the drain. [`Work::Finished`] once stopped
    /// and drained.
    pub fn work(&mut self, now: Instant) -> Work {
        let now_us = unix_micros();
        if let Some(journal) = &mut self.observer.journal {
            journal.start_turn(now, now_us);
        }
        if self.socket.is_open() && !self.socket.read_events() {
            // Deferred reads: what the PLC sent since the last turn, before the
            // timers run (an acknowledgement waiting here is no reason to resend).
            self.read_stream(now, false);
        }
        let moved = if self.window_open() {
            self.core.pump(now, now_us, &self.queue, &mut self.observer)
        } else {
            0
        };
        self.moved = moved;
        if moved > 0 {
            if let Some(last) = self.last_handoff.replace(now) {
                self.handoff_gap = now.saturating_duration_since(last);
            }
        }
        self.observer.publish_decisions();
        self.drive_link(now);
        self.flush_outbound(now);
        if moved > 0 {
            let written = Instant::now();
            self.observer.record_stage(
                Stage::Send,
                written.saturating_duration_since(now),
                moved as u64,
            );
        }
        self.choose_read_events(now);
        self.shared.counters.publish_plc_turn(
            self.core.link().stats(),
            self.core.is_link_up(),
            self.core.link().unacked(),
            self.core.link().held(),
            self.queue.queued(),
        );

        if self.shared.stop.load(Ordering::Acquire) {
            let deadline = *self.stop_at.get_or_insert(now + self.shared.drain_grace);
            if self.queue.is_finished() && self.core.pending() == 0 {
                let acked = self.core.link().window_free() == self.shared.plc.window_max;
                if acked || !self.core.is_link_up() || now >= deadline {
                    // Held SORTs will never go out now: each counts undelivered.
                    self.core.abandon_held();
                    self.drive_link(now);
                    self.observer.publish_decisions();
                    self.observer.publish_latency();
                    if let Some(journal) = self.observer.journal.take() {
                        journal.close();
                    }
                    return Work::Finished;
                }
            }
        }
        Work::Continue
    }

    /// Call right after the poll returns: the hand-off need not wake this side now.
    pub fn woke(&self) {
        self.queue.unpark();
    }

    /// Takes one poll event of the PLC socket, listener or a candidate connection
    /// (others are ignored).
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        match event.token() {
            WAKE_TOKEN => {}
            STREAM_TOKEN => self.on_stream_event(now, event.is_read_closed() || event.is_error()),
            LISTENER_TOKEN => self.accept_plc(now),
            token => self.on_candidate_event(token, now),
        }
    }

    /// After the poll's events: listen-mode candidates that took too long, and the
    /// latency histograms once a second.
    pub fn after_events(&mut self, now: Instant) {
        self.expire_candidates(now);
        if now.saturating_duration_since(self.last_latency_publish) >= Duration::from_secs(1) {
            self.observer.publish_latency();
            self.last_latency_publish = now;
        }
    }

    /// How long this turn's poll may sleep: zero while the idle policy spins or batches
    /// wait; otherwise park until the link's next timer (at most [`PARK_MAX`]).
    pub fn wait_timeout(&mut self, now: Instant) -> Option<Duration> {
        // After work the thread is idle from now on: a policy that spins polls again
        // at once, one that parks sleeps until the next event (an empty poll first would
        // be a system call per hand-off for nothing; ready events end the sleep at once).
        if self.moved > 0 {
            self.idle_since = Some(now);
        }
        let since = *self.idle_since.get_or_insert(now);
        if self.window_waiting {
            // Nothing can go out before the PLC acknowledges: sleep until its bytes or a
            // timer, whatever is queued (and ingress need not wake this thread).
            let until_timer = self
                .core
                .link()
                .poll_timeout()
                .map_or(PARK_MAX, |at| at.saturating_duration_since(now));
            return Some(until_timer.min(PARK_MAX));
        }
        match self.shared.idle.step(now.saturating_duration_since(since)) {
            IdleStep::Spin => {
                std::hint::spin_loop();
                Some(Duration::ZERO)
            }
            IdleStep::Park if self.queue.park() => {
                let until_timer = self
                    .core
                    .link()
                    .poll_timeout()
                    .map_or(PARK_MAX, |at| at.saturating_duration_since(now));
                let deferring = self.socket.is_open() && !self.socket.read_events();
                let until_deferred_read = match self.last_handoff {
                    Some(at) if deferring => {
                        (at + LINK_READ_DEFER_MAX).saturating_duration_since(now)
                    }
                    _ => PARK_MAX,
                };
                Some(until_timer.min(until_deferred_read).min(PARK_MAX))
            }
            IdleStep::Park => Some(Duration::ZERO),
        }
    }

    /// Whether decisions may be taken this turn: while the link is up, not after its
    /// window filled until a quarter of it is free again ([`window_refilled`]).
    fn window_open(&mut self) -> bool {
        if !self.core.is_link_up() {
            self.window_waiting = false;
            return true;
        }
        let free = self.core.link().window_free();
        let open = window_refilled(self.window_waiting, free, self.shared.plc.window_max);
        self.window_waiting = free == 0 || (self.window_waiting && !open);
        open
    }

    /// Turns the PLC socket's readable events off while parcels flow and the link is
    /// calm, on otherwise ([`IdlePolicy::defer_link_reads`]); while they are off, every
    /// turn reads the socket first, and the park is cut short to read at the latest
    /// [`LINK_READ_DEFER_MAX`] after the last hand-off.
    fn choose_read_events(&mut self, now: Instant) {
        if !self.socket.is_open() {
            return;
        }
        let since_handoff = self
            .last_handoff
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        let link = self.core.link();
        let defer = self.core.is_link_up()
            && self.shared.idle.defer_link_reads(
                since_handoff,
                self.handoff_gap,
                link.window_free(),
                self.shared.plc.window_max,
            );
        if let Err(error) = self.socket.set_read_events(&self.registry, !defer) {
            tracing::warn!(%error, plc = %self.shared.plc.address, "PLC connection dropped: cannot register it");
            self.drop_connection(now, true);
        }
    }

    /// Runs the link's timers, applies its events through the core and acts on the
    /// transport.
    fn drive_link(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        while let Some(action) = self.core.poll_action(now, &mut self.observer) {
            match action {
                LinkAction::Connect => self.dial(now),
                LinkAction::Disconnect => self.drop_connection(now, false),
            }
        }
        self.observer.publish_confirmations();
    }

    /// Writes what the link has to send; keeps the rest for the next writable event.
    fn flush_outbound(&mut self, now: Instant) {
        // Every event of the turn reaches the page cache before any SORT of it leaves.
        if let Some(journal) = &mut self.observer.journal {
            journal.write();
        }
        if !self.socket.is_open() {
            return;
        }
        // The link hands out new telegrams only once the earlier ones are on the wire,
        // so a retransmission never queues behind a stale copy.
        if self.socket.outbound_pending() == 0 {
            self.core
                .link_mut()
                .poll_transmit(now, self.socket.outbound());
        }
        if !self.socket.flush() {
            self.drop_connection(now, true);
        }
    }

    /// `read_to_end`: the peer shut down its side (or the socket failed), so reading
    /// goes on to the end instead of stopping at a short read.
    fn on_stream_event(&mut self, now: Instant, read_to_end: bool) {
        if self.socket.is_connecting() {
            match self.socket.finish_connect() {
                ConnectProgress::Connected => {
                    tracing::info!(plc = %self.shared.plc.address, "PLC connected");
                    self.core.link_mut().handle_connected(now);
                }
                ConnectProgress::Pending => return,
                ConnectProgress::Failed => {
                    self.drop_connection(now, true);
                    return;
                }
            }
        }
        self.read_stream(now, read_to_end);
        self.flush_outbound(now);
    }

    /// Reads while the link has room, applying its events between reads.
    ///
    /// The socket is polled edge-triggered: it is reported again only for bytes that
    /// arrive after it was read dry, and a read that returns fewer bytes than asked has
    /// emptied it (epoll(7)). So a short read ends the loop without the read that would
    /// only say `EAGAIN`, unless `read_to_end` (the peer's end of stream must be seen).
    fn read_stream(&mut self, now: Instant, read_to_end: bool) {
        loop {
            let asked = self.core.link().receive_room().min(READ_CHUNK_BYTES);
            let drained = match self.socket.read(asked) {
                ReadOutcome::Data(bytes) => {
                    let drained = bytes.len() < asked && !read_to_end;
                    self.core.link_mut().handle_input(now, bytes);
                    drained
                }
                ReadOutcome::WouldBlock => return,
                ReadOutcome::Closed => {
                    self.drop_connection(now, true);
                    return;
                }
            };
            self.drive_link(now);
            if drained {
                return;
            }
        }
    }

    /// Forgets the current connection; `tell_link` when the link does not know yet.
    fn drop_connection(&mut self, now: Instant, tell_link: bool) {
        if self.socket.detach(&self.registry) && tell_link {
            self.core.link_mut().handle_disconnected(now);
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
                .attach(&self.registry, stream, STREAM_TOKEN, true)
        });
        if let Err(error) = attached {
            tracing::debug!(%error, plc = %address, "PLC dial failed");
            self.core.link_mut().handle_disconnected(now);
        }
    }

    /// Listen mode: refuses strangers, keeps allowed connections as candidates.
    fn accept_plc(&mut self, now: Instant) {
        loop {
            let Transport::Server(admission) = &mut self.transport else {
                return;
            };
            match admission.accept_ready(&self.registry, now) {
                Some(promoted) => self.promote(promoted, now),
                None => return,
            }
        }
    }

    /// Listen mode: a candidate's bytes; once it said HELLO it replaces the live link.
    fn on_candidate_event(&mut self, token: Token, now: Instant) {
        let Transport::Server(admission) = &mut self.transport else {
            return;
        };
        if !admission.owns(token) {
            return;
        }
        if let Some(promoted) = admission.on_candidate_event(&self.registry, token, now) {
            self.promote(promoted, now);
        }
    }

    fn expire_candidates(&mut self, now: Instant) {
        if let Transport::Server(admission) = &mut self.transport {
            admission.expire(&self.registry, now);
        }
    }

    /// A candidate completed its HELLO: it replaces the live connection (a PLC that
    /// dials again has restarted or lost the old connection), and the link gets the
    /// HELLO it sent.
    fn promote(&mut self, promoted: Promoted, now: Instant) {
        let Promoted {
            stream,
            peer,
            hello,
        } = promoted;
        self.drop_connection(now, true);
        // The old connection's LinkDown asks to close "the" connection: let it act now,
        // on the old one, not on the new one attached next.
        self.drive_link(now);
        let attached = self
            .socket
            .attach(&self.registry, stream, STREAM_TOKEN, false);
        if let Err(error) = attached {
            tracing::warn!(%peer, %error, "PLC connection dropped: cannot register it");
            return;
        }
        tracing::info!(%peer, "PLC connected");
        self.core.link_mut().handle_connected(now);
        self.core.link_mut().handle_input(now, &hello);
        self.drive_link(now);
        // Bytes that came before the connection was registered raised no edge.
        self.read_stream(now, true);
        self.flush_outbound(now);
    }
}

/// The daemon's egress observer: counts by reason and chute, the latency histogram,
/// confirmations by outcome and the link's log lines. Counts accumulate per turn and are
/// added to the shared counters once per turn (one lock for the confirmations).
struct DaemonObserver {
    counters: Arc<Counters>,
    plc_address: SocketAddr,
    sent: [u64; Reason::ALL.len()],
    undelivered: [u64; Reason::ALL.len()],
    duplicates: u64,
    confirmed: [u64; Outcome::ALL.len()],
    latency_us: hdrhistogram::Histogram<u64>,
    /// Per [`Stage`], this second's.
    stage_us: [hdrhistogram::Histogram<u64>; Stage::ALL.len()],
    journal: Option<EgressJournal>,
}

impl EgressObserver for DaemonObserver {
    fn on_decision(
        &mut self,
        now: Instant,
        decision: &Decision,
        facts: Option<&ScanFacts<'_>>,
        fate: Fate,
    ) {
        let slot = decision.reason.index();
        let count = match fate {
            Fate::Sent { .. } => {
                self.counters.sorts_by_chute.count_one(decision.chute);
                &mut self.sent[slot]
            }
            Fate::Duplicate => &mut self.duplicates,
            Fate::Undelivered => &mut self.undelivered[slot],
        };
        *count += 1;
        let latency = now.saturating_duration_since(decision.received_at);
        let _ = self.latency_us.record((latency.as_micros() as u64).max(1));
        if let Some(journal) = &mut self.journal {
            journal.on_decision_aged(now, latency, decision, facts, fate);
        }
    }

    fn on_confirm(&mut self, now: Instant, confirm: &SortConfirm, _plc_seq: u32) {
        if let Some(journal) = &mut self.journal {
            journal.on_confirm(now, confirm);
        }
        self.confirmed[confirm.outcome.index()] += 1;
    }

    fn on_batch_taken(&mut self, now: Instant, batch: &Batch) {
        let (Some(handed_at), Some(first)) = (batch.handed_at(), batch.get(0)) else {
            return;
        };
        let parcels = batch.len() as u64;
        self.record_stage(
            Stage::Decide,
            handed_at.saturating_duration_since(first.received_at),
            parcels,
        );
        self.record_stage(
            Stage::Handoff,
            now.saturating_duration_since(handed_at),
            parcels,
        );
    }

    fn on_chute_state(&mut self, chute: ChuteNumber, state: ChuteState) {
        tracing::info!(chute, ?state, "chute status");
    }

    fn on_link_up(&mut self, peer_session_changed: bool, resending: u32) {
        tracing::info!(
            plc = %self.plc_address,
            peer_session_changed,
            resending,
            "PLC link up"
        );
    }

    fn on_link_down(&mut self, why: LinkDownReason) {
        tracing::warn!(plc = %self.plc_address, why = why.as_str(), "PLC link down");
    }
}

impl DaemonObserver {
    fn new(
        counters: Arc<Counters>,
        plc_address: SocketAddr,
        journal: Option<EgressJournal>,
    ) -> io::Result<DaemonObserver> {
        let histogram = || {
            hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                .map_err(|error| io::Error::other(error.to_string()))
        };
        let latency_us = histogram()?;
        let stage_us = [histogram()?, histogram()?, histogram()?];
        Ok(DaemonObserver {
            counters,
            plc_address,
            sent: [0; Reason::ALL.len()],
            undelivered: [0; Reason::ALL.len()],
            duplicates: 0,
            confirmed: [0; Outcome::ALL.len()],
            latency_us,
            stage_us,
            journal,
        })
    }

    /// Counts `parcels` that spent `spent` in `stage`.
    fn record_stage(&mut self, stage: Stage, spent: Duration, parcels: u64) {
        if let Some(histogram) = self.stage_us.get_mut(stage.index()) {
            let _ = histogram.record_n((spent.as_micros() as u64).max(1), parcels);
        }
    }

    fn publish_decisions(&mut self) {
        Counters::add(
            &self.counters.decided_duplicate,
            std::mem::take(&mut self.duplicates),
        );
        for (reason, (sent, undelivered)) in Reason::ALL
            .iter()
            .zip(self.sent.iter_mut().zip(self.undelivered.iter_mut()))
        {
            self.counters
                .decided_sent
                .add(*reason, std::mem::take(sent));
            self.counters
                .decided_undelivered
                .add(*reason, std::mem::take(undelivered));
        }
    }

    /// Confirmations arrive one per parcel: counted locally, the lock taken once.
    fn publish_confirmations(&mut self) {
        if self.confirmed.iter().all(|count| *count == 0) {
            return;
        }
        if let Ok(mut confirmations) = self.counters.confirmations.lock() {
            for (outcome, count) in Outcome::ALL.iter().zip(self.confirmed.iter_mut()) {
                if *count > 0 {
                    *confirmations.entry(outcome.as_str()).or_insert(0) += std::mem::take(count);
                }
            }
        }
    }

    fn publish_latency(&mut self) {
        if let Ok(mut shared) = self.counters.decision_latency_us.lock() {
            match shared.as_mut() {
                Some(histogram) => {
                    let _ = histogram.add(&self.latency_us);
                }
                None => *shared = Some(self.latency_us.clone()),
            }
        }
        self.latency_us.reset();
        if let Ok(mut shared) = self.counters.stage_latency_us.lock() {
            for (shared, local) in shared.iter_mut().zip(self.stage_us.iter_mut()) {
                match shared.as_mut() {
                    Some(histogram) => {
                        let _ = histogram.add(&*local);
                    }
                    None => *shared = Some(local.clone()),
                }
                local.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::egress::test_support::{NoWake, decision};
    use crate::pipeline::queue::batch_queue;
    use crate::plc::{LinkConfig, PeerEvent, PlcPeer};

    /// Moves the link's bytes both ways until neither side has anything to say; returns
    /// the SORTs the PLC received.
    fn shuttle(core: &mut EgressCore, plc: &mut PlcPeer, now: Instant) -> u64 {
        let mut received = 0;
        loop {
            let mut to_plc = Vec::new();
            core.link_mut().poll_transmit(now, &mut to_plc);
            plc.handle_input(now, &to_plc);
            let mut to_host = Vec::new();
            plc.poll_transmit(now, &mut to_host);
            core.link_mut().handle_input(now, &to_host);
            while let Some(event) = plc.poll_event() {
                received += u64::from(matches!(event, PeerEvent::SortReceived { .. }));
            }
            if to_plc.is_empty() && to_host.is_empty() {
                return received;
            }
        }
    }

    /// `decided_sent` counts what the PLC received; repeat scans count apart, as
    /// `decided_duplicate` (once they were counted sent, reason `duplicate`).
    #[test]
    fn sent_counts_what_the_plc_received_and_duplicates_count_apart() {
        let start = Instant::now();
        let counters = Arc::new(Counters::default());
        let address = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut observer =
            DaemonObserver::new(Arc::clone(&counters), address, None).expect("latency histogram");
        let (sender, receiver) = batch_queue(4, 64, false, Arc::new(NoWake));
        let link = HostLink::new(LinkConfig::default(), start);
        let finalizer = Finalizer::new(Duration::from_secs(5), Duration::from_secs(60), 256);
        let mut core = EgressCore::new(link, finalizer, Arc::new(ChuteStateTable::new()));
        let mut plc = PlcPeer::new(LinkConfig::default(), start);
        core.link_mut().handle_connected(start);
        plc.handle_connected(start);
        shuttle(&mut core, &mut plc, start);

        // 40 scans of 25 parcels: parcels 0..15 are scanned twice, inside the window.
        let mut batch = sender.empty_batch();
        for scan in 0..40u64 {
            batch.push(decision(scan % 25, start), &ScanFacts::default());
        }
        batch.stamp_handed(start);
        sender.try_send(batch).ok();
        let mut received = 0;
        while core.pump(start, 0, &receiver, &mut observer) > 0 {
            received += shuttle(&mut core, &mut plc, start);
        }
        received += shuttle(&mut core, &mut plc, start);
        observer.publish_decisions();

        assert_eq!(received, 25);
        assert_eq!(counters.decided_sent.total(), received);
        assert_eq!(counters.decided_sent.get(Reason::Duplicate), 0);
        assert_eq!(counters.decided_duplicate.load(Ordering::Relaxed), 15);
        assert_eq!(counters.decided(Reason::Duplicate), 15);
        assert_eq!(counters.decided_total(), 40);

        // The batch's stamp puts all 40 in the decide and handoff stages at once.
        observer.publish_latency();
        let stages = counters.stage_latency_us.lock().expect("stage histograms");
        for stage in [Stage::Decide, Stage::Handoff] {
            let histogram = stages[stage.index()].as_ref().expect("merged");
            assert_eq!(histogram.len(), 40, "{stage:?}");
        }
    }
}
