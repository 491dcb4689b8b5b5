//! Live counters shared between the daemon's threads and whoever reads them (logs, the
//! metrics endpoint, tests).
//!
//! Threads accumulate locally and add here once per turn, not once per parcel, so
//! counting costs the hot path almost nothing. This module only counts; it formats
//! nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::decision::{ChuteNumber, Reason};
use crate::plc::LinkStats;

/// Ingress workers the liveness table has room for; `pipeline.workers` is validated
/// against it.
pub const INGRESS_WORKERS_MAX: usize = 64;
/// Every chute number a SORT can carry.
pub const CHUTE_NUMBERS: usize = 1 << ChuteNumber::BITS;

const _: () = assert!(CHUTE_NUMBERS == ChuteNumber::MAX as usize + 1);
const _: () = assert!(INGRESS_WORKERS_MAX >= 1);

/// Counters by decision reason, one slot per [`Reason::index`].
#[derive(Debug, Default)]
pub struct ByReason([AtomicU64; Reason::ALL.len()]);

impl ByReason {
    /// Adds `count` to `reason`.
    pub fn add(&self, reason: Reason, count: u64) {
        self.0[reason.index()].fetch_add(count, Ordering::Relaxed);
    }

    /// The count for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// The sum over every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|slot| slot.load(Ordering::Relaxed)).sum()
    }
}

/// A counter alone on its cache line, so threads bumping neighbouring counters every
/// turn do not contend for the line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// Adds one to a counter only one thread writes: a relaxed load and store, no locked
/// instruction. Readers see every value in order, possibly a turn late.
#[inline]
fn bump_single_writer(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// Loop turns per daemon thread: each thread adds one per turn of its event loop (a turn
/// ends at least every 50 ms even when idle), and the main thread feeds the systemd
/// watchdog only while every count moves.
#[derive(Debug)]
pub struct Liveness {
    plc: Padded,
    ingress: [Padded; INGRESS_WORKERS_MAX],
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            plc: Padded::default(),
            ingress: std::array::from_fn(|_| Padded::default()),
        }
    }
}

impl Liveness {
    /// The PLC thread finished a turn. Single writer: the PLC thread.
    pub fn plc_turn(&self) {
        bump_single_writer(&self.plc.0);
    }

    /// Ingress worker `index` finished a turn. Single writer: that worker.
    pub fn ingress_turn(&self, index: usize) {
        if let Some(slot) = self.ingress.get(index) {
            bump_single_writer(&slot.0);
        }
    }

    /// Turns of the PLC thread so far.
    pub fn plc_turns(&self) -> u64 {
        self.plc.0.load(Ordering::Relaxed)
    }

    /// Turns of ingress worker `index` so far (0 for an index beyond the table).
    pub fn ingress_turns(&self, index: usize) -> u64 {
        self.ingress
            .get(index)
            .map_or(0, |slot| slot.0.load(Ordering::Relaxed))
    }
}

/// SORTs handed to the PLC link, by chute: a dense table of every chute number (512 KiB).
///
/// Only the PLC thread writes it, so counting is a plain load and store of a relaxed
/// atomic (no locked instruction); readers may see a count one turn late, never a torn
/// one.
#[derive(Debug)]
pub struct ByChute(Box<[AtomicU64]>);

impl Default for ByChute {
    fn default() -> Self {
        ByChute((0..CHUTE_NUMBERS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl ByChute {
    /// Counts one SORT to `chute`. Single writer: the PLC thread.
    #[inline]
    pub fn count_one(&self, chute: ChuteNumber) {
        if let Some(slot) = self.0.get(usize::from(chute)) {
            slot.store(
                slot.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
    }

    /// SORTs to `chute` so far.
    pub fn get(&self, chute: ChuteNumber) -> u64 {
        self.0
            .get(usize::from(chute))
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }

    /// Every chute with at least one SORT, in chute order.
    pub fn nonzero(&self) -> impl Iterator<Item = (ChuteNumber, u64)> + '_ {
        (0..=ChuteNumber::MAX).filter_map(|chute| {
            let count = self.get(chute);
            (count > 0).then_some((chute, count))
        })
    }
}

/// The PLC link as the PLC thread last saw it, published once per turn (the link's own
/// counters are cumulative, so they are stored, not added).
#[derive(Debug, Default)]
pub struct PlcGauges {
    /// Whether SORTs flow (the link is established).
    pub link_up: AtomicBool,
    /// SORT telegrams sent and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Decision batches waiting for the PLC thread.
    pub queued_batches: AtomicU64,
    /// SORT telegrams sent for the first time.
    pub sent: AtomicU64,
    /// SORT telegrams sent again (ACK timeout or reconnect).
    pub retransmitted: AtomicU64,
    /// SORT telegrams acknowledged.
    pub acked: AtomicU64,
    /// ACKs that acknowledged nothing new.
    pub acks_duplicate: AtomicU64,
    /// SORTs submitted while the link was down, held until it came up (or expired).
    pub held: AtomicU64,
    /// Held SORTs whose deadline passed before the link came up; never sent.
    pub held_expired: AtomicU64,
    /// SORTs held now (the link is down).
    pub held_now: AtomicU64,
    /// Times the link came up.
    pub link_ups: AtomicU64,
    /// Times the link went down.
    pub link_downs: AtomicU64,
    /// 40-byte telegrams from the PLC that failed to decode.
    pub telegrams_bad: AtomicU64,
    /// Listen mode: PLC connections closed without touching the live session, by cause.
    pub refused: PlcRefusals,
}

/// Listen mode: PLC connections closed before they reached the link, by cause
/// (`sortd_plc_connections_refused_total{cause}`). Written by the PLC thread only.
#[derive(Debug, Default)]
pub struct PlcRefusals {
    /// The peer's address is not in `plc.allow`.
    pub address: AtomicU64,
    /// Its first telegram was not a valid PLC HELLO.
    pub bad_hello: AtomicU64,
    /// No HELLO before the deadline.
    pub hello_timeout: AtomicU64,
    /// It closed before saying HELLO.
    pub closed: AtomicU64,
    /// Every candidate slot was taken.
    pub busy: AtomicU64,
}

impl PlcRefusals {
    /// The counter for a cause label; `None` for an unknown label.
    pub fn by_cause(&self, cause: &str) -> Option<&AtomicU64> {
        match cause {
            "address" => Some(&self.address),
            "bad_hello" => Some(&self.bad_hello),
            "hello_timeout" => Some(&self.hello_timeout),
            "closed" => Some(&self.closed),
            "busy" => Some(&self.busy),
            _ => None,
        }
    }

    /// Every cause label with its count, in a fixed order.
    pub fn all(&self) -> [(&'static str, u64); 5] {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        [
            ("address", load(&self.address)),
            ("bad_hello", load(&self.bad_hello)),
            ("hello_timeout", load(&self.hello_timeout)),
            ("closed", load(&self.closed)),
            ("busy", load(&self.busy)),
        ]
    }
}

impl PlcGauges {
    fn store(&self, stats: &LinkStats, link_up: bool, in_flight: usize, held_now: usize) {
        let set = |gauge: &AtomicU64, value: u64| gauge.store(value, Ordering::Relaxed);
        self.link_up.store(link_up, Ordering::Relaxed);
        set(&self.in_flight, in_flight as u64);
        set(&self.held_now, held_now as u64);
        set(&self.held, stats.held);
        set(&self.held_expired, stats.held_expired);
        set(&self.sent, stats.sent);
        set(&self.retransmitted, stats.retransmitted);
        set(&self.acked, stats.acked);
        set(&self.acks_duplicate, stats.acks_duplicate);
        set(&self.link_ups, stats.link_ups);
        set(&self.link_downs, stats.link_downs);
        set(&self.telegrams_bad, stats.telegrams_bad);
    }
}

/// Scanner connections the per-scanner table has room for; connections beyond it are
/// served as usual and only missing from the table (counted in
/// [`ScannerTable::untracked`]).
pub const SCANNER_SLOTS_MAX: usize = 256;

/// One scanner connection in the [`ScannerTable`].
#[derive(Debug, Default)]
pub struct ScannerSlot {
    /// Bumped when a connection takes the slot and again when it leaves: odd while in
    /// use. Readers tell two connections that used the same slot apart by it.
    generation: AtomicU64,
    /// The scanner id the connection uses (from its HELLO, or its listener).
    scanner_id: AtomicU32,
    /// Scans decoded on the connection so far.
    scans: AtomicU64,
    /// Bad input on the connection so far (decode errors and truncated frames).
    bad_inputs: AtomicU64,
    /// Peer address; written at open only.
    peer: Mutex<Option<SocketAddr>>,
}

/// What a reader sees of one connected scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannerReading {
    /// Slot index.
    pub slot: usize,
    /// Tells connections that used the same slot apart.
    pub generation: u64,
    /// The scanner id.
    pub scanner_id: u32,
    /// The peer's address, if known.
    pub peer: Option<SocketAddr>,
    /// Scans decoded so far.
    pub scans: u64,
    /// Bad input counted so far.
    pub bad_inputs: u64,
}

/// Per-connection scanner figures for the operator page: a fixed table of
/// [`SCANNER_SLOTS_MAX`] slots, claimed at accept and freed at close. The ingress worker
/// that owns a connection is the only writer of its slot.
#[derive(Debug)]
pub struct ScannerTable {
    slots: Box<[ScannerSlot]>,
    untracked: AtomicU64,
}

impl Default for ScannerTable {
    fn default() -> Self {
        ScannerTable {
            slots: (0..SCANNER_SLOTS_MAX)
                .map(|_| ScannerSlot::default())
                .collect(),
            untracked: AtomicU64::new(0),
        }
    }
}

impl ScannerTable {
    /// Claims a slot for a new connection from `peer`; `None` (counted) when all are taken.
    pub fn open(&self, peer: SocketAddr) -> Option<usize> {
        for (index, slot) in self.slots.iter().enumerate() {
            let generation = slot.generation.load(Ordering::Acquire);
            if generation % 2 == 1 {
                continue;
            }
            if slot
                .generation
                .compare_exchange(
                    generation,
                    generation + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                slot.scanner_id.store(0, Ordering::Relaxed);
                slot.scans.store(0, Ordering::Relaxed);
                slot.bad_inputs.store(0, Ordering::Relaxed);
                if let Ok(mut stored) = slot.peer.lock() {
                    *stored = Some(peer);
                }
                return Some(index);
            }
        }
        Counters::add(&self.untracked, 1);
        None
    }

    /// Publishes a connection's scanner id and scan count (stored, not added).
    #[inline]
    pub fn publish(&self, slot: Option<usize>, scanner_id: u32, scans: u64) {
        if let Some(slot) = slot.and_then(|index| self.slots.get(index)) {
            slot.scanner_id.store(scanner_id, Ordering::Relaxed);
            slot.scans.store(scans, Ordering::Relaxed);
        }
    }

    /// Counts `count` bad inputs on a connection.
    pub fn bad_input(&self, slot: Option<usize>, count: u64) {
        if let Some(slot) = slot.and_then(|index| self.slots.get(index)) {
            slot.bad_inputs.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Frees a connection's slot.
    pub fn close(&self, slot: Option<usize>) {
        if let Some(slot) = slot.and_then(|index| self.slots.get(index)) {
            if let Ok(mut stored) = slot.peer.lock() {
                *stored = None;
            }
            slot.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Connections that found the table full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Every connection in the table now, in slot order.
    pub fn readings(&self) -> Vec<ScannerReading> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let generation = slot.generation.load(Ordering::Acquire);
                (generation % 2 == 1).then(|| ScannerReading {
                    slot: index,
                    generation,
                    scanner_id: slot.scanner_id.load(Ordering::Relaxed),
                    peer: slot.peer.lock().ok().and_then(|peer| *peer),
                    scans: slot.scans.load(Ordering::Relaxed),
                    bad_inputs: slot.bad_inputs.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

/// What the web endpoint refused, by cause (it counts; the exposition shows them).
#[derive(Debug, Default)]
pub struct WebCounters {
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Requests without valid basic-auth credentials (401).
    pub unauthorized: AtomicU64,
    /// Connections closed at accept because the connection limit was reached.
    pub refused_limit: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failed: AtomicU64,
    /// Connections dropped at the per-connection time limit.
    pub timed_out: AtomicU64,
}

/// The stages of a parcel's way through the daemon, each timed from the stamp before
/// it. One clock read per batch or per turn, not per parcel: every parcel of a batch is
/// counted with the batch's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// From the read that brought the batch's first frame to the batch's hand-off:
    /// decoding and deciding, and waiting for the rest of the read.
    Decide,
    /// From the hand-off to the turn of the PLC side that takes the batch: the queue
    /// and the PLC thread's wake-up (nothing in one-thread mode but the rest of the
    /// turn).
    Handoff,
    /// From the start of that turn to the return of the write that carries its SORTs:
    /// finalizing, the link and the socket write.
    Send,
}

impl Stage {
    /// Every stage, in the parcel's order.
    pub const ALL: [Stage; 3] = [Stage::Decide, Stage::Handoff, Stage::Send];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decide => "decide",
            Stage::Handoff => "handoff",
            Stage::Send => "send",
        }
    }

    /// Position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Every counter the daemon keeps.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from scanner connections.
    pub bytes_in: AtomicU64,
    /// Frames decoded (scans, hellos and heartbeats).
    pub frames_in: AtomicU64,
    /// Scan frames decoded: each gets exactly one decision.
    pub scans_in: AtomicU64,
    /// Bytes skipped by the decoders (garbage, bad frames, partial frames at close).
    pub bytes_skipped: AtomicU64,
    /// Decode errors by kind.
    pub decode_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections accepted and served.
    pub connections_accepted: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections refused because `connections_max` were open.
    pub connections_refused_limit: AtomicU64,
    /// Connections refused by the allow-list.
    pub connections_refused_address: AtomicU64,
    /// Connections closed because a started frame missed its deadline.
    pub connections_closed_frame_deadline: AtomicU64,
    /// Connections closed for idleness.
    pub connections_closed_idle: AtomicU64,
    /// Connections closed for any reason (peer, deadline, idleness, shutdown).
    pub connections_closed: AtomicU64,
    /// Decisions handed to the PLC link (SORTs sent or about to be), by reason; never a
    /// duplicate.
    pub decided_sent: ByReason,
    /// Repeat scans inside the duplicate window: decided (reason `duplicate`), never sent
    /// to the PLC, never actuated.
    pub decided_duplicate: AtomicU64,
    /// Decisions made while the PLC link was down, by reason: counted, not delivered.
    pub decided_undelivered: ByReason,
    /// Sort confirmations from the PLC by outcome name.
    pub confirmations: Mutex<BTreeMap<&'static str, u64>>,
    /// Decision latency (receipt to hand-off to the PLC link) histogram in microseconds.
    pub decision_latency_us: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    /// Latency of each [`Stage`] in microseconds, indexed as [`Stage::ALL`] (timed per
    /// batch or per turn, counted per parcel).
    pub stage_latency_us: Mutex<[Option<hdrhistogram::Histogram<u64>>; Stage::ALL.len()]>,
    /// SORTs handed to the PLC link, by chute.
    pub sorts_by_chute: ByChute,
    /// The PLC link, as of the PLC thread's last turn.
    pub plc: PlcGauges,
    /// Event-loop turns per thread, for the watchdog.
    pub liveness: Liveness,
    /// Plan reloads that published a new plan.
    pub plan_reloads_ok: AtomicU64,
    /// Plan reloads that failed and kept the previous plan.
    pub plan_reloads_failed: AtomicU64,
    /// When the plan deciding now was loaded, in milliseconds since the Unix epoch.
    pub plan_since_unix_ms: AtomicU64,
    /// Connected scanners, one slot per connection.
    pub scanners: ScannerTable,
    /// The web endpoint's requests and refusals.
    pub web: WebCounters,
}

impl Counters {
    /// Adds `count` to one of the plain counters.
    pub fn add(counter: &AtomicU64, count: u64) {
        if count != 0 {
            counter.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Counts one decode error of `kind`.
    pub fn count_decode_error(&self, kind: &'static str, count: u64) {
        if let Ok(mut errors) = self.decode_errors.lock() {
            *errors.entry(kind).or_insert(0) += count;
        }
    }

    /// Called by the PLC thread once per turn: marks it alive and publishes the link
    /// (`in_flight`: SORTs unacknowledged; `held_now`: SORTs held while it is down) and
    /// the hand-off queue.
    pub fn publish_plc_turn(
        &self,
        stats: &LinkStats,
        link_up: bool,
        in_flight: usize,
        held_now: usize,
        queued_batches: usize,
    ) {
        self.liveness.plc_turn();
        self.plc.store(stats, link_up, in_flight, held_now);
        self.plc
            .queued_batches
            .store(queued_batches as u64, Ordering::Relaxed);
    }

    /// Records that the plan deciding now was loaded at this moment (wall clock).
    pub fn mark_plan_loaded(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.plan_since_unix_ms.store(now_ms, Ordering::Relaxed);
    }

    /// All decisions made: sent, undelivered or duplicate.
    pub fn decided_total(&self) -> u64 {
        self.decided_sent.total()
            + self.decided_undelivered.total()
            + self.decided_duplicate.load(Ordering::Relaxed)
    }

    /// Decisions made for `reason`: sent, undelivered or (for `duplicate`) not actuated.
    pub fn decided(&self, reason: Reason) -> u64 {
        let duplicates = if reason == Reason::Duplicate {
            self.decided_duplicate.load(Ordering::Relaxed)
        } else {
            0
        };
        self.decided_sent.get(reason) + self.decided_undelivered.get(reason) + duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chute_counts_are_kept_per_chute_and_listed_in_chute_order() {
        let by_chute = ByChute::default();
        for chute in [7, 0, 65_535, 7, 7, 300] {
            by_chute.count_one(chute);
        }
        assert_eq!(
            by_chute.nonzero().collect::<Vec<_>>(),
            vec![(0, 1), (7, 3), (300, 1), (65_535, 1)]
        );
        assert_eq!(by_chute.get(8), 0);
    }

    #[test]
    fn scanner_slots_are_claimed_published_and_freed() {
        let table = ScannerTable::default();
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("address");
        let first = table.open(peer);
        let second = table.open(peer);
        assert_eq!((first, second), (Some(0), Some(1)));
        table.publish(first, 51, 20);
        table.bad_input(first, 2);
        table.publish(None, 1, 1);
        let readings = table.readings();
        assert_eq!(readings.len(), 2);
        assert_eq!(
            (
                readings[0].scanner_id,
                readings[0].scans,
                readings[0].bad_inputs
            ),
            (51, 20, 2)
        );
        assert_eq!(readings[0].peer, Some(peer));
        table.close(first);
        assert_eq!(table.readings().len(), 1);
        // The freed slot is reused, as a new connection with fresh counts.
        let third = table.open(peer);
        assert_eq!(third, Some(0));
        let reused = table.readings()[0];
        assert_eq!((reused.scans, reused.bad_inputs), (0, 0));
        assert_ne!(reused.generation, readings[0].generation);
        for _ in 2..SCANNER_SLOTS_MAX {
            assert!(table.open(peer).is_some());
        }
        assert_eq!(table.open(peer), None);
        assert_eq!(table.untracked(), 1);
    }

    #[test]
    fn liveness_counts_turns_per_thread_and_ignores_unknown_workers() {
        let liveness = Liveness::default();
        liveness.plc_turn();
        liveness.ingress_turn(0);
        liveness.ingress_turn(0);
        liveness.ingress_turn(INGRESS_WORKERS_MAX - 1);
        liveness.ingress_turn(INGRESS_WORKERS_MAX);
        assert_eq!(liveness.plc_turns(), 1);
        assert_eq!(liveness.ingress_turns(0), 2);
        assert_eq!(liveness.ingress_turns(1), 0);
        assert_eq!(liveness.ingress_turns(INGRESS_WORKERS_MAX - 1), 1);
        assert_eq!(liveness.ingress_turns(INGRESS_WORKERS_MAX), 0);
    }

    #[test]
    fn a_plc_turn_publishes_the_link_and_counts_as_liveness() {
        let counters = Counters::default();
        let stats = LinkStats {
            sent: 10,
            retransmitted: 2,
            acked: 9,
            acks_duplicate: 1,
            link_ups: 1,
            held: 7,
            held_expired: 2,
            ..LinkStats::default()
        };
        counters.publish_plc_turn(&stats, true, 1, 4, 3);
        let plc = &counters.plc;
        let load = |gauge: &AtomicU64| gauge.load(Ordering::Relaxed);
        assert!(plc.link_up.load(Ordering::Relaxed));
        assert_eq!(
            [
                load(&plc.in_flight),
                load(&plc.queued_batches),
                load(&plc.sent),
                load(&plc.retransmitted),
                load(&plc.acked),
                load(&plc.acks_duplicate),
                load(&plc.link_ups),
                load(&plc.held),
                load(&plc.held_expired),
                load(&plc.held_now),
            ],
            [1, 3, 10, 2, 9, 1, 1, 7, 2, 4]
        );
        assert_eq!(counters.liveness.plc_turns(), 1);
    }
}
