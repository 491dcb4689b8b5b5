//! Entry points for the fuzz targets (fuzz/fuzz_targets/plan_*.rs) and the corpus replay
//! test: arbitrary bytes in, no panic out.
//!
//! Not part of the stable API; it only strings together public calls.

use super::open::Plan;
use super::types::{DefaultKind, Outcome, RuleKind};

/// Open `data` as a plan; if it opens, verify it and run lookups and iterations built
/// from the input itself. Panics only if the plan layer breaks one of its promises.
pub fn open_verify_lookup(data: &[u8]) {
    let Ok(plan) = Plan::from_bytes(data.to_vec()) else {
        return;
    };
    let verified = plan.verify().is_ok();
    let _ = plan.stats();
    let _ = plan.name();
    for which in DefaultKind::ALL {
        assert_ne!(plan.default_chute(which), 0, "open accepted a zero default");
    }
    let probes: Vec<&[u8]> = data.chunks(13).take(32).collect();
    for window in probes.windows(2) {
        let resolution = plan.resolve(window, window.first().copied());
        if let Some(rule) = resolution.rule {
            let _ = plan.rule_key(&rule);
        }
        if matches!(resolution.outcome, Outcome::Exact | Outcome::Prefix) {
            assert!(resolution.rule.is_some());
        }
    }
    let mut entries = 0u64;
    for kind in [RuleKind::Exact, RuleKind::Prefix] {
        for (key, chutes, rule) in plan.entries(kind).take(4096) {
            entries += 1;
            assert!(!chutes.as_slice().is_empty());
            if verified {
                let found = match kind {
                    RuleKind::Exact => plan.exact(key),
                    RuleKind::Prefix => plan.prefix(key),
                };
                assert_eq!(
                    found.map(|(_, found)| found),
                    Some(rule),
                    "verified plan lost a key"
                );
            }
        }
    }
    if verified {
        let stats = plan.stats();
        assert!(entries <= stats.exact_keys + stats.prefix_keys);
    }
}
