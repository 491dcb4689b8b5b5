//! Replays the committed seed corpus of the `plc_telegram_decode` fuzz target on stable
//! Rust, so every input the fuzzer was seeded with (and every finding added later) stays
//! a regression test.
//!
//! `PLC_WRITE_CORPUS=1 cargo test --test plc_fuzz_corpus -- --ignored` rewrites the
//! generated seeds from the current encoder.

use std::path::PathBuf;
use std::time::Instant;

use sortd::decision::Reason;
use sortd::plc::{
    ChuteState, Hello, Outcome, Role, SortCommand, SortConfirm, TELEGRAM_BYTES, Telegram,
};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/plc_telegram_decode")
}

#[test]
fn committed_corpus_replays_without_panic() {
    let entries = std::fs::read_dir(corpus_dir()).expect("corpus directory exists");
    let mut replayed = 0;
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let bytes = std::fs::read(&path).expect("corpus file readable");
        sortd::plc::fuzzing::telegram_decode(Instant::now(), &bytes);
        replayed += 1;
    }
    assert!(replayed >= 12, "only {replayed} corpus files");
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let sort = Telegram::Sort {
        seq: 1,
        sort: SortCommand {
            parcel_id: 42,
            scanner_id: 3,
            chute: 7,
            reason: Reason::SortedPrimary,
            plan_version: 1,
            decided_at_us: 1000,
        },
    };
    let confirm = Telegram::SortConfirm {
        seq: 1,
        confirm: SortConfirm {
            parcel_id: 42,
            scanner_id: 3,
            chute: 7,
            outcome: Outcome::Diverted,
        },
    };
    let status = Telegram::ChuteStatus {
        seq: 2,
        chute: 7,
        state: ChuteState::Full,
    };
    let hello = Telegram::Hello(Hello {
        role: Role::Plc,
        session: 7,
        ack_session: 0xF022,
        acked_through_seq: 2,
        window_first_seq: 1,
        next_seq: 3,
    });
    let ack = Telegram::Ack { through_seq: 3 };
    let heartbeat = Telegram::Heartbeat {
        counter: 1,
        echo: 0,
    };
    let stream =
        |telegrams: &[Telegram]| -> Vec<u8> { telegrams.iter().flat_map(|t| t.encode()).collect() };
    let mut corrupted = sort.encode();
    corrupted[20] ^= 0x10;
    let mut garbage_between = stream(&[confirm, status]);
    garbage_between.splice(40..40, b"\x53\x44\x00noise\x53".iter().copied());
    vec![
        ("sort", sort.encode().to_vec()),
        ("confirm", confirm.encode().to_vec()),
        ("status", status.encode().to_vec()),
        ("hello", hello.encode().to_vec()),
        ("ack", ack.encode().to_vec()),
        ("heartbeat", heartbeat.encode().to_vec()),
        (
            "reports_then_ack",
            stream(&[confirm, status, ack, heartbeat]),
        ),
        ("duplicate_confirms", stream(&[confirm, confirm, confirm])),
        (
            "hello_mid_stream",
            stream(&[confirm, hello, confirm, status]),
        ),
        ("sorts_to_plc", stream(&[sort, sort, ack, heartbeat])),
        ("corrupted_sort", corrupted.to_vec()),
        ("garbage_between", garbage_between),
        ("partial", sort.encode()[..TELEGRAM_BYTES / 2].to_vec()),
        ("empty", Vec::new()),
    ]
}

#[test]
#[ignore = "writes files; run with PLC_WRITE_CORPUS=1 to regenerate the seed corpus"]
fn write_seed_corpus() {
    if std::env::var_os("PLC_WRITE_CORPUS").is_none() {
        return;
    }
    std::fs::create_dir_all(corpus_dir()).expect("create corpus directory");
    for (name, bytes) in seeds() {
        std::fs::write(corpus_dir().join(format!("seed_{name}")), bytes).expect("write seed");
    }
}
