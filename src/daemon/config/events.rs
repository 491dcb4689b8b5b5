//! The `[events]` section of the configuration: the sort-event journal's directory, ids,
//! segment size, retention and fsync interval, validated into the journal writer's
//! [`WriterConfig`].
//!
//! Only parsing and validation; opening the journal is the daemon's job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::DaemonConfigError;
use crate::events::journal::{DIR_DEFAULT, RetentionPolicy, WriterConfig};
use crate::events::segment::check_id;

/// `[events]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// Journal sort events.
    pub enabled: bool,
    /// The journal directory; relative paths are taken from the configuration's folder.
    pub dir: PathBuf,
    /// This hub's id (segment headers, NATS subject).
    pub hub_id: String,
    /// This sorter's id, unique in the hub (event ids are `sorter_id:seq`).
    pub sorter_id: String,
    /// Roll to a new segment file past this size.
    pub segment_bytes: u64,
    /// Keep the journal under this many bytes (only exported segments are deleted).
    pub retention_bytes: u64,
    /// Delete exported segments older than this.
    pub retention_hours: u64,
    /// Group commit period: a power loss loses at most this much.
    pub fsync_interval_ms: u64,
}

/// Default group-commit period, in milliseconds (see docs/events.md for why).
pub const FSYNC_INTERVAL_MS_DEFAULT: u64 = 100;

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            enabled: false,
            dir: PathBuf::from(DIR_DEFAULT),
            hub_id: String::new(),
            sorter_id: String::new(),
            segment_bytes: 64 << 20,
            retention_bytes: 4 << 30,
            retention_hours: 168,
            fsync_interval_ms: FSYNC_INTERVAL_MS_DEFAULT,
        }
    }
}

/// `value` within `min..=max`, or an error naming `events.<key>`.
fn range(key: &str, value: u64, min: u64, max: u64) -> Result<u64, DaemonConfigError> {
    super::sections::within(&format!("events.{key}"), value, min, max)
}

/// Validates `[events]`: `None` when disabled.
pub fn validate(
    section: &EventsSection,
    base: &Path,
    warning_interval: Duration,
) -> Result<Option<WriterConfig>, DaemonConfigError> {
    if !section.enabled {
        return Ok(None);
    }
    for (key, id) in [
        ("hub_id", &section.hub_id),
        ("sorter_id", &section.sorter_id),
    ] {
        check_id(id).map_err(|message| DaemonConfigError {
            key: format!("events.{key}"),
            message: format!("`{id}` {message} (required when events are enabled)"),
        })?;
    }
    let dir = if section.dir.is_relative() {
        base.join(&section.dir)
    } else {
        section.dir.clone()
    };
    let segment_bytes = range("segment_bytes", section.segment_bytes, 64 << 10, 1 << 30)?;
    let mut config = WriterConfig::new(&dir, &section.hub_id, &section.sorter_id);
    config.segment_bytes = segment_bytes;
    config.retention = RetentionPolicy {
        bytes_max: range(
            "retention_bytes",
            section.retention_bytes,
            segment_bytes,
            1 << 50,
        )?,
        age_max: Duration::from_secs(
            3600 * range("retention_hours", section.retention_hours, 1, 24 * 3650)?,
        ),
        cursor_required: true,
    };
    config.fsync_interval = Duration::from_millis(range(
        "fsync_interval_ms",
        section.fsync_interval_ms,
        1,
        10_000,
    )?);
    config.warning_interval = warning_interval;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<WriterConfig>, DaemonConfigError> {
        let section: EventsSection = toml::from_str(text).map_err(|e| DaemonConfigError {
            key: String::new(),
            message: e.to_string(),
        })?;
        validate(&section, Path::new("/etc/sortd"), Duration::from_secs(10))
    }

    #[test]
    fn events_section_is_validated() {
        assert!(parse("").unwrap().is_none());
        let config =
            parse("enabled = true\nhub_id = \"hz1\"\nsorter_id = \"xb-2\"\ndir = \"events\"")
                .unwrap()
                .unwrap();
        assert_eq!(config.dir, Path::new("/etc/sortd/events"));
        assert_eq!(config.fsync_interval, Duration::from_millis(100));
        assert_eq!(config.segment_bytes, 64 << 20);
        let cases = [
            ("enabled = true\nsorter_id = \"s\"", "events.hub_id"),
            (
                "enabled = true\nhub_id = \"h\"\nsorter_id = \"a.b\"",
                "events.sorter_id",
            ),
            (
                "enabled = true\nhub_id = \"h\"\nsorter_id = \"s\"\nfsync_interval_ms = 0",
                "events.fsync_interval_ms",
            ),
            (
                "enabled = true\nhub_id = \"h\"\nsorter_id = \"s\"\nsegment_bytes = 10",
                "events.segment_bytes",
            ),
            (
                "enabled = true\nhub_id = \"h\"\nsorter_id = \"s\"\nretention_bytes = 1000",
                "events.retention_bytes",
            ),
            (
                "enabled = true\nhub_id = \"h\"\nsorter_id = \"s\"\nretention_hours = 0",
                "events.retention_hours",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(parse(text).unwrap_err().key, key, "{text}");
        }
        assert!(parse("colour = 1").is_err());
    }
}
