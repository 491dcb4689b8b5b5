//! Replays the committed fuzz corpus (`fuzz/corpus/events_journal_read`) through the same
//! invariant checks the cargo-fuzz target runs, so CI checks them on stable Rust.

use std::fs;
use std::path::Path;

#[test]
fn journal_read_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/events_journal_read");
    let entries = fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap_or_else(|error| panic!("{error}")).path();
        let data = fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        sortd::events::fuzzing::journal_read(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "empty corpus {}", dir.display());
}
