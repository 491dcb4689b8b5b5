//! The `[preadvice]` section of the configuration: whether the node keeps a pre-advice
//! overlay over its plan, where its log lives, and the overlay's limits and compaction
//! thresholds, validated into [`PreAdviceConfig`].
//!
//! Only parsing and validation; opening the log and running compaction is the daemon's
//! job (docs/preadvice.md).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DaemonConfigError;
use crate::plan::PreAdviceSettings;

/// Default pre-advice directory (under the state directory).
pub const DIR_DEFAULT: &str = "/var/lib/sortd/preadvice";

/// `[preadvice]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreAdviceSection {
    /// Keep a pre-advice overlay over the plan.
    pub enabled: bool,
    /// The log and compacted-plan directory; relative paths are taken from the
    /// configuration's folder.
    pub dir: PathBuf,
    /// Most distinct tracking numbers in the overlay; new ones beyond are refused.
    pub entries_max: u64,
    /// Compact when the overlay holds this many entries...
    pub compact_entries: u64,
    /// ...or the log holds this many bytes.
    pub compact_log_bytes: u64,
    /// How often the background thread checks whether a merge or compaction is due.
    pub maintenance_interval_ms: u64,
}

impl Default for PreAdviceSection {
    fn default() -> Self {
        let settings = PreAdviceSettings::default();
        PreAdviceSection {
            enabled: false,
            dir: PathBuf::from(DIR_DEFAULT),
            entries_max: settings.entries_max as u64,
            compact_entries: settings.compact_entries as u64,
            compact_log_bytes: settings.compact_log_bytes,
            maintenance_interval_ms: 1_000,
        }
    }
}

/// The validated `[preadvice]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAdviceConfig {
    /// The directory for the log and the compacted plan.
    pub dir: PathBuf,
    /// Limits and compaction thresholds.
    pub settings: PreAdviceSettings,
    /// How often merge and compaction are checked, in milliseconds.
    pub maintenance_interval_ms: u64,
}

/// `value` within `min..=max`, or an error naming `preadvice.<key>`.
fn range(key: &str, value: u64, min: u64, max: u64) -> Result<u64, DaemonConfigError> {
    super::sections::within(&format!("preadvice.{key}"), value, min, max)
}

/// Validates `[preadvice]`: `None` when disabled.
pub fn validate(
    section: &PreAdviceSection,
    base: &Path,
) -> Result<Option<PreAdviceConfig>, DaemonConfigError> {
    if !section.enabled {
        return Ok(None);
    }
    let dir = if section.dir.is_relative() {
        base.join(&section.dir)
    } else {
        section.dir.clone()
    };
    let entries_max = range("entries_max", section.entries_max, 1, 100_000_000)?;
    let compact_entries = range("compact_entries", section.compact_entries, 1, entries_max)?;
    let compact_log_bytes = range(
        "compact_log_bytes",
        section.compact_log_bytes,
        1 << 20,
        1 << 40,
    )?;
    let maintenance_interval_ms = range(
        "maintenance_interval_ms",
        section.maintenance_interval_ms,
        10,
        600_000,
    )?;
    Ok(Some(PreAdviceConfig {
        dir,
        settings: PreAdviceSettings {
            entries_max: usize::try_from(entries_max).unwrap_or(usize::MAX),
            compact_entries: usize::try_from(compact_entries).unwrap_or(usize::MAX),
            compact_log_bytes,
        },
        maintenance_interval_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_by_default_and_relative_dir_is_from_the_config_folder() {
        let section = PreAdviceSection::default();
        assert_eq!(validate(&section, Path::new("/etc/sortd")).ok(), Some(None));
        let section = PreAdviceSection {
            enabled: true,
            dir: PathBuf::from("padv"),
            ..PreAdviceSection::default()
        };
        let config = validate(&section, Path::new("/etc/sortd"))
            .ok()
            .flatten()
            .map(|config| config.dir);
        assert_eq!(config, Some(PathBuf::from("/etc/sortd/padv")));
    }

    #[test]
    fn compaction_threshold_above_the_limit_is_refused() {
        let section = PreAdviceSection {
            enabled: true,
            entries_max: 10,
            compact_entries: 11,
            ..PreAdviceSection::default()
        };
        let error = validate(&section, Path::new("/"))
            .err()
            .map(|error| error.key);
        assert_eq!(error.as_deref(), Some("preadvice.compact_entries"));
    }
}
