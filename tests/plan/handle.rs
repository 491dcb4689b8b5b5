//! The shared handle: readers keep their plan across a swap; a swap publishes only a
//! fully verified plan; a failed swap keeps the old one and says why.

use sortd::plan::{Plan, PlanError, PlanHandle, compile_str};

fn plan_csv(name: &str, version: u32, chute: u16) -> String {
    format!(
        "kind,key,chutes\nmeta,name,{name}\nmeta,version,{version}\nexact,YT1,{chute}\n\
         default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n"
    )
}

#[test]
fn swap_publishes_verified_plans_and_keeps_old_ones_for_readers() {
    let dir = tempfile::tempdir().unwrap();
    let first = Plan::from_bytes(compile_str("a", &plan_csv("wave 1", 1, 7)).unwrap()).unwrap();
    let handle = PlanHandle::new(first);
    let reader = handle.load();
    assert_eq!(reader.resolve(&[b"YT1"], None).chutes.primary(), 7);

    let second = dir.path().join("wave2.sortplan");
    std::fs::write(
        &second,
        compile_str("b", &plan_csv("wave 2", 2, 8)).unwrap(),
    )
    .unwrap();
    let report = handle.swap_from_path(&second).unwrap();
    assert_eq!(
        (
            report.old_name.as_str(),
            report.old_version,
            report.new_name.as_str(),
            report.new_version
        ),
        ("wave 1", 1, "wave 2", 2)
    );
    // The reader that loaded before the swap still sees wave 1; new loads see wave 2.
    assert_eq!(reader.resolve(&[b"YT1"], None).chutes.primary(), 7);
    assert_eq!(handle.load().resolve(&[b"YT1"], None).chutes.primary(), 8);
    drop(reader);

    // A plan whose checksum is broken opens (cheap checks pass) but is never published.
    let mut bytes = compile_str("c", &plan_csv("wave 3", 3, 9)).unwrap();
    // A byte of the last record: only the checksum covers it.
    let in_records = bytes.len() - 20;
    bytes[in_records] ^= 0x80;
    let broken = dir.path().join("wave3.sortplan");
    std::fs::write(&broken, &bytes).unwrap();
    assert!(matches!(
        handle.swap_from_path(&broken),
        Err(PlanError::ChecksumMismatch { .. })
    ));
    let missing = handle.swap_from_path(&dir.path().join("missing.sortplan"));
    assert_eq!(
        missing.unwrap_err(),
        PlanError::Io {
            kind: std::io::ErrorKind::NotFound
        }
    );
    assert_eq!(handle.load().name(), "wave 2");
    assert_eq!(handle.load().version(), 2);
}

#[test]
fn readers_on_other_threads_always_see_a_whole_plan() {
    let dir = tempfile::tempdir().unwrap();
    let handle = std::sync::Arc::new(PlanHandle::new(
        Plan::from_bytes(compile_str("a", &plan_csv("v1", 1, 1)).unwrap()).unwrap(),
    ));
    let paths: Vec<_> = (2..=20u16)
        .map(|version| {
            let path = dir.path().join(format!("v{version}.sortplan"));
            let csv = plan_csv(&format!("v{version}"), u32::from(version), version);
            std::fs::write(&path, compile_str("p", &csv).unwrap()).unwrap();
            path
        })
        .collect();
    let reader = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            let mut last_version = 0;
            for _ in 0..20_000 {
                let plan = handle.load();
                let chute = plan.resolve(&[b"YT1"], None).chutes.primary();
                // Each plan maps YT1 to its own version number: never a mix.
                assert_eq!(u32::from(chute), plan.version());
                assert!(plan.version() >= last_version, "versions only move forward");
                last_version = plan.version();
            }
        })
    };
    for path in &paths {
        handle.swap_from_path(path).unwrap();
    }
    reader.join().unwrap();
    assert_eq!(handle.load().version(), 20);
}
