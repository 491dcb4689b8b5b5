//! Replays the committed fuzz corpora (`fuzz/corpus/wire_*`) through the same invariant
//! checks the cargo-fuzz targets run, so CI checks them on stable Rust.

use std::fs;
use std::path::Path;

use sortd::wire::fuzzing;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap_or_else(|error| panic!("{error}")).path();
        let data = fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        check(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "empty corpus {}", dir.display());
}

#[test]
fn binary_decode_corpus() {
    replay("wire_binary_decode", fuzzing::binary_decode);
}

#[test]
fn text_decode_corpus() {
    replay("wire_text_decode", fuzzing::text_decode);
}

#[test]
fn round_trip_corpus() {
    replay("wire_round_trip", fuzzing::round_trip);
}

#[test]
fn chunked_stream_corpus() {
    replay("wire_chunked_stream", fuzzing::chunked_stream);
}
