//! Validation, one function per section of the file: each checks its keys' ranges and
//! addresses, names the offending key, and builds the settings type of the layer that
//! uses them (net's listeners and limits, the PLC link's settings, the pipeline's).
//!
//! Each range is written once. The PLC link's ranges are the link's own
//! ([`crate::plc::LinkConfig::validate`]); this file only maps its error to the TOML key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::core::idle::IdleMode;
use crate::net::cidr::{AllowList, Cidr};
use crate::net::settings::{ConnectionLimits, Listener, PlcMode, PlcSettings};
use crate::net::single::ThreadMode;
use crate::web::WebSecurity;
use crate::wire::{FRAME_BYTES_MAX, Framing, TextProfile, TextProfileSpec};

use super::schema::{
    LogSection, MetricsSection, PipelineSection, PlanSection, PlcSection, ScannersSection,
};
use super::{DaemonConfigError, MetricsSettings, PipelineSettings};

/// `value` if it lies in `min..=max`, or an error naming `key`.
pub(super) fn within<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, DaemonConfigError> {
    if value < min || value > max {
        return Err(DaemonConfigError::new(
            key,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    Ok(value)
}

fn socket_address(key: &str, text: &str) -> Result<SocketAddr, DaemonConfigError> {
    text.parse().map_err(|_| {
        DaemonConfigError::new(
            key,
            format!("`{text}` is not an address:port such as 0.0.0.0:7100 or [::1]:7100"),
        )
    })
}

fn millis(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// `[plan]`: the plan file, resolved against `base`, must exist.
pub(super) fn plan(section: PlanSection, base: &Path) -> Result<PathBuf, DaemonConfigError> {
    let plan_path = section
        .path
        .ok_or_else(|| DaemonConfigError::new("plan.path", "is required"))?;
    let plan_path = if plan_path.is_relative() {
        base.join(plan_path)
    } else {
        plan_path
    };
    if !plan_path.is_file() {
        return Err(DaemonConfigError::new(
            "plan.path",
            format!("{} is not a readable file", plan_path.display()),
        ));
    }
    Ok(plan_path)
}

/// `[text_profiles.NAME]`: custom profiles, none shadowing a built-in name.
pub(super) fn text_profiles(
    specs: &BTreeMap<String, TextProfileSpec>,
) -> Result<BTreeMap<String, TextProfile>, DaemonConfigError> {
    let mut custom_profiles = BTreeMap::new();
    for (name, spec) in specs {
        let key = format!("text_profiles.{name}");
        if name == "binary" || TextProfile::builtin(name).is_some() {
            return Err(DaemonConfigError::new(
                key,
                "shadows a built-in protocol name",
            ));
        }
        let profile = spec
            .validate()
            .map_err(|error| DaemonConfigError::new(key, error.to_string()))?;
        custom_profiles.insert(name.clone(), profile);
    }
    Ok(custom_profiles)
}

/// `[scanners]`: listeners with their framing, connection limits, the allow list.
pub(super) fn scanners(
    scanners: &ScannersSection,
    custom_profiles: &BTreeMap<String, TextProfile>,
) -> Result<(Vec<Listener>, ConnectionLimits, AllowList), DaemonConfigError> {
    let listeners = listeners(scanners, custom_profiles)?;
    let limits = ConnectionLimits {
        connections_max: within(
            "scanners.connections_max",
            scanners.connections_max,
            1,
            65_536,
        )?,
        buffer_bytes: within(
            "scanners.buffer_bytes",
            scanners.buffer_bytes,
            2 * FRAME_BYTES_MAX,
            16 << 20,
        )?,
        frame_deadline: millis(within(
            "scanners.frame_deadline_ms",
            scanners.frame_deadline_ms,
            1,
            600_000,
        )?),
        idle_timeout: millis(within(
            "scanners.idle_timeout_ms",
            scanners.idle_timeout_ms,
            1,
            86_400_000,
        )?),
    };
    let allow = allow_list("scanners.allow", &scanners.allow)?;
    if allow.is_empty() {
        return Err(DaemonConfigError::new(
            "scanners.allow",
            "is empty, so no scanner could connect (use \"0.0.0.0/0\" and \"::/0\" to allow all)",
        ));
    }
    Ok((listeners, limits, allow))
}

/// CIDR blocks under `key`, each error naming its index.
fn allow_list(key: &str, texts: &[String]) -> Result<AllowList, DaemonConfigError> {
    let mut blocks = Vec::with_capacity(texts.len());
    for (index, text) in texts.iter().enumerate() {
        let block: Cidr = text.parse().map_err(|error: crate::net::cidr::CidrError| {
            DaemonConfigError::new(format!("{key}[{index}]"), error.to_string())
        })?;
        blocks.push(block);
    }
    Ok(AllowList::new(blocks))
}

fn listeners(
    scanners: &ScannersSection,
    custom_profiles: &BTreeMap<String, TextProfile>,
) -> Result<Vec<Listener>, DaemonConfigError> {
    if scanners.listeners.is_empty() {
        return Err(DaemonConfigError::new(
            "scanners.listeners",
            "at least one listener is required",
        ));
    }
    let mut listeners = Vec::with_capacity(scanners.listeners.len());
    for (index, listener) in scanners.listeners.iter().enumerate() {
        let key = |field: &str| format!("scanners.listeners[{index}].{field}");
        let address = socket_address(&key("address"), &listener.address)?;
        // Port 0 asks for any free port, so two of them never collide.
        if address.port() != 0 && listeners.iter().any(|l: &Listener| l.address == address) {
            return Err(DaemonConfigError::new(
                key("address"),
                "is used by another listener",
            ));
        }
        let framing = if listener.protocol == "binary" {
            Framing::Binary
        } else if let Some(profile) = custom_profiles.get(&listener.protocol) {
            Framing::Text(profile.clone())
        } else if let Some(profile) = TextProfile::builtin(&listener.protocol) {
            Framing::Text(profile)
        } else {
            let mut known = vec!["binary".to_string()];
            known.extend(TextProfile::builtin_names().iter().map(|n| n.to_string()));
            known.extend(custom_profiles.keys().cloned());
            return Err(DaemonConfigError::new(
                key("protocol"),
                format!(
                    "unknown protocol `{}` (known: {})",
                    listener.protocol,
                    known.join(", ")
                ),
            ));
        };
        let allow = match &listener.allow {
            None => AllowList::everyone(),
            Some(texts) => {
                let allow = allow_list(&key("allow"), texts)?;
                if allow.is_empty() {
                    return Err(DaemonConfigError::new(
                        key("allow"),
                        "is empty, so no scanner could connect (remove the key to use scanners.allow alone)",
                    ));
                }
                allow
            }
        };
        listeners.push(Listener {
            address,
            allow,
            framing,
            protocol_name: listener.protocol.clone(),
            scanner_id: listener.scanner_id,
        });
    }
    Ok(listeners)
}

/// `[plc]`: the ranges are the link's own ([`crate::plc::LinkConfig::validate`]).
pub(super) fn plc(section: &PlcSection) -> Result<PlcSettings, DaemonConfigError> {
    let allow = allow_list("plc.allow", &section.allow)?;
    if section.mode == PlcMode::Listen && allow.is_empty() {
        return Err(DaemonConfigError::new(
            "plc.allow",
            "is required in listen mode: name the PLC's address, e.g. allow = [\"10.20.1.5\"]",
        ));
    }
    let settings = PlcSettings {
        mode: section.mode,
        address: socket_address("plc.address", &section.address)?,
        allow,
        window_max: section.window_max,
        ack_timeout: millis(section.ack_timeout_ms),
        heartbeat_interval: millis(section.heartbeat_interval_ms),
        heartbeats_missed_max: section.heartbeats_missed_max,
        reconnect_backoff_min: millis(section.reconnect_backoff_min_ms),
        reconnect_backoff_max: millis(section.reconnect_backoff_max_ms),
    };
    settings
        .unclamped_link_config()
        .validate()
        .map_err(|error| {
            DaemonConfigError::new(
                format!("plc.{}", error.key),
                format!(
                    "{} is out of range {}..={}",
                    error.value, error.min, error.max
                ),
            )
        })?;
    Ok(settings)
}

/// `[pipeline]`: workers, hand-off sizes, deadline, duplicate window; and the drain grace.
pub(super) fn pipeline(
    section: &PipelineSection,
) -> Result<(PipelineSettings, Duration), DaemonConfigError> {
    let pipeline = PipelineSettings {
        workers: within(
            "pipeline.workers",
            section.workers,
            1,
            crate::stats::INGRESS_WORKERS_MAX,
        )?,
        batch_parcels_max: within(
            "pipeline.batch_parcels_max",
            section.batch_parcels_max,
            1,
            65_536,
        )?,
        queue_batches_max: within(
            "pipeline.queue_batches_max",
            section.queue_batches_max,
            1,
            65_536,
        )?,
        deadline: millis(within(
            "pipeline.deadline_ms",
            section.deadline_ms,
            1,
            60_000,
        )?),
        duplicate_window: millis(within(
            "pipeline.duplicate_window_ms",
            section.duplicate_window_ms,
            0,
            86_400_000,
        )?),
        duplicate_entries_max: within(
            "pipeline.duplicate_entries_max",
            section.duplicate_entries_max,
            1,
            100_000_000,
        )?,
        threads: ThreadMode::from_name(&section.threads).ok_or_else(|| {
            DaemonConfigError::new(
                "pipeline.threads",
                format!(
                    "unknown thread mode {:?}: expected auto, single or split",
                    section.threads
                ),
            )
        })?,
        idle: IdleMode::from_name(&section.idle).ok_or_else(|| {
            DaemonConfigError::new(
                "pipeline.idle",
                format!(
                    "unknown idle mode {:?}: expected adaptive, park, spin or busy_poll",
                    section.idle
                ),
            )
        })?,
        spin_before_park: Duration::from_micros(within(
            "pipeline.spin_before_park_us",
            section.spin_before_park_us,
            0,
            10_000,
        )?),
    };
    if pipeline.threads == ThreadMode::Single && pipeline.workers != 1 {
        return Err(DaemonConfigError::new(
            "pipeline.threads",
            format!(
                "\"single\" runs one ingress worker with the PLC side, but pipeline.workers = {}",
                pipeline.workers
            ),
        ));
    }
    let drain_grace = millis(within(
        "pipeline.drain_grace_ms",
        section.drain_grace_ms,
        0,
        600_000,
    )?);
    Ok((pipeline, drain_grace))
}

/// `[log]`: the filter must parse; the warning interval.
pub(super) fn log(section: &LogSection) -> Result<Duration, DaemonConfigError> {
    if section
        .filter
        .parse::<tracing_subscriber::EnvFilter>()
        .is_err()
    {
        return Err(DaemonConfigError::new(
            "log.filter",
            format!("`{}` is not a valid filter directive", section.filter),
        ));
    }
    Ok(millis(within(
        "log.bad_input_warning_interval_ms",
        section.bad_input_warning_interval_ms,
        1,
        3_600_000,
    )?))
}

/// `[metrics]`: the endpoint's address, not shared with a scanner or PLC listener, and
/// its web-config file (TLS, basic auth), read now so a bad one stops the start.
pub(super) fn metrics(
    section: &MetricsSection,
    listeners: &[Listener],
    plc: &PlcSettings,
    base: &Path,
) -> Result<MetricsSettings, DaemonConfigError> {
    if !section.enabled {
        return Ok(MetricsSettings {
            address: None,
            security: Arc::new(WebSecurity::open()),
            web_config: None,
        });
    }
    let address = socket_address("metrics.address", &section.address)?;
    let taken = listeners.iter().any(|l| l.address == address)
        || (plc.mode == PlcMode::Listen && plc.address == address);
    if address.port() != 0 && taken {
        return Err(DaemonConfigError::new(
            "metrics.address",
            "is used by a scanner or PLC listener",
        ));
    }
    let web_config = section.web_config.as_ref().map(|path| base.join(path));
    let security = match &web_config {
        Some(path) => WebSecurity::load(path).map_err(|error| {
            DaemonConfigError::new("metrics.web_config", format!("{}: {error}", path.display()))
        })?,
        None => WebSecurity::open(),
    };
    Ok(MetricsSettings {
        address: Some(address),
        security: Arc::new(security),
        web_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plc_ranges_are_the_links_own_and_name_the_toml_key() {
        type Breaks = fn(&mut PlcSection);
        let cases: [(&str, Breaks); 4] = [
            ("plc.window_max", |s| s.window_max = 0),
            ("plc.ack_timeout_ms", |s| s.ack_timeout_ms = 0),
            ("plc.heartbeats_missed_max", |s| s.heartbeats_missed_max = 0),
            ("plc.reconnect_backoff_max_ms", |s| {
                s.reconnect_backoff_min_ms = 500;
                s.reconnect_backoff_max_ms = 100;
            }),
        ];
        for (key, break_it) in cases {
            let mut section = PlcSection::default();
            break_it(&mut section);
            let error = plc(&section).expect_err(key);
            assert_eq!(error.key, key);
        }
        let settings = plc(&PlcSection::default()).expect("defaults are valid");
        assert_eq!(settings.window_max, 4096);
    }

    #[test]
    fn idle_mode_defaults_to_adaptive_and_an_unknown_one_names_the_key() {
        let (settings, _) = pipeline(&PipelineSection::default()).expect("defaults are valid");
        assert_eq!(settings.idle, IdleMode::Adaptive);
        let section = PipelineSection {
            idle: "busy_poll".into(),
            ..PipelineSection::default()
        };
        let (settings, _) = pipeline(&section).expect("busy_poll is a mode");
        assert_eq!(settings.idle, IdleMode::BusyPoll);
        let section = PipelineSection {
            idle: "turbo".into(),
            ..PipelineSection::default()
        };
        let error = pipeline(&section).expect_err("turbo is not a mode");
        assert_eq!(error.key, "pipeline.idle");
    }

    #[test]
    fn thread_mode_defaults_to_auto_and_single_needs_one_worker() {
        let (settings, _) = pipeline(&PipelineSection::default()).expect("defaults are valid");
        assert_eq!(settings.threads, ThreadMode::Auto);
        let section = PipelineSection {
            threads: "single".into(),
            ..PipelineSection::default()
        };
        let (settings, _) = pipeline(&section).expect("single with one worker");
        assert_eq!(settings.threads, ThreadMode::Single);
        for (threads, workers) in [("single", 2), ("many", 1)] {
            let section = PipelineSection {
                threads: threads.into(),
                workers,
                ..PipelineSection::default()
            };
            let error = pipeline(&section).expect_err("refused");
            assert_eq!(error.key, "pipeline.threads");
        }
    }

    #[test]
    fn listen_mode_needs_a_plc_allow_list_and_connect_mode_ignores_it() {
        let mut section = PlcSection {
            mode: PlcMode::Listen,
            ..PlcSection::default()
        };
        assert_eq!(plc(&section).expect_err("empty").key, "plc.allow");
        section.allow = vec!["10.20.1.5".into()];
        let settings = plc(&section).expect("valid");
        assert!(settings.allow.allows("10.20.1.5".parse().unwrap()));
        assert!(!settings.allow.allows("10.20.1.6".parse().unwrap()));
        section.allow = vec!["10.20.1.5/33".into()];
        assert_eq!(plc(&section).expect_err("bad block").key, "plc.allow[0]");
        assert!(
            plc(&PlcSection::default()).is_ok(),
            "connect mode needs none"
        );
    }

    #[test]
    fn scanners_default_to_loopback_and_private_ranges_and_listeners_narrow_it() {
        let mut section = ScannersSection::default();
        let (listeners, _, allow) = scanners(&section, &BTreeMap::new()).expect("defaults");
        for (address, allowed) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("10.1.2.3", true),
            ("172.31.0.1", true),
            ("192.168.5.5", true),
            ("fd00::5", true),
            ("8.8.8.8", false),
            ("172.32.0.1", false),
            ("2001:db8::1", false),
        ] {
            assert_eq!(allow.allows(address.parse().unwrap()), allowed, "{address}");
        }
        assert!(listeners[0].allow.allows("8.8.8.8".parse().unwrap()));
        section.listeners[0].allow = Some(vec!["10.20.3.41".into()]);
        let (listeners, _, _) = scanners(&section, &BTreeMap::new()).expect("valid");
        assert!(listeners[0].allow.allows("10.20.3.41".parse().unwrap()));
        assert!(!listeners[0].allow.allows("10.20.3.42".parse().unwrap()));
        section.listeners[0].allow = Some(vec!["x".into()]);
        let error = scanners(&section, &BTreeMap::new()).expect_err("bad");
        assert_eq!(error.key, "scanners.listeners[0].allow[0]");
    }
}
