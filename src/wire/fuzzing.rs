//! Invariant checks over arbitrary bytes, shared by the cargo-fuzz targets in `fuzz/` and
//! the stable corpus-replay test (`tests/wire/fuzz_corpus.rs`).
//!
//! Each function takes any bytes and panics only when the wire layer breaks a promise
//! (a panic here is a real bug, which is the point). Not for production use.

use super::{
    Barcodes, Decoded, FRAME_BYTES_MAX, Frame, Framing, Heartbeat, Hello, MAGIC, ScanFlags,
    ScanFrame, TextProfile, TextProfileSpec, decode_binary, encode,
};

/// Decodes `data` as a binary stream to the end; every frame must re-encode to exactly
/// the bytes it was decoded from.
pub fn binary_decode(data: &[u8]) {
    let outcome = drain(&Framing::Binary, data);
    for (frame_bytes, _) in &outcome.frames {
        assert!(frame_bytes.len() <= FRAME_BYTES_MAX);
    }
    for (frame_bytes, reencoded) in &outcome.frames {
        assert_eq!(frame_bytes, reencoded, "decode -> encode changed the bytes");
    }
}

/// Decodes `data[1..]` as a text stream with a profile picked by `data[0]`; every frame
/// must respect the SCAN limits and survive a binary round trip.
pub fn text_decode(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let framing = Framing::Text(profile_for(selector));
    let outcome = drain(&framing, stream);
    for (_, reencoded) in &outcome.frames {
        match decode_binary(reencoded) {
            Decoded::Frame { consumed, .. } => assert_eq!(consumed, reencoded.len()),
            other => panic!("text frame re-encoded to bytes that do not decode: {other:?}"),
        }
    }
}

/// Builds a frame from `data`; if it encodes, it must decode back equal, taking exactly
/// the bytes written, and again with garbage in front.
pub fn round_trip(data: &[u8]) {
    let mut reader = ByteReader { data };
    let frame = frame_from(&mut reader);
    let mut bytes = Vec::new();
    if encode(&frame, &mut bytes).is_err() {
        assert!(bytes.is_empty(), "a failed encode must not write");
        return;
    }
    match decode_binary(&bytes) {
        Decoded::Frame {
            frame: decoded,
            consumed,
        } => {
            assert_eq!(decoded, frame);
            assert_eq!(consumed, bytes.len());
        }
        other => panic!("encoded frame did not decode: {other:?}"),
    }
    let mut with_garbage: Vec<u8> = reader.data.iter().map(|&b| clean(b)).collect();
    let garbage_bytes = with_garbage.len();
    with_garbage.extend_from_slice(&bytes);
    let outcome = drain(&Framing::Binary, &with_garbage);
    assert_eq!(outcome.skipped, garbage_bytes);
    assert_eq!(outcome.frames.len(), 1);
}

/// Builds a stream of valid frames and garbage from `data`, then checks that feeding it
/// in chunks gives the same frames and skipped-byte total as decoding it whole, and that
/// garbage without the magic byte never costs a valid frame.
pub fn chunked_stream(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let chunk_seed = usize::from(control >> 2) + 1;
    let (framing, stream, expected) = if control & 1 == 1 {
        let framing = Framing::Text(profile_for(control >> 1));
        (framing, rest.to_vec(), None)
    } else {
        let (stream, expected, garbage_is_clean) = binary_stream(rest, control & 2 == 0);
        (
            Framing::Binary,
            stream,
            garbage_is_clean.then_some(expected),
        )
    };
    let whole = drain(&framing, &stream);
    let chunked = drain_chunked(&framing, &stream, chunk_seed);
    assert_eq!(whole.frames, chunked.frames, "chunking changed the frames");
    assert_eq!(
        whole.skipped, chunked.skipped,
        "chunking changed the skipped bytes"
    );
    if let Some(expected) = expected {
        let got: Vec<&Vec<u8>> = whole.frames.iter().map(|(bytes, _)| bytes).collect();
        let expected: Vec<&Vec<u8>> = expected.iter().collect();
        assert_eq!(got, expected, "a valid frame was lost behind garbage");
    }
}

/// What decoding a whole stream gave: each frame's input bytes with its binary
/// re-encoding, and the bytes skipped.
#[derive(Debug, Default)]
struct Outcome {
    frames: Vec<(Vec<u8>, Vec<u8>)>,
    skipped: usize,
}

/// Decodes all of `stream`; at the end, a leftover that needs more is dropped the way a
/// caller would at end of stream, so frames behind it are still found.
fn drain(framing: &Framing, stream: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut rest = stream;
    while !rest.is_empty() {
        let advance = step(framing, rest, &mut outcome, true);
        rest = rest.get(advance..).unwrap_or_default();
    }
    outcome
}

/// Like [`drain`], but the decoder only ever sees what has arrived so far, in chunks of
/// 1 to `chunk_seed` bytes.
fn drain_chunked(framing: &Framing, stream: &[u8], chunk_seed: usize) -> Outcome {
    let mut outcome = Outcome::default();
    let mut buffer: Vec<u8> = Vec::new();
    let mut arrived = 0;
    let mut chunk_index = 0usize;
    while arrived < stream.len() {
        chunk_index += 1;
        let chunk_bytes = (chunk_index * 7 + chunk_seed) % chunk_seed.max(1) + 1;
        let until = (arrived + chunk_bytes).min(stream.len());
        buffer.extend_from_slice(stream.get(arrived..until).unwrap_or_default());
        arrived = until;
        loop {
            let advance = step(framing, &buffer, &mut outcome, false);
            if advance == 0 {
                break;
            }
            buffer.drain(..advance);
        }
        assert!(
            buffer.len() <= FRAME_BYTES_MAX,
            "buffered past the frame maximum"
        );
    }
    let mut rest = buffer.as_slice();
    while !rest.is_empty() {
        let advance = step(framing, rest, &mut outcome, true);
        rest = rest.get(advance..).unwrap_or_default();
    }
    outcome
}

/// One decode call with its invariants; returns the bytes to drop (0: wait for more).
fn step(framing: &Framing, buf: &[u8], outcome: &mut Outcome, at_end: bool) -> usize {
    match framing.decode(buf) {
        Decoded::Frame { frame, consumed } => {
            assert!(
                consumed >= 1 && consumed <= buf.len(),
                "consumed {consumed}"
            );
            check_frame(&frame);
            let mut reencoded = Vec::new();
            if let Err(error) = encode(&frame, &mut reencoded) {
                panic!("decoded frame does not encode: {error} {frame:?}");
            }
            let input = buf.get(..consumed).unwrap_or_default().to_vec();
            outcome.frames.push((input, reencoded));
            consumed
        }
        Decoded::Skip { error, skip } => {
            assert!(
                skip >= 1 && skip <= buf.len(),
                "skip {skip} of {}",
                buf.len()
            );
            assert!(!error.kind().is_empty());
            outcome.skipped += skip;
            skip
        }
        Decoded::NeedMore => {
            assert!(buf.len() < FRAME_BYTES_MAX, "need more with a full buffer");
            if !at_end {
                return 0;
            }
            let skip = framing.resync_offset(buf);
            assert!(
                skip >= 1 && skip <= buf.len(),
                "resync {skip} of {}",
                buf.len()
            );
            outcome.skipped += skip;
            skip
        }
    }
}

fn check_frame(frame: &Frame<'_>) {
    if let Frame::Scan(scan) = frame {
        assert!(scan.barcodes.len() <= super::BARCODES_MAX);
        assert!(scan.barcodes.iter().all(|code| !code.is_empty()));
        if let Some(destination) = scan.destination {
            assert!(!destination.is_empty() && destination.len() <= super::DESTINATION_BYTES_MAX);
            assert!(std::str::from_utf8(destination).is_ok());
        }
    }
}

/// A built-in profile, or a custom one with other separators, by selector.
fn profile_for(selector: u8) -> TextProfile {
    let names = TextProfile::builtin_names();
    if let Some(name) = names.get(usize::from(selector) % (names.len() + 1)) {
        if let Some(profile) = TextProfile::builtin(name) {
            return profile;
        }
    }
    let spec = TextProfileSpec {
        name: "fuzz-custom".into(),
        framing: "line-cr".into(),
        field_separator: Some("|".into()),
        code_separator: Some("/".into()),
        fields: vec![
            super::FieldRole::ParcelId,
            super::FieldRole::Barcodes,
            super::FieldRole::Destination,
            super::FieldRole::Weight,
            super::FieldRole::Length,
            super::FieldRole::Width,
            super::FieldRole::Height,
            super::FieldRole::LengthUnit,
        ],
        fields_min: Some(2),
        no_read: vec!["NR".into()],
        telegram_bytes_max: Some(64),
    };
    match spec.validate() {
        Ok(profile) => profile,
        Err(error) => panic!("fuzz profile invalid: {error}"),
    }
}

/// Garbage byte that can never start a binary frame.
fn clean(byte: u8) -> u8 {
    if byte == MAGIC[0] { byte ^ 1 } else { byte }
}

/// Interleaves encoded frames and garbage built from `data`. Returns the stream, the
/// frames' bytes in order, and whether the garbage is free of the magic's first byte.
fn binary_stream(data: &[u8], clean_garbage: bool) -> (Vec<u8>, Vec<Vec<u8>>, bool) {
    let mut reader = ByteReader { data };
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    let mut parts = 0;
    while !reader.data.is_empty() && parts < 32 {
        parts += 1;
        if reader.byte() % 3 == 0 {
            let garbage_bytes = usize::from(reader.byte() % 24);
            for _ in 0..garbage_bytes {
                let byte = reader.byte();
                stream.push(if clean_garbage { clean(byte) } else { byte });
            }
        } else {
            let frame = frame_from(&mut reader);
            let mut bytes = Vec::new();
            if encode(&frame, &mut bytes).is_ok() {
                stream.extend_from_slice(&bytes);
                frames.push(bytes);
            }
        }
    }
    (stream, frames, clean_garbage)
}

/// Reads bytes off the front of a slice, giving zeros once it is used up.
struct ByteReader<'a> {
    data: &'a [u8],
}

impl<'a> ByteReader<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for slot in &mut out {
            *slot = self.byte();
        }
        out
    }

    fn slice(&mut self, bytes: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(bytes.min(self.data.len()));
        self.data = rest;
        taken
    }
}

fn frame_from<'a>(reader: &mut ByteReader<'a>) -> Frame<'a> {
    match reader.byte() % 4 {
        0 => Frame::Hello(Hello {
            scanner_id: u32::from_le_bytes(reader.array()),
            protocol_version: reader.byte(),
            heartbeat_interval_ms: u16::from_le_bytes(reader.array()),
            sent_at_us: u64::from_le_bytes(reader.array()),
        }),
        1 => Frame::Heartbeat(Heartbeat {
            scanner_id: u32::from_le_bytes(reader.array()),
            sequence: u32::from_le_bytes(reader.array()),
            sent_at_us: u64::from_le_bytes(reader.array()),
        }),
        _ => {
            let mut barcodes = Barcodes::new();
            for _ in 0..reader.byte() % 9 {
                let code_bytes = usize::from(reader.byte() % 40);
                // Pushes beyond eight cannot happen (count < 9); ignore the result.
                let _ = barcodes.push(reader.slice(code_bytes));
            }
            let destination_bytes = usize::from(reader.byte() % 140);
            let destination = (destination_bytes > 0).then(|| reader.slice(destination_bytes));
            Frame::Scan(ScanFrame {
                scanner_id: u32::from_le_bytes(reader.array()),
                sequence: u32::from_le_bytes(reader.array()),
                parcel_id: u64::from_le_bytes(reader.array()),
                scanned_at_us: u64::from_le_bytes(reader.array()),
                barcodes,
                destination,
                weight_g: u32::from_le_bytes(reader.array()),
                length_mm: u16::from_le_bytes(reader.array()),
                width_mm: u16::from_le_bytes(reader.array()),
                height_mm: u16::from_le_bytes(reader.array()),
                flags: ScanFlags::from_bits(u16::from_le_bytes(reader.array())),
            })
        }
    }
}
