//! Properties of the wire layer, on fixed-seed random input: encode -> decode round trip;
//! any split of a stream into chunks gives the same frames; garbage spliced between frames
//! is skipped and every valid frame after it recovered.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use sortd::wire::{
    Barcodes, Decoded, Frame, MAGIC, ScanFlags, ScanFrame, decode_binary, encode, fuzzing,
};

fn config() -> Config {
    Config {
        cases: 400,
        rng_seed: RngSeed::Fixed(0x5047_2026),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The owned parts of a SCAN, from which a borrowed [`ScanFrame`] is built.
#[derive(Debug, Clone)]
struct OwnedScan {
    numbers: (u32, u32, u64, u64, u32, u16, u16, u16, u16),
    codes: Vec<Vec<u8>>,
    destination: Option<String>,
}

impl OwnedScan {
    fn frame(&self) -> Frame<'_> {
        let codes: Vec<&[u8]> = self.codes.iter().map(Vec::as_slice).collect();
        let (
            scanner_id,
            sequence,
            parcel_id,
            scanned_at_us,
            weight_g,
            length_mm,
            width_mm,
            height_mm,
            flags,
        ) = self.numbers;
        Frame::Scan(ScanFrame {
            scanner_id,
            sequence,
            parcel_id,
            scanned_at_us,
            barcodes: Barcodes::from_slice(&codes).unwrap_or_default(),
            destination: self.destination.as_deref().map(str::as_bytes),
            weight_g,
            length_mm,
            width_mm,
            height_mm,
            flags: ScanFlags::from_bits(flags),
        })
    }
}

fn owned_scan() -> impl Strategy<Value = OwnedScan> {
    (
        any::<(u32, u32, u64, u64, u32, u16, u16, u16, u16)>(),
        vec(vec(any::<u8>(), 1..48), 0..=8),
        proptest::option::of("[0-9A-Z\u{4e00}-\u{4e0f}-]{1,40}"),
    )
        .prop_map(|(numbers, codes, destination)| OwnedScan {
            numbers,
            codes,
            destination,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn scan_round_trips(scan in owned_scan()) {
        let frame = scan.frame();
        let mut bytes = Vec::new();
        prop_assert_eq!(encode(&frame, &mut bytes), Ok(()));
        prop_assert_eq!(decode_binary(&bytes), Decoded::Frame { frame, consumed: bytes.len() });
    }

    #[test]
    fn any_split_into_chunks_gives_the_same_frames(scans in vec(owned_scan(), 1..6), cuts in vec(any::<prop::sample::Index>(), 0..12)) {
        let mut stream = Vec::new();
        for scan in &scans {
            prop_assert_eq!(encode(&scan.frame(), &mut stream), Ok(()));
        }
        let mut cut_at: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
        cut_at.push(stream.len());
        cut_at.sort_unstable();
        let mut buffer: Vec<u8> = Vec::new();
        let mut decoded: Vec<Vec<u8>> = Vec::new();
        let mut arrived = 0;
        for end in cut_at {
            buffer.extend_from_slice(&stream[arrived..end]);
            arrived = end;
            loop {
                match decode_binary(&buffer) {
                    Decoded::Frame { frame, consumed } => {
                        let mut again = Vec::new();
                        prop_assert_eq!(encode(&frame, &mut again), Ok(()));
                        decoded.push(again);
                        buffer.drain(..consumed);
                    }
                    Decoded::NeedMore => break,
                    Decoded::Skip { error, .. } => prop_assert!(false, "valid stream skipped: {:?}", error),
                }
            }
        }
        prop_assert!(buffer.is_empty());
        let expected: Vec<Vec<u8>> = scans.iter().map(|scan| {
            let mut bytes = Vec::new();
            let _ = encode(&scan.frame(), &mut bytes);
            bytes
        }).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_every_frame_recovered(
        parts in vec((owned_scan(), vec(any::<u8>(), 0..40)), 1..6),
    ) {
        let mut stream = Vec::new();
        let mut garbage_bytes = 0;
        for (scan, garbage) in &parts {
            // Garbage may hold anything but the magic's first byte, which could start a
            // plausible header that swallows the frame behind it until the stream ends.
            stream.extend(garbage.iter().map(|&b| if b == MAGIC[0] { 0 } else { b }));
            garbage_bytes += garbage.len();
            prop_assert_eq!(encode(&scan.frame(), &mut stream), Ok(()));
        }
        let mut rest = stream.as_slice();
        let mut frames = 0;
        let mut skipped = 0;
        loop {
            match decode_binary(rest) {
                Decoded::Frame { frame, consumed } => {
                    prop_assert_eq!(frame, parts[frames].0.frame());
                    frames += 1;
                    rest = &rest[consumed..];
                }
                Decoded::Skip { skip, .. } => {
                    skipped += skip;
                    rest = &rest[skip..];
                }
                Decoded::NeedMore => break,
            }
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(frames, parts.len());
        prop_assert_eq!(skipped, garbage_bytes);
    }

    /// The fuzz targets' invariants, on random bytes, so they run on stable in CI.
    #[test]
    fn fuzz_invariants_hold_on_random_bytes(data in vec(any::<u8>(), 0..600)) {
        fuzzing::binary_decode(&data);
        fuzzing::text_decode(&data);
        fuzzing::round_trip(&data);
        fuzzing::chunked_stream(&data);
    }
}

/// Garbage that happens to look like a header is recovered from once the stream ends: no
/// frame behind it is lost for good.
#[test]
fn a_fake_header_delays_but_does_not_lose_the_frame_behind_it() {
    let scan = OwnedScan {
        numbers: (1, 2, 3, 4, 5, 6, 7, 8, 0),
        codes: vec![b"JD0146".to_vec()],
        destination: None,
    };
    let mut stream = vec![0xa5, 0x5d, 0x01, 0x03, 0x00, 0x10, 0x00, 0x00];
    assert_eq!(encode(&scan.frame(), &mut stream), Ok(()));
    assert_eq!(decode_binary(&stream), Decoded::NeedMore);
    let drop = sortd::wire::resync_offset(&stream);
    assert_eq!(drop, 8);
    assert_eq!(
        decode_binary(&stream[drop..]),
        Decoded::Frame {
            frame: scan.frame(),
            consumed: stream.len() - 8
        }
    );
}
