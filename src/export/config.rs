//! The `[export]` section: how to reach NATS, where the events go, and how big and how
//! many messages may be in flight. [`ExportSection`] is the TOML as written;
//! [`ExportSection::validate`] turns it into [`ExportSettings`] or a [`ConfigKeyError`]
//! naming the key. The connection keys (`urls`, `auth`, `tls`) are shared with every
//! NATS-facing section and validated by [`super::connection`]; secrets are not read here.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::connection::bad;
pub use super::connection::{
    Auth, AuthSection, ConfigKeyError, NatsConnection, TlsSection, TlsSettings,
    secret_exposure_warnings,
};

/// The stream the exporter writes into unless configured otherwise.
pub const STREAM_NAME_DEFAULT: &str = "SORTD_EVENTS";
/// The subjects of a stream the exporter creates: every sorter of every hub.
pub const STREAM_SUBJECTS_DEFAULT: &str = "sortd.events.>";
/// NATS' default `max_payload` is 1 MiB; stay well below it so headers always fit.
pub const MESSAGE_BYTES_MAX_LIMIT: usize = 1024 * 1024 - 4096;
/// More in-flight messages than this buys nothing on one connection and costs memory.
pub const PUBLISH_WINDOW_LIMIT: usize = 1024;

/// `[export]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// Export at all. A hub without NATS runs with this off; the journal keeps the events.
    pub enabled: bool,
    /// NATS server URLs (`nats://host:port`, `tls://host:port`); the client picks one
    /// at random for each connection.
    pub urls: Vec<String>,
    /// The hub's id, part of the default subject.
    pub hub: String,
    /// This sorter's id: part of the default subject and of every `Nats-Msg-Id`.
    pub sorter: String,
    /// The subject this sorter publishes to; default `sortd.events.<hub>.<sorter>`.
    pub subject: Option<String>,
    /// The JetStream stream that holds the subject.
    pub stream: String,
    /// Create the stream when it is missing (with the settings below). When false a
    /// missing stream is an error the exporter retries with backoff.
    pub create_stream: bool,
    /// Subjects of a created stream.
    pub stream_subjects: Vec<String>,
    /// Age after which the stream drops a message (created streams), in seconds; 0 keeps
    /// messages until other limits apply.
    pub stream_max_age_s: u64,
    /// The created stream's de-duplication window for `Nats-Msg-Id`, in milliseconds.
    pub duplicate_window_ms: u64,
    /// At most this many events per NATS message.
    pub message_records_max: usize,
    /// At most this many payload bytes per NATS message.
    pub message_bytes_max: usize,
    /// At most this many messages published and not yet acknowledged.
    pub publish_window_max: usize,
    /// How long to wait for one publish acknowledgement before the connection is
    /// declared lost, in milliseconds.
    pub ack_timeout_ms: u64,
    /// TCP connect plus NATS handshake, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Reconnect backoff: first delay, in milliseconds.
    pub reconnect_backoff_min_ms: u32,
    /// Reconnect backoff: largest delay, in milliseconds.
    pub reconnect_backoff_max_ms: u32,
    /// When caught up, look for new events this often, in milliseconds.
    pub idle_poll_ms: u64,
    /// Store the acknowledged cursor at most this often, in milliseconds.
    pub cursor_store_interval_ms: u64,
    /// How to authenticate (at most one method).
    pub auth: AuthSection,
    /// TLS to the server.
    pub tls: TlsSection,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            enabled: false,
            urls: vec!["nats://127.0.0.1:4222".into()],
            hub: "hub".into(),
            sorter: "sorter1".into(),
            subject: None,
            stream: STREAM_NAME_DEFAULT.into(),
            create_stream: true,
            stream_subjects: vec![STREAM_SUBJECTS_DEFAULT.into()],
            stream_max_age_s: 7 * 24 * 3600,
            duplicate_window_ms: 120_000,
            message_records_max: 4096,
            message_bytes_max: 512 * 1024,
            publish_window_max: 32,
            ack_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 10_000,
            idle_poll_ms: 10,
            cursor_store_interval_ms: 1_000,
            auth: AuthSection::default(),
            tls: TlsSection::default(),
        }
    }
}

/// The validated exporter settings.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// How to reach NATS (URLs, credentials, TLS, connect timeout).
    pub connection: NatsConnection,
    /// This sorter's id (in `Nats-Msg-Id`).
    pub sorter: String,
    /// The subject to publish to.
    pub subject: String,
    /// The stream's name.
    pub stream: String,
    /// Create the stream when missing.
    pub create_stream: bool,
    /// Subjects of a created stream.
    pub stream_subjects: Vec<String>,
    /// Max age of a created stream (zero: unlimited).
    pub stream_max_age: Duration,
    /// De-duplication window of a created stream.
    pub duplicate_window: Duration,
    /// Events per message, at most.
    pub message_records_max: usize,
    /// Payload bytes per message, at most.
    pub message_bytes_max: usize,
    /// Messages in flight, at most.
    pub publish_window_max: usize,
    /// Publish acknowledgement timeout.
    pub ack_timeout: Duration,
    /// First reconnect delay, ms.
    pub reconnect_backoff_min_ms: u32,
    /// Largest reconnect delay, ms.
    pub reconnect_backoff_max_ms: u32,
    /// Poll period when caught up.
    pub idle_poll: Duration,
    /// Cursor store period.
    pub cursor_store_interval: Duration,
}

/// A subject token (hub or sorter id) may not hold what NATS reads as structure.
fn check_token(key: &'static str, token: &str) -> Result<(), ConfigKeyError> {
    let ok = !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("{token:?}: use 1 to 64 of [A-Za-z0-9_-] (it is a NATS subject token)"),
        ))
    }
}

fn check_subject(key: &'static str, subject: &str, wildcards: bool) -> Result<(), ConfigKeyError> {
    let tokens_ok = subject.split('.').all(|token| {
        !token.is_empty()
            && !token
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            && (wildcards || (token != "*" && token != ">"))
    });
    if subject.is_empty() || subject.len() > 255 || !tokens_ok {
        return Err(bad(key, format!("{subject:?} is not a valid NATS subject")));
    }
    Ok(())
}

impl ExportSection {
    /// Checks every key; `None` when export is disabled.
    pub fn validate(&self) -> Result<Option<ExportSettings>, ConfigKeyError> {
        if !self.enabled {
            return Ok(None);
        }
        if !(100..=600_000).contains(&self.ack_timeout_ms) {
            return Err(bad("export.ack_timeout_ms", "between 100 and 600000 ms"));
        }
        let connection = NatsConnection::validate(
            "export",
            &self.urls,
            self.connect_timeout_ms,
            self.ack_timeout_ms,
            &self.auth,
            &self.tls,
        )?;
        check_token("export.hub", &self.hub)?;
        check_token("export.sorter", &self.sorter)?;
        let subject = match &self.subject {
            Some(subject) => subject.clone(),
            None => format!("sortd.events.{}.{}", self.hub, self.sorter),
        };
        check_subject("export.subject", &subject, false)?;
        let stream_ok = !self.stream.is_empty()
            && self.stream.len() <= 64
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !stream_ok {
            return Err(bad("export.stream", "use 1 to 64 of [A-Za-z0-9_-]"));
        }
        if self.stream_subjects.is_empty() {
            return Err(bad("export.stream_subjects", "give at least one subject"));
        }
        for subject in &self.stream_subjects {
            check_subject("export.stream_subjects", subject, true)?;
        }
        if !(100..=24 * 3600 * 1000).contains(&self.duplicate_window_ms) {
            return Err(bad(
                "export.duplicate_window_ms",
                "between 100 ms and one day",
            ));
        }
        if self.stream_max_age_s != 0 && self.stream_max_age_s * 1000 < self.duplicate_window_ms {
            return Err(bad(
                "export.stream_max_age_s",
                "must not be shorter than the duplicate window",
            ));
        }
        if !(1..=1_000_000).contains(&self.message_records_max) {
            return Err(bad("export.message_records_max", "between 1 and 1000000"));
        }
        if !(1024..=MESSAGE_BYTES_MAX_LIMIT).contains(&self.message_bytes_max) {
            return Err(bad(
                "export.message_bytes_max",
                format!("between 1024 and {MESSAGE_BYTES_MAX_LIMIT} (below NATS' max_payload)"),
            ));
        }
        if !(1..=PUBLISH_WINDOW_LIMIT).contains(&self.publish_window_max) {
            return Err(bad(
                "export.publish_window_max",
                format!("between 1 and {PUBLISH_WINDOW_LIMIT}"),
            ));
        }
        if self.reconnect_backoff_min_ms == 0
            || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms
            || self.reconnect_backoff_max_ms > 600_000
        {
            return Err(bad(
                "export.reconnect_backoff_min_ms",
                "need 0 < min <= max <= 600000",
            ));
        }
        if !(1..=1_000).contains(&self.idle_poll_ms) {
            return Err(bad("export.idle_poll_ms", "between 1 and 1000"));
        }
        if !(1..=60_000).contains(&self.cursor_store_interval_ms) {
            return Err(bad(
                "export.cursor_store_interval_ms",
                "between 1 and 60000",
            ));
        }
        Ok(Some(ExportSettings {
            connection,
            sorter: self.sorter.clone(),
            subject,
            stream: self.stream.clone(),
            create_stream: self.create_stream,
            stream_subjects: self.stream_subjects.clone(),
            stream_max_age: Duration::from_secs(self.stream_max_age_s),
            duplicate_window: Duration::from_millis(self.duplicate_window_ms),
            message_records_max: self.message_records_max,
            message_bytes_max: self.message_bytes_max,
            publish_window_max: self.publish_window_max,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            reconnect_backoff_min_ms: self.reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: self.reconnect_backoff_max_ms,
            idle_poll: Duration::from_millis(self.idle_poll_ms),
            cursor_store_interval: Duration::from_millis(self.cursor_store_interval_ms),
        }))
    }
}

impl ExportSettings {
    /// Resolves relative secret and certificate paths against `base` (the directory of
    /// the configuration file).
    pub fn relative_to(mut self, base: &Path) -> Self {
        self.connection = self.connection.relative_to(base);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> ExportSection {
        ExportSection {
            enabled: true,
            ..ExportSection::default()
        }
    }

    #[test]
    fn disabled_needs_nothing() {
        assert!(ExportSection::default().validate().unwrap().is_none());
    }

    #[test]
    fn default_subject_names_hub_and_sorter() {
        let mut section = enabled();
        section.hub = "greven".into();
        section.sorter = "xb-1".into();
        let settings = section.validate().unwrap().unwrap();
        assert_eq!(settings.subject, "sortd.events.greven.xb-1");
        assert_eq!(settings.connection.auth, Auth::None);
    }

    type Change = Box<dyn Fn(&mut ExportSection)>;

    #[test]
    fn bad_keys_are_named() {
        let cases: Vec<(&str, Change)> = vec![
            ("export.sorter", Box::new(|s| s.sorter = "a.b".into())),
            ("export.hub", Box::new(|s| s.hub = String::new())),
            (
                "export.subject",
                Box::new(|s| s.subject = Some("a.*".into())),
            ),
            (
                "export.urls",
                Box::new(|s| s.urls = vec!["http://x".into()]),
            ),
            (
                "export.message_bytes_max",
                Box::new(|s| s.message_bytes_max = 2 << 20),
            ),
            (
                "export.publish_window_max",
                Box::new(|s| s.publish_window_max = 0),
            ),
            (
                "export.duplicate_window_ms",
                Box::new(|s| s.duplicate_window_ms = 0),
            ),
            (
                "export.auth",
                Box::new(|s| {
                    s.auth.token = Some("t".into());
                    s.auth.creds_file = Some("x.creds".into());
                }),
            ),
            (
                "export.auth.user",
                Box::new(|s| s.auth.password = Some("p".into())),
            ),
            (
                "export.tls.client_cert_file",
                Box::new(|s| s.tls.client_cert_file = Some("c.pem".into())),
            ),
        ];
        for (key, change) in cases {
            let mut section = enabled();
            change(&mut section);
            let error = section.validate().unwrap_err();
            assert_eq!(error.key, key, "{error}");
        }
    }

    #[test]
    fn debug_never_prints_an_inline_secret() {
        let auth = Auth::UserPassword {
            user: "sortd".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert!(auth.is_inline_secret());
    }

    #[cfg(unix)]
    #[test]
    fn inline_secret_in_a_world_readable_file_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sortd.toml");
        std::fs::write(&path, "x").unwrap();
        let auth = Auth::Token("t".into());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(secret_exposure_warnings(&path, &auth).len(), 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(secret_exposure_warnings(&path, &auth).is_empty());
        // A secret file readable by the group is reported too.
        let file_auth = Auth::TokenFile(path.clone());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(secret_exposure_warnings(&path, &file_auth).len(), 1);
    }
}
