//! The `[hub]` section: how a node joins its hub over NATS. It names the node and its
//! sorter group, where published plans are kept (a JetStream Object Store bucket, one
//! object per group), where nodes report the plan they run (a Key-Value bucket), and the
//! pre-advice stream and subject the node takes exact entries from. [`HubSection`] is the
//! TOML as written; [`HubSection::validate`] turns it into [`HubSettings`] or a
//! [`ConfigKeyError`] naming the key.
//!
//! Only parsing and validation: the plan watcher and the pre-advice subscriber that use
//! these settings live beside the exporter in this layer; nothing here touches NATS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::connection::{AuthSection, ConfigKeyError, NatsConnection, TlsSection, bad};

/// The Object Store bucket plans are published to unless configured otherwise.
pub const PLAN_BUCKET_DEFAULT: &str = "sortd-plans";
/// The Key-Value bucket nodes report their running plan in unless configured otherwise.
pub const STATUS_BUCKET_DEFAULT: &str = "sortd-nodes";
/// The stream that holds pre-advice unless configured otherwise.
pub const PREADVICE_STREAM_DEFAULT: &str = "SORTD_PREADVICE";
/// Where a node keeps the last good plan it took from the hub (under the state
/// directory).
pub const DIR_DEFAULT: &str = "/var/lib/sortd/hub";
/// The subjects of a pre-advice stream sortd creates: every group's pre-advice.
pub const PREADVICE_STREAM_SUBJECTS_DEFAULT: &str = "sortd.preadvice.>";

/// `[hub]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// Join the hub at all. Off: the node sorts with its local plan and local pre-advice.
    pub enabled: bool,
    /// NATS server URLs (`nats://host:port`, `tls://host:port`).
    pub urls: Vec<String>,
    /// This node's id, unique in the hub (the key of its status entry).
    pub node: String,
    /// The sorter group: nodes of one group run the same plan and take the same
    /// pre-advice.
    pub group: String,
    /// Take plans published for `group`.
    pub plans: bool,
    /// The Object Store bucket that holds published plans (one object per group).
    pub plan_bucket: String,
    /// The Key-Value bucket where each node reports the plan it runs.
    pub status_bucket: String,
    /// Take pre-advice for `group` (needs `[preadvice] enabled`).
    pub preadvice: bool,
    /// The JetStream stream that holds pre-advice.
    pub preadvice_stream: String,
    /// The subject this node takes pre-advice from; default `sortd.preadvice.<group>`.
    pub preadvice_subject: Option<String>,
    /// Create the pre-advice stream and the buckets when they are missing.
    pub create: bool,
    /// TCP connect plus NATS handshake, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long one JetStream API call may take, in milliseconds.
    pub request_timeout_ms: u64,
    /// Reconnect backoff (also between attempts to write a plan into `dir`): first
    /// delay, in milliseconds.
    pub reconnect_backoff_min_ms: u32,
    /// Reconnect backoff (and plan write retries): largest delay, in milliseconds.
    pub reconnect_backoff_max_ms: u32,
    /// The largest plan the node will download, in bytes.
    pub plan_bytes_max: u64,
    /// Where the last good plan from the hub is kept (with its metadata); relative paths
    /// are taken from the configuration's folder.
    pub dir: PathBuf,
    /// How to authenticate (at most one method).
    pub auth: AuthSection,
    /// TLS to the server.
    pub tls: TlsSection,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            enabled: false,
            urls: vec!["nats://127.0.0.1:4222".into()],
            node: String::new(),
            group: String::new(),
            plans: true,
            plan_bucket: PLAN_BUCKET_DEFAULT.into(),
            status_bucket: STATUS_BUCKET_DEFAULT.into(),
            preadvice: true,
            preadvice_stream: PREADVICE_STREAM_DEFAULT.into(),
            preadvice_subject: None,
            create: true,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 10_000,
            plan_bytes_max: 8 << 30,
            dir: PathBuf::from(DIR_DEFAULT),
            auth: AuthSection::default(),
            tls: TlsSection::default(),
        }
    }
}

/// The validated `[hub]` settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// How to reach NATS.
    pub connection: NatsConnection,
    /// This node's id.
    pub node: String,
    /// The sorter group.
    pub group: String,
    /// Take published plans.
    pub plans: bool,
    /// The plans' Object Store bucket.
    pub plan_bucket: String,
    /// The nodes' status Key-Value bucket.
    pub status_bucket: String,
    /// Take pre-advice.
    pub preadvice: bool,
    /// The pre-advice stream.
    pub preadvice_stream: String,
    /// The pre-advice subject.
    pub preadvice_subject: String,
    /// Create missing streams and buckets.
    pub create: bool,
    /// First reconnect delay, ms.
    pub reconnect_backoff_min_ms: u32,
    /// Largest reconnect delay, ms.
    pub reconnect_backoff_max_ms: u32,
    /// The largest plan downloaded, in bytes.
    pub plan_bytes_max: u64,
    /// The directory of the last good plan from the hub.
    pub dir: PathBuf,
}

impl HubSettings {
    /// How long one JetStream API call may take.
    pub fn request_timeout(&self) -> Duration {
        self.connection.request_timeout
    }
}

/// The pre-advice subject of `group` unless configured otherwise.
pub fn preadvice_subject(group: &str) -> String {
    format!("sortd.preadvice.{group}")
}

/// A subject token, bucket or stream name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn check_name(key: &str, name: &str) -> Result<(), ConfigKeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(bad(key, format!("{name:?}: use 1 to 64 of [A-Za-z0-9_-]")))
    }
}

impl HubSection {
    /// Checks every key; `None` when the node does not join a hub. Relative secret and
    /// certificate paths are taken from `base`.
    pub fn validate(&self, base: &Path) -> Result<Option<HubSettings>, ConfigKeyError> {
        if !self.enabled {
            return Ok(None);
        }
        check_name("hub.node", &self.node)?;
        check_name("hub.group", &self.group)?;
        check_name("hub.plan_bucket", &self.plan_bucket)?;
        check_name("hub.status_bucket", &self.status_bucket)?;
        check_name("hub.preadvice_stream", &self.preadvice_stream)?;
        if !self.plans && !self.preadvice {
            return Err(bad(
                "hub.plans",
                "with both plans and preadvice off the node takes nothing from the hub: \
                 set enabled = false instead",
            ));
        }
        let preadvice_subject = match &self.preadvice_subject {
            Some(subject) => subject.clone(),
            None => preadvice_subject(&self.group),
        };
        let subject_ok = !preadvice_subject.is_empty()
            && preadvice_subject.len() <= 255
            && preadvice_subject.split('.').all(|token| {
                !token.is_empty()
                    && token != "*"
                    && token != ">"
                    && !token
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            });
        if !subject_ok {
            return Err(bad(
                "hub.preadvice_subject",
                format!("{preadvice_subject:?} is not a NATS subject without wildcards"),
            ));
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err(bad("hub.request_timeout_ms", "between 100 and 600000 ms"));
        }
        if self.reconnect_backoff_min_ms == 0
            || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms
            || self.reconnect_backoff_max_ms > 600_000
        {
            return Err(bad(
                "hub.reconnect_backoff_min_ms",
                "need 0 < min <= max <= 600000",
            ));
        }
        if !(4096..=(64 << 30)).contains(&self.plan_bytes_max) {
            return Err(bad("hub.plan_bytes_max", "between 4 KiB and 64 GiB"));
        }
        let connection = NatsConnection::validate(
            "hub",
            &self.urls,
            self.connect_timeout_ms,
            self.request_timeout_ms,
            &self.auth,
            &self.tls,
        )?
        .relative_to(base);
        Ok(Some(HubSettings {
            connection,
            node: self.node.clone(),
            group: self.group.clone(),
            plans: self.plans,
            plan_bucket: self.plan_bucket.clone(),
            status_bucket: self.status_bucket.clone(),
            preadvice: self.preadvice,
            preadvice_stream: self.preadvice_stream.clone(),
            preadvice_subject,
            create: self.create,
            reconnect_backoff_min_ms: self.reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: self.reconnect_backoff_max_ms,
            plan_bytes_max: self.plan_bytes_max,
            dir: if self.dir.is_relative() {
                base.join(&self.dir)
            } else {
                self.dir.clone()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> HubSection {
        HubSection {
            enabled: true,
            node: "xb-1".into(),
            group: "north".into(),
            ..HubSection::default()
        }
    }

    #[test]
    fn disabled_needs_nothing() {
        let settings = HubSection::default().validate(Path::new("/etc/sortd"));
        assert!(settings.unwrap().is_none());
    }

    #[test]
    fn default_subject_names_the_group() {
        let settings = enabled().validate(Path::new("/")).unwrap().unwrap();
        assert_eq!(settings.preadvice_subject, "sortd.preadvice.north");
        assert_eq!(settings.plan_bucket, PLAN_BUCKET_DEFAULT);
        assert_eq!(settings.dir, Path::new(DIR_DEFAULT));
        let relative = HubSection {
            dir: "hub".into(),
            ..enabled()
        };
        let settings = relative.validate(Path::new("/etc/sortd")).unwrap().unwrap();
        assert_eq!(settings.dir, Path::new("/etc/sortd/hub"));
    }

    type Change = Box<dyn Fn(&mut HubSection)>;

    #[test]
    fn bad_keys_are_named() {
        let cases: Vec<(&str, Change)> = vec![
            ("hub.node", Box::new(|s| s.node = String::new())),
            ("hub.group", Box::new(|s| s.group = "a.b".into())),
            (
                "hub.plan_bucket",
                Box::new(|s| s.plan_bucket = "a b".into()),
            ),
            (
                "hub.preadvice_subject",
                Box::new(|s| s.preadvice_subject = Some("sortd.*".into())),
            ),
            (
                "hub.plans",
                Box::new(|s| {
                    s.plans = false;
                    s.preadvice = false;
                }),
            ),
            ("hub.urls", Box::new(|s| s.urls = vec!["http://x".into()])),
            (
                "hub.request_timeout_ms",
                Box::new(|s| s.request_timeout_ms = 0),
            ),
            (
                "hub.reconnect_backoff_min_ms",
                Box::new(|s| s.reconnect_backoff_min_ms = 0),
            ),
            ("hub.plan_bytes_max", Box::new(|s| s.plan_bytes_max = 1)),
            (
                "hub.auth.user",
                Box::new(|s| s.auth.password = Some("p".into())),
            ),
        ];
        for (key, change) in cases {
            let mut section = enabled();
            change(&mut section);
            let error = section.validate(Path::new("/")).unwrap_err();
            assert_eq!(error.key, key, "{error}");
        }
    }
}
