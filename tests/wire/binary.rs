//! Binary frame version 1: golden bytes for every frame type, every way a frame can be
//! wrong, and the prefix/resync rules.

use sortd::wire::{
    Barcodes, Decoded, EncodeError, FRAME_BYTES_MAX, Field, Frame, FrameDecodeError, Heartbeat,
    Hello, ScanFlags, ScanFrame, decode_binary, encode, resync_offset,
};

const TYPICAL_CODE: &[u8] = b"0027110002054872550918034976966";

fn typical_scan() -> Frame<'static> {
    Frame::Scan(ScanFrame {
        scanner_id: 7,
        sequence: 1042,
        parcel_id: 145,
        scanned_at_us: 1_732_000_000_123_456,
        barcodes: Barcodes::from_slice(&[TYPICAL_CODE]).unwrap_or_default(),
        destination: Some(b"330106001"),
        weight_g: 81212,
        length_mm: 321,
        width_mm: 150,
        height_mm: 87,
        flags: ScanFlags::WEIGHT_MEASURED.union(ScanFlags::DIMENSIONS_MEASURED),
    })
}

fn hello() -> Frame<'static> {
    Frame::Hello(Hello {
        scanner_id: 7,
        protocol_version: 1,
        heartbeat_interval_ms: 1000,
        sent_at_us: 1_732_000_000_000_000,
    })
}

fn heartbeat() -> Frame<'static> {
    Frame::Heartbeat(Heartbeat {
        scanner_id: 7,
        sequence: 3,
        sent_at_us: 1_732_000_003_000_000,
    })
}

fn no_read_scan() -> Frame<'static> {
    Frame::Scan(ScanFrame {
        scanner_id: 1,
        sequence: 2,
        parcel_id: 0,
        scanned_at_us: 3,
        barcodes: Barcodes::new(),
        destination: None,
        weight_g: 0,
        length_mm: 0,
        width_mm: 0,
        height_mm: 0,
        flags: ScanFlags::EMPTY,
    })
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("zz"), 16).unwrap_or(0))
        .collect()
}

fn encoded(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    assert_eq!(encode(frame, &mut out), Ok(()));
    out
}

/// Golden bytes: the same dumps PROTOCOL.md shows.
const TYPICAL_SCAN_HEX: &str = "
    a5 5d 01 03 5c 00 00 00 07 00 00 00 12 04 00 00
    91 00 00 00 00 00 00 00 40 22 c2 ac 3e 27 06 00
    3c 3d 01 00 41 01 96 00 57 00 06 00 01 09 1f 00
    30 30 32 37 31 31 30 30 30 32 30 35 34 38 37 32
    35 35 30 39 31 38 30 33 34 39 37 36 39 36 36 33
    33 30 31 30 36 30 30 31 91 d7 82 ee";
const HELLO_HEX: &str = "
    a5 5d 01 01 1c 00 00 00 07 00 00 00 01 00 e8 03
    00 40 c0 ac 3e 27 06 00 a6 92 4b df";
const HEARTBEAT_HEX: &str = "
    a5 5d 01 02 1c 00 00 00 07 00 00 00 03 00 00 00
    c0 06 ee ac 3e 27 06 00 e2 00 8f 01";

#[test]
fn golden_bytes_for_every_frame_type() {
    let cases = [
        (typical_scan(), TYPICAL_SCAN_HEX),
        (hello(), HELLO_HEX),
        (heartbeat(), HEARTBEAT_HEX),
    ];
    for (frame, golden) in cases {
        let golden = hex(golden);
        assert_eq!(encoded(&frame), golden, "{frame:?}");
        assert_eq!(
            decode_binary(&golden),
            Decoded::Frame {
                frame,
                consumed: golden.len()
            }
        );
    }
    assert_eq!(hex(TYPICAL_SCAN_HEX).len(), 92);
}

#[test]
fn encode_appends_and_decode_takes_one_frame_at_a_time() {
    let mut stream = vec![];
    for frame in [hello(), typical_scan(), no_read_scan(), heartbeat()] {
        assert_eq!(encode(&frame, &mut stream), Ok(()));
    }
    let mut rest = stream.as_slice();
    let mut seen = vec![];
    while let Decoded::Frame { frame, consumed } = decode_binary(rest) {
        seen.push(frame);
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty());
    assert_eq!(seen, [hello(), typical_scan(), no_read_scan(), heartbeat()]);
}

#[test]
fn every_proper_prefix_needs_more() {
    for frame in [typical_scan(), hello(), heartbeat(), no_read_scan()] {
        let bytes = encoded(&frame);
        for end in 0..bytes.len() {
            assert_eq!(
                decode_binary(&bytes[..end]),
                Decoded::NeedMore,
                "prefix {end}"
            );
        }
    }
}

/// Re-seals a modified frame so only the intended fault remains.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn with(bytes: &[u8], at: usize, values: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at..at + values.len()].copy_from_slice(values);
    bytes
}

#[test]
fn each_fault_gives_its_error_and_skip() {
    let scan = encoded(&typical_scan());
    let hello = encoded(&hello());
    let next_magic_none = scan.len();
    // (name, bytes, expected error, expected skip)
    let cases: Vec<(&str, Vec<u8>, FrameDecodeError, usize)> = vec![
        (
            "garbage",
            b"hello world".to_vec(),
            FrameDecodeError::BadMagic,
            11,
        ),
        ("one bad byte", vec![0x00], FrameDecodeError::BadMagic, 1),
        (
            "magic first byte then bad",
            vec![0xa5, 0x00],
            FrameDecodeError::BadMagic,
            2,
        ),
        (
            "version 2",
            with(&scan, 2, &[2]),
            FrameDecodeError::UnsupportedVersion { got: 2 },
            next_magic_none,
        ),
        (
            "version in short header",
            vec![0xa5, 0x5d, 9],
            FrameDecodeError::UnsupportedVersion { got: 9 },
            3,
        ),
        (
            "frame type 9",
            with(&scan, 3, &[9]),
            FrameDecodeError::UnknownFrameType { got: 9 },
            next_magic_none,
        ),
        (
            "scan too short",
            with(&scan, 4, &[49, 0]),
            FrameDecodeError::FrameTooShort {
                declared: 49,
                min: 50,
            },
            next_magic_none,
        ),
        (
            "scan over max",
            with(&scan, 4, &[0x01, 0x10]),
            FrameDecodeError::FrameTooLong {
                declared: 4097,
                max: FRAME_BYTES_MAX,
            },
            next_magic_none,
        ),
        (
            "hello wrong size",
            with(&hello, 4, &[29, 0]),
            FrameDecodeError::FrameTooLong {
                declared: 29,
                max: 28,
            },
            hello.len(),
        ),
        (
            "reserved header",
            with(&scan, 6, &[1]),
            FrameDecodeError::BadField {
                field: Field::Reserved,
            },
            next_magic_none,
        ),
        (
            "crc",
            with(&scan, 50, b"X"),
            FrameDecodeError::BadCrc {
                expected: 0xee82_d791,
                got: crc32c::crc32c(&with(&scan, 50, b"X")[..88]),
            },
            next_magic_none,
        ),
        (
            "9 barcodes",
            reseal(with(&scan, 44, &[9])),
            FrameDecodeError::TooManyBarcodes { count: 9 },
            scan.len(),
        ),
        (
            "destination 129",
            reseal(with(&scan, 45, &[129])),
            FrameDecodeError::BadField {
                field: Field::DestinationLength,
            },
            scan.len(),
        ),
        (
            "destination length off",
            reseal(with(&scan, 45, &[8])),
            FrameDecodeError::BadField {
                field: Field::BodyLength,
            },
            scan.len(),
        ),
        (
            "barcode length 0",
            reseal(with(&scan, 46, &[0, 0])),
            FrameDecodeError::BadField {
                field: Field::BarcodeLength,
            },
            scan.len(),
        ),
        (
            "barcode length 1025",
            reseal(with(&scan, 46, &[0x01, 0x04])),
            FrameDecodeError::BadField {
                field: Field::BarcodeLength,
            },
            scan.len(),
        ),
        (
            "barcode past the end",
            reseal(with(&scan, 46, &[0xff, 0x03])),
            FrameDecodeError::BadField {
                field: Field::BodyLength,
            },
            scan.len(),
        ),
        (
            "destination not utf-8",
            reseal(with(&scan, 80, &[0xff])),
            FrameDecodeError::BadField {
                field: Field::DestinationUtf8,
            },
            scan.len(),
        ),
        (
            "hello version 0",
            reseal(with(&hello, 12, &[0])),
            FrameDecodeError::BadField {
                field: Field::ProtocolVersion,
            },
            hello.len(),
        ),
        (
            "hello reserved",
            reseal(with(&hello, 13, &[1])),
            FrameDecodeError::BadField {
                field: Field::Reserved,
            },
            hello.len(),
        ),
    ];
    for (name, bytes, error, skip) in cases {
        assert_eq!(
            decode_binary(&bytes),
            Decoded::Skip { error, skip },
            "{name}"
        );
        assert!(!error.kind().is_empty());
    }
}

#[test]
fn over_long_length_is_rejected_from_the_header_alone() {
    let header = [0xa5, 0x5d, 0x01, 0x03, 0xff, 0xff, 0x00, 0x00];
    assert_eq!(
        decode_binary(&header),
        Decoded::Skip {
            error: FrameDecodeError::FrameTooLong {
                declared: 0xffff,
                max: FRAME_BYTES_MAX
            },
            skip: 8
        }
    );
}

#[test]
fn frames_behind_garbage_and_broken_frames_are_recovered() {
    let good = encoded(&typical_scan());
    let mut corrupt = good.clone();
    corrupt[60] ^= 0xff;
    // A cut-off frame: its header promises more bytes than arrive before the next frame.
    let cut_off = &good[..40];
    let mut stream = b"\xa5junk\xa5".to_vec();
    stream.extend_from_slice(&corrupt);
    stream.extend_from_slice(cut_off);
    stream.extend_from_slice(&good);
    stream.extend_from_slice(&encoded(&heartbeat()));

    let mut rest = stream.as_slice();
    let (mut frames, mut skipped, mut errors) = (vec![], 0, vec![]);
    loop {
        match decode_binary(rest) {
            Decoded::Frame { frame, consumed } => {
                frames.push(frame);
                rest = &rest[consumed..];
            }
            Decoded::Skip { error, skip } => {
                errors.push(error.kind());
                skipped += skip;
                rest = &rest[skip..];
            }
            Decoded::NeedMore => break,
        }
    }
    assert!(rest.is_empty());
    assert_eq!(frames, [typical_scan(), heartbeat()]);
    assert_eq!(skipped, 6 + corrupt.len() + cut_off.len());
    assert!(
        errors.contains(&"bad_crc") && errors.contains(&"bad_magic"),
        "{errors:?}"
    );
}

#[test]
fn resync_offset_stops_at_the_next_possible_magic() {
    let cases: [(&[u8], usize); 7] = [
        (b"", 0),
        (b"x", 1),
        (b"xyz", 3),
        (b"\xa5\x5d\x01", 3),
        (b"x\xa5\x5d", 1),
        (b"xx\xa5", 2),
        (b"x\xa5x\xa5\x5d", 3),
    ];
    for (buf, expected) in cases {
        assert_eq!(resync_offset(buf), expected, "{buf:?}");
    }
}

#[test]
fn encode_refuses_what_decode_would_refuse_and_writes_nothing() {
    let long_code = [b'1'; 1025];
    let long_destination = [b'd'; 129];
    let big_codes = [[b'x'; 1000]; 5];
    let big: Vec<&[u8]> = big_codes.iter().map(|code| code.as_slice()).collect();
    let base = match typical_scan() {
        Frame::Scan(scan) => scan,
        _ => unreachable!(),
    };
    let cases: Vec<(Frame<'_>, EncodeError)> = vec![
        (
            Frame::Scan(ScanFrame {
                barcodes: Barcodes::from_slice(&[b""]).unwrap_or_default(),
                ..base.clone()
            }),
            EncodeError::BadField {
                field: Field::BarcodeLength,
            },
        ),
        (
            Frame::Scan(ScanFrame {
                barcodes: Barcodes::from_slice(&[&long_code]).unwrap_or_default(),
                ..base.clone()
            }),
            EncodeError::BadField {
                field: Field::BarcodeLength,
            },
        ),
        (
            Frame::Scan(ScanFrame {
                destination: Some(b""),
                ..base.clone()
            }),
            EncodeError::BadField {
                field: Field::DestinationLength,
            },
        ),
        (
            Frame::Scan(ScanFrame {
                destination: Some(&long_destination),
                ..base.clone()
            }),
            EncodeError::BadField {
                field: Field::DestinationLength,
            },
        ),
        (
            Frame::Scan(ScanFrame {
                destination: Some(b"\xff\xfe"),
                ..base.clone()
            }),
            EncodeError::BadField {
                field: Field::DestinationUtf8,
            },
        ),
        (
            Frame::Scan(ScanFrame {
                barcodes: Barcodes::from_slice(&big).unwrap_or_default(),
                ..base.clone()
            }),
            EncodeError::FrameTooLong {
                bytes: 50 + 5 * 1002 + 9,
                max: FRAME_BYTES_MAX,
            },
        ),
        (
            Frame::Hello(Hello {
                scanner_id: 1,
                protocol_version: 0,
                heartbeat_interval_ms: 0,
                sent_at_us: 0,
            }),
            EncodeError::BadField {
                field: Field::ProtocolVersion,
            },
        ),
    ];
    for (frame, error) in cases {
        let mut out = b"kept".to_vec();
        assert_eq!(encode(&frame, &mut out), Err(error));
        assert_eq!(out, b"kept");
    }
}

#[test]
fn unknown_flag_bits_survive_a_round_trip() {
    let Frame::Scan(mut scan) = typical_scan() else {
        unreachable!()
    };
    scan.flags = ScanFlags::from_bits(0xfff0);
    let bytes = encoded(&Frame::Scan(scan.clone()));
    assert_eq!(
        decode_binary(&bytes),
        Decoded::Frame {
            frame: Frame::Scan(scan),
            consumed: bytes.len()
        }
    );
}
