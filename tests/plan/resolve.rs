//! The resolution rule, branch by branch, and lookups checked against a HashMap model.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use sortd::plan::{Chutes, Outcome, Plan, PlanBuilder, RuleKind, compile_str};

const CSV: &str = "kind,key,chutes
meta,name,Hangzhou hub wave 2
prefix,33,101|102
prefix,3301,12|13
prefix,330106001,14
exact,YT1234567890123,7
exact,A7,7
exact,B7,7
exact,C8,8
exact,D78,7|8
exact,E87,8|7
default,no_read,998
default,no_rule,999
default,multi_read,997
default,late,996
";

fn plan() -> Plan {
    let plan = Plan::from_bytes(compile_str("plan.csv", CSV).unwrap()).unwrap();
    plan.verify().unwrap();
    plan
}

/// (barcodes, destination, outcome, chutes, rule kind and line)
type Case<'a> = (
    &'a [&'a [u8]],
    Option<&'a [u8]>,
    Outcome,
    &'a [u16],
    Option<(RuleKind, u32)>,
);

#[test]
fn resolution_branches() {
    let plan = plan();
    let long = [b'9'; 200];
    // (barcodes, destination, outcome, chutes, rule kind and line)
    let cases: &[Case] = &[
        (
            &[b"YT1234567890123"],
            None,
            Outcome::Exact,
            &[7],
            Some((RuleKind::Exact, 6)),
        ),
        (
            &[b"YT1234567890123", b"YT1234567890123"],
            None,
            Outcome::Exact,
            &[7],
            Some((RuleKind::Exact, 6)),
        ),
        // Two barcodes with the same chute list agree; the first one's rule is reported.
        (
            &[b"B7", b"A7"],
            None,
            Outcome::Exact,
            &[7],
            Some((RuleKind::Exact, 8)),
        ),
        // An unknown barcode beside a known one does not disagree.
        (
            &[b"nope", b"A7"],
            None,
            Outcome::Exact,
            &[7],
            Some((RuleKind::Exact, 7)),
        ),
        // Exact beats prefix.
        (
            &[b"C8"],
            Some(b"3301"),
            Outcome::Exact,
            &[8],
            Some((RuleKind::Exact, 9)),
        ),
        // Different chutes disagree.
        (&[b"A7", b"C8"], None, Outcome::MultiRead, &[997], None),
        // Same chutes in another order, or a longer list sharing the primary, disagree too.
        (&[b"D78", b"E87"], None, Outcome::MultiRead, &[997], None),
        (
            &[b"A7", b"D78"],
            Some(b"33"),
            Outcome::MultiRead,
            &[997],
            None,
        ),
        // No exact match: longest prefix of the destination.
        (
            &[b"nope"],
            Some(b"330106001005"),
            Outcome::Prefix,
            &[14],
            Some((RuleKind::Prefix, 5)),
        ),
        (
            &[],
            Some(b"330106001"),
            Outcome::Prefix,
            &[14],
            Some((RuleKind::Prefix, 5)),
        ),
        (
            &[],
            Some(b"33010600"),
            Outcome::Prefix,
            &[12, 13],
            Some((RuleKind::Prefix, 4)),
        ),
        (
            &[],
            Some(b"3399"),
            Outcome::Prefix,
            &[101, 102],
            Some((RuleKind::Prefix, 3)),
        ),
        (
            &[],
            Some(b"33"),
            Outcome::Prefix,
            &[101, 102],
            Some((RuleKind::Prefix, 3)),
        ),
        // Nothing matches.
        (&[], Some(b"44"), Outcome::NoRule, &[999], None),
        (&[], Some(b"3"), Outcome::NoRule, &[999], None),
        (&[b"nope"], None, Outcome::NoRule, &[999], None),
        (&[&long], Some(&long), Outcome::NoRule, &[999], None),
        // Nothing read.
        (&[], None, Outcome::NoRead, &[998], None),
        (&[b""], Some(b""), Outcome::NoRead, &[998], None),
    ];
    for (index, (barcodes, destination, outcome, chutes, rule)) in cases.iter().enumerate() {
        let resolution = plan.resolve(barcodes, *destination);
        assert_eq!(resolution.outcome, *outcome, "case {index}");
        assert_eq!(resolution.chutes.as_slice(), *chutes, "case {index}");
        assert_eq!(
            resolution.rule.map(|rule| (rule.kind, rule.line)),
            *rule,
            "case {index}"
        );
    }
}

#[test]
fn rule_key_explains_the_decision() {
    let plan = plan();
    let resolution = plan.resolve(&[], Some(b"330106001777"));
    assert_eq!(plan.rule_key(&resolution.rule.unwrap()), b"330106001");
    let resolution = plan.resolve(&[b"D78"], None);
    assert_eq!(plan.rule_key(&resolution.rule.unwrap()), b"D78");
}

#[test]
fn entries_come_back_in_csv_order() {
    let plan = plan();
    let exact: Vec<(Vec<u8>, Vec<u16>)> = plan
        .exact_entries()
        .map(|(key, chutes)| (key.to_vec(), chutes.as_slice().to_vec()))
        .collect();
    assert_eq!(exact.len(), 6);
    assert_eq!(exact[0], (b"YT1234567890123".to_vec(), vec![7]));
    assert_eq!(exact[5], (b"E87".to_vec(), vec![8, 7]));
    let prefixes: Vec<&[u8]> = plan.prefix_entries().map(|(key, _)| key).collect();
    assert_eq!(prefixes, [&b"33"[..], b"3301", b"330106001"]);
    assert_eq!(plan.stats().chute_sets, 7);
}

fn builder_with_defaults() -> PlanBuilder {
    let mut builder = PlanBuilder::new();
    for which in sortd::plan::DefaultKind::ALL {
        builder.set_default(which, 900);
    }
    builder
}

proptest! {
    #![proptest_config(Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5eed),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Exact and prefix lookups agree with a HashMap model for hits and misses.
    #[test]
    fn lookups_match_a_hashmap_model(
        entries in prop::collection::hash_map(
            prop::collection::vec(any::<u8>(), 1..20),
            (1u16..=5, any::<bool>()),
            0..400,
        ),
        probes in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..100),
    ) {
        let mut builder = builder_with_defaults();
        let mut model: HashMap<Vec<u8>, Chutes> = HashMap::new();
        for (line, (key, (chute, prefix))) in entries.iter().enumerate() {
            let chutes = Chutes::single(*chute).unwrap();
            let kind = if *prefix { RuleKind::Prefix } else { RuleKind::Exact };
            builder.add(kind, key, chutes, line as u32 + 2).unwrap();
            if !*prefix {
                model.insert(key.clone(), chutes);
            }
        }
        let plan = Plan::from_bytes(builder.finish().unwrap().to_bytes()).unwrap();
        plan.verify().unwrap();
        for (key, (chute, prefix)) in &entries {
            let found = if *prefix { plan.prefix(key) } else { plan.exact(key) };
            prop_assert_eq!(found.map(|(chutes, _)| chutes.primary()), Some(*chute));
        }
        for probe in &probes {
            prop_assert_eq!(plan.exact(probe).map(|(chutes, _)| chutes), model.get(probe).copied());
            // Longest prefix: the longest key among prefixes that starts the probe.
            let expected = entries
                .iter()
                .filter(|(key, (_, prefix))| *prefix && probe.starts_with(key))
                .max_by_key(|(key, _)| key.len())
                .map(|(_, (chute, _))| *chute);
            prop_assert_eq!(plan.longest_prefix(probe).map(|(chutes, _)| chutes.primary()), expected);
        }
    }
}

#[test]
fn many_keys_all_found_and_misses_miss() {
    let mut builder = builder_with_defaults();
    let keys = 50_000u64;
    for index in 0..keys {
        let key = sortd::plan::generate::tracking_number(3, index);
        let chutes = sortd::plan::generate::tracking_chutes(index);
        builder
            .add(RuleKind::Exact, &key, chutes, index as u32 + 2)
            .unwrap();
    }
    let plan = Plan::from_bytes(builder.finish().unwrap().to_bytes()).unwrap();
    plan.verify().unwrap();
    for index in 0..keys {
        let key = sortd::plan::generate::tracking_number(3, index);
        let (chutes, rule) = plan.exact(&key).unwrap();
        assert_eq!(chutes, sortd::plan::generate::tracking_chutes(index));
        assert_eq!(rule.line, index as u32 + 2);
    }
    for index in keys..2 * keys {
        assert!(
            plan.exact(&sortd::plan::generate::tracking_number(3, index))
                .is_none()
        );
    }
    assert_eq!(plan.exact_entries().count() as u64, keys);
    let stats = plan.stats();
    // The file-size budget: at most 40 bytes per key beyond the key bytes.
    let overhead = (stats.file_bytes - keys * 15) as f64 / keys as f64;
    assert!(overhead <= 40.0, "{overhead} bytes per key");
}
