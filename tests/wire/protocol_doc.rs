//! The hex dumps in PROTOCOL.md are real frames: each decodes to the frame its text
//! describes and re-encodes to the same bytes.

use sortd::wire::{
    Barcodes, Decoded, Frame, Heartbeat, Hello, ScanFlags, ScanFrame, decode_binary, encode,
};

/// The bytes of the dump that follows `<!-- example: NAME -->` in PROTOCOL.md.
fn documented_example(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"))
        .unwrap_or_else(|error| panic!("PROTOCOL.md: {error}"));
    let marker = format!("<!-- example: {name} -->");
    let after = text
        .split_once(&marker)
        .map(|(_, after)| after)
        .unwrap_or_else(|| panic!("no {marker} in PROTOCOL.md"));
    let block = after
        .split("```")
        .nth(1)
        .unwrap_or_else(|| panic!("no code block after {marker}"));
    block
        .lines()
        .skip(1) // the fence's info string
        .filter(|line| !line.trim().is_empty())
        .flat_map(|line| line.split_whitespace().skip(1)) // offset column
        .map(|pair| u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair}")))
        .collect()
}

fn scan(
    sequence: u32,
    parcel_id: u64,
    scanned_at_us: u64,
    codes: &[&'static [u8]],
) -> ScanFrame<'static> {
    ScanFrame {
        scanner_id: 7,
        sequence,
        parcel_id,
        scanned_at_us,
        barcodes: Barcodes::from_slice(codes).unwrap_or_default(),
        destination: None,
        weight_g: 0,
        length_mm: 0,
        width_mm: 0,
        height_mm: 0,
        flags: ScanFlags::EMPTY,
    }
}

#[test]
fn documented_examples_decode_to_what_the_text_says() {
    let cases = [
        (
            "hello",
            Frame::Hello(Hello {
                scanner_id: 7,
                protocol_version: 1,
                heartbeat_interval_ms: 1000,
                sent_at_us: 1_732_000_000_000_000,
            }),
        ),
        (
            "heartbeat",
            Frame::Heartbeat(Heartbeat {
                scanner_id: 7,
                sequence: 3,
                sent_at_us: 1_732_000_003_000_000,
            }),
        ),
        (
            "scan",
            Frame::Scan(ScanFrame {
                destination: Some(b"330102001"),
                weight_g: 81212,
                length_mm: 321,
                width_mm: 150,
                height_mm: 87,
                flags: ScanFlags::from_bits(0x0006),
                ..scan(
                    1042,
                    145,
                    1_732_000_000_123_456,
                    &[b"0027110002054872550918034976966"],
                )
            }),
        ),
        (
            "no-read",
            Frame::Scan(scan(1044, 147, 1_732_000_000_323_456, &[])),
        ),
    ];
    for (name, expected) in cases {
        let bytes = documented_example(name);
        let mut encoded = Vec::new();
        assert_eq!(encode(&expected, &mut encoded), Ok(()));
        assert_eq!(bytes, encoded, "example {name}");
        assert_eq!(
            decode_binary(&bytes),
            Decoded::Frame {
                frame: expected,
                consumed: bytes.len()
            },
            "example {name}"
        );
    }
}
