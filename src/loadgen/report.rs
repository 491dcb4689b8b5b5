//! The load generator's report: what was sent, what was decided and why, how fast, and
//! how late the tail was; as text for a person, JSON for scripts, and an SVG plot of the
//! latency percentile curve.
//!
//! It formats numbers it is given; it measures nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyUs {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencyUs {
    /// Percentiles of a histogram.
    pub fn of(histogram: &hdrhistogram::Histogram<u64>) -> LatencyUs {
        LatencyUs {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// A finished run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Parcels (frames) sent, duplicates included.
    pub sent: u64,
    /// Sent by parcel kind.
    pub sent_by_kind: BTreeMap<String, u64>,
    /// Parcels that got a decision (SORTs at the PLC, plus duplicates and undelivered
    /// decisions when the daemon's counts are known).
    pub decided: u64,
    /// Decisions by reason.
    pub reasons: BTreeMap<String, u64>,
    /// SORTs by chute, the busiest first (at most 20).
    pub top_chutes: Vec<(u16, u64)>,
    /// Parcels sent per second over the sending time.
    pub throughput_per_s: f64,
    /// Sending time in seconds.
    pub elapsed_s: f64,
    /// From each parcel's intended send time to its SORT reaching the PLC side.
    pub latency_us: LatencyUs,
    /// Open loop: from each parcel's intended send time to the return of the write that
    /// carried it (the generator's own lateness, part of `latency_us`).
    pub send_lateness_us: LatencyUs,
    /// From the daemon's stamp on a SORT (`decided_at_us`, taken when its PLC thread
    /// starts the turn that sends it) to the PLC side reading it, across the two
    /// processes' wall clocks (the same clock on one machine).
    pub plc_read_us: LatencyUs,
    /// Sent parcels that got no decision.
    pub missing: u64,
    /// Connection and write errors.
    pub errors: u64,
    /// Retransmitted SORTs the PLC side recognised and ignored.
    pub plc_duplicates_ignored: u64,
    /// Cross-check findings; empty when every count agreed.
    pub discrepancies: Vec<String>,
    /// Latency percentile curve: (percentile, microseconds).
    #[serde(skip)]
    pub curve: Vec<(f64, u64)>,
}

/// The points of a percentile curve, from the median to the maximum on a log scale of
/// "nines".
pub fn percentile_curve(histogram: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    let mut points = Vec::new();
    if histogram.is_empty() {
        return points;
    }
    for step in 0..=60 {
        // 0 nines .. 6 nines in steps of 0.1
        let nines = f64::from(step) / 10.0;
        let quantile = 1.0 - 10f64.powf(-nines);
        points.push((quantile * 100.0, histogram.value_at_quantile(quantile)));
    }
    points.push((100.0, histogram.max()));
    points
}

impl LoadReport {
    /// The report in words.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "sent {} parcels in {:.1} s: {:.0} parcels/s",
            self.sent, self.elapsed_s, self.throughput_per_s
        );
        let kinds: Vec<String> = self
            .sent_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        let _ = writeln!(text, "  mix: {}", kinds.join(", "));
        let _ = writeln!(text, "decided {} parcels:", self.decided);
        for (reason, count) in &self.reasons {
            let share = if self.decided > 0 {
                100.0 * *count as f64 / self.decided as f64
            } else {
                0.0
            };
            let _ = writeln!(text, "  {reason:<18} {count:>12} ({share:.1}%)");
        }
        if !self.top_chutes.is_empty() {
            let chutes: Vec<String> = self
                .top_chutes
                .iter()
                .take(8)
                .map(|(chute, count)| format!("{chute}: {count}"))
                .collect();
            let _ = writeln!(text, "busiest chutes: {}", chutes.join(", "));
        }
        let latency = self.latency_us;
        if latency.max == 0 {
            let _ = writeln!(
                text,
                "latency: not measured (no SORT matched a sent parcel id; text telegrams without a parcel id get synthetic ones)"
            );
        } else {
            let _ = writeln!(
                text,
                "latency, scan sent -> SORT at the PLC (us): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                latency.p50, latency.p90, latency.p99, latency.p999, latency.max
            );
        }
        for (what, part) in [
            (
                "  of it, send lateness (intended -> written)",
                self.send_lateness_us,
            ),
            (
                "  of it, daemon's PLC turn -> read by the PLC side",
                self.plc_read_us,
            ),
        ] {
            if part.max > 0 {
                let _ = writeln!(
                    text,
                    "{what} (us): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    part.p50, part.p90, part.p99, part.p999, part.max
                );
            }
        }
        let _ = writeln!(
            text,
            "missing {}  errors {}  PLC retransmissions ignored {}",
            self.missing, self.errors, self.plc_duplicates_ignored
        );
        for discrepancy in &self.discrepancies {
            let _ = writeln!(text, "MISMATCH: {discrepancy}");
        }
        text
    }

    /// The latency percentile curve as a standalone SVG document.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 720.0;
        const HEIGHT: f64 = 400.0;
        const MARGIN: f64 = 60.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">sortd latency by percentile ({} parcels, {:.0}/s)</text>"#,
            WIDTH / 2.0,
            self.sent,
            self.throughput_per_s
        );
        let max_us = self
            .curve
            .iter()
            .map(|(_, us)| *us)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let plot_w = WIDTH - 2.0 * MARGIN;
        let plot_h = HEIGHT - 2.0 * MARGIN;
        let x_of = |percentile: f64| {
            let remaining = (100.0 - percentile).max(1e-4) / 100.0;
            let nines = (-remaining.log10()).clamp(0.0, 6.0);
            MARGIN + plot_w * nines / 6.0
        };
        let y_of = |us: u64| HEIGHT - MARGIN - plot_h * (us as f64 / max_us);
        let _ = writeln!(
            svg,
            r#"<line x1="{MARGIN}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            HEIGHT - MARGIN,
            WIDTH - MARGIN,
            HEIGHT - MARGIN
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{}" stroke="black"/>"#,
            HEIGHT - MARGIN
        );
        for (label, percentile) in [
            ("50%", 50.0),
            ("90%", 90.0),
            ("99%", 99.0),
            ("99.9%", 99.9),
            ("99.99%", 99.99),
            ("99.999%", 99.999),
        ] {
            let x = x_of(percentile);
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                HEIGHT - MARGIN + 18.0
            );
        }
        for fraction in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let us = (max_us * fraction) as u64;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{us}</text>"#,
                MARGIN - 6.0,
                y_of(us) + 4.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">microseconds</text>"#,
            HEIGHT / 2.0,
            HEIGHT / 2.0
        );
        let points: Vec<String> = self
            .curve
            .iter()
            .map(|(percentile, us)| format!("{:.1},{:.1}", x_of(*percentile), y_of(*us)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="steelblue" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let _ = writeln!(svg, "</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_curve_follow_the_histogram() {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .expect("valid bounds");
        for value in 1..=1000u64 {
            histogram.record(value).expect("in range");
        }
        let latency = LatencyUs::of(&histogram);
        assert_eq!((latency.p50, latency.max), (500, 1000));
        assert!(latency.p90 >= 899 && latency.p90 <= 901);
        let curve = percentile_curve(&histogram);
        assert!(
            curve.windows(2).all(|pair| pair[0].1 <= pair[1].1),
            "monotone"
        );
        let report = LoadReport {
            sent: 1000,
            curve,
            ..LoadReport::default()
        };
        let svg = report.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn json_has_the_documented_keys() {
        let report = LoadReport {
            sent: 3,
            decided: 3,
            ..LoadReport::default()
        };
        let json: serde_json::Value = serde_json::to_value(&report).expect("serializable");
        for key in [
            "sent",
            "decided",
            "throughput_per_s",
            "latency_us",
            "send_lateness_us",
            "plc_read_us",
            "reasons",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(
                json["latency_us"].get(key).is_some(),
                "missing latency_us.{key}"
            );
        }
    }
}
