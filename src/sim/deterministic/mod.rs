//! A deterministic simulation of sortd's core, in the manner of FoundationDB's and
//! TigerBeetle's: the daemon's sans-IO core (scanner sessions deciding against the
//! published plan, the batch hand-off, the egress core with its duplicate window,
//! deadline and PLC link) driven as the daemon drives it, surrounded by simulated
//! scanners, a simulated PLC and plan swaps, on a virtual clock, with every random
//! choice drawn from one seed.
//!
//! After every step the checker tests the six promises of README's "Guarantees"; a run
//! that breaks one stops with a [`SimFailure`] naming the seed, and the same seed
//! replays the same run exactly (the run's event trace is digested into
//! [`SeedReport::digest`]). Promise 4 is checked by running the seed twice more without
//! the chute and backpressure couplings, once with and once without the misbehaving
//! scanners' garbage, and comparing what every clean scanner got.
//!
//! The loops are not copied: `world.rs` drives the daemon's own [`crate::core`] (scanner
//! sessions, the egress core) as the mio shells in `net/` do, and the simulated PLC is
//! the same [`crate::sim::plc_model::PlcModel`] that `sortd plc-sim` runs. Scanners speak
//! the binary frame or a text profile; the PLC may restart and forget. Not simulated:
//! sockets, threads and the scheduling of the mio loops themselves. The simulation reads
//! no clock: the caller gives it an epoch.

mod check;
#[cfg(test)]
mod drift_tests;
mod events;
mod fixtures;
mod link;
mod scanner;
mod world;

use std::time::Instant;

pub use check::{Promise, Violation};
pub use fixtures::{FixtureError, PlanFixtures};

use world::{Mode, RunOutcome, World};

/// A bug the simulator plants on purpose, to prove the checker catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Decisions bypass the duplicate window (breaks promise 2).
    SkipDuplicateWindow,
    /// Every SORT is submitted to the PLC link twice (breaks promise 2).
    DoubleSubmit,
    /// A batch the full hand-off queue refuses is dropped (breaks promise 3).
    DropBatchWhenQueueFull,
    /// A decode error on one connection discards every connection's unread bytes
    /// (breaks promise 4).
    GarbageClearsEveryBuffer,
    /// Plans are published after the cheap open checks, without `verify` (breaks
    /// promise 5).
    PublishWithoutVerify,
    /// Ingress keeps filling its batch when the hand-off queue is full (breaks
    /// promise 6).
    IgnoreBackpressure,
    /// The PLC thread writes the turn's events after its SORTs left, not before (breaks
    /// promise 7 at a crash between the two).
    JournalAfterSend,
    /// The exporter resumes from its local cursor, never asking the stream for its last
    /// event id (breaks promise 8 after a crash or an outage longer than the duplicate
    /// window).
    ExportResumesFromCursor,
}

impl PlantedBug {
    /// Every plantable bug.
    pub const ALL: [PlantedBug; 8] = [
        PlantedBug::SkipDuplicateWindow,
        PlantedBug::DoubleSubmit,
        PlantedBug::DropBatchWhenQueueFull,
        PlantedBug::GarbageClearsEveryBuffer,
        PlantedBug::PublishWithoutVerify,
        PlantedBug::IgnoreBackpressure,
        PlantedBug::JournalAfterSend,
        PlantedBug::ExportResumesFromCursor,
    ];

    /// The promise this bug breaks.
    pub const fn breaks(self) -> Promise {
        match self {
            PlantedBug::SkipDuplicateWindow | PlantedBug::DoubleSubmit => {
                Promise::NoDoubleActuation
            }
            PlantedBug::DropBatchWhenQueueFull => Promise::Accounting,
            PlantedBug::GarbageClearsEveryBuffer => Promise::Isolation,
            PlantedBug::PublishWithoutVerify => Promise::VerifiedPlansOnly,
            PlantedBug::IgnoreBackpressure => Promise::MemoryBounds,
            PlantedBug::JournalAfterSend => Promise::JournalDurable,
            PlantedBug::ExportResumesFromCursor => Promise::ExportExactlyOnce,
        }
    }

    /// The kebab-case name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            PlantedBug::SkipDuplicateWindow => "skip-duplicate-window",
            PlantedBug::DoubleSubmit => "double-submit",
            PlantedBug::DropBatchWhenQueueFull => "drop-batch-when-queue-full",
            PlantedBug::GarbageClearsEveryBuffer => "garbage-clears-every-buffer",
            PlantedBug::PublishWithoutVerify => "publish-without-verify",
            PlantedBug::IgnoreBackpressure => "ignore-backpressure",
            PlantedBug::JournalAfterSend => "journal-after-send",
            PlantedBug::ExportResumesFromCursor => "export-resumes-from-cursor",
        }
    }

    /// The bug called `name`.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// What a simulation run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// Valid scans the scanners send per run (split between them).
    pub parcels_per_seed: u64,
    /// Also run the isolation check (two more runs of the seed).
    pub isolation_check: bool,
    /// A bug to plant, for testing the checker.
    pub planted_bug: Option<PlantedBug>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            parcels_per_seed: 200,
            isolation_check: true,
            planted_bug: None,
        }
    }
}

/// What one seed did, when every promise held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Digest of the chaos run's event trace: equal digests, equal runs.
    pub digest: u64,
    /// Valid scan frames the scanners sent (duplicates included).
    pub scans_sent: u64,
    /// Scan frames decoded, each decided once.
    pub scans_decoded: u64,
    /// Decisions sent to the PLC.
    pub sent: u64,
    /// Decisions marked duplicate.
    pub duplicates: u64,
    /// Decisions counted undelivered (the window full while the PLC link was down, or
    /// held by the link past their deadline).
    pub undelivered: u64,
    /// Decisions the PLC link held while down (released after the resync or expired).
    pub held: u64,
    /// Held decisions whose deadline passed before the link came back (never sent).
    pub held_expired: u64,
    /// Decisions that missed their deadline.
    pub late: u64,
    /// SORTs the PLC received.
    pub actuated: u64,
    /// SORTs a restarted PLC received again (it forgot them; PROTOCOL.md allows it).
    pub actuated_again_after_restart: u64,
    /// PLC power cycles (memory lost).
    pub plc_restarts: u64,
    /// Chutes not available that PLC power cycles kept (summed over the restarts): the
    /// PLC announces them to sortd again.
    pub chutes_kept_across_plc_restarts: u64,
    /// Chutes whose state sortd and the PLC disagree on at the end of the run (must be 0).
    pub chute_states_disagreeing: u64,
    /// Scanners speaking a text profile.
    pub text_scanners: u64,
    /// Bytes the decoder skipped (garbage, corrupt and cut-off frames).
    pub bytes_skipped: u64,
    /// Plan swaps published and refused.
    pub swaps_published: u64,
    /// Corrupt plans refused.
    pub swaps_refused: u64,
    /// Ingress turns spent blocked by a full hand-off queue (backpressure).
    pub blocked_turns: u64,
    /// Scanner connections sortd closed (hang-ups, deadlines, idle).
    pub connections_closed: u64,
    /// Times the PLC link came up.
    pub link_ups: u64,
    /// Steps of the chaos run.
    pub steps: u64,
    /// Clean scanners compared by the isolation check.
    pub isolation_scanners_compared: u64,
    /// sortd crashes (kill -9 and power loss).
    pub sortd_crashes: u64,
    /// Of those, power losses.
    pub power_losses: u64,
    /// Decisions in flight inside sortd when it crashed (lost with the process).
    pub lost_in_crash: u64,
    /// Events in the journal at the end of the run.
    pub events_journaled: u64,
    /// Events the stream holds at the end (equal to the journal's, or the run fails).
    pub events_in_stream: u64,
    /// NATS messages the stream stored.
    pub nats_messages: u64,
    /// Publishes the stream acknowledged as duplicates (`Nats-Msg-Id`).
    pub nats_duplicates_refused: u64,
    /// Connections the exporter lost (drops and stream restarts).
    pub nats_connection_losses: u64,
    /// Torn or corrupt journal tails cut at a restart.
    pub torn_tails_cut: u64,
    /// Journal segments set aside at a restart (after a power loss's gap across a roll,
    /// or with a header cut short).
    pub segments_set_aside: u64,
}

impl SeedReport {
    /// Adds `other`'s counts to these totals (the seed and digest stay).
    pub fn add(&mut self, other: &SeedReport) {
        let SeedReport {
            seed: _,
            digest: _,
            scans_sent,
            scans_decoded,
            sent,
            duplicates,
            undelivered,
            held,
            held_expired,
            late,
            actuated,
            actuated_again_after_restart,
            plc_restarts,
            chutes_kept_across_plc_restarts,
            chute_states_disagreeing,
            text_scanners,
            bytes_skipped,
            swaps_published,
            swaps_refused,
            blocked_turns,
            connections_closed,
            link_ups,
            steps,
            isolation_scanners_compared,
            sortd_crashes,
            power_losses,
            lost_in_crash,
            events_journaled,
            events_in_stream,
            nats_messages,
            nats_duplicates_refused,
            nats_connection_losses,
            torn_tails_cut,
            segments_set_aside,
        } = other;
        self.scans_sent += scans_sent;
        self.scans_decoded += scans_decoded;
        self.sent += sent;
        self.duplicates += duplicates;
        self.undelivered += undelivered;
        self.held += held;
        self.held_expired += held_expired;
        self.late += late;
        self.actuated += actuated;
        self.actuated_again_after_restart += actuated_again_after_restart;
        self.plc_restarts += plc_restarts;
        self.chutes_kept_across_plc_restarts += chutes_kept_across_plc_restarts;
        self.chute_states_disagreeing += chute_states_disagreeing;
        self.text_scanners += text_scanners;
        self.bytes_skipped += bytes_skipped;
        self.swaps_published += swaps_published;
        self.swaps_refused += swaps_refused;
        self.blocked_turns += blocked_turns;
        self.connections_closed += connections_closed;
        self.link_ups += link_ups;
        self.steps += steps;
        self.isolation_scanners_compared += isolation_scanners_compared;
        self.sortd_crashes += sortd_crashes;
        self.power_losses += power_losses;
        self.lost_in_crash += lost_in_crash;
        self.events_journaled += events_journaled;
        self.events_in_stream += events_in_stream;
        self.nats_messages += nats_messages;
        self.nats_duplicates_refused += nats_duplicates_refused;
        self.nats_connection_losses += nats_connection_losses;
        self.torn_tails_cut += torn_tails_cut;
        self.segments_set_aside += segments_set_aside;
    }
}

/// A broken promise and the seed that breaks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed: `sortd simulate --seeds 1 --first-seed SEED` replays it.
    pub seed: u64,
    /// Which run of the seed: "chaos", "isolation" or "isolation reference".
    pub run: &'static str,
    /// What broke.
    pub violation: Violation,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} ({} run): {}; replay: sortd simulate --seeds 1 --first-seed {}",
            self.seed, self.run, self.violation, self.seed
        )
    }
}

impl std::error::Error for SimFailure {}

/// The simulator: plan fixtures written once, an epoch for the virtual clock.
#[derive(Debug)]
pub struct Simulator {
    fixtures: PlanFixtures,
    epoch: Instant,
}

impl Simulator {
    /// Writes the plan fixtures to a temporary folder. `epoch` is any instant: the
    /// virtual clock starts there and only differences are ever used.
    pub fn new(epoch: Instant) -> Result<Simulator, FixtureError> {
        Ok(Simulator {
            fixtures: PlanFixtures::create()?,
            epoch,
        })
    }

    fn run(&self, seed: u64, mode: Mode, options: &SimOptions) -> Result<RunOutcome, SimFailure> {
        let run = match mode {
            Mode::Chaos => "chaos",
            Mode::Isolation { garbage: true } => "isolation",
            Mode::Isolation { garbage: false } => "isolation reference",
        };
        World::new(seed, mode, options, &self.fixtures, self.epoch)
            .and_then(World::run)
            .map_err(|violation| SimFailure {
                seed,
                run,
                violation,
            })
    }

    /// Runs one seed and checks every promise.
    pub fn run_seed(&self, seed: u64, options: &SimOptions) -> Result<SeedReport, SimFailure> {
        let chaos = self.run(seed, Mode::Chaos, options)?;
        let mut report = SeedReport {
            seed,
            digest: chaos.digest,
            scans_sent: chaos.counts.emitted_valid,
            scans_decoded: chaos.received,
            sent: chaos.sent,
            duplicates: chaos.duplicates,
            undelivered: chaos.undelivered,
            held: chaos.counts.held,
            held_expired: chaos.counts.held_expired,
            late: chaos.late,
            actuated: chaos.actuated,
            actuated_again_after_restart: chaos.actuated_again_after_restart,
            plc_restarts: chaos.counts.plc_restarts,
            chutes_kept_across_plc_restarts: chaos.counts.chutes_kept_across_plc_restarts,
            chute_states_disagreeing: chaos.counts.chute_states_disagreeing,
            text_scanners: chaos.counts.text_scanners,
            bytes_skipped: chaos.counts.bytes_skipped,
            swaps_published: chaos.counts.swaps_published,
            swaps_refused: chaos.counts.swaps_refused,
            blocked_turns: chaos.counts.blocked_turns,
            connections_closed: chaos.counts.connections_closed,
            link_ups: chaos.counts.link_ups,
            steps: chaos.counts.steps,
            isolation_scanners_compared: 0,
            sortd_crashes: chaos.counts.events.crashes,
            power_losses: chaos.counts.events.power_losses,
            lost_in_crash: chaos.counts.lost_in_crash,
            events_journaled: chaos.counts.events.events_journaled,
            events_in_stream: chaos.counts.events.events_in_stream,
            nats_messages: chaos.counts.events.messages_stored,
            nats_duplicates_refused: chaos.counts.events.duplicates_refused,
            nats_connection_losses: chaos.counts.events.nats_losses,
            torn_tails_cut: chaos.counts.events.torn_tails_cut,
            segments_set_aside: chaos.counts.events.segments_set_aside,
        };
        if options.isolation_check {
            report.isolation_scanners_compared = self.check_isolation(seed, options)?;
        }
        Ok(report)
    }

    /// Promise 4: every clean scanner gets the same decisions with and without the
    /// other scanners' garbage. Returns how many scanners were compared.
    fn check_isolation(&self, seed: u64, options: &SimOptions) -> Result<u64, SimFailure> {
        let with_garbage = self.run(seed, Mode::Isolation { garbage: true }, options)?;
        let without = self.run(seed, Mode::Isolation { garbage: false }, options)?;
        let mut compared = 0;
        for ((scanner_id, clean, got), (_, _, expected)) in
            with_garbage.logs.iter().zip(&without.logs)
        {
            if !clean {
                continue;
            }
            compared += 1;
            if got != expected {
                let at = got
                    .iter()
                    .zip(expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(expected.len()));
                return Err(SimFailure {
                    seed,
                    run: "isolation",
                    violation: Violation {
                        promise: Promise::Isolation,
                        step: 0,
                        at_ms: 0,
                        detail: format!(
                            "clean scanner {scanner_id} got {} decisions beside garbage and {} \
                             without; first difference at scan {at}: {:?} vs {:?}",
                            got.len(),
                            expected.len(),
                            got.get(at),
                            expected.get(at)
                        ),
                    },
                });
            }
        }
        Ok(compared)
    }
}
