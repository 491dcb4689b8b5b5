//! CSV compile errors: every kind of error names its line and what is wrong, and all
//! errors are reported (up to the limit), not only the first.

use sortd::plan::{
    CompileErrorKind, CompileErrors, DefaultKind, Plan, compile_str, error::COMPILE_ERRORS_MAX,
};

const DEFAULTS: &str =
    "default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n";

fn errors_of(body: &str) -> CompileErrors {
    let csv = format!("kind,key,chutes\n{DEFAULTS}{body}");
    compile_str("plan.csv", &csv).expect_err("expected compile errors")
}

/// Line numbers in `body` start after the header (1) and the four defaults (2..=5).
const FIRST_BODY_LINE: u32 = 6;

#[test]
fn each_error_names_its_line_and_problem() {
    let long_key = "K".repeat(129);
    let long_name = "n".repeat(257);
    let cases: Vec<(String, CompileErrorKind, &str)> = vec![
        (
            "exact,A,1\nexact,A,2".into(),
            CompileErrorKind::DuplicateKey {
                kind: "exact",
                key: "A".into(),
                first_line: FIRST_BODY_LINE,
            },
            "plan.csv:7: duplicate exact key \"A\" (first at line 6)",
        ),
        (
            "prefix,33,1\nprefix,33,1".into(),
            CompileErrorKind::DuplicateKey {
                kind: "prefix",
                key: "33".into(),
                first_line: FIRST_BODY_LINE,
            },
            "plan.csv:7: duplicate prefix key \"33\" (first at line 6)",
        ),
        (
            "exact,A,0".into(),
            CompileErrorKind::BadChute {
                field: "0".into(),
                why: "out of range 1..=65535",
            },
            "plan.csv:6: bad chute \"0\": out of range 1..=65535",
        ),
        (
            "exact,A,x".into(),
            CompileErrorKind::BadChute {
                field: "x".into(),
                why: "not a number",
            },
            "plan.csv:6: bad chute \"x\": not a number",
        ),
        (
            "exact,A,1|2|3|4|5".into(),
            CompileErrorKind::BadChute {
                field: "1|2|3|4|5".into(),
                why: "more than 4 chutes",
            },
            "plan.csv:6: bad chute \"1|2|3|4|5\": more than 4 chutes",
        ),
        (
            format!("exact,{long_key},1"),
            CompileErrorKind::KeyTooLong { bytes: 129 },
            "plan.csv:6: key too long: 129 bytes (at most 128)",
        ),
        (
            "exact,,1".into(),
            CompileErrorKind::EmptyKey,
            "plan.csv:6: empty key",
        ),
        (
            "exact,A".into(),
            CompileErrorKind::ColumnCount { got: 2 },
            "plan.csv:6: wrong column count: expected 3 (kind,key,chutes), got 2",
        ),
        (
            "prefix,33,1,2".into(),
            CompileErrorKind::ColumnCount { got: 4 },
            "plan.csv:6: wrong column count: expected 3 (kind,key,chutes), got 4",
        ),
        (
            "route,33,1".into(),
            CompileErrorKind::UnknownKind {
                kind: "route".into(),
            },
            "plan.csv:6: unknown kind \"route\" (expected meta, prefix, exact or default)",
        ),
        (
            "default,early,5".into(),
            CompileErrorKind::UnknownDefault {
                name: "early".into(),
            },
            "plan.csv:6: unknown default \"early\" (expected no_read, no_rule, multi_read or late)",
        ),
        (
            "default,late,5".into(),
            CompileErrorKind::DuplicateDefault {
                which: DefaultKind::Late,
                first_line: 5,
            },
            "plan.csv:6: duplicate default late (first at line 5)",
        ),
        (
            "meta,owner,me".into(),
            CompileErrorKind::UnknownMeta {
                name: "owner".into(),
            },
            "plan.csv:6: unknown meta item \"owner\" (expected name or version)",
        ),
        (
            "meta,name,a\nmeta,name,b".into(),
            CompileErrorKind::DuplicateMeta {
                item: "name",
                first_line: 6,
            },
            "plan.csv:7: duplicate meta name (first at line 6)",
        ),
        (
            "meta,version,0".into(),
            CompileErrorKind::BadVersion { value: "0".into() },
            "plan.csv:6: bad version \"0\": expected 1 to 4294967295",
        ),
        (
            "meta,version,4294967296".into(),
            CompileErrorKind::BadVersion {
                value: "4294967296".into(),
            },
            "plan.csv:6: bad version \"4294967296\": expected 1 to 4294967295",
        ),
        (
            format!("meta,name,{long_name}"),
            CompileErrorKind::NameTooLong { bytes: 257 },
            "plan.csv:6: name too long: 257 bytes (at most 256)",
        ),
        (
            format!("exact,{},1", "Z".repeat(5000)),
            CompileErrorKind::LineTooLong,
            "plan.csv:6: line is longer than 4096 bytes",
        ),
    ];
    for (body, kind, message) in cases {
        let errors = errors_of(&body);
        assert_eq!(errors.errors.len(), 1, "{body:.60}: {errors}");
        assert_eq!(errors.errors[0].kind, kind, "{body:.60}");
        assert_eq!(errors.to_string(), message, "{body:.60}");
    }
}

#[test]
fn bad_utf8_is_reported_with_its_line() {
    let mut csv = format!("kind,key,chutes\n{DEFAULTS}").into_bytes();
    csv.extend_from_slice(b"exact,\xff\xfe,1\n");
    let (result, errors) = match sortd::plan::compile_reader("plan.csv", &csv[..]) {
        Ok(_) => (true, CompileErrors::default()),
        Err(errors) => (false, errors),
    };
    assert!(!result);
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].line, 6);
    assert_eq!(errors.errors[0].kind, CompileErrorKind::BadUtf8);
}

#[test]
fn missing_defaults_and_header_are_reported() {
    let errors = compile_str("plan.csv", "kind,key,chutes\ndefault,late,5\n").unwrap_err();
    let kinds: Vec<_> = errors
        .errors
        .iter()
        .map(|error| (error.line, &error.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                0,
                &CompileErrorKind::MissingDefault {
                    which: DefaultKind::NoRead
                }
            ),
            (
                0,
                &CompileErrorKind::MissingDefault {
                    which: DefaultKind::NoRule
                }
            ),
            (
                0,
                &CompileErrorKind::MissingDefault {
                    which: DefaultKind::MultiRead
                }
            ),
        ]
    );
    assert_eq!(
        errors.lines().next().unwrap(),
        "plan.csv: missing default: add `default,no_read,CHUTE`"
    );

    let errors = compile_str("plan.csv", DEFAULTS).unwrap_err();
    assert_eq!(errors.errors[0].line, 1);
    assert_eq!(errors.errors[0].kind, CompileErrorKind::MissingHeader);

    let errors = compile_str("plan.csv", "# only a comment\n\n").unwrap_err();
    assert!(
        errors
            .errors
            .iter()
            .any(|error| error.kind == CompileErrorKind::MissingHeader)
    );
}

#[test]
fn all_errors_are_reported_in_line_order_up_to_the_limit() {
    let body = "exact,A,1\nexact,B,0\nexact,A,2\nprefix,3,x\nbogus\n";
    let errors = errors_of(body);
    let lines: Vec<u32> = errors.errors.iter().map(|error| error.line).collect();
    assert_eq!(lines, [7, 8, 9, 10]);

    let many: String = (0..COMPILE_ERRORS_MAX + 50)
        .map(|_| "exact,A,0\n")
        .collect();
    let errors = errors_of(&many);
    assert_eq!(errors.errors.len(), COMPILE_ERRORS_MAX);
    assert_eq!(errors.errors_dropped, 50);
    assert_eq!(errors.count(), COMPILE_ERRORS_MAX as u64 + 50);
    assert!(
        errors
            .lines()
            .last()
            .unwrap()
            .contains("50 more errors not shown")
    );
}

#[test]
fn accepted_syntax_variants() {
    let csv = "\u{feff}kind , key , chutes\r\n# comment\r\n\r\n   \n\
        meta,name, Hub, wave 2 \r\nmeta,version,42\r\n\
        default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n\
        prefix, 33 , 101 | 102 \nexact,YT1,7";
    let plan = Plan::from_bytes(compile_str("plan.csv", csv).unwrap()).unwrap();
    plan.verify().unwrap();
    assert_eq!(plan.name(), "Hub, wave 2");
    assert_eq!(plan.version(), 42);
    assert_eq!(plan.prefix(b"33").unwrap().0.as_slice(), &[101, 102]);
    assert_eq!(plan.exact(b"YT1").unwrap().0.as_slice(), &[7]);
    assert_eq!(plan.exact(b"YT1").unwrap().1.line, 12);
}

#[test]
fn derived_version_follows_content_and_is_never_zero() {
    let base = format!("kind,key,chutes\n{DEFAULTS}exact,A,1\n");
    let version = |csv: &str| {
        Plan::from_bytes(compile_str("p", csv).unwrap())
            .unwrap()
            .version()
    };
    let first = version(&base);
    assert_ne!(first, 0);
    assert_eq!(
        first,
        version(&format!("# a comment\n{base}")),
        "comments do not count"
    );
    assert_ne!(first, version(&format!("{base}exact,B,1\n")));
    assert_ne!(first, version(&base.replace("exact,A,1", "exact,A,2")));
}

#[test]
fn the_example_plan_compiles_and_verifies() {
    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example-plan.csv"
    ))
    .unwrap();
    let plan = Plan::from_bytes(compile_str("example-plan.csv", &csv).unwrap()).unwrap();
    plan.verify().unwrap();
    let stats = plan.stats();
    assert_eq!(stats.exact_keys, 300);
    assert!(stats.prefix_keys > 1_700, "{stats:?}");
    assert_eq!(stats.prefix_lengths_present(), [2, 4, 9]);
    // Xihu district (330106) streets are local; Beijing (1101) is line-haul.
    let xihu = plan
        .prefix_entries()
        .find(|(key, _)| key.starts_with(b"330106"))
        .unwrap();
    assert!(xihu.1.primary() < 100);
    assert!(plan.longest_prefix(b"110101001001").unwrap().0.primary() > 300);
}
