//! How sortd reaches NATS: the `auth` and `tls` sub-sections every NATS-facing section
//! shares (`[export]`, `[hub]`), their validation into a [`NatsConnection`], and
//! [`connect`], which opens one `async-nats` client with those credentials. Secrets are
//! named here and read at each connection attempt, so a rotated file is used from the next
//! connection on; [`secret_exposure_warnings`] tells the daemon which secrets others
//! could read.
//!
//! What this module does not do: retry (callers back off with their own policy), or know
//! about streams, buckets or subjects.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use serde::Deserialize;
use tokio::sync::Notify;

/// The client must never reconnect by itself: every caller owns its reconnect policy
/// (backoff, resume from the stream), so the client's own reconnect is pushed out of reach.
const CLIENT_RECONNECT_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Secret files larger than this are refused.
const SECRET_BYTES_MAX: u64 = 64 * 1024;
/// At most this many server URLs.
pub const URLS_MAX: usize = 16;

/// A bad key in one of this layer's sections (`[export]`, `[hub]`, their `auth` and
/// `tls`): its full dotted name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKeyError {
    /// The key, e.g. `hub.auth.user`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigKeyError {}

pub(super) fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigKeyError {
    ConfigKeyError {
        key: key.into(),
        message: message.into(),
    }
}

/// `[<section>.auth]` (`[export.auth]`, `[hub.auth]`): at most one way to authenticate. Prefer the `*_file` keys: the
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

/// `[<section>.tls]`
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

/// How a NATS client authenticates, validated: exactly one way, or none.
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

/// Everything needed to open one NATS connection, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConnection {
    /// Server URLs (`nats://` or `tls://`); the client picks one at random.
    pub urls: Vec<String>,
    /// TCP connect plus NATS handshake.
    pub connect_timeout: Duration,
    /// How long a request (a JetStream API call) may take.
    pub request_timeout: Duration,
    /// Authentication.
    pub auth: Auth,
    /// TLS.
    pub tls: TlsSettings,
}

impl NatsConnection {
    /// Validates the connection keys of `[section]`: 1 to 16 `nats://`/`tls://` URLs,
    /// timeouts of 100 ms to 10 min, at most one auth method, coherent TLS keys.
    pub fn validate(
        section: &str,
        urls: &[String],
        connect_timeout_ms: u64,
        request_timeout_ms: u64,
        auth: &AuthSection,
        tls: &TlsSection,
    ) -> Result<NatsConnection, ConfigKeyError> {
        if urls.is_empty() || urls.len() > URLS_MAX {
            return Err(bad(
                format!("{section}.urls"),
                format!("give 1 to {URLS_MAX} server URLs"),
            ));
        }
        for url in urls {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(bad(
                    format!("{section}.urls"),
                    format!("{url:?}: use nats://host:port or tls://host:port"),
                ));
            }
        }
        if !(100..=600_000).contains(&connect_timeout_ms) {
            return Err(bad(
                format!("{section}.connect_timeout_ms"),
                "between 100 and 600000 ms",
            ));
        }
        let auth = auth.validate(section)?;
        let tls = tls.validate(section)?;
        Ok(NatsConnection {
            urls: urls.to_vec(),
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            request_timeout: Duration::from_millis(request_timeout_ms),
            auth,
            tls,
        })
    }

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

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// A secret file could not be read.
    Secret {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A secret file is larger than 64 KiB.
    SecretTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A `.creds` file could not be used.
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The server could not be reached, or refused the handshake.
    Connect(async_nats::ConnectError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Secret { path, error } | ConnectError::Credentials { path, error } => {
                write!(f, "{}: {error}", path.display())
            }
            ConnectError::SecretTooLarge { path } => write!(
                f,
                "{}: larger than {SECRET_BYTES_MAX} bytes",
                path.display()
            ),
            ConnectError::Connect(error) => write!(f, "{error}"),
        }
    }
}

impl ConnectError {
    /// Whether the credentials are at fault: a secret file that cannot be read or used,
    /// or a server that refused them. Otherwise the server could not be reached (refused,
    /// timed out, TLS handshake failed).
    pub fn is_credentials(&self) -> bool {
        match self {
            ConnectError::Secret { .. }
            | ConnectError::SecretTooLarge { .. }
            | ConnectError::Credentials { .. } => true,
            ConnectError::Connect(error) => matches!(
                error.kind(),
                async_nats::ConnectErrorKind::Authentication
                    | async_nats::ConnectErrorKind::AuthorizationViolation
            ),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Secret { error, .. } | ConnectError::Credentials { error, .. } => {
                Some(error)
            }
            ConnectError::SecretTooLarge { .. } => None,
            ConnectError::Connect(error) => Some(error),
        }
    }
}

/// Connects once (no retries: the caller backs off), with the configured credentials and
/// TLS, under `client_name` (shown by the server's monitoring). Secret files are read now.
/// `lost`, when given, is notified when this connection drops.
pub async fn connect(
    connection: &NatsConnection,
    client_name: String,
    lost: Option<Arc<Notify>>,
) -> Result<Client, ConnectError> {
    let connected = Arc::new(AtomicBool::new(false));
    let connected_flag = Arc::clone(&connected);
    let mut options = ConnectOptions::new()
        .name(client_name)
        .connection_timeout(connection.connect_timeout)
        .request_timeout(Some(connection.request_timeout))
        .ping_interval(Duration::from_secs(10))
        .reconnect_delay_callback(move |_| {
            if connected_flag.load(Ordering::Relaxed) {
                CLIENT_RECONNECT_DELAY
            } else {
                Duration::ZERO
            }
        })
        .require_tls(connection.tls.required);
    if let Some(lost) = lost {
        options = options.event_callback(move |event| {
            let lost = Arc::clone(&lost);
            async move {
                if matches!(event, Event::Disconnected | Event::Closed) {
                    lost.notify_one();
                }
            }
        });
    }
    if let Some(ca_file) = &connection.tls.ca_file {
        options = options.add_root_certificates(ca_file.clone());
    }
    if let Some((cert, key)) = &connection.tls.client_identity {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options = match &connection.auth {
        Auth::None => options,
        Auth::CredsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|error| ConnectError::Credentials {
                    path: path.clone(),
                    error,
                })?
        }
        Auth::NkeySeedFile(path) => options.nkey(read_secret(path)?),
        Auth::TokenFile(path) => options.token(read_secret(path)?),
        Auth::Token(token) => options.token(token.clone()),
        Auth::UserPasswordFile {
            user,
            password_file,
        } => options.user_and_password(user.clone(), read_secret(password_file)?),
        Auth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
    };
    let client = options
        .connect(connection.urls.as_slice())
        .await
        .map_err(ConnectError::Connect)?;
    connected.store(true, Ordering::Relaxed);
    Ok(client)
}

/// A secret file's content without the trailing newline; bounded.
fn read_secret(path: &Path) -> Result<String, ConnectError> {
    let secret_error = |error| ConnectError::Secret {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(secret_error)?;
    if meta.len() > SECRET_BYTES_MAX {
        return Err(ConnectError::SecretTooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(secret_error)?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

impl AuthSection {
    /// Checks that at most one method is given; `section` prefixes the keys in errors.
    pub fn validate(&self, section: &str) -> Result<Auth, ConfigKeyError> {
        let user_methods = usize::from(self.user.is_some());
        let methods = usize::from(self.creds_file.is_some())
            + usize::from(self.nkey_seed_file.is_some())
            + usize::from(self.token_file.is_some())
            + usize::from(self.token.is_some())
            + user_methods;
        if methods > 1 {
            return Err(bad(
                format!("{section}.auth"),
                "give one of creds_file, nkey_seed_file, token_file, token, user",
            ));
        }
        if self.user.is_none() && (self.password.is_some() || self.password_file.is_some()) {
            return Err(bad(
                format!("{section}.auth.user"),
                "a password needs a user",
            ));
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
                        format!("{section}.auth.password_file"),
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
    /// Checks the TLS keys; `section` prefixes the keys in errors.
    pub fn validate(&self, section: &str) -> Result<TlsSettings, ConfigKeyError> {
        let client_identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(bad(
                    format!("{section}.tls.client_cert_file"),
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
             chmod 600 it, or move the secret to a *_file key of its auth section",
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

    fn validate(
        section: &str,
        auth: &AuthSection,
        tls: &TlsSection,
    ) -> Result<NatsConnection, ConfigKeyError> {
        NatsConnection::validate(
            section,
            &["nats://127.0.0.1:4222".into()],
            1_000,
            1_000,
            auth,
            tls,
        )
    }

    #[test]
    fn keys_carry_the_section_name() {
        let auth = AuthSection {
            password: Some("p".into()),
            ..AuthSection::default()
        };
        let error = validate("hub", &auth, &TlsSection::default()).unwrap_err();
        assert_eq!(error.key, "hub.auth.user");
        let tls = TlsSection {
            client_key_file: Some("k.pem".into()),
            ..TlsSection::default()
        };
        let error = validate("export", &AuthSection::default(), &tls).unwrap_err();
        assert_eq!(error.key, "export.tls.client_cert_file");
        let error = NatsConnection::validate(
            "hub",
            &[],
            1_000,
            1_000,
            &AuthSection::default(),
            &TlsSection::default(),
        )
        .unwrap_err();
        assert_eq!(error.key, "hub.urls");
    }

    #[test]
    fn relative_secret_paths_are_taken_from_the_config_folder() {
        let auth = AuthSection {
            token_file: Some("token".into()),
            ..AuthSection::default()
        };
        let tls = TlsSection {
            ca_file: Some("/etc/ca.pem".into()),
            ..TlsSection::default()
        };
        let connection = validate("hub", &auth, &tls)
            .unwrap()
            .relative_to(Path::new("/etc/sortd"));
        assert_eq!(connection.auth, Auth::TokenFile("/etc/sortd/token".into()));
        assert_eq!(connection.tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(connection.tls.required, "a CA file implies TLS");
    }

    #[test]
    fn an_oversized_or_missing_secret_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; SECRET_BYTES_MAX as usize + 1]).unwrap();
        assert!(matches!(
            read_secret(&big),
            Err(ConnectError::SecretTooLarge { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_secret(&missing),
            Err(ConnectError::Secret { .. })
        ));
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        assert_eq!(read_secret(&token).unwrap(), "s3cret");
    }
}
