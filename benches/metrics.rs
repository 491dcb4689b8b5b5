//! What metrics cost the pipeline, and what a scrape costs.
//!
//! - `per_decision`: the PLC thread's per-decision counting over a batch of 256 decisions
//!   (reason tally in a local array, as `Egress::pump` does), without and with the
//!   per-chute count it now adds (a single-writer relaxed load and store), and with an
//!   atomic `fetch_add` for comparison.
//! - `per_turn`: what each thread now does once per loop turn (publish the PLC link
//!   figures; bump a liveness counter).
//! - `scrape`: encoding the whole exposition with 300 chutes in use and a full latency
//!   histogram, which runs on the metrics thread, never on the pipeline; in OpenMetrics
//!   and in the classic text format made from it.
//! - `scrape_http`: one whole scrape over loopback (connect, `GET /metrics`, read to the
//!   end) against the real endpoint, the cost a scraper and the endpoint's thread pay.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sortd::decision::{ChuteNumber, Reason};
use sortd::metrics::{Exposition, Format};
use sortd::plan::{Plan, PlanHandle, compile_str};
use sortd::plc::LinkStats;
use sortd::stats::Counters;

const BATCH: usize = 256;
const CHUTES_IN_USE: u16 = 300;

/// A batch of (reason slot, chute) pairs spread over the chutes in use.
fn batch() -> Vec<(usize, ChuteNumber)> {
    let mut rng = fastrand::Rng::with_seed(11);
    (0..BATCH)
        .map(|_| (rng.usize(..Reason::ALL.len()), 1 + rng.u16(..CHUTES_IN_USE)))
        .collect()
}

fn per_decision(c: &mut Criterion) {
    let counters = Counters::default();
    let fetch_add_table: Vec<AtomicU64> = (0..=u16::MAX).map(|_| AtomicU64::new(0)).collect();
    let decisions = batch();
    let mut group = c.benchmark_group("per_decision");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("reason_tally_only", |b| {
        b.iter(|| {
            let mut sent = [0u64; Reason::ALL.len()];
            for (slot, chute) in black_box(&decisions) {
                if let Some(count) = sent.get_mut(*slot) {
                    *count += 1;
                }
                black_box(chute);
            }
            black_box(sent)
        })
    });
    group.bench_function("reason_tally_and_chute_count", |b| {
        b.iter(|| {
            let mut sent = [0u64; Reason::ALL.len()];
            for (slot, chute) in black_box(&decisions) {
                if let Some(count) = sent.get_mut(*slot) {
                    *count += 1;
                }
                counters.sorts_by_chute.count_one(*chute);
            }
            black_box(sent)
        })
    });
    group.bench_function("reason_tally_and_chute_fetch_add", |b| {
        b.iter(|| {
            let mut sent = [0u64; Reason::ALL.len()];
            for (slot, chute) in black_box(&decisions) {
                if let Some(count) = sent.get_mut(*slot) {
                    *count += 1;
                }
                if let Some(slot) = fetch_add_table.get(usize::from(*chute)) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
            }
            black_box(sent)
        })
    });
    group.finish();
}

fn per_turn(c: &mut Criterion) {
    let counters = Counters::default();
    let stats = LinkStats {
        sent: 1_000_000,
        acked: 999_000,
        ..LinkStats::default()
    };
    let mut group = c.benchmark_group("per_turn");
    group.bench_function("publish_plc_turn", |b| {
        b.iter(|| counters.publish_plc_turn(black_box(&stats), true, black_box(12), 0, 3))
    });
    group.bench_function("ingress_liveness_turn", |b| {
        b.iter(|| counters.liveness.ingress_turn(black_box(0)))
    });
    group.finish();
}

/// Counters and a plan as a busy daemon has them: 300 chutes, a full histogram.
fn busy_sources() -> (Arc<Counters>, Arc<PlanHandle>) {
    let csv = "kind,key,chutes\nmeta,name,bench plan\nmeta,version,3\nprefix,33,101\n\
               default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\n\
               default,late,996\n";
    let bytes = compile_str("bench.csv", csv).expect("bench plan compiles");
    let plan = Arc::new(PlanHandle::new(
        Plan::from_bytes(bytes).expect("bench plan opens"),
    ));
    let counters = Arc::new(Counters::default());
    for chute in 1..=CHUTES_IN_USE {
        for _ in 0..u64::from(chute) {
            counters.sorts_by_chute.count_one(chute);
        }
    }
    for reason in Reason::ALL {
        counters.decided_sent.add(reason, 1_000);
    }
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..100_000 {
        let _ = histogram.record(rng.u64(20..5_000));
    }
    if let Ok(mut shared) = counters.decision_latency_us.lock() {
        *shared = Some(histogram);
    }
    counters.count_decode_error("bad_magic", 3);
    (counters, plan)
}

fn scrape(c: &mut Criterion) {
    let (counters, plan) = busy_sources();
    let exposition = Exposition::new(counters, plan, 2);
    let mut text = String::new();
    exposition.render(&mut text).expect("renders");
    let mut group = c.benchmark_group("scrape");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("render_300_chutes", |b| {
        b.iter(|| {
            text.clear();
            exposition.render(&mut text).expect("renders");
            black_box(text.len())
        })
    });
    // As shipped: the 300 chutes in use also get their state set, 10 of them full.
    let chute_states = Arc::new(sortd::plc::ChuteStateTable::new());
    for chute in 1..=10 {
        chute_states.set(chute, sortd::plc::ChuteState::Full);
    }
    let (counters, plan) = busy_sources();
    let with_states = Exposition::with_chute_states(counters, plan, 2, chute_states);
    group.bench_function("render_300_chutes_with_states", |b| {
        b.iter(|| {
            text.clear();
            with_states.render(&mut text).expect("renders");
            black_box(text.len())
        })
    });
    let mut scratch = String::new();
    group.bench_function("render_classic_300_chutes", |b| {
        b.iter(|| {
            text.clear();
            exposition
                .render_as(Format::Classic, &mut text, &mut scratch)
                .expect("renders");
            black_box(text.len())
        })
    });
    group.finish();
}

/// One scrape over loopback: connect, send `request`, read the answer to its end.
fn http_get(address: std::net::SocketAddr, request: &[u8], answer: &mut Vec<u8>) -> usize {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream.write_all(request).expect("request sent");
    answer.clear();
    stream.read_to_end(answer).expect("answer read");
    answer.len()
}

fn scrape_http(c: &mut Criterion) {
    let (counters, plan) = busy_sources();
    let server = sortd::web::WebServer::start(
        sortd::web::WebSettings {
            address: "127.0.0.1:0".parse().expect("address"),
            security: Arc::new(sortd::web::WebSecurity::open()),
        },
        sortd::web::WebSources {
            counters,
            plan,
            chute_states: Arc::new(sortd::plc::ChuteStateTable::new()),
            ingress_workers: 2,
            export: None,
            journal: None,
            hub: None,
            hub_preadvice: None,
        },
    )
    .expect("endpoint starts");
    let address = server.local_address();
    let mut answer = Vec::new();
    let mut group = c.benchmark_group("scrape_http");
    for (name, request) in [
        (
            "get_metrics_openmetrics",
            &b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n"[..],
        ),
        (
            "get_metrics_classic",
            &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
        (
            "get_status_json",
            &b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(http_get(address, request, &mut answer)))
        });
    }
    group.finish();
    server.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = per_decision, per_turn, scrape, scrape_http
}
criterion_main!(benches);
