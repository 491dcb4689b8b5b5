//! Sort-event journaling cost: encoding a typical decision into the writer's batch, per
//! event, amortised over batches of 64 (the PLC thread's turn), against a plain copy of
//! the same bytes measured in the same run; and whole batches written to the page cache
//! (one write per batch, no fsync in the loop), reported in events per second.
//!
//! Run: `cargo bench --bench events -- --measurement-time 2`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sortd::decision::Reason;
use sortd::events::journal::{JournalWriter, WriterConfig};
use sortd::events::record::{self, FLAG_DIMENSIONS_MEASURED, FLAG_WEIGHT_MEASURED};
use sortd::events::{Action, DecisionEvent, Event, Rule};
use sortd::wire::Barcodes;

const BATCH_EVENTS: u64 = 64;

fn typical(parcel_id: u64) -> Event<'static> {
    Event::Decision(DecisionEvent {
        action: Action::Sent,
        parcel_id,
        scanner_id: 7,
        barcodes: Barcodes::from_slice(&[b"0027110002054872550918034976966"]).unwrap_or_default(),
        destination: b"330106001",
        chute: 301,
        reason: Reason::SortedPrimary,
        rule: Rule::Prefix,
        plan_name: "hz-w3",
        plan_version: 12,
        pre_advice_seq: 0,
        plc_seq: parcel_id as u32,
        flags: FLAG_WEIGHT_MEASURED | FLAG_DIMENSIONS_MEASURED,
        weight_g: 81212,
        length_mm: 321,
        width_mm: 150,
        height_mm: 87,
        received_us: 1_732_000_000_123_456 + parcel_id,
        decided_after_us: 41,
        sent_after_us: 97,
    })
}

fn benches(c: &mut Criterion) {
    let event = typical(145);
    let mut one = Vec::new();
    if let Err(error) = record::encode(1, &event, &mut one) {
        panic!("bench event does not encode: {error}");
    }
    let record_bytes = one.len();

    let mut group = c.benchmark_group("events_per_event");
    group.throughput(Throughput::Elements(BATCH_EVENTS));
    // Baseline: copying the finished record bytes into a batch buffer.
    group.bench_function("baseline_memcpy_record", |b| {
        let mut batch = Vec::with_capacity(1 << 16);
        b.iter(|| {
            batch.clear();
            for _ in 0..BATCH_EVENTS {
                batch.extend_from_slice(black_box(&one));
            }
            black_box(batch.len())
        })
    });
    group.bench_function("encode_into_batch", |b| {
        let mut batch = Vec::with_capacity(1 << 16);
        b.iter(|| {
            batch.clear();
            for seq in 1..=BATCH_EVENTS {
                let _ = record::encode(seq, black_box(&event), &mut batch);
            }
            black_box(batch.len())
        })
    });
    group.finish();

    // The whole path to the page cache: 64 appends and one write per batch, as the PLC
    // thread does per turn (segments roll at 64 MiB; the fsync thread runs beside it).
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let mut config = WriterConfig::new(dir.path(), "hz1", "xb-2");
    config.fsync_interval = Duration::from_millis(100);
    config.retention.cursor_required = false;
    config.retention.bytes_max = 256 << 20;
    let mut writer = JournalWriter::open(config).unwrap_or_else(|error| panic!("writer: {error}"));
    let mut group = c.benchmark_group("events_write_page_cache");
    group.throughput(Throughput::Elements(BATCH_EVENTS));
    group.bench_function("append_64_and_write_batch", |b| {
        b.iter(|| {
            for _ in 0..BATCH_EVENTS {
                writer.append(black_box(&event));
            }
            black_box(writer.write_batch())
        })
    });
    group.finish();
    writer.close();
    eprintln!("typical decision record: {record_bytes} bytes");
}

criterion_group! {
    name = events;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = benches
}
criterion_main!(events);
