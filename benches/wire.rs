//! Decode cost per frame: binary SCANs (typical and 4-barcode) and one telegram per text
//! profile, each reported per byte and per frame. The bare CRC-32C over the same bytes is
//! the baseline the binary figures are compared with.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sortd::wire::{
    Barcodes, Decoded, Frame, ScanFlags, ScanFrame, TextProfile, decode_binary, decode_text, encode,
};

fn binary_scan(codes: &[&[u8]]) -> Vec<u8> {
    let frame = Frame::Scan(ScanFrame {
        scanner_id: 7,
        sequence: 1042,
        parcel_id: 145,
        scanned_at_us: 1_732_000_000_123_456,
        barcodes: Barcodes::from_slice(codes).unwrap_or_default(),
        destination: Some(b"330106001"),
        weight_g: 81212,
        length_mm: 321,
        width_mm: 150,
        height_mm: 87,
        flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
    });
    let mut bytes = Vec::new();
    if let Err(error) = encode(&frame, &mut bytes) {
        panic!("bench frame does not encode: {error}");
    }
    bytes
}

fn consumed(decoded: Decoded<'_>) -> usize {
    match decoded {
        Decoded::Frame { consumed, .. } => consumed,
        other => panic!("bench input did not decode: {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let typical = binary_scan(&[b"0027110002054872550918034976966"]);
    let four = binary_scan(&[
        b"0027110002054872550918034976966",
        b"1234567890123",
        b"0467",
        b"675898767566",
    ]);
    let texts: [(&str, &[u8]); 3] = [
        (
            "sick-dws",
            b"\x020145;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050\x03",
        ),
        ("sick-clv", b"\x021JVGL0012345;ST=0\r\n\x03"),
        (
            "datalogic",
            b"\x020027110002054872550918034976966,1234567890123,0467,675898767566\r\n",
        ),
    ];

    for (unit, per_byte) in [("bytes", true), ("frames", false)] {
        let mut group = c.benchmark_group(format!("wire_{unit}"));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        let throughput = |bytes: usize| {
            if per_byte {
                Throughput::Bytes(bytes as u64)
            } else {
                Throughput::Elements(1)
            }
        };

        group.throughput(throughput(typical.len()));
        group.bench_function(format!("crc32c_baseline_{}", typical.len() - 4), |b| {
            b.iter(|| crc32c::crc32c(black_box(&typical[..typical.len() - 4])))
        });
        group.bench_function(format!("binary_typical_scan_{}", typical.len()), |b| {
            b.iter(|| consumed(decode_binary(black_box(&typical))))
        });
        group.throughput(throughput(four.len()));
        group.bench_function(format!("binary_4_barcode_scan_{}", four.len()), |b| {
            b.iter(|| consumed(decode_binary(black_box(&four))))
        });
        for (name, telegram) in texts {
            let Some(profile) = TextProfile::builtin(name) else {
                panic!("no profile {name}");
            };
            group.throughput(throughput(telegram.len()));
            group.bench_function(format!("text_{name}_{}", telegram.len()), |b| {
                b.iter(|| consumed(decode_text(&profile, black_box(telegram))))
            });
        }
        group.finish();
    }
}

criterion_group!(wire, benches);
criterion_main!(wire);
