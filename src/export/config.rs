//! The `[export]` section: how to reach NATS, where the events go, and how big and how
//! many messages may be in flight. [`ExportSection`] is the TOML as written;
//! [`ExportSection::validate`] turns it into [`ExportSettings`] or a [`ExportConfigError`]
//! naming the key. Secrets are not read here: files are named, and read at every
//! connection attempt by the exporter (so a rotated file is picked up on reconnect).
//! [`secret_exposure_warnings`] tells the daemon which secrets others could read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

/// `[export.auth]`: at most one way to authenticate. Prefer the `*_file` keys: the
/// secret then stays out of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A file holding a token.
    pub token_file: Option<PathBuf>,
    /// A token written inline (discouraged: see `token_file`).
    pub token: Option<String>,
    /// User name for user/password authentication.
    pub user: Option<String>,
    /// A file holding the password for `user`.
    pub password_file: Option<PathBuf>,
    /// The password for `user`, inline (discouraged: see `password_file`).
    pub password: Option<String>,
}

/// `[export.tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Require TLS even when the URLs say `nats://`.
    pub required: bool,
    /// PEM file of the CA(s) that sign the server's certificate. The server's name is
    /// checked against the host in the URL.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// How the exporter authenticates, validated: exactly one way, or none.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// A `.creds` file.
    CredsFile(PathBuf),
    /// A file with an nkey seed.
    NkeySeedFile(PathBuf),
    /// A token, from a file (read at each connection attempt).
    TokenFile(PathBuf),
    /// A token written in the configuration.
    Token(String),
    /// User and password from a file (read at each connection attempt).
    UserPasswordFile {
        /// User name.
        user: String,
        /// File holding the password.
        password_file: PathBuf,
    },
    /// User and password written in the configuration.
    UserPassword {
        /// User name.
        user: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, not even in a debug dump of the configuration.
        match self {
            Auth::None => write!(f, "None"),
            Auth::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
            Auth::NkeySeedFile(path) => write!(f, "NkeySeedFile({})", path.display()),
            Auth::TokenFile(path) => write!(f, "TokenFile({})", path.display()),
            Auth::Token(_) => write!(f, "Token(<inline>)"),
            Auth::UserPasswordFile {
                user,
                password_file,
            } => write!(f, "UserPasswordFile({user}, {})", password_file.display()),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user}, <inline>)"),
        }
    }
}

impl Auth {
    /// Whether the configuration file itself holds a secret.
    pub fn is_inline_secret(&self) -> bool {
        matches!(self, Auth::Token(_) | Auth::UserPassword { .. })
    }

    /// The secret files this method reads.
    pub fn secret_files(&self) -> Vec<&Path> {
        match self {
            Auth::CredsFile(path)
            | Auth::NkeySeedFile(path)
            | Auth::TokenFile(path)
            | Auth::UserPasswordFile {
                password_file: path,
                ..
            } => vec![path.as_path()],
            Auth::None | Auth::Token(_) | Auth::UserPassword { .. } => Vec::new(),
        }
    }
}

/// Validated TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Refuse a connection without TLS.
    pub required: bool,
    /// Trust these CAs (besides none: the system roots are not used when this is set).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// The validated exporter settings.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Server URLs.
    pub urls: Vec<String>,
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
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// First reconnect delay, ms.
    pub reconnect_backoff_min_ms: u32,
    /// Largest reconnect delay, ms.
    pub reconnect_backoff_max_ms: u32,
    /// Poll period when caught up.
    pub idle_poll: Duration,
    /// Cursor store period.
    pub cursor_store_interval: Duration,
    /// Authentication.
    pub auth: Auth,
    /// TLS.
    pub tls: TlsSettings,
}

/// A bad `[export]` key, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfigError {
    /// The key, e.g. `export.message_bytes_max`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ExportConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ExportConfigError {}

fn bad(key: &'static str, message: impl Into<String>) -> ExportConfigError {
    ExportConfigError {
        key,
        message: message.into(),
    }
}

/// A subject token (hub or sorter id) may not hold what NATS reads as structure.
fn check_token(key: &'static str, token: &str) -> Result<(), ExportConfigError> {
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

fn check_subject(
    key: &'static str,
    subject: &str,
    wildcards: bool,
) -> Result<(), ExportConfigError> {
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
    pub fn validate(&self) -> Result<Option<ExportSettings>, ExportConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        if self.urls.is_empty() || self.urls.len() > 16 {
            return Err(bad("export.urls", "give 1 to 16 server URLs"));
        }
        for url in &self.urls {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(bad(
                    "export.urls",
                    format!("{url:?}: use nats://host:port or tls://host:port"),
                ));
            }
        }
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
        for (key, value) in [
            ("export.ack_timeout_ms", self.ack_timeout_ms),
            ("export.connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if !(100..=600_000).contains(&value) {
                return Err(bad(key, "between 100 and 600000 ms"));
            }
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
        let auth = self.auth.validate()?;
        let tls = self.tls.validate()?;
        Ok(Some(ExportSettings {
            urls: self.urls.clone(),
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
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            reconnect_backoff_min_ms: self.reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: self.reconnect_backoff_max_ms,
            idle_poll: Duration::from_millis(self.idle_poll_ms),
            cursor_store_interval: Duration::from_millis(self.cursor_store_interval_ms),
            auth,
            tls,
        }))
    }
}

impl ExportSettings {
    /// Resolves relative secret and certificate paths against `base` (the directory of
    /// the configuration file).
    pub fn relative_to(mut self, base: &Path) -> Self {
        let join = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        match &mut self.auth {
            Auth::CredsFile(path)
            | Auth::NkeySeedFile(path)
            | Auth::TokenFile(path)
            | Auth::UserPasswordFile {
                password_file: path,
                ..
            } => join(path),
            Auth::None | Auth::Token(_) | Auth::UserPassword { .. } => {}
        }
        if let Some(path) = &mut self.tls.ca_file {
            join(path);
        }
        if let Some((cert, key)) = &mut self.tls.client_identity {
            join(cert);
            join(key);
        }
        self
    }
}

impl AuthSection {
    fn validate(&self) -> Result<Auth, ExportConfigError> {
        let user_methods = usize::from(self.user.is_some());
        let methods = usize::from(self.creds_file.is_some())
            + usize::from(self.nkey_seed_file.is_some())
            + usize::from(self.token_file.is_some())
            + usize::from(self.token.is_some())
            + user_methods;
        if methods > 1 {
            return Err(bad(
                "export.auth",
                "give one of creds_file, nkey_seed_file, token_file, token, user",
            ));
        }
        if self.user.is_none() && (self.password.is_some() || self.password_file.is_some()) {
            return Err(bad("export.auth.user", "a password needs a user"));
        }
        let auth = if let Some(path) = &self.creds_file {
            Auth::CredsFile(path.clone())
        } else if let Some(path) = &self.nkey_seed_file {
            Auth::NkeySeedFile(path.clone())
        } else if let Some(path) = &self.token_file {
            Auth::TokenFile(path.clone())
        } else if let Some(token) = &self.token {
            Auth::Token(token.clone())
        } else if let Some(user) = &self.user {
            match (&self.password_file, &self.password) {
                (Some(path), None) => Auth::UserPasswordFile {
                    user: user.clone(),
                    password_file: path.clone(),
                },
                (None, Some(password)) => Auth::UserPassword {
                    user: user.clone(),
                    password: password.clone(),
                },
                _ => {
                    return Err(bad(
                        "export.auth.password_file",
                        "give exactly one of password_file, password",
                    ));
                }
            }
        } else {
            Auth::None
        };
        Ok(auth)
    }
}

impl TlsSection {
    fn validate(&self) -> Result<TlsSettings, ExportConfigError> {
        let client_identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "export.tls.client_cert_file",
                    "give both client_cert_file and client_key_file, or neither",
                ));
            }
        };
        Ok(TlsSettings {
            required: self.required || self.ca_file.is_some() || client_identity.is_some(),
            ca_file: self.ca_file.clone(),
            client_identity,
        })
    }
}

/// Warnings for secrets that users other than the owner (group or others) may read:
/// the configuration file when it holds a secret inline, and every secret file. The
/// daemon logs each at start; none of them stops it.
pub fn secret_exposure_warnings(config_path: &Path, auth: &Auth) -> Vec<String> {
    let mut warnings = Vec::new();
    if auth.is_inline_secret() && readable_by_others(config_path) {
        warnings.push(format!(
            "{} holds a NATS secret inline and is readable by group or others; \
             chmod 600 it, or move the secret to export.auth.*_file",
            config_path.display()
        ));
    }
    for path in auth.secret_files() {
        if readable_by_others(path) {
            warnings.push(format!(
                "NATS secret file {} is readable by group or others; chmod 600 it",
                path.display()
            ));
        }
    }
    warnings
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.permissions().mode() & 0o044 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> bool {
    false
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
        assert_eq!(settings.auth, Auth::None);
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
