//! One simulated run: the daemon's own sans-IO core ([`ScannerSession`] per scanner
//! connection, the batch hand-off, [`EgressCore`] with its finalizer and PLC link) driven
//! on a virtual clock, surrounded by simulated scanners (binary and text), a simulated
//! PLC that may restart and forget, and plan swaps.
//!
//! This file is the core's second driver beside the mio shells in `net/`: it schedules
//! turns, moves bytes between simulated sockets and the core, and feeds the checker
//! through the core's observers. It holds no decoding, deciding or finalizing logic of
//! its own. Planted bugs live in its doubles (the decision sink, the observers, the
//! transport), never in a copy of the loops. Every step ends with the promise checks;
//! the run ends with a drain and the final ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::egress::{self, EgressCore, EgressObserver, LinkAction};
use crate::core::session::{
    Decider, DecisionSink, ReadResult, SWEEP_INTERVAL, ScannerSession, Served, SessionLimits,
    SessionObserver, Skipped,
};
use crate::decision::ChuteNumber;
use crate::net::egress_events::EgressJournal;
use crate::pipeline::decide::Decision;
use crate::pipeline::facts::ScanFacts;
use crate::pipeline::finalize::Finalizer;
use crate::pipeline::queue::{Batch, BatchReceiver, BatchSender, Wake, batch_queue};
use crate::plan::{Plan, PlanHandle, PlanView};
use crate::plc::{
    ChuteState, ChuteStateTable, HostLink, LinkConfig, LinkDownReason, LinkState, SortCommand,
    SortConfirm, TELEGRAM_BYTES, Telegram,
};
use crate::wire::{Framing, ScanFrame, TextProfile};

use super::check::{Checker, Fate, Promise, Violation};
use super::events::{CrashPoint, EventSettings, EventSide, SortKey};
use super::fixtures::PlanFixtures;
use super::link::{CONFIRMS_MAX, LinkFaults, Plc, Transport};
use super::scanner::{Read, SOCKET_BYTES_MAX, Scanner, Socket};
use super::{PlantedBug, SimOptions};

/// As in `net/egress.rs`: bytes read from the PLC per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Steps the drain may take before the run counts as stuck.
const DRAIN_STEPS_MAX: u64 = 200_000;
/// Steps the traffic phase may take at most (scanners blocked for good).
const TRAFFIC_STEPS_MAX: u64 = 400_000;
/// The text profile simulated text scanners speak.
const TEXT_PROFILE: &str = "sick-clv";

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
    restart_per_mille: u32,
    chute_event_per_mille: u32,
    /// sortd crashes per mille per step (chaos runs only).
    crash_per_mille: u32,
    /// Of those, power losses per cent.
    power_loss_per_cent: u32,
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
            restart_per_mille: per_mille(rng, 1),
            chute_event_per_mille: if isolation { 0 } else { rng.u32(0..=60) },
            crash_per_mille: if isolation { 0 } else { per_mille(rng, 3) },
            power_loss_per_cent: rng.u32(0..=100),
        }
    }
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
    pub text_scanners: u64,
    pub plc_restarts: u64,
    pub chutes_kept_across_plc_restarts: u64,
    pub chute_states_disagreeing: u64,
    pub held: u64,
    pub held_expired: u64,
    pub events: super::events::EventCounts,
    pub lost_in_crash: u64,
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
    pub actuated_again_after_restart: u64,
    /// Per scanner: whether it was clean, and what its scans got at ingress.
    pub logs: Vec<(u32, bool, Vec<IngressRecord>)>,
}

/// No thread to wake: the simulation drives the consumer itself.
#[derive(Debug)]
struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

/// A scanner, its socket and sortd's session of the connection.
#[derive(Debug)]
struct Slot {
    scanner: Scanner,
    socket: Socket,
    framing: Framing,
    session: Option<ScannerSession>,
    reconnect_at: Option<Instant>,
    /// What each decoded scan got at ingress (kept for clean scanners only).
    log: Vec<IngressRecord>,
}

/// The ingress worker's decision sink: the batch and the hand-off queue. Doubles for
/// two planted bugs: it drops a batch the full queue refuses, or never reports itself
/// full.
#[derive(Debug)]
struct SimSink {
    batch: Batch,
    sender: BatchSender,
    /// Decisions in batches the queue accepted.
    handed_off: u64,
    bug: Option<PlantedBug>,
}

impl DecisionSink for SimSink {
    fn room(&self) -> usize {
        let room = self.batch.room();
        if self.bug == Some(PlantedBug::IgnoreBackpressure) {
            room.max(1)
        } else {
            room
        }
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let full = std::mem::take(&mut self.batch);
        let count = full.len() as u64;
        match self.sender.try_send(full) {
            Ok(()) => {
                self.handed_off += count;
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

    fn push(&mut self, decision: Decision, scan: &ScanFrame<'_>, plan_name: &str) {
        self.batch.push_scan(decision, scan, plan_name);
    }
}

/// Feeds the checker what a session decided and counts what it skipped.
struct SessionChecks<'a> {
    checker: &'a mut Checker,
    published_version: u32,
    /// The scanner's ingress log, when it is clean.
    log: Option<&'a mut Vec<IngressRecord>>,
    bytes_skipped: &'a mut u64,
    decode_error: bool,
    violation: Option<Violation>,
}

impl SessionObserver for SessionChecks<'_> {
    fn on_scan(&mut self, scan: &ScanFrame<'_>, decision: &Decision) {
        if let Some(log) = self.log.as_mut() {
            log.push((
                scan.parcel_id,
                scan.sequence,
                decision.chute,
                decision.reason.code(),
                decision.plan_version,
            ));
        }
        if let Err(violation) = self
            .checker
            .on_decided_at_ingress(decision, self.published_version)
        {
            self.violation.get_or_insert(violation);
        }
    }

    fn on_skipped(&mut self, _now: Instant, skipped: Skipped) {
        *self.bytes_skipped += skipped.bytes as u64;
        self.decode_error |= skipped.error.is_some();
    }
}

/// Feeds the checker every parcel's fate and traces the link's events.
struct EgressChecks<'a> {
    checker: &'a mut Checker,
    /// The daemon's journal hook, fed as the daemon's observer feeds it.
    journal: Option<&'a mut EgressJournal>,
    finalized: &'a mut u64,
    /// SORTs sent in this pump, kept only for the double-submit bug.
    sent: Option<&'a mut Vec<SortCommand>>,
    decided_at_us: u64,
    violation: Option<Violation>,
}

impl EgressObserver for EgressChecks<'_> {
    fn on_decision(
        &mut self,
        now: Instant,
        decision: &Decision,
        facts: Option<&ScanFacts<'_>>,
        fate: egress::Fate,
    ) {
        if let Some(journal) = self.journal.as_mut() {
            journal.on_decision(now, decision, facts, fate);
        }
        *self.finalized += 1;
        let fate = match fate {
            egress::Fate::Sent { .. } => {
                if let Some(sent) = self.sent.as_mut() {
                    sent.push(SortCommand {
                        parcel_id: decision.parcel_id,
                        scanner_id: decision.scanner_id,
                        chute: decision.chute,
                        reason: decision.reason,
                        plan_version: decision.plan_version,
                        decided_at_us: self.decided_at_us,
                    });
                }
                Fate::Sent
            }
            egress::Fate::Duplicate => Fate::Duplicate,
            egress::Fate::Undelivered => Fate::Undelivered,
        };
        if let Err(violation) = self.checker.on_finalized(decision, fate) {
            self.violation.get_or_insert(violation);
        }
    }

    fn on_confirm(&mut self, now: Instant, confirm: &SortConfirm, plc_seq: u32) {
        if let Some(journal) = self.journal.as_mut() {
            journal.on_confirm(now, confirm);
        }
        self.checker.trace(64, &[u64::from(plc_seq)]);
    }

    fn on_chute_state(&mut self, chute: ChuteNumber, state: ChuteState) {
        self.checker
            .trace(63, &[u64::from(chute), u64::from(state.code())]);
    }

    fn on_link_up(&mut self, _peer_session_changed: bool, resending: u32) {
        self.checker.trace(61, &[u64::from(resending)]);
    }

    fn on_link_down(&mut self, _why: LinkDownReason) {
        self.checker.trace(62, &[]);
    }

    fn on_sorts_acked(&mut self, count: u32) {
        self.checker.trace(65, &[u64::from(count)]);
    }
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
    chute_states: Arc<ChuteStateTable>,
    // Ingress (one worker).
    slots: Vec<Slot>,
    sink: SimSink,
    next_synthetic_parcel_id: u64,
    blocked: bool,
    turn_start: usize,
    last_sweep: Instant,
    // Egress.
    receiver: BatchReceiver,
    egress: EgressCore,
    finalized: u64,
    outbound: Vec<u8>,
    // Around the core.
    transport: Transport,
    plc: Plc,
    // Sort events, and sortd's death.
    events: Option<EventSide>,
    /// The crash due in this step, and whether it is a power loss.
    crash: Option<(CrashPoint, bool)>,
    /// sortd died in this step: the rest of its turn does not happen.
    dying: bool,
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
        let mut events_rng = master.fork();
        let checker = Checker::new();
        let initial = fixtures.initial().ok_or_else(|| {
            checker.violation(Promise::VerifiedPlansOnly, "no intact plan fixture".into())
        })?;
        let plan = Plan::open(&initial.path)
            .and_then(|plan| plan.verify().map(|()| plan))
            .map_err(|error| {
                checker.violation(Promise::VerifiedPlansOnly, format!("initial plan: {error}"))
            })?;
        let text_profile = TextProfile::builtin(TEXT_PROFILE).ok_or_else(|| {
            checker.violation(Promise::OneDecisionPerScan, "no text profile".into())
        })?;
        let published_version = plan.version();
        let garbage = !matches!(mode, Mode::Isolation { garbage: false });
        let quota = (options.parcels_per_seed / settings.scanners as u64).max(1);
        let slots = (0..settings.scanners)
            .map(|index| {
                let clean = index == 0 || master.u32(0..100) < 40;
                let text = index > 0 && master.u32(0..100) < 30;
                Slot {
                    scanner: Scanner::new(
                        1000 + index as u32,
                        clean,
                        garbage,
                        text,
                        quota,
                        master.fork(),
                    ),
                    socket: Socket::default(),
                    framing: if text {
                        Framing::Text(text_profile.clone())
                    } else {
                        Framing::Binary
                    },
                    session: None,
                    reconnect_at: Some(epoch),
                    log: Vec::new(),
                }
            })
            .collect();
        let (sender, receiver) = batch_queue(
            settings.queue_batches_max,
            settings.batch_parcels_max,
            // Carry the scans' facts as the daemon does with sort events on.
            true,
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
        let chute_states = Arc::new(ChuteStateTable::new());
        let egress = EgressCore::new(
            HostLink::new(settings.host, epoch),
            finalizer,
            Arc::clone(&chute_states),
        );
        let plc = Plc::new(
            settings.peer,
            settings.chute_event_per_mille,
            plc_rng,
            epoch,
        );
        let transport = Transport::new(settings.pipe_bytes_max, settings.faults, transport_rng);
        let events = if mode == Mode::Chaos {
            let event_settings = EventSettings::draw(&mut events_rng);
            Some(
                EventSide::new(event_settings, options.planted_bug, events_rng, epoch)
                    .map_err(|detail| checker.violation(Promise::JournalDurable, detail))?,
            )
        } else {
            None
        };
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
            chute_states,
            slots,
            sink: SimSink {
                batch: sender.empty_batch(),
                sender,
                handed_off: 0,
                bug: options.planted_bug,
            },
            next_synthetic_parcel_id: 1 << 63,
            blocked: false,
            turn_start: 0,
            last_sweep: epoch,
            receiver,
            egress,
            finalized: 0,
            outbound: Vec::new(),
            transport,
            plc,
            settings,
            events,
            crash: None,
            dying: false,
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
                        "did not drain: in flight {}, host unacked {}, link {:?}, transport \
                         connected {} connecting {}, PLC peer {:?}",
                        self.in_flight(),
                        self.egress.link().unacked(),
                        self.egress.link().state(),
                        self.transport.connected,
                        self.transport.connecting,
                        self.plc.peer().state()
                    ),
                ));
            }
        }
        self.checker.check_drained(self.in_flight())?;
        self.drain_export()?;
        self.counts.emitted_valid = self
            .slots
            .iter()
            .map(|slot| slot.scanner.emitted_valid)
            .sum();
        self.counts.text_scanners =
            self.slots.iter().filter(|slot| slot.scanner.text).count() as u64;
        let link_stats = self.egress.link().stats();
        self.counts.link_ups = link_stats.link_ups;
        self.counts.held = link_stats.held;
        self.counts.held_expired = link_stats.held_expired;
        self.counts.steps = self.checker.step;
        self.counts.confirms = self.plc.model.confirms_sent();
        self.counts.plc_restarts = self.plc.model.restarts();
        self.counts.chutes_kept_across_plc_restarts = self.plc.model.chutes_kept_across_restarts();
        self.counts.chute_states_disagreeing = self.chute_states_disagreeing();
        self.counts.lost_in_crash = self.checker.lost_in_crash;
        if let Some(events) = self.events.take() {
            self.counts.events = events.counts;
            events.close();
        }
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
            actuated_again_after_restart: checker.actuated_again_after_restart,
            logs: self
                .slots
                .into_iter()
                .map(|slot| (slot.scanner.scanner_id, slot.scanner.clean, slot.log))
                .collect(),
        })
    }

    /// After the drain: the NATS side heals and the exporter catches up; then the
    /// journal and the stream are compared.
    fn drain_export(&mut self) -> Result<(), Violation> {
        let Some(events) = self.events.as_mut() else {
            return Ok(());
        };
        events.heal();
        events.write();
        let mut steps = 0;
        while !events.export_settled() {
            steps += 1;
            if steps > DRAIN_STEPS_MAX {
                return Err(self.checker.violation(
                    Promise::ExportExactlyOnce,
                    "the exporter did not catch up with the journal".into(),
                ));
            }
            self.checker.step += 1;
            self.now += Duration::from_millis(self.rng.u64(1..=self.settings.step_ms_max));
            self.checker.at_ms = self.now.saturating_duration_since(self.epoch).as_millis() as u64;
            events.fsync_turn(self.now);
            events.export_turn(self.now, None, &mut self.checker)?;
        }
        events.check_final(&mut self.checker)
    }

    /// Whether sortd dies at `point` of this step (or died earlier in it).
    fn dies_at(&mut self, point: CrashPoint) -> bool {
        if self.crash.is_some_and(|(at, _)| at == point) {
            self.dying = true;
        }
        self.dying
    }

    /// sortd died: everything in its memory is gone (sessions, batch, queue, the egress
    /// core with its window and duplicate memory, the exporter); the journal is checked,
    /// reopened and sorting goes on with a new PLC host session.
    fn restart_sortd(&mut self) -> Result<(), Violation> {
        let power_loss = self.crash.is_some_and(|(_, power)| power);
        self.crash = None;
        self.dying = false;
        let in_flight = self.in_flight();
        self.checker.on_sortd_crash(in_flight);
        self.checker.trace(80, &[in_flight, u64::from(power_loss)]);
        if let Some(events) = self.events.as_mut() {
            events.crash(self.now, power_loss, &mut self.checker)?;
        }
        // The connections die with the process: no salvage of what they held.
        for slot in &mut self.slots {
            if slot.session.take().is_some() {
                self.counts.connections_closed += 1;
                slot.socket = Socket::default();
                slot.scanner.on_closed();
                let delay = Duration::from_millis(slot.scanner.rng.u64(1..=60));
                slot.reconnect_at = Some(self.now + delay);
            }
        }
        let (sender, receiver) = batch_queue(
            self.settings.queue_batches_max,
            self.settings.batch_parcels_max,
            true,
            Arc::new(NoWake) as Arc<dyn Wake>,
        );
        self.sink.batch = sender.empty_batch();
        self.sink.sender = sender;
        self.sink.handed_off = 0;
        self.receiver = receiver;
        self.finalized = 0;
        self.blocked = false;
        self.chute_states = Arc::new(ChuteStateTable::new());
        let duplicate_window = if self.bug == Some(PlantedBug::SkipDuplicateWindow) {
            Duration::ZERO
        } else {
            self.settings.duplicate_window
        };
        let host = LinkConfig {
            session: self.rng.u64(1..),
            first_seq: self.rng.u32(..),
            jitter_seed: self.rng.u64(..),
            ..self.settings.host
        };
        self.egress = EgressCore::new(
            HostLink::new(host, self.now),
            Finalizer::new(
                self.settings.deadline,
                duplicate_window,
                self.settings.duplicate_entries_max,
            ),
            Arc::clone(&self.chute_states),
        );
        // The socket to the PLC dies too; the PLC notices.
        self.outbound.clear();
        if self.transport.connected {
            self.transport.close();
            self.plc.peer().handle_disconnected(self.now);
        }
        self.transport.connecting = false;
        self.transport.closed_under_sortd = false;
        Ok(())
    }

    /// Decisions made at ingress whose fate is not reported yet: in the batch, in the
    /// queue, taken by the egress core, or finalized with their SORT held by the link
    /// while it is down (their fate comes when the link releases or expires them).
    fn in_flight(&self) -> u64 {
        self.sink.batch.len() as u64 + self.sink.handed_off.saturating_sub(self.finalized)
    }

    fn is_quiescent(&self) -> bool {
        self.slots.iter().all(|slot| {
            slot.socket.is_empty()
                && slot
                    .session
                    .as_ref()
                    .is_none_or(|session| session.unread_bytes() == 0)
        }) && self.in_flight() == 0
            && self.egress.link().state() == LinkState::Established
            && self.egress.link().unacked() == 0
            && self.outbound.is_empty()
            && self.plc.is_settled()
            && self.transport.to_plc.len() == 0
            && self.transport.to_host.len() == 0
    }

    /// Chutes whose state in sortd's table differs from the PLC's, once drained: the
    /// PLC's announcements (after a restart of either side) must have brought sortd level.
    fn chute_states_disagreeing(&self) -> u64 {
        let plc: std::collections::BTreeMap<_, _> =
            self.plc.model.peer().chutes_unavailable().collect();
        let sortd: std::collections::BTreeMap<_, _> = self.chute_states.unavailable().collect();
        plc.keys()
            .chain(sortd.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|chute| plc.get(chute) != sortd.get(chute))
            .count() as u64
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
        if !self.dying {
            self.plc
                .turn(self.now, &mut self.transport, &mut self.checker)?;
            self.egress_turn()?;
        }
        if !self.dying {
            self.events_turn()?;
        }
        if self.dying || self.crash.is_some() {
            self.restart_sortd()?;
        }
        self.check_step()
    }

    /// The journal's group commit and the exporter's turn (threads of their own in the
    /// daemon), with their crash points.
    fn events_turn(&mut self) -> Result<(), Violation> {
        let Some(events) = self.events.as_mut() else {
            return Ok(());
        };
        events.fsync_turn(self.now);
        if self.dies_at(CrashPoint::AfterFsync) {
            return Ok(());
        }
        let stop_at = self
            .crash
            .map(|(point, _)| point)
            .filter(|point| matches!(point, CrashPoint::AfterPublish | CrashPoint::AfterAck));
        let Some(events) = self.events.as_mut() else {
            return Ok(());
        };
        events.export_turn(self.now, stop_at, &mut self.checker)?;
        if stop_at.is_some() {
            self.dying = true;
        }
        Ok(())
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
        let restart = self.rng.u32(0..1000) < self.settings.restart_per_mille;
        let crash = self.rng.u32(0..1000) < self.settings.crash_per_mille;
        let crash_point = CrashPoint::ALL[self.rng.usize(0..CrashPoint::ALL.len())];
        let power_loss = self.rng.u32(0..100) < self.settings.power_loss_per_cent;
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
            self.plc.peer().handle_disconnected(self.now);
        }
        if outage {
            self.transport.unreachable_until = Some(self.now + Duration::from_millis(outage_ms));
            if self.transport.connected {
                self.transport.close();
                self.transport.closed_under_sortd = true;
                self.plc.peer().handle_disconnected(self.now);
            }
        }
        if pause {
            self.plc.reading_paused_until = Some(self.now + Duration::from_millis(pause_ms));
        }
        if restart {
            self.plc
                .restart(self.now, &mut self.transport, &mut self.checker);
        }
        if crash && self.events.is_some() {
            self.crash = Some((crash_point, power_loss));
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
        let limits = SessionLimits {
            buffer_bytes: self.settings.buffer_bytes,
            frame_deadline: self.settings.frame_deadline,
            idle_timeout: self.settings.idle_timeout,
        };
        for slot in &mut self.slots {
            if slot.session.is_none() {
                if slot.reconnect_at.is_some_and(|at| at <= now) {
                    slot.reconnect_at = None;
                    slot.socket = Socket::default();
                    // Text telegrams carry no scanner id: the listener names it.
                    let scanner_id = if slot.scanner.text {
                        slot.scanner.scanner_id
                    } else {
                        0
                    };
                    slot.session = Some(ScannerSession::new(
                        slot.framing.clone(),
                        scanner_id,
                        limits,
                        now,
                    ));
                    slot.scanner.on_connected(&mut slot.socket);
                }
                continue;
            }
            slot.scanner.produce(&mut slot.socket);
            let chunk = slot.scanner.rng.usize(1..=slot.scanner.chunk_bytes_max);
            slot.socket.arrive(chunk);
        }
    }

    /// One turn of the ingress worker, as `IngressWorker::run`'s loop body: each
    /// connection gets a turn of its session, round robin.
    fn ingress_turn(&mut self) -> Result<(), Violation> {
        if self.blocked && !self.sink.flush() {
            self.counts.blocked_turns += 1;
            return Ok(());
        }
        let plan: Arc<PlanView> = self.plan.view().clone();
        self.blocked = false;
        let count = self.slots.len();
        for offset in 0..count {
            let index = (self.turn_start + offset) % count;
            match self.serve(index, &plan)? {
                Some(Served::Blocked) => {
                    self.blocked = true;
                    self.turn_start = index;
                    break;
                }
                Some(Served::Closed) => self.close(index),
                Some(Served::Drained | Served::More) | None => {}
            }
        }
        if !self.blocked {
            self.turn_start = (self.turn_start + 1) % count.max(1);
            if !self.sink.flush() {
                self.blocked = true;
            }
        }
        if self.now.saturating_duration_since(self.last_sweep) >= SWEEP_INTERVAL {
            for slot in &mut self.slots {
                if let Some(session) = slot.session.as_mut() {
                    session.handle_timeout(self.now);
                }
            }
            self.last_sweep = self.now;
        }
        Ok(())
    }

    /// One turn of scanner `index`'s session, reading from its simulated socket.
    fn serve(&mut self, index: usize, plan: &PlanView) -> Result<Option<Served>, Violation> {
        let Some(slot) = self.slots.get_mut(index) else {
            return Ok(None);
        };
        let Slot {
            scanner,
            socket,
            session,
            log,
            ..
        } = slot;
        let Some(session) = session.as_mut() else {
            return Ok(None);
        };
        let mut decider = Decider {
            plan,
            chute_states: &self.chute_states,
            synthetic_parcel_id: &mut self.next_synthetic_parcel_id,
        };
        let mut checks = SessionChecks {
            checker: &mut self.checker,
            published_version: self.published_version,
            log: scanner.clean.then_some(log),
            bytes_skipped: &mut self.counts.bytes_skipped,
            decode_error: false,
            violation: None,
        };
        let served = session.serve(
            self.now,
            |spare| match socket.read(spare) {
                Read::Data(count) => ReadResult::Data(count),
                Read::WouldBlock => ReadResult::WouldBlock,
                Read::Closed => ReadResult::Eof,
            },
            &mut decider,
            &mut self.sink,
            &mut checks,
        );
        if let Some(violation) = checks.violation {
            return Err(violation);
        }
        if checks.decode_error && self.bug == Some(PlantedBug::GarbageClearsEveryBuffer) {
            // The transport double's bug: one connection's garbage loses every other
            // connection's bytes in flight.
            for (other, slot) in self.slots.iter_mut().enumerate() {
                if other != index {
                    slot.socket.discard();
                }
            }
        }
        Ok(Some(served))
    }

    /// sortd closes a scanner connection (EOF, error, expiry): the unread bytes count as
    /// skipped, and the scanner will connect again.
    fn close(&mut self, index: usize) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if let Some(mut session) = slot.session.take() {
            let mut checks = SessionChecks {
                checker: &mut self.checker,
                published_version: self.published_version,
                log: None,
                bytes_skipped: &mut self.counts.bytes_skipped,
                decode_error: false,
                violation: None,
            };
            session.close(now, &mut checks);
            self.counts.connections_closed += 1;
            self.checker.trace(40, &[index as u64]);
        }
        slot.socket = Socket::default();
        slot.scanner.on_closed();
        let delay = Duration::from_millis(slot.scanner.rng.u64(1..=60));
        slot.reconnect_at = Some(now + delay);
    }

    /// One turn of the PLC thread, as `Egress::run`'s loop body and its stream event.
    fn egress_turn(&mut self) -> Result<(), Violation> {
        if self.dying {
            return Ok(());
        }
        if let Some(journal) = self.events.as_mut().and_then(EventSide::journal) {
            journal.start_turn(self.now, self.checker.at_ms * 1000);
        }
        self.pump()?;
        self.drive_link()?;
        self.flush_outbound();
        if self.dying {
            return Ok(());
        }
        if self.transport.connecting {
            self.transport.connecting = false;
            if self.transport.is_reachable(self.now) {
                self.transport.connected = true;
                self.transport.closed_under_sortd = false;
                self.egress.link_mut().handle_connected(self.now);
                self.plc.peer().handle_connected(self.now);
                self.checker.trace(50, &[]);
            } else {
                self.egress.link_mut().handle_disconnected(self.now);
            }
        }
        self.read_stream()?;
        self.flush_outbound();
        Ok(())
    }

    /// The egress observer: the checker, and the journal hook when events are on.
    fn egress_checks<'a>(
        checker: &'a mut Checker,
        events: &'a mut Option<EventSide>,
        finalized: &'a mut u64,
    ) -> EgressChecks<'a> {
        EgressChecks {
            checker,
            journal: events.as_mut().and_then(EventSide::journal),
            finalized,
            sent: None,
            decided_at_us: 0,
            violation: None,
        }
    }

    /// The egress core's pump, its fates fed to the checker.
    fn pump(&mut self) -> Result<(), Violation> {
        let decided_at_us = self.checker.at_ms * 1000;
        let mut resubmit = Vec::new();
        let mut checks =
            Self::egress_checks(&mut self.checker, &mut self.events, &mut self.finalized);
        checks.sent = (self.bug == Some(PlantedBug::DoubleSubmit)).then_some(&mut resubmit);
        checks.decided_at_us = decided_at_us;
        self.egress
            .pump(self.now, decided_at_us, &self.receiver, &mut checks);
        if let Some(violation) = checks.violation {
            return Err(violation);
        }
        // The double-submit bug: every SORT goes into the link a second time.
        let deadline = self.now + self.settings.deadline;
        for command in resubmit {
            let _ = self.egress.link_mut().submit(command, deadline);
        }
        Ok(())
    }

    /// As `Egress::drive_link`: timers, events (held decisions settled among them, their
    /// fates checked), and what they ask of the transport.
    fn drive_link(&mut self) -> Result<(), Violation> {
        self.egress.handle_timeout(self.now);
        loop {
            let mut checks =
                Self::egress_checks(&mut self.checker, &mut self.events, &mut self.finalized);
            let action = self.egress.poll_action(self.now, &mut checks);
            if let Some(violation) = checks.violation {
                return Err(violation);
            }
            match action {
                Some(LinkAction::Connect) => {
                    // Dial: the connection completes (or fails) at the next turn.
                    self.drop_connection(false);
                    self.transport.connecting = true;
                    self.checker.trace(60, &[]);
                }
                Some(LinkAction::Disconnect) => self.drop_connection(false),
                None => return Ok(()),
            }
        }
    }

    /// sortd closes its end; `tell_link` when the link does not know yet.
    fn drop_connection(&mut self, tell_link: bool) {
        self.outbound.clear();
        if self.transport.connected {
            self.transport.close();
            self.plc.peer().handle_disconnected(self.now);
            if tell_link {
                self.egress.link_mut().handle_disconnected(self.now);
            }
        }
    }

    /// As `Egress::flush_outbound`: the turn's events to the journal first, then new
    /// telegrams only once the earlier ones are written. A crash may fall before,
    /// between and after the two.
    fn flush_outbound(&mut self) {
        if self.dies_at(CrashPoint::BeforeFlush) {
            return;
        }
        let journal_first = self.bug != Some(PlantedBug::JournalAfterSend);
        if journal_first {
            self.write_journal();
        } else {
            self.send_outbound();
        }
        if self.dies_at(CrashPoint::MidFlush) {
            return;
        }
        if journal_first {
            self.send_outbound();
        } else {
            self.write_journal();
        }
        self.dies_at(CrashPoint::AfterFlush);
    }

    fn write_journal(&mut self) {
        if let Some(events) = self.events.as_mut() {
            events.write();
        }
    }

    /// Hands what the link has to send to the pipe; the SORTs that left are noted.
    fn send_outbound(&mut self) {
        if !self.transport.connected {
            return;
        }
        if self.outbound.is_empty() {
            self.egress
                .link_mut()
                .poll_transmit(self.now, &mut self.outbound);
        }
        let Transport {
            to_plc,
            faults,
            rng,
            ..
        } = &mut self.transport;
        let taken = to_plc.send(self.now, &self.outbound, faults, rng);
        let taken = taken.min(self.outbound.len());
        if let Some(events) = self.events.as_mut() {
            let left = self
                .outbound
                .get(..taken)
                .unwrap_or_default()
                .chunks(TELEGRAM_BYTES)
                .filter_map(|telegram| match Telegram::decode(telegram) {
                    Ok(Telegram::Sort { seq, sort }) => {
                        Some::<SortKey>((sort.scanner_id, sort.parcel_id, seq))
                    }
                    _ => None,
                });
            events.sorts_left(left);
        }
        self.outbound.drain(..taken);
    }

    /// As `Egress::read_stream`: read while the link has room.
    fn read_stream(&mut self) -> Result<(), Violation> {
        if self.transport.closed_under_sortd {
            self.transport.closed_under_sortd = false;
            self.outbound.clear();
            self.egress.link_mut().handle_disconnected(self.now);
            return Ok(());
        }
        if !self.transport.connected {
            return Ok(());
        }
        loop {
            let room = self
                .egress
                .link()
                .receive_room()
                .min(READ_CHUNK_BYTES)
                .min(self.transport.chunk());
            let bytes = self.transport.to_host.take(self.now, room);
            if bytes.is_empty() {
                return Ok(());
            }
            self.egress.link_mut().handle_input(self.now, &bytes);
            self.drive_link()?;
            if !self.transport.connected || self.dying {
                return Ok(());
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
            if let Some(session) = &slot.session {
                bounds(
                    "a connection buffer",
                    session.unread_bytes(),
                    self.settings.buffer_bytes,
                )?;
            }
            bounds("a scanner socket", slot.socket.len(), SOCKET_BYTES_MAX)?;
        }
        bounds(
            "the ingress batch",
            self.sink.batch.len(),
            self.settings.batch_parcels_max,
        )?;
        bounds(
            "the hand-off queue",
            self.sink.sender.queued(),
            self.settings.queue_batches_max,
        )?;
        bounds(
            "the PLC window (unacknowledged and held SORTs)",
            self.egress.link().unacked() + self.egress.link().held(),
            self.settings.host.window_max,
        )?;
        if self.egress.held() != self.egress.link().held() {
            return Err(self.checker.violation(
                Promise::Accounting,
                format!(
                    "the core holds {} decisions, the link {} SORTs",
                    self.egress.held(),
                    self.egress.link().held()
                ),
            ));
        }
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

/// Hooks for the drift tests: a world whose scanners stay quiet, fed hand-made bytes.
#[cfg(test)]
impl World<'_> {
    pub(super) fn quiet_for_test(&mut self, buffer_bytes: usize) {
        self.settings.buffer_bytes = buffer_bytes;
        self.settings.disconnect_per_mille = 0;
        self.settings.swap_per_mille = 0;
        for slot in &mut self.slots {
            slot.scanner.quota = 0;
        }
    }

    pub(super) fn step_for_test(&mut self) -> Result<(), Violation> {
        self.step(true)
    }

    /// Writes `bytes` to scanner `index`'s socket, all arrived; `hang_up` closes it after.
    pub(super) fn write_for_test(&mut self, index: usize, bytes: &[u8], hang_up: bool) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.socket.write(bytes);
            slot.socket.arrive(SOCKET_BYTES_MAX);
            slot.socket.hung_up = hang_up;
        }
    }

    /// Makes scanner `index` a text scanner (`sick-clv`) from its next connection on,
    /// and closes its current one.
    pub(super) fn make_text_for_test(&mut self, index: usize) {
        if let Some(profile) = TextProfile::builtin(TEXT_PROFILE) {
            if let Some(slot) = self.slots.get_mut(index) {
                slot.framing = Framing::Text(profile);
                slot.scanner.text = true;
            }
            self.close(index);
        }
    }

    /// Scans decided at ingress so far.
    pub(super) fn decided_for_test(&self) -> u64 {
        self.checker.received
    }

    /// Scanner connections sortd closed so far.
    pub(super) fn closed_for_test(&self) -> u64 {
        self.counts.connections_closed
    }
}
