//! The hand-off between threads, measured the ways the daemon could do it:
//! one decision per channel message, batches of decisions through a crossbeam channel
//! (what the daemon does), and batches through a crossbeam `ArrayQueue`. Also the cost
//! of turning a borrowed frame into an owned one, which a separate resolver stage would
//! pay per parcel, beside the fused decode-and-decide the ingress workers do.
//!
//! `cargo bench --bench pipeline`; compare the rows of one run with each other.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam::channel;
use crossbeam::queue::ArrayQueue;
use sortd::core::session::{Decider, DecisionSink, ScannerSession, SessionLimits, SessionObserver};
use sortd::decision::{Reason, Rule};
use sortd::pipeline::decide::Decision;
use sortd::pipeline::queue::{Batch, BatchReceiver, BatchSender, Wake, batch_queue};
use sortd::wire::{self, Barcodes, Decoded, Frame, ScanFlags, ScanFrame};

const PARCELS: u64 = 1 << 16;
const BATCH: usize = 256;

fn decision(parcel_id: u64, at: Instant) -> Decision {
    Decision {
        parcel_id,
        scanner_id: 1,
        chute: 12,
        reason: Reason::SortedPrimary,
        rule: Rule::Exact,
        plan_version: 1,
        preadvice_seq: 0,
        late_chute: 996,
        received_at: at,
    }
}

/// Moves PARCELS decisions from a producer thread to this one; returns the elapsed time.
fn per_item_channel() -> Duration {
    let (tx, rx) = channel::bounded::<Decision>(64 * BATCH);
    let at = Instant::now();
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        for parcel in 0..PARCELS {
            let _ = tx.send(decision(parcel, at));
        }
    });
    let mut sum = 0u64;
    for item in rx.iter() {
        sum = sum.wrapping_add(item.parcel_id);
    }
    let _ = producer.join();
    black_box(sum);
    start.elapsed()
}

fn batched_channel() -> Duration {
    let (tx, rx) = channel::bounded::<Vec<Decision>>(64);
    let (recycle_tx, recycle_rx) = channel::bounded::<Vec<Decision>>(128);
    let at = Instant::now();
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        for parcel in 0..PARCELS {
            batch.push(decision(parcel, at));
            if batch.len() == BATCH {
                let full = std::mem::replace(
                    &mut batch,
                    recycle_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH)),
                );
                let _ = tx.send(full);
            }
        }
    });
    let mut sum = 0u64;
    for mut batch in rx.iter() {
        for item in &batch {
            sum = sum.wrapping_add(item.parcel_id);
        }
        batch.clear();
        let _ = recycle_tx.try_send(batch);
    }
    let _ = producer.join();
    black_box(sum);
    start.elapsed()
}

fn batched_array_queue() -> Duration {
    let queue = Arc::new(ArrayQueue::<Vec<Decision>>::new(64));
    let at = Instant::now();
    let start = Instant::now();
    let producer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            for parcel in 0..PARCELS {
                batch.push(decision(parcel, at));
                if batch.len() == BATCH {
                    let mut full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    while let Err(back) = queue.push(full) {
                        full = back;
                        std::hint::spin_loop();
                    }
                }
            }
        })
    };
    let mut sum = 0u64;
    let mut received = 0u64;
    while received < PARCELS {
        match queue.pop() {
            Some(batch) => {
                for item in &batch {
                    sum = sum.wrapping_add(item.parcel_id);
                }
                received += batch.len() as u64;
            }
            None => std::hint::spin_loop(),
        }
    }
    let _ = producer.join();
    black_box(sum);
    start.elapsed()
}

fn hand_off(c: &mut Criterion) {
    let mut group = c.benchmark_group("hand_off");
    group.throughput(Throughput::Elements(PARCELS));
    group.sample_size(20);
    for (name, run) in [
        ("per_item_channel", per_item_channel as fn() -> Duration),
        ("batched_channel_256", batched_channel),
        ("batched_array_queue_256", batched_array_queue),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| run()).sum())
        });
    }
    group.finish();
}

/// An owned copy of a scan, what a resolver thread would need.
#[allow(dead_code)]
struct OwnedScan {
    scanner_id: u32,
    parcel_id: u64,
    barcodes: Vec<Vec<u8>>,
    destination: Option<Vec<u8>>,
}

fn frame_ownership(c: &mut Criterion) {
    let mut bytes = Vec::new();
    let codes: [&[u8]; 1] = [b"YT1234567890123"];
    let frame = Frame::Scan(ScanFrame {
        scanner_id: 7,
        sequence: 1,
        parcel_id: 145,
        scanned_at_us: 0,
        barcodes: Barcodes::from_slice(&codes).unwrap_or_default(),
        destination: Some(b"330106001005"),
        weight_g: 1200,
        length_mm: 300,
        width_mm: 200,
        height_mm: 100,
        flags: ScanFlags::default(),
    });
    let _ = wire::encode(&frame, &mut bytes);
    let mut group = c.benchmark_group("frame_ownership");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_borrowed", |b| {
        b.iter(|| match wire::decode_binary(black_box(&bytes)) {
            Decoded::Frame {
                frame: Frame::Scan(scan),
                ..
            } => black_box(scan.parcel_id),
            _ => 0,
        })
    });
    group.bench_function("decode_then_copy_to_owned", |b| {
        b.iter(|| match wire::decode_binary(black_box(&bytes)) {
            Decoded::Frame {
                frame: Frame::Scan(scan),
                ..
            } => {
                let owned = OwnedScan {
                    scanner_id: scan.scanner_id,
                    parcel_id: scan.parcel_id,
                    barcodes: scan.barcodes.iter().map(|code| code.to_vec()).collect(),
                    destination: scan.destination.map(<[u8]>::to_vec),
                };
                black_box(owned).parcel_id
            }
            _ => 0,
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    hand_off,
    scan_to_batch,
    frame_ownership,
    plan_warming,
    duplicate_window_warming
);
criterion_main!(benches);

/// Plan lookups one parcel at a time, and in windows of 16 prefetched first (buckets,
/// then records: what ingress does), over 262,144 distinct parcels so the tables are not held in cache; the windows
/// are what ingress does. Needs the benchmark plan `cargo bench --bench e2e` leaves in target/bench-plans;
/// skipped without it.
fn plan_warming(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-plans/plan-1000000.sortplan");
    let Ok(plan) = sortd::plan::Plan::open(&path) else {
        eprintln!("plan_warming skipped: no {}", path.display());
        return;
    };
    let mut rng = fastrand::Rng::with_seed(3);
    let exact: Vec<Vec<u8>> = plan.exact_entries().map(|(key, _)| key.to_vec()).collect();
    let prefixes: Vec<Vec<u8>> = plan.prefix_entries().map(|(key, _)| key.to_vec()).collect();
    // Half pre-advised tracking numbers, half unknown barcodes routed by a village code.
    let parcels: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..262_144)
        .map(|index| {
            if index % 2 == 0 {
                (exact[rng.usize(..exact.len())].clone(), None)
            } else {
                let unknown = format!("LG{:013}", rng.u64(..10_000_000_000_000));
                (
                    unknown.into_bytes(),
                    Some(prefixes[rng.usize(..prefixes.len())].clone()),
                )
            }
        })
        .collect();
    let mut group = c.benchmark_group("plan_warming");
    group.throughput(Throughput::Elements(parcels.len() as u64));
    group.bench_function("resolve_one_by_one", |b| {
        b.iter(|| {
            let mut chutes = 0u64;
            for (barcode, code) in &parcels {
                let resolution = plan.resolve(&[barcode.as_slice()], code.as_deref());
                chutes += u64::from(resolution.chutes.primary());
            }
            black_box(chutes)
        })
    });
    group.bench_function("warm_16_then_resolve", |b| {
        b.iter(|| {
            let mut chutes = 0u64;
            for window in parcels.chunks(16) {
                for (barcode, code) in window {
                    plan.warm(&[barcode.as_slice()], code.as_deref());
                }
                for (barcode, code) in window {
                    plan.warm_records(&[barcode.as_slice()], code.as_deref());
                }
                for (barcode, code) in window {
                    let resolution = plan.resolve(&[barcode.as_slice()], code.as_deref());
                    chutes += u64::from(resolution.chutes.primary());
                }
            }
            black_box(chutes)
        })
    });
    group.finish();
}

/// The duplicate window at its default size (1 M parcels), checked one parcel at a time
/// and in batches of 256 warmed first (what the PLC thread does), for random parcel ids
/// and for what scanners send: each of 4 scanners numbering its parcels in sequence, in
/// runs of 64 (one write of 64 frames each, in turn).
fn duplicate_window_warming(c: &mut Criterion) {
    use sortd::pipeline::dedup::{DuplicateWindow, ParcelKey};
    let now = Instant::now();
    let mut rng = fastrand::Rng::with_seed(5);
    let random: Vec<ParcelKey> = (0..262_144)
        .map(|_| ParcelKey {
            scanner_id: rng.u32(1..64),
            parcel_id: rng.u64(..),
        })
        .collect();
    let runs: Vec<ParcelKey> = (0..262_144u64)
        .map(|index| ParcelKey {
            scanner_id: 1 + (index / 64 % 4) as u32,
            parcel_id: 5_000_000 + index,
        })
        .collect();
    let mut group = c.benchmark_group("duplicate_window_warming");
    group.throughput(Throughput::Elements(random.len() as u64));
    group.sample_size(20);
    for (ids, keys) in [("random", &random), ("runs", &runs)] {
        for warm in [false, true] {
            let name = if warm {
                format!("{ids}_warm_256_then_check")
            } else {
                format!("{ids}_check_one_by_one")
            };
            group.bench_function(name, |b| {
                b.iter_custom(|iterations| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        // A window already holding about 1 M parcels, as in steady state.
                        let mut window = DuplicateWindow::new(Duration::from_secs(3600), 2_000_000);
                        for parcel_id in 0..1_000_000u64 {
                            window.is_duplicate(
                                ParcelKey {
                                    scanner_id: 0,
                                    parcel_id,
                                },
                                now,
                            );
                        }
                        let start = Instant::now();
                        let mut duplicates = 0;
                        for chunk in keys.chunks(256) {
                            if warm {
                                window.warm(chunk.iter().copied());
                            }
                            for key in chunk {
                                duplicates += usize::from(window.is_duplicate(*key, now));
                            }
                        }
                        elapsed += start.elapsed();
                        black_box(duplicates);
                    }
                    elapsed
                })
            });
        }
    }
    group.finish();
}

/// The ingress side as the daemon runs it: a scanner session decodes binary SCANs (two
/// barcodes, a destination, weight and dimensions), decides them against a small plan and
/// pushes them into the real batch hand-off, whose batches are received and recycled;
/// with sort events off (decisions only) and on (the scans' facts copied beside them).
fn scan_to_batch(c: &mut Criterion) {
    const FRAMES: usize = 4096;
    let csv = "kind,key,chutes\nprefix,3301,12|13\nexact,YT0000000000001,7\ndefault,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n";
    let Ok(compiled) = sortd::plan::compile_str("bench.csv", csv) else {
        return;
    };
    let Ok(plan) = sortd::plan::Plan::from_bytes(compiled) else {
        return;
    };
    let handle = sortd::plan::PlanHandle::new(plan);
    let chutes = sortd::plc::ChuteStateTable::new();
    let mut bytes = Vec::new();
    for index in 0..FRAMES as u64 {
        let first = format!("YT{:013}", index % 3);
        let second = format!("JD{index:013}");
        let codes: [&[u8]; 2] = [first.as_bytes(), second.as_bytes()];
        let frame = Frame::Scan(ScanFrame {
            scanner_id: 7,
            sequence: index as u32,
            parcel_id: index + 1,
            scanned_at_us: 0,
            barcodes: Barcodes::from_slice(&codes).unwrap_or_default(),
            destination: Some(b"330106001005"),
            weight_g: 1200,
            length_mm: 300,
            width_mm: 200,
            height_mm: 100,
            flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
        });
        let _ = wire::encode(&frame, &mut bytes);
    }
    let mut group = c.benchmark_group("scan_to_batch");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (name, events) in [("events_off", false), ("events_on", true)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(run_scan_to_batch(&bytes, &handle, &chutes, events)))
        });
    }
    group.finish();
}

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

struct BenchSink {
    batch: Batch,
    sender: BatchSender,
    receiver: BatchReceiver,
    received: u64,
}

impl DecisionSink for BenchSink {
    fn room(&self) -> usize {
        self.batch.room()
    }

    fn flush(&mut self) -> bool {
        let full = std::mem::replace(&mut self.batch, self.sender.empty_batch());
        if let Err(back) = self.sender.try_send(full) {
            self.batch = back;
            return false;
        }
        while let Some(batch) = self.receiver.try_recv() {
            self.received += batch.len() as u64;
            self.receiver.recycle(batch);
        }
        true
    }

    fn push(&mut self, decision: Decision, scan: &ScanFrame<'_>, plan_name: &str) {
        self.batch.push_scan(decision, scan, plan_name);
    }
}

struct Quiet;
impl SessionObserver for Quiet {}

fn run_scan_to_batch(
    bytes: &[u8],
    handle: &sortd::plan::PlanHandle,
    chutes: &sortd::plc::ChuteStateTable,
    events: bool,
) -> u64 {
    let now = Instant::now();
    let limits = SessionLimits {
        buffer_bytes: bytes.len(),
        frame_deadline: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
    };
    let (sender, receiver) = batch_queue(64, 64, events, Arc::new(NoWake));
    let mut sink = BenchSink {
        batch: sender.empty_batch(),
        sender,
        receiver,
        received: 0,
    };
    let mut session = ScannerSession::new(wire::Framing::Binary, 7, limits, now);
    session.handle_input(now, bytes);
    let view = handle.view();
    let mut synthetic = 0u64;
    let mut decider = Decider {
        plan: &view,
        chute_states: chutes,
        synthetic_parcel_id: &mut synthetic,
    };
    session.poll_decisions(now, &mut decider, &mut sink, &mut Quiet);
    sink.flush();
    sink.received
}
