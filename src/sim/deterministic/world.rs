//! One simulated run: sortd's core composed as the daemon composes it (per-connection
//! [`InputBuffer`] and [`Framing::decode`], [`decide`] against the published plan, the
//! batch hand-off, the [`Finalizer`], the [`HostLink`] with its window), on a virtual
//! clock, surrounded by simulated scanners, a simulated PLC and plan swaps.
//!
//! The ingress and egress turns below mirror `net/ingress.rs` and `net/egress.rs` step
//! for step, without sockets or threads: when those shells change, these must follow.
//! Every step ends with the promise checks; the run ends with a drain and the final ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decision::Reason;
use crate::net::input::{Expiry, InputBuffer};
use crate::pipeline::decide::{Decision, decide};
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Batch, BatchReceiver, BatchSender, Wake, batch_queue};
use crate::plan::{DefaultKind, Plan, PlanHandle};
use crate::plc::{
    ChuteStateTable, HostEvent, HostLink, LinkConfig, LinkState, PlcPeer, SortCommand,
};
use crate::wire::{Decoded, Frame, Framing};

use super::check::{Checker, Fate, Promise, Violation};
use super::fixtures::PlanFixtures;
use super::link::{CONFIRMS_MAX, LinkFaults, Plc, Transport};
use super::scanner::{Read, SOCKET_BYTES_MAX, Scanner, Socket};
use super::{PlantedBug, SimOptions};

/// As in `net/ingress.rs`.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
const READS_PER_TURN_MAX: usize = 4;
/// As in `net/egress.rs`: bytes read from the PLC per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Steps the drain may take before the run counts as stuck.
const DRAIN_STEPS_MAX: u64 = 200_000;
/// Steps the traffic phase may take at most (scanners blocked for good).
const TRAFFIC_STEPS_MAX: u64 = 400_000;

/// Which kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Everything random: chute status, backpressure, link faults, plan swaps.
    Chaos,
    /// Nothing couples connections but the plan: no chute status, queues and windows
    /// too large to fill. `garbage` false is the reference run.
    Isolation { garbage: bool },
}

/// What one decoded scan got at ingress, as the isolation check compares it.
pub(super) type IngressRecord = (u64, u32, u16, u8, u32);

/// Per-seed settings, drawn from the seed.
#[derive(Debug, Clone)]
struct Settings {
    scanners: usize,
    buffer_bytes: usize,
    frame_deadline: Duration,
    idle_timeout: Duration,
    batch_parcels_max: usize,
    queue_batches_max: usize,
    deadline: Duration,
    duplicate_window: Duration,
    duplicate_entries_max: usize,
    host: LinkConfig,
    peer: LinkConfig,
    faults: LinkFaults,
    pipe_bytes_max: usize,
    step_ms_max: u64,
    swap_per_mille: u32,
    disconnect_per_mille: u32,
    outage_per_mille: u32,
    pause_per_mille: u32,
    chute_event_per_mille: u32,
}

impl Settings {
    fn draw(rng: &mut fastrand::Rng, mode: Mode, parcels: u64) -> Settings {
        let isolation = matches!(mode, Mode::Isolation { .. });
        let scanners = rng.usize(2..=6);
        let window_max = if isolation {
            1 << 16
        } else {
            rng.usize(1..=64)
        };
        let heartbeat_interval_ms = rng.u32(50..=300);
        let host = LinkConfig {
            window_max,
            ack_timeout_ms: rng.u32(30..=300),
            heartbeat_interval_ms,
            heartbeats_missed_max: rng.u32(3..=6),
            reconnect_backoff_min_ms: rng.u32(5..=50),
            reconnect_backoff_max_ms: 400,
            jitter_seed: rng.u64(..),
            session: rng.u64(1..),
            first_seq: rng.u32(..),
            ..LinkConfig::default()
        };
        let peer = LinkConfig {
            window_max: rng.usize(1..=32),
            ack_timeout_ms: rng.u32(30..=300),
            heartbeat_interval_ms,
            heartbeats_missed_max: rng.u32(3..=6),
            ack_policy: crate::plc::AckPolicy {
                every_telegrams: rng.u32(1..=8),
                delay_ms_max: rng.u32(0..=60),
            },
            session: rng.u64(1..),
            first_seq: rng.u32(..),
            ..LinkConfig::default()
        };
        let faulty = rng.u32(0..4) > 0;
        let per_mille =
            |rng: &mut fastrand::Rng, max: u32| if faulty { rng.u32(0..=max) } else { 0 };
        let faults = LinkFaults {
            drop_per_mille: per_mille(rng, 40),
            duplicate_per_mille: per_mille(rng, 40),
            corrupt_per_mille: per_mille(rng, 20),
            reorder_per_mille: per_mille(rng, 40),
            delay_ms_max: rng.u64(0..=40),
            chunk_bytes_max: [1, 7, 40, 100, 4096][rng.usize(0..5)],
        };
        Settings {
            scanners,
            buffer_bytes: [8192, 12_000, 65_536][rng.usize(0..3)],
            frame_deadline: Duration::from_millis(rng.u64(100..=1000)),
            idle_timeout: Duration::from_millis(rng.u64(400..=4000)),
            batch_parcels_max: rng.usize(1..=32),
            queue_batches_max: if isolation { 1 << 16 } else { rng.usize(1..=8) },
            deadline: Duration::from_millis(rng.u64(20..=1000)),
            // Longer than any run: every repeat must be caught, so a second actuation
            // is always a broken promise.
            duplicate_window: Duration::from_secs(3600),
            duplicate_entries_max: (parcels as usize + 64) * 8,
            host,
            peer,
            faults,
            pipe_bytes_max: 40 * rng.usize(2..=256),
            step_ms_max: rng.u64(1..=6),
            swap_per_mille: rng.u32(0..=20),
            disconnect_per_mille: per_mille(rng, 6),
            outage_per_mille: per_mille(rng, 2),
            pause_per_mille: per_mille(rng, 3),
            chute_event_per_mille: if isolation { 0 } else { rng.u32(0..=60) },
        }
    }
}

/// No thread to wake: the simulation drives the consumer itself.
#[derive(Debug)]
struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

/// A scanner connection as ingress holds it.
#[derive(Debug)]
struct Connection {
    input: InputBuffer,
    scanner_id: u32,
}

/// A scanner, its socket and sortd's end of the connection.
#[derive(Debug)]
struct Slot {
    scanner: Scanner,
    socket: Socket,
    connection: Option<Connection>,
    reconnect_at: Option<Instant>,
    /// What each decoded scan got at ingress (kept for clean scanners only).
    log: Vec<IngressRecord>,
}

enum Served {
    Drained,
    More,
    Blocked,
    Closed,
}

/// Counts a run reports.
#[derive(Debug, Default, Clone)]
pub(super) struct RunCounts {
    pub steps: u64,
    pub emitted_valid: u64,
    pub bytes_skipped: u64,
    pub swaps_published: u64,
    pub swaps_refused: u64,
    pub blocked_turns: u64,
    pub connections_closed: u64,
    pub link_ups: u64,
    pub confirms: u64,
}

/// The outcome of a run that kept every promise.
#[derive(Debug)]
pub(super) struct RunOutcome {
    pub digest: u64,
    pub counts: RunCounts,
    pub received: u64,
    pub sent: u64,
    pub duplicates: u64,
    pub undelivered: u64,
    pub late: u64,
    pub actuated: u64,
    /// Per scanner: whether it was clean, and what its scans got at ingress.
    pub logs: Vec<(u32, bool, Vec<IngressRecord>)>,
}

/// The simulated world of one run.
pub(super) struct World<'f> {
    fixtures: &'f PlanFixtures,
    bug: Option<PlantedBug>,
    settings: Settings,
    epoch: Instant,
    now: Instant,
    rng: fastrand::Rng,
    checker: Checker,
    counts: RunCounts,
    // The plan and the PLC's chute states, as the daemon shares them.
    plan: PlanHandle,
    published_version: u32,
    chute_states: ChuteStateTable,
    // Ingress (one worker).
    slots: Vec<Slot>,
    framing: Framing,
    sender: BatchSender,
    batch: Batch,
    next_synthetic_parcel_id: u64,
    blocked: bool,
    turn_start: usize,
    last_sweep: Instant,
    queued_decisions: u64,
    // Egress.
    receiver: BatchReceiver,
    current: Option<(Batch, usize)>,
    finalizer: Finalizer,
    host: HostLink,
    outbound: Vec<u8>,
    // Around the core.
    transport: Transport,
    plc: Plc,
}

impl std::fmt::Debug for World<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("step", &self.checker.step)
            .finish_non_exhaustive()
    }
}

impl<'f> World<'f> {
    pub fn new(
        seed: u64,
        mode: Mode,
        options: &SimOptions,
        fixtures: &'f PlanFixtures,
        epoch: Instant,
    ) -> Result<World<'f>, Violation> {
        let mut master = fastrand::Rng::with_seed(seed);
        let settings = Settings::draw(&mut master, mode, options.parcels_per_seed);
        // One generator per concern, forked in a fixed order, so that what one scanner
        // sends never shifts the draws of another or of the world.
        let world_rng = master.fork();
        let transport_rng = master.fork();
        let plc_rng = master.fork();
        let checker = Checker::new();
        let initial = fixtures.initial().ok_or_else(|| {
            checker.violation(Promise::VerifiedPlansOnly, "no intact plan fixture".into())
        })?;
        let plan = Plan::open(&initial.path)
            .and_then(|plan| plan.verify().map(|()| plan))
            .map_err(|error| {
                checker.violation(Promise::VerifiedPlansOnly, format!("initial plan: {error}"))
            })?;
        let published_version = plan.version();
        let garbage = !matches!(mode, Mode::Isolation { garbage: false });
        let quota = (options.parcels_per_seed / settings.scanners as u64).max(1);
        let slots = (0..settings.scanners)
            .map(|index| {
                let clean = index == 0 || master.u32(0..100) < 40;
                Slot {
                    scanner: Scanner::new(
                        1000 + index as u32,
                        clean,
                        garbage,
                        quota,
                        master.fork(),
                    ),
                    socket: Socket::default(),
                    connection: None,
                    reconnect_at: Some(epoch),
                    log: Vec::new(),
                }
            })
            .collect();
        let (sender, receiver) = batch_queue(
            settings.queue_batches_max,
            settings.batch_parcels_max,
            Arc::new(NoWake) as Arc<dyn Wake>,
        );
        let duplicate_window = if options.planted_bug == Some(PlantedBug::SkipDuplicateWindow) {
            Duration::ZERO
        } else {
            settings.duplicate_window
        };
        let finalizer = Finalizer::new(
            settings.deadline,
            duplicate_window,
            settings.duplicate_entries_max,
        );
        let host = HostLink::new(settings.host, epoch);
        let peer = PlcPeer::new(settings.peer, epoch);
        let plc = Plc::new(
            peer,
            settings.peer.window_max,
            settings.chute_event_per_mille,
            plc_rng,
        );
        let transport = Transport::new(settings.pipe_bytes_max, settings.faults, transport_rng);
        Ok(World {
            fixtures,
            bug: options.planted_bug,
            epoch,
            now: epoch,
            rng: world_rng,
            checker,
            counts: RunCounts::default(),
            plan: PlanHandle::new(plan),
            published_version,
            chute_states: ChuteStateTable::new(),
            slots,
            framing: Framing::Binary,
            batch: sender.empty_batch(),
            sender,
            next_synthetic_parcel_id: 1 << 63,
            blocked: false,
            turn_start: 0,
            last_sweep: epoch,
            queued_decisions: 0,
            receiver,
            current: None,
            finalizer,
            host,
            outbound: Vec::new(),
            transport,
            plc,
            settings,
        })
    }

    /// Runs the traffic, then the drain; checks the promises all along.
    pub fn run(mut self) -> Result<RunOutcome, Violation> {
        let mut step: u64 = 0;
        while self.slots.iter().any(|slot| slot.scanner.is_producing()) {
            step += 1;
            if step > TRAFFIC_STEPS_MAX {
                return Err(self.checker.violation(
                    Promise::Accounting,
                    "scanners could not send their parcels: the core stopped reading".into(),
                ));
            }
            self.step(true)?;
        }
        // Drain: the scanners are done; heal the PLC link and wait for every decision.
        let mut drained_steps = 0;
        loop {
            self.step(false)?;
            if self.is_quiescent() {
                break;
            }
            drained_steps += 1;
            if drained_steps > DRAIN_STEPS_MAX {
                return Err(self.checker.violation(
                    Promise::Accounting,
                    format!(
                        "did not drain: in flight {}, host unacked {}, link {:?}",
                        self.in_flight(),
                        self.host.unacked(),
                        self.host.state()
                    ),
                ));
            }
        }
        self.checker.check_drained(self.in_flight())?;
        self.counts.emitted_valid = self
            .slots
            .iter()
            .map(|slot| slot.scanner.emitted_valid)
            .sum();
        self.counts.link_ups = self.host.stats().link_ups;
        self.counts.steps = self.checker.step;
        self.counts.confirms = self.plc.confirms_sent;
        let checker = &self.checker;
        Ok(RunOutcome {
            digest: checker.digest(),
            counts: self.counts.clone(),
            received: checker.received,
            sent: checker.sent,
            duplicates: checker.duplicates,
            undelivered: checker.undelivered,
            late: checker.late,
            actuated: checker.actuated,
            logs: self
                .slots
                .into_iter()
                .map(|slot| (slot.scanner.scanner_id, slot.scanner.clean, slot.log))
                .collect(),
        })
    }

    fn in_flight(&self) -> u64 {
        let current = self
            .current
            .as_ref()
            .map_or(0, |(batch, index)| batch.len().saturating_sub(*index));
        self.batch.len() as u64 + self.queued_decisions + current as u64
    }

    fn is_quiescent(&self) -> bool {
        self.slots.iter().all(|slot| {
            slot.socket.is_empty()
                && slot
                    .connection
                    .as_ref()
                    .is_none_or(|c| c.input.unread().is_empty())
        }) && self.in_flight() == 0
            && self.host.state() == LinkState::Established
            && self.host.unacked() == 0
            && self.outbound.is_empty()
            && self.plc.is_settled()
            && self.transport.to_plc.len() == 0
            && self.transport.to_host.len() == 0
    }

    /// One step of virtual time: the world's schedule, the scanners, ingress, egress,
    /// the PLC, then the checks.
    fn step(&mut self, traffic: bool) -> Result<(), Violation> {
        self.checker.step += 1;
        let dt = Duration::from_millis(self.rng.u64(1..=self.settings.step_ms_max));
        self.now += dt;
        self.checker.at_ms = self.now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.schedule(traffic)?;
        self.scanners();
        self.ingress_turn()?;
        self.egress_turn()?;
        self.plc
            .turn(self.now, &mut self.transport, &mut self.checker)?;
        self.egress_turn()?;
        self.check_step()
    }

    /// Plan swaps and link faults at random moments. The draws happen in every step, so
    /// the schedule does not depend on the traffic; faults heal during the drain.
    fn schedule(&mut self, traffic: bool) -> Result<(), Violation> {
        let swap = self.rng.u32(0..1000) < self.settings.swap_per_mille;
        let file_index = self.rng.usize(0..self.fixtures.len().max(1));
        let disconnect = self.rng.u32(0..1000) < self.settings.disconnect_per_mille;
        let outage = self.rng.u32(0..1000) < self.settings.outage_per_mille;
        let outage_ms = self.rng.u64(50..=3000);
        let pause = self.rng.u32(0..1000) < self.settings.pause_per_mille;
        let pause_ms = self.rng.u64(10..=2000);
        if swap {
            self.swap_plan(file_index)?;
        }
        if !traffic {
            self.transport.faults = LinkFaults {
                chunk_bytes_max: self.transport.faults.chunk_bytes_max,
                ..LinkFaults::default()
            };
            self.transport.unreachable_until = None;
            self.plc.reading_paused_until = None;
            self.plc.chute_event_per_mille = 0;
            return Ok(());
        }
        if disconnect && self.transport.connected {
            self.checker.trace(20, &[]);
            self.transport.close();
            self.transport.closed_under_sortd = true;
            self.plc.peer.handle_disconnected(self.now);
        }
        if outage {
            self.transport.unreachable_until = Some(self.now + Duration::from_millis(outage_ms));
            if self.transport.connected {
                self.transport.close();
                self.transport.closed_under_sortd = true;
                self.plc.peer.handle_disconnected(self.now);
            }
        }
        if pause {
            self.plc.reading_paused_until = Some(self.now + Duration::from_millis(pause_ms));
        }
        Ok(())
    }

    /// What `Daemon::reload_plan` does: open, verify, publish, or keep the old plan.
    fn swap_plan(&mut self, file_index: usize) -> Result<(), Violation> {
        let Some(file) = self.fixtures.files.get(file_index) else {
            return Ok(());
        };
        let result = if self.bug == Some(PlantedBug::PublishWithoutVerify) {
            Plan::open(&file.path).map(|plan| self.plan.swap(plan))
        } else {
            self.plan.swap_from_path(&file.path)
        };
        self.checker
            .trace(30, &[file_index as u64, u64::from(result.is_ok())]);
        match (result, file.intact) {
            (Ok(report), true) => {
                self.counts.swaps_published += 1;
                self.published_version = report.new_version;
                if report.new_version != file.version {
                    return Err(self.checker.violation(
                        Promise::VerifiedPlansOnly,
                        format!(
                            "published v{} from the file of v{}",
                            report.new_version, file.version
                        ),
                    ));
                }
            }
            (Err(_), false) => self.counts.swaps_refused += 1,
            (Ok(report), false) => {
                return Err(self.checker.violation(
                    Promise::VerifiedPlansOnly,
                    format!(
                        "a {} plan (v{}) was published instead of refused",
                        file.label, report.new_version
                    ),
                ));
            }
            (Err(error), true) => {
                return Err(self.checker.violation(
                    Promise::VerifiedPlansOnly,
                    format!("an intact plan was refused: {error}"),
                ));
            }
        }
        Ok(())
    }

    /// Scanners connect, send, and their bytes arrive.
    fn scanners(&mut self) {
        let now = self.now;
        for slot in &mut self.slots {
            if slot.connection.is_none() {
                if slot.reconnect_at.is_some_and(|at| at <= now) {
                    slot.reconnect_at = None;
                    slot.socket = Socket::default();
                    slot.connection = Some(Connection {
                        input: InputBuffer::new(self.settings.buffer_bytes, now),
                        scanner_id: 0,
                    });
                    slot.scanner.on_connected(&mut slot.socket);
                }
                continue;
            }
            slot.scanner.produce(&mut slot.socket);
            let chunk = slot.scanner.rng.usize(1..=slot.scanner.chunk_bytes_max);
            slot.socket.arrive(chunk);
        }
    }

    /// One turn of the ingress worker, as `IngressWorker::run`'s loop body.
    fn ingress_turn(&mut self) -> Result<(), Violation> {
        if self.blocked && !self.flush() {
            self.counts.blocked_turns += 1;
            return Ok(());
        }
        let plan: Arc<Plan> = Arc::clone(&self.plan.load());
        self.blocked = false;
        let count = self.slots.len();
        for offset in 0..count {
            let index = (self.turn_start + offset) % count;
            match self.serve(index, &plan)? {
                Served::Blocked => {
                    self.blocked = true;
                    self.turn_start = index;
                    break;
                }
                Served::Closed => self.close(index),
                Served::Drained | Served::More => {}
            }
        }
        if !self.blocked {
            self.turn_start = (self.turn_start + 1) % count.max(1);
            if !self.flush() {
                self.blocked = true;
            }
        }
        if self.now.saturating_duration_since(self.last_sweep) >= SWEEP_INTERVAL {
            self.sweep();
            self.last_sweep = self.now;
        }
        Ok(())
    }

    /// Hands the batch over; false when the queue is full (the batch stays).
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let full = std::mem::take(&mut self.batch);
        let count = full.len() as u64;
        match self.sender.try_send(full) {
            Ok(()) => {
                self.queued_decisions += count;
                self.batch = self.sender.empty_batch();
                true
            }
            Err(back) => {
                if self.bug == Some(PlantedBug::DropBatchWhenQueueFull) {
                    self.batch = self.sender.empty_batch();
                    return true;
                }
                self.batch = back;
                false
            }
        }
    }

    fn serve(&mut self, index: usize, plan: &Plan) -> Result<Served, Violation> {
        if self
            .slots
            .get(index)
            .is_none_or(|slot| slot.connection.is_none())
        {
            return Ok(Served::Drained);
        }
        if !self.drain_frames(index, plan)? {
            return Ok(Served::Blocked);
        }
        for _ in 0..READS_PER_TURN_MAX {
            let Some(slot) = self.slots.get_mut(index) else {
                return Ok(Served::Drained);
            };
            let Some(connection) = slot.connection.as_mut() else {
                return Ok(Served::Drained);
            };
            match slot.socket.read(connection.input.spare()) {
                Read::Closed => return Ok(Served::Closed),
                Read::WouldBlock => return Ok(Served::Drained),
                Read::Data(count) => {
                    connection.input.commit(count, self.now);
                    if !self.drain_frames(index, plan)? {
                        return Ok(Served::Blocked);
                    }
                }
            }
        }
        Ok(Served::More)
    }

    /// As `drain_frames` in `net/ingress.rs`: decode and decide every complete frame.
    /// False when the hand-off queue is full; undecided frames stay in the buffer.
    fn drain_frames(&mut self, index: usize, plan: &Plan) -> Result<bool, Violation> {
        loop {
            if self.batch.len() >= self.sender.batch_parcels_max()
                && !self.flush()
                && self.bug != Some(PlantedBug::IgnoreBackpressure)
            {
                return Ok(false);
            }
            let now = self.now;
            let Some(slot) = self.slots.get_mut(index) else {
                return Ok(true);
            };
            let clean = slot.scanner.clean;
            let Some(connection) = slot.connection.as_mut() else {
                return Ok(true);
            };
            let mut skipped_elsewhere = false;
            let consumed = match self.framing.decode(connection.input.unread()) {
                Decoded::Frame { frame, consumed } => {
                    match frame {
                        Frame::Scan(scan) => {
                            let parcel_id = if scan.parcel_id == 0 {
                                self.next_synthetic_parcel_id += 1;
                                self.next_synthetic_parcel_id
                            } else {
                                scan.parcel_id
                            };
                            let (chute, reason) = decide(
                                plan,
                                &self.chute_states,
                                scan.flags,
                                scan.barcodes.as_slice(),
                                scan.destination,
                            );
                            let decision = Decision {
                                parcel_id,
                                scanner_id: scan.scanner_id,
                                chute,
                                reason,
                                plan_version: plan.version(),
                                late_chute: plan.default_chute(DefaultKind::Late),
                                received_at: now,
                            };
                            if clean {
                                slot.log.push((
                                    scan.parcel_id,
                                    scan.sequence,
                                    chute,
                                    reason.code(),
                                    plan.version(),
                                ));
                            }
                            self.checker
                                .on_decided_at_ingress(&decision, self.published_version)?;
                            self.batch.push(decision);
                        }
                        Frame::Hello(hello) => connection.scanner_id = hello.scanner_id,
                        Frame::Heartbeat(_) => {}
                    }
                    consumed
                }
                Decoded::NeedMore => {
                    if connection.input.is_full() {
                        let stuck = connection.input.unread().len();
                        self.counts.bytes_skipped += stuck as u64;
                        stuck
                    } else {
                        return Ok(true);
                    }
                }
                Decoded::Skip { skip, .. } => {
                    self.counts.bytes_skipped += skip as u64;
                    skipped_elsewhere = self.bug == Some(PlantedBug::GarbageClearsEveryBuffer);
                    skip.max(1)
                }
            };
            connection.input.consume(consumed, now);
            if skipped_elsewhere {
                for (other, slot) in self.slots.iter_mut().enumerate() {
                    if other == index {
                        continue;
                    }
                    if let Some(connection) = slot.connection.as_mut() {
                        let unread = connection.input.unread().len();
                        connection.input.consume(unread, now);
                    }
                }
            }
        }
    }

    /// sortd closes a scanner connection (EOF, error, expiry): the unread bytes count as
    /// skipped, and the scanner will connect again.
    fn close(&mut self, index: usize) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if let Some(connection) = slot.connection.take() {
            self.counts.bytes_skipped += connection.input.unread().len() as u64;
            self.counts.connections_closed += 1;
            self.checker.trace(40, &[index as u64]);
        }
        slot.socket = Socket::default();
        slot.scanner.on_closed();
        let delay = Duration::from_millis(slot.scanner.rng.u64(1..=60));
        slot.reconnect_at = Some(now + delay);
    }

    fn sweep(&mut self) {
        for index in 0..self.slots.len() {
            let expiry = self.slots.get(index).and_then(|slot| {
                slot.connection.as_ref().and_then(|connection| {
                    connection.input.expiry(
                        self.now,
                        self.settings.frame_deadline,
                        self.settings.idle_timeout,
                    )
                })
            });
            if let Some(Expiry::FrameDeadline | Expiry::Idle) = expiry {
                self.close(index);
            }
        }
    }

    /// One turn of the PLC thread, as `Egress::run`'s loop body and its stream event.
    fn egress_turn(&mut self) -> Result<(), Violation> {
        self.pump()?;
        self.drive_link();
        self.flush_outbound();
        if self.transport.connecting {
            self.transport.connecting = false;
            if self.transport.is_reachable(self.now) {
                self.transport.connected = true;
                self.transport.closed_under_sortd = false;
                self.host.handle_connected(self.now);
                self.plc.peer.handle_connected(self.now);
                self.checker.trace(50, &[]);
            } else {
                self.host.handle_disconnected(self.now);
            }
        }
        self.read_stream();
        self.flush_outbound();
        Ok(())
    }

    /// As `Egress::pump`: finalize and submit, or count as duplicate or undelivered.
    fn pump(&mut self) -> Result<(), Violation> {
        loop {
            let (batch, mut index) = match self.current.take() {
                Some(current) => current,
                None => match self.receiver.try_recv() {
                    Some(batch) => {
                        self.queued_decisions =
                            self.queued_decisions.saturating_sub(batch.len() as u64);
                        (batch, 0)
                    }
                    None => break,
                },
            };
            let link_up = self.host.state() == LinkState::Established;
            while let Some(decision) = batch.get(index).copied() {
                if link_up && self.host.window_free() == 0 {
                    break;
                }
                let decision = self.finalizer.finalize(decision, self.now);
                if decision.reason == Reason::Duplicate {
                    self.checker.on_finalized(&decision, Fate::Duplicate)?;
                } else if link_up {
                    let command = SortCommand {
                        parcel_id: decision.parcel_id,
                        scanner_id: decision.scanner_id,
                        chute: decision.chute,
                        reason: decision.reason,
                        plan_version: decision.plan_version,
                        decided_at_us: self.checker.at_ms * 1000,
                    };
                    if self
                        .host
                        .submit(command, decision.received_at + self.settings.deadline)
                        .is_err()
                    {
                        break;
                    }
                    if self.bug == Some(PlantedBug::DoubleSubmit) {
                        let _ = self
                            .host
                            .submit(command, decision.received_at + self.settings.deadline);
                    }
                    self.checker.on_finalized(&decision, Fate::Sent)?;
                } else {
                    self.checker.on_finalized(&decision, Fate::Undelivered)?;
                }
                index += 1;
            }
            if index < batch.len() {
                self.current = Some((batch, index));
                break;
            }
            self.receiver.recycle(batch);
        }
        Ok(())
    }

    /// As `Egress::drive_link`.
    fn drive_link(&mut self) {
        if self.host.poll_timeout().is_some_and(|at| at <= self.now) {
            self.host.handle_timeout(self.now);
        }
        while let Some(event) = self.host.poll_event() {
            match event {
                HostEvent::ConnectNow => {
                    // Dial: the connection completes (or fails) at the next turn.
                    self.drop_connection(false);
                    self.transport.connecting = true;
                    self.checker.trace(60, &[]);
                }
                HostEvent::LinkUp { resending, .. } => {
                    self.checker.trace(61, &[u64::from(resending)])
                }
                HostEvent::LinkDown { .. } => {
                    self.checker.trace(62, &[]);
                    self.drop_connection(false);
                }
                HostEvent::ChuteStatusChanged { chute, state } => {
                    self.checker
                        .trace(63, &[u64::from(chute), u64::from(state.code())]);
                    self.chute_states.set(chute, state);
                }
                HostEvent::SortConfirmed { plc_seq, .. } => {
                    self.checker.trace(64, &[u64::from(plc_seq)])
                }
                HostEvent::SortsAcked { count, .. } => self.checker.trace(65, &[u64::from(count)]),
                // This model submits only while the link is up, so nothing is held.
                HostEvent::HeldReleased { .. } | HostEvent::HeldExpired { .. } => {}
            }
        }
    }

    /// sortd closes its end; `tell_link` when the link does not know yet.
    fn drop_connection(&mut self, tell_link: bool) {
        self.outbound.clear();
        if self.transport.connected {
            self.transport.close();
            self.plc.peer.handle_disconnected(self.now);
            if tell_link {
                self.host.handle_disconnected(self.now);
            }
        }
    }

    /// As `Egress::flush_outbound`: new telegrams only once the earlier ones are written.
    fn flush_outbound(&mut self) {
        if !self.transport.connected {
            return;
        }
        if self.outbound.is_empty() {
            self.host.poll_transmit(self.now, &mut self.outbound);
        }
        let Transport {
            to_plc,
            faults,
            rng,
            ..
        } = &mut self.transport;
        let taken = to_plc.send(self.now, &self.outbound, faults, rng);
        self.outbound.drain(..taken.min(self.outbound.len()));
    }

    /// As `Egress::read_stream`: read while the link has room.
    fn read_stream(&mut self) {
        if self.transport.closed_under_sortd {
            self.transport.closed_under_sortd = false;
            self.outbound.clear();
            self.host.handle_disconnected(self.now);
            return;
        }
        if !self.transport.connected {
            return;
        }
        loop {
            let room = self
                .host
                .receive_room()
                .min(READ_CHUNK_BYTES)
                .min(self.transport.chunk());
            let bytes = self.transport.to_host.take(self.now, room);
            if bytes.is_empty() {
                return;
            }
            self.host.handle_input(self.now, &bytes);
            self.drive_link();
            if !self.transport.connected {
                return;
            }
        }
    }

    /// The promises that hold at every moment.
    fn check_step(&self) -> Result<(), Violation> {
        self.checker.check_accounting(self.in_flight())?;
        let current = self.plan.load().version();
        if current != self.published_version {
            return Err(self.checker.violation(
                Promise::VerifiedPlansOnly,
                format!(
                    "plan v{current} is published, v{} expected",
                    self.published_version
                ),
            ));
        }
        let bounds = |what: &str, value: usize, bound: usize| -> Result<(), Violation> {
            if value > bound {
                return Err(self.checker.violation(
                    Promise::MemoryBounds,
                    format!("{what} holds {value}, bound {bound}"),
                ));
            }
            Ok(())
        };
        for slot in &self.slots {
            if let Some(connection) = &slot.connection {
                bounds(
                    "a connection buffer",
                    connection.input.unread().len(),
                    self.settings.buffer_bytes,
                )?;
            }
            bounds("a scanner socket", slot.socket.len(), SOCKET_BYTES_MAX)?;
        }
        bounds(
            "the ingress batch",
            self.batch.len(),
            self.settings.batch_parcels_max,
        )?;
        bounds(
            "the hand-off queue",
            self.sender.queued(),
            self.settings.queue_batches_max,
        )?;
        bounds(
            "the PLC window",
            self.host.unacked(),
            self.settings.host.window_max,
        )?;
        bounds(
            "the pipe to the PLC",
            self.transport.to_plc.len(),
            self.settings.pipe_bytes_max,
        )?;
        bounds(
            "the pipe to sortd",
            self.transport.to_host.len(),
            self.settings.pipe_bytes_max,
        )?;
        bounds(
            "the PLC's conveyor",
            self.plc.confirms_pending(),
            CONFIRMS_MAX,
        )?;
        Ok(())
    }
}
