//! The compiled file: golden bytes, cheap open checks, thorough verify, and bad files
//! (empty, truncated, wrong magic or version, corrupt fields) giving clear errors.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use sortd::plan::format::{self, FOOTER_BYTES, HEADER_BYTES, field};
use sortd::plan::{Plan, PlanError, compile_str, fuzzing};
use xxhash_rust::xxh3::xxh3_64;

const TINY_CSV: &str = "kind,key,chutes
meta,name,tiny
meta,version,7
prefix,33,101|102
exact,YT1,7
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
";

fn tiny() -> Vec<u8> {
    compile_str("tiny.csv", TINY_CSV).unwrap()
}

/// Rewrite the footer checksum so only structural checks can catch a change.
fn fix_checksum(bytes: &mut [u8]) {
    let footer = bytes.len() - FOOTER_BYTES;
    let checksum = xxh3_64(&bytes[..footer]);
    bytes[footer..footer + 8].copy_from_slice(&checksum.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn key_hash_is_fixed_forever() {
    // Changing these values breaks every compiled plan: bump FORMAT_VERSION instead.
    assert_eq!(format::KEY_HASH_SEED, 0x736f_7274_645f_706c);
    assert_eq!(format::key_hash(b"YT1234567890123"), KEY_HASH_GOLDEN);
}
const KEY_HASH_GOLDEN: u64 = 2_578_751_943_968_939_138;

#[test]
fn golden_layout_of_a_tiny_plan() {
    let bytes = tiny();
    assert_eq!(&bytes[..8], b"SORTPLAN");
    assert_eq!(&bytes[bytes.len() - 8..], b"SPLANEND");
    let u32_at = |offset| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
    let u64_at = |offset| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
    assert_eq!(u32_at(field::FORMAT_VERSION), 1);
    assert_eq!(u32_at(field::HEADER_BYTES), 128);
    assert_eq!(u64_at(field::FILE_BYTES), bytes.len() as u64);
    assert_eq!(u32_at(field::PLAN_VERSION), 7);
    assert_eq!(
        &bytes[field::DEFAULTS..field::DEFAULTS + 8],
        &[230, 3, 231, 3, 229, 3, 228, 3]
    );
    assert_eq!(u32_at(field::CHUTE_SET_COUNT), 2);
    assert_eq!(u32_at(field::NAME_BYTES), 4);
    assert_eq!(u64_at(field::EXACT_KEY_COUNT), 1);
    assert_eq!(u64_at(field::EXACT_BUCKET_COUNT), 2);
    assert_eq!(u64_at(field::PREFIX_KEY_COUNT), 1);
    assert_eq!(u64_at(field::EXACT_RECORD_BYTES), 9 + 3);
    assert_eq!(u64_at(field::PREFIX_RECORD_BYTES), 9 + 2);
    assert_eq!(u64_at(field::PREFIX_LENGTHS), 0b10);
    // name "tiny" padded to 8, then chute sets: [101, 102, 0, 0] and [7, 0, 0, 0].
    assert_eq!(&bytes[HEADER_BYTES..HEADER_BYTES + 8], b"tiny\0\0\0\0");
    assert_eq!(
        &bytes[HEADER_BYTES + 8..HEADER_BYTES + 24],
        &[101, 0, 102, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
    );
    // header + name + 2 sets + 2+2 buckets + 16 + 16 record bytes (padded) + footer
    assert_eq!(bytes.len(), 128 + 8 + 16 + 16 + 16 + 16 + 16 + 16);
    assert_eq!(xxh3_64(&bytes), TINY_FILE_GOLDEN, "compiled bytes changed");
}
const TINY_FILE_GOLDEN: u64 = 12_883_679_503_180_716_388;

#[test]
fn bad_files_give_clear_errors() {
    let good = tiny();
    let minimum = (HEADER_BYTES + FOOTER_BYTES) as u64;
    let mut wrong_version = good.clone();
    put_u32(&mut wrong_version, field::FORMAT_VERSION, 2);
    let mut short = good.clone();
    short.pop();
    let mut long = good.clone();
    long.push(0);
    let mut footer = good.clone();
    let last = footer.len() - 1;
    footer[last] = b'X';
    let mut zero_default = good.clone();
    zero_default[field::DEFAULTS] = 0;
    zero_default[field::DEFAULTS + 1] = 0;
    let mut flags = good.clone();
    put_u32(&mut flags, field::FLAGS, 1);
    let mut buckets = good.clone();
    buckets[field::EXACT_BUCKET_COUNT] = 3;
    let mut probe = good.clone();
    put_u32(&mut probe, field::EXACT_PROBE_MAX, 1000);
    let cases: Vec<(&str, Vec<u8>, PlanError)> = vec![
        (
            "empty",
            vec![],
            PlanError::Truncated {
                expected_bytes: minimum,
                got_bytes: 0,
            },
        ),
        (
            "magic prefix",
            b"SORT".to_vec(),
            PlanError::Truncated {
                expected_bytes: minimum,
                got_bytes: 4,
            },
        ),
        (
            "header only",
            good[..HEADER_BYTES].to_vec(),
            PlanError::Truncated {
                expected_bytes: minimum,
                got_bytes: HEADER_BYTES as u64,
            },
        ),
        (
            "not a plan",
            b"kind,key,chutes\n".to_vec(),
            PlanError::BadMagic { got: *b"kind,key" },
        ),
        (
            "wrong version",
            wrong_version,
            PlanError::UnsupportedVersion {
                expected: 1,
                got: 2,
            },
        ),
        (
            "one byte short",
            short,
            PlanError::Truncated {
                expected_bytes: good.len() as u64,
                got_bytes: good.len() as u64 - 1,
            },
        ),
        (
            "one byte long",
            long,
            PlanError::Truncated {
                expected_bytes: good.len() as u64,
                got_bytes: good.len() as u64 + 1,
            },
        ),
        (
            "footer magic",
            footer,
            PlanError::Corrupt {
                what: "bad footer magic",
                offset: good.len() as u64 - 8,
            },
        ),
        (
            "zero default",
            zero_default,
            PlanError::Corrupt {
                what: "default chute is 0",
                offset: field::DEFAULTS as u64,
            },
        ),
        (
            "flags",
            flags,
            PlanError::Corrupt {
                what: "unknown flags set",
                offset: field::FLAGS as u64,
            },
        ),
        (
            "bucket count",
            buckets,
            PlanError::Corrupt {
                what: "bucket count does not match key count",
                offset: field::EXACT_BUCKET_COUNT as u64,
            },
        ),
        (
            "probe max",
            probe,
            PlanError::Corrupt {
                what: "probe length exceeds bucket count",
                offset: field::EXACT_KEY_COUNT as u64,
            },
        ),
    ];
    for (label, bytes, expected) in cases {
        let error = Plan::from_bytes(bytes.clone()).expect_err(label);
        assert_eq!(error, expected, "{label}");
        assert!(!error.to_string().is_empty());
        // The same through a real file (small files are read, large ones mapped).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.sortplan");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Plan::open(&path).unwrap_err(), expected, "{label} (file)");
    }
    let missing = Plan::open(std::path::Path::new("/nonexistent/plan.sortplan")).unwrap_err();
    assert_eq!(
        missing,
        PlanError::Io {
            kind: std::io::ErrorKind::NotFound
        }
    );
}

/// A change to a valid plan's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn verify_catches_what_open_does_not_read() {
    let good = tiny();
    let plan = Plan::from_bytes(good.clone()).unwrap();
    plan.verify().unwrap();

    // Any flipped content byte: the checksum.
    let mut flipped = good.clone();
    flipped[HEADER_BYTES + 1] ^= 0x40;
    let plan = Plan::from_bytes(flipped).unwrap();
    assert!(matches!(
        plan.verify(),
        Err(PlanError::ChecksumMismatch { .. })
    ));

    // Structural damage with a valid checksum.
    let layout_start = HEADER_BYTES + 8; // after the padded name
    let exact_buckets = layout_start + 16;
    let exact_records = exact_buckets + 16 + 16;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "chute set with zero primary",
            Box::new(move |bytes: &mut Vec<u8>| {
                bytes[layout_start] = 0;
                bytes[layout_start + 1] = 0;
            }),
            "invalid chute set",
        ),
        (
            "record chute set out of range",
            Box::new(move |bytes: &mut Vec<u8>| {
                put_u32(bytes, exact_records + 4, 9);
            }),
            "record chute set out of range",
        ),
        (
            "record line 0",
            Box::new(move |bytes: &mut Vec<u8>| {
                put_u32(bytes, exact_records, 0);
            }),
            "record has line 0",
        ),
        (
            "record key length past the section",
            Box::new(move |bytes: &mut Vec<u8>| {
                bytes[exact_records + 8] = 100;
            }),
            "record runs past its section",
        ),
        (
            "buckets emptied",
            Box::new(move |bytes: &mut Vec<u8>| {
                bytes[exact_buckets..exact_buckets + 16].fill(0);
            }),
            "key not reachable in its table",
        ),
        (
            "prefix length set wrong",
            Box::new(|bytes: &mut Vec<u8>| {
                bytes[field::PREFIX_LENGTHS] = 0b110;
            }),
            "prefix length set does not match the prefixes",
        ),
    ];
    for (label, damage, what) in cases {
        let mut bytes = good.clone();
        damage(&mut bytes);
        fix_checksum(&mut bytes);
        let plan = Plan::from_bytes(bytes).unwrap_or_else(|error| panic!("{label}: {error}"));
        match plan.verify() {
            Err(PlanError::Corrupt { what: got, .. }) => assert_eq!(got, what, "{label}"),
            other => panic!("{label}: expected Corrupt({what}), got {other:?}"),
        }
        // Lookups on the damaged plan still answer without panicking.
        let _ = plan.resolve(&[b"YT1"], Some(b"3301"));
    }
}

#[test]
fn large_plans_are_mapped_and_open_cheaply() {
    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example-plan.csv"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("example.csv");
    let plan_path = dir.path().join("example.sortplan");
    std::fs::write(&csv_path, csv).unwrap();
    let report = sortd::plan::compile_file(&csv_path, &plan_path).unwrap();
    assert!(report.file_bytes > 4096);
    let plan = Plan::open(&plan_path).unwrap();
    assert!(format!("{plan:?}").contains("mapped: true"));
    plan.verify().unwrap();
    assert_eq!(plan.stats().file_bytes, report.file_bytes);
    // No temporary files are left beside the output.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

proptest! {
    #![proptest_config(Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(0xbad_f11e),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Random damage anywhere, with or without a repaired checksum, never panics.
    #[test]
    fn damaged_plans_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        repair in any::<bool>(),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let mut bytes = tiny();
        for (index, value) in edits {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        if repair {
            fix_checksum(&mut bytes);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        fuzzing::open_verify_lookup(&bytes);
    }

    /// Arbitrary bytes behind a valid header prefix never panic either.
    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = tiny()[..64].to_vec();
        bytes.extend_from_slice(&tail);
        fuzzing::open_verify_lookup(&bytes);
    }
}
