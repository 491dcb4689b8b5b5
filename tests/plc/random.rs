//! Seeded randomized test of the PLC link: a lossy, corrupting, duplicating, reordering,
//! chunking transport with random disconnects, checked for exactly-once, in-order
//! delivery of every SORT and every confirmation. A failure names its seed; the same
//! seed replays the same run.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{Faults, HOUR, Pair, host_config, plc_config, sort};
use sortd::plc::{AckPolicy, HostEvent, LinkConfig, Outcome};

/// Seeds run by default; `PLC_RANDOM_SEEDS=5000 cargo test --release --test plc random`
/// runs a longer campaign.
const SEEDS_DEFAULT: u64 = 300;
const STEPS: u32 = 800;

fn seeds() -> u64 {
    std::env::var("PLC_RANDOM_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(SEEDS_DEFAULT)
}

struct Outcomes {
    sorts_delivered: usize,
    retransmitted: u64,
    reconnects: u64,
}

/// Fail with a short message naming the first place `got` differs from `expected`.
fn expect_sequence(seed: u64, what: &str, got: &[u64], expected: std::ops::Range<u64>) {
    let expected: Vec<u64> = expected.collect();
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "seed {seed}: delivered {what} differ at index {at}: got {:?}, expected {:?} \
             ({} delivered, {} submitted)",
            got.get(at..(at + 3).min(got.len())),
            expected.get(at..(at + 3).min(expected.len())),
            got.len(),
            expected.len()
        );
    }
}

/// The PLC confirms what it has received, in order, as far as its window allows.
fn queue_confirms(pair: &mut Pair, confirms_queued: &mut usize) {
    while let Some((_, command)) = pair.delivered.get(*confirms_queued).copied() {
        let queued = pair.plc.confirm(
            command.parcel_id,
            command.scanner_id,
            command.chute,
            Outcome::Diverted,
        );
        if queued.is_err() {
            break;
        }
        *confirms_queued += 1;
    }
}

fn run_seed(seed: u64) -> Outcomes {
    let mut rng = fastrand::Rng::with_seed(seed);
    let host = LinkConfig {
        window_max: rng.usize(1..=64),
        ack_timeout_ms: rng.u32(50..=300),
        jitter_seed: seed,
        ..host_config()
    };
    let plc = LinkConfig {
        window_max: rng.usize(1..=32),
        ack_policy: AckPolicy {
            every_telegrams: rng.u32(1..=8),
            delay_ms_max: rng.u32(0..=40),
        },
        ..plc_config()
    };
    let plc_window_max = plc.window_max;
    let mut pair = Pair::new(host, plc);
    pair.rng = fastrand::Rng::with_seed(seed ^ 0xA5A5);
    pair.faults = Faults {
        corrupt_percent: rng.u32(0..=4),
        drop_percent: rng.u32(0..=4),
        duplicate_percent: rng.u32(0..=4),
        swap_percent: rng.u32(0..=4),
        chunk_bytes_max: rng.usize(1..=120),
    };
    let disconnect_per_mille = rng.u32(0..=8);

    let mut next_parcel = 0u64;
    let mut confirms_queued = 0usize;
    for _ in 0..STEPS {
        // Submit a few; on WindowFull the caller keeps the parcel and tries later.
        for _ in 0..rng.u32(0..4) {
            if pair
                .host
                .submit(sort(next_parcel), pair.now + HOUR)
                .is_err()
            {
                break;
            }
            next_parcel += 1;
        }
        queue_confirms(&mut pair, &mut confirms_queued);
        if rng.u32(0..1000) < disconnect_per_mille {
            pair.disconnect();
        }
        pair.run_for(Duration::from_millis(rng.u64(0..40)));
    }
    // Heal the transport and let everything settle: the PLC keeps confirming as its
    // window frees up.
    pair.faults = Faults::default();
    for _ in 0..100_000 {
        queue_confirms(&mut pair, &mut confirms_queued);
        pair.run_for(Duration::from_millis(10));
        let settled = confirms_queued == pair.delivered.len()
            && pair.plc.window_free() == plc_window_max
            && pair.host.unacked() == 0
            && pair.delivered.len() as u64 == next_parcel;
        if settled {
            break;
        }
    }

    // Every SORT delivered exactly once, in submission order, numbered consecutively.
    let parcels: Vec<u64> = pair.delivered.iter().map(|(_, s)| s.parcel_id).collect();
    expect_sequence(seed, "parcel ids", &parcels, 0..next_parcel);
    let seqs: Vec<u64> = pair.delivered_seqs().into_iter().map(u64::from).collect();
    expect_sequence(seed, "sequence numbers", &seqs, 1..next_parcel + 1);
    assert_eq!(pair.host.unacked(), 0, "seed {seed}");
    // The daemon's in-flight accounting: acknowledgements reported add up exactly.
    let acked: u64 = pair
        .host_events
        .iter()
        .map(|event| match event {
            HostEvent::SortsAcked { count, .. } => u64::from(*count),
            _ => 0,
        })
        .sum();
    assert_eq!(acked, next_parcel, "seed {seed}");
    // Every confirmation delivered exactly once.
    assert_eq!(confirms_queued, pair.delivered.len(), "seed {seed}");
    let mut confirmed: HashMap<u64, u32> = HashMap::new();
    for event in &pair.host_events {
        if let HostEvent::SortConfirmed { confirm, .. } = event {
            *confirmed.entry(confirm.parcel_id).or_default() += 1;
        }
    }
    assert_eq!(confirmed.len(), next_parcel as usize, "seed {seed}");
    assert!(confirmed.values().all(|count| *count == 1), "seed {seed}");
    // All reports acknowledged: the PLC's window is empty again.
    assert_eq!(pair.plc.window_free(), plc_window_max, "seed {seed}");
    Outcomes {
        sorts_delivered: pair.delivered.len(),
        retransmitted: pair.host.stats().retransmitted,
        reconnects: pair.host.stats().link_ups,
    }
}

#[test]
fn exactly_once_in_order_under_faults_over_many_seeds() {
    let mut delivered = 0;
    let mut retransmitted = 0;
    let mut reconnects = 0;
    let seeds = seeds();
    for seed in 0..seeds {
        let outcome = run_seed(seed);
        delivered += outcome.sorts_delivered;
        retransmitted += outcome.retransmitted;
        reconnects += outcome.reconnects;
    }
    // The faults must actually have bitten, or this test proves nothing.
    assert!(delivered as u64 > 100 * seeds, "delivered {delivered}");
    assert!(retransmitted > 10 * seeds, "retransmitted {retransmitted}");
    assert!(reconnects > seeds, "reconnects {reconnects}");
    println!(
        "{seeds} seeds: {delivered} SORTs, {retransmitted} retransmissions, {reconnects} link-ups"
    );
}
