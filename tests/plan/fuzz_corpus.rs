//! Replays the committed fuzz corpus of `plan_open_lookup` on stable Rust, and checks
//! that the corpus's valid seed is still a valid plan (so the fuzzer starts deep).

use sortd::plan::{Plan, fuzzing};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/plan_open_lookup");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_panics() {
    let files = corpus();
    assert!(files.len() >= 4, "{files:?}");
    for (_name, bytes) in &files {
        fuzzing::open_verify_lookup(bytes);
    }
}

#[test]
fn corpus_holds_a_valid_plan() {
    let files = corpus();
    let (_, valid) = files
        .iter()
        .find(|(name, _)| name == "valid-tiny")
        .expect("valid-tiny seed");
    let plan = Plan::from_bytes(valid.clone()).unwrap();
    plan.verify().unwrap();
    assert!(plan.stats().exact_keys > 0 && plan.stats().prefix_keys > 0);
}
