//! The two text formats a scrape may get, which one an `Accept` header asks for, and the
//! classic Prometheus text format (0.0.4) made from the OpenMetrics text.
//!
//! `prometheus-client` encodes OpenMetrics only. The classic format differs in a few
//! mechanical ways (no `# EOF`, no `# UNIT`, counter families named with their `_total`
//! suffix, `info` families as gauges named `_info`), so [`openmetrics_to_classic`] rewrites
//! the metadata lines and copies every sample line as it is. Pure functions: no sockets.

/// The format of an exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4: the default.
    Classic,
    /// OpenMetrics 1.0.0 text, when the scraper asks for it.
    OpenMetrics,
}

/// The media type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The OpenMetrics media type.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Classic => CLASSIC_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality at least that of any range that
    /// matches the classic format (`text/plain`, `text/*`, `*/*`); classic otherwise,
    /// including when there is no header or it cannot be read.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let mut openmetrics_q = 0.0f32;
        let mut classic_q = 0.0f32;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|param| param.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, value)| value.trim().parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics_q = openmetrics_q.max(quality),
                "text/plain" | "text/*" | "*/*" => classic_q = classic_q.max(quality),
                _ => {}
            }
        }
        if openmetrics_q > 0.0 && openmetrics_q >= classic_q {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }
}

/// The family names and types declared by `# TYPE` lines.
fn declared_types(openmetrics: &str) -> Vec<(&str, &str)> {
    openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect()
}

/// Rewrites OpenMetrics text (as `prometheus-client` writes it) into the classic text
/// format, appending to `out`.
pub fn openmetrics_to_classic(openmetrics: &str, out: &mut String) {
    let types = declared_types(openmetrics);
    let type_of = |family: &str| {
        types
            .iter()
            .find(|(name, _)| *name == family)
            .map_or("unknown", |(_, kind)| *kind)
    };
    // The classic name and type of a family.
    let classic = |family: &str| -> (String, &'static str) {
        match type_of(family) {
            "counter" => (format!("{family}_total"), "counter"),
            "info" => (format!("{family}_info"), "gauge"),
            "gauge" => (family.to_string(), "gauge"),
            "histogram" => (family.to_string(), "histogram"),
            "summary" => (family.to_string(), "summary"),
            _ => (family.to_string(), "untyped"),
        }
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (family, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // OpenMetrics escapes `"` in HELP; the classic format does not.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {} {help}\n", classic(family).0));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split_once(' ').map_or(rest, |(family, _)| family);
            let (name, kind) = classic(family);
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases: &[(Option<&str>, Format)] = &[
            (None, Format::Classic),
            (Some(""), Format::Classic),
            (Some("*/*"), Format::Classic),
            (Some("text/plain"), Format::Classic),
            (Some("text/plain;version=0.0.4"), Format::Classic),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.2, text/plain;q=0.9"),
                Format::Classic,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Classic),
            (Some("application/openmetrics-text;q=abc"), Format::Classic),
            (Some("application/json"), Format::Classic),
        ];
        for (accept, expected) in cases {
            assert_eq!(Format::negotiate(*accept), *expected, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_families_become_classic_ones() {
        let openmetrics = "# HELP a_bytes Bytes \\\"read\\\".\n# TYPE a_bytes counter\n\
                           # UNIT a_bytes bytes\na_bytes_total 3\n\
                           # HELP p The plan.\n# TYPE p info\np_info{name=\"x\"} 1\n\
                           # HELP g A gauge.\n# TYPE g gauge\ng 1\n\
                           # HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\n\
                           h_sum 0.0\nh_count 0\n# EOF\n";
        let mut classic = String::new();
        openmetrics_to_classic(openmetrics, &mut classic);
        assert_eq!(
            classic,
            "# HELP a_bytes_total Bytes \"read\".\n# TYPE a_bytes_total counter\n\
             a_bytes_total 3\n# HELP p_info The plan.\n# TYPE p_info gauge\n\
             p_info{name=\"x\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n\
             # HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\n\
             h_sum 0.0\nh_count 0\n"
        );
    }
}
