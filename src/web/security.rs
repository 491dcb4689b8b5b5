//! Optional TLS and basic auth for the web endpoint, from a web-config file in the format
//! Prometheus exporters share (exporter-toolkit):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # PEM chain, leaf first
//!   key_file: server.key           # PEM private key
//!   client_ca_file: clients.crt    # optional: CAs that sign client certificates
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash
//! ```
//!
//! Relative paths are relative to the web-config file. Everything is read and checked
//! when the configuration is loaded, so a bad file stops the daemon before it binds
//! anything. This module decides whether a request's `Authorization` header is good; it
//! serves nothing ([`super::server`] does).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// Why a web-config file was refused.
#[derive(Debug)]
pub enum WebConfigError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The YAML does not have the expected shape.
    Syntax(String),
    /// A certificate or key file is unusable.
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The TLS settings do not fit together.
    Tls(String),
    /// A user's password hash is not a bcrypt hash.
    Hash {
        /// The user.
        user: String,
    },
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebConfigError::Read { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            WebConfigError::Syntax(message) => write!(f, "{message}"),
            WebConfigError::Pem { path, problem } => write!(f, "{}: {problem}", path.display()),
            WebConfigError::Tls(message) => write!(f, "tls_server_config: {message}"),
            WebConfigError::Hash { user } => write!(
                f,
                "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)"
            ),
        }
    }
}

impl std::error::Error for WebConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebConfigError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsSection>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
}

/// Users allowed in, with their bcrypt hashes; empty means no authentication.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Keyed hashes of `user:password` pairs that verified, so that a scraper does not
    /// pay a bcrypt verification on every scrape. Bounded by [`VERIFIED_PAIRS_MAX`].
    verified: Mutex<HashSet<u128>>,
    cache_key_seed: u64,
}

/// Remembered good `user:password` pairs at most (cleared when full).
pub const VERIFIED_PAIRS_MAX: usize = 64;
/// Longest `Authorization` header value looked at.
pub const AUTHORIZATION_BYTES_MAX: usize = 1024;

/// A bcrypt hash verified against passwords of unknown users, so that they take as long
/// as known ones. (The hash of a random string; no password matches it.)
const DECOY_HASH: &str = "$2b$10$GN3gDgOzl5DYnwZQUg4mWOq7DtfWTFFtDIQjFSrVSjP7jyfR0VIUa";

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// No users: every request is let in.
    pub fn open() -> BasicAuth {
        BasicAuth::with_users(BTreeMap::new())
    }

    fn with_users(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            cache_key_seed: fastrand::u64(..),
        }
    }

    /// Whether requests must carry credentials.
    pub fn is_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether a request with this `Authorization` header value may in.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if !self.is_required() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(decode_basic) else {
            return false;
        };
        let key = {
            let mut pair = Vec::with_capacity(user.len() + password.len() + 1);
            pair.extend_from_slice(user.as_bytes());
            pair.push(0);
            pair.extend_from_slice(password.as_bytes());
            xxhash_rust::xxh3::xxh3_128_with_seed(&pair, self.cache_key_seed)
        };
        if self
            .verified
            .lock()
            .is_ok_and(|verified| verified.contains(&key))
        {
            return true;
        }
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.as_str(), true),
            None => (DECOY_HASH, false),
        };
        let good = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false) && known;
        if good && let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_PAIRS_MAX {
                verified.clear();
            }
            verified.insert(key);
        }
        good
    }
}

/// `Basic base64(user:password)` to its parts.
fn decode_basic(header: &[u8]) -> Option<(String, String)> {
    let header = header.get(..header.len().min(AUTHORIZATION_BYTES_MAX))?;
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// What the web endpoint enforces: TLS (if configured) and basic auth (if users are).
#[derive(Debug)]
pub struct WebSecurity {
    /// The TLS server settings; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// Users allowed in.
    pub auth: BasicAuth,
}

impl WebSecurity {
    /// Plain HTTP, no authentication: the default without a web-config file.
    pub fn open() -> WebSecurity {
        WebSecurity {
            tls: None,
            auth: BasicAuth::open(),
        }
    }

    /// Reads and checks a web-config file and everything it names.
    pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| WebConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        WebSecurity::parse(&text, base)
    }

    /// Checks web-config text; relative paths in it are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<WebSecurity, WebConfigError> {
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile {
                tls_server_config: None,
                basic_auth_users: None,
            }
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|error| WebConfigError::Syntax(error.to_string()))?
        };
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.is_empty() || user.contains(':') || bcrypt::HashParts::from_str(hash).is_err() {
                return Err(WebConfigError::Hash { user: user.clone() });
            }
        }
        let tls = file
            .tls_server_config
            .map(|section| tls_config(&section, base))
            .transpose()?;
        Ok(WebSecurity {
            tls,
            auth: BasicAuth::with_users(users),
        })
    }
}

fn tls_config(section: &TlsSection, base: &Path) -> Result<Arc<ServerConfig>, WebConfigError> {
    let resolve = |path: &Path| base.join(path);
    let pem_error = |path: &Path, problem: String| WebConfigError::Pem {
        path: path.to_path_buf(),
        problem,
    };
    let cert_path = resolve(&section.cert_file);
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certificates| certificates.collect())
        .map_err(|error| pem_error(&cert_path, error.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error(&cert_path, "no certificate in the file".into()));
    }
    let key_path = resolve(&section.key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|error| pem_error(&key_path, error.to_string()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| WebConfigError::Tls(error.to_string()))?;
    let auth_type =
        section
            .client_auth_type
            .as_deref()
            .unwrap_or(if section.client_ca_file.is_some() {
                "RequireAndVerifyClientCert"
            } else {
                "NoClientCert"
            });
    let verify = match auth_type {
        "NoClientCert" => None,
        "RequireAndVerifyClientCert" => Some(true),
        "VerifyClientCertIfGiven" => Some(false),
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(WebConfigError::Tls(format!(
                "client_auth_type {auth_type} (unverified client certificates) is not supported; \
                 use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"
            )));
        }
        other => {
            return Err(WebConfigError::Tls(format!(
                "unknown client_auth_type {other:?}"
            )));
        }
    };
    let builder = match (verify, &section.client_ca_file) {
        (None, _) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(WebConfigError::Tls(format!(
                "client_auth_type {auth_type} needs client_ca_file"
            )));
        }
        (Some(required), Some(ca_file)) => {
            let ca_path = resolve(ca_file);
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(&ca_path)
                .map_err(|error| pem_error(&ca_path, error.to_string()))?
            {
                let certificate =
                    certificate.map_err(|error| pem_error(&ca_path, error.to_string()))?;
                roots
                    .add(certificate)
                    .map_err(|error| pem_error(&ca_path, error.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|error| WebConfigError::Tls(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certificates, key)
        .map_err(|error| WebConfigError::Tls(format!("certificate and key: {error}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn users_get_in_with_their_password_only() {
        let hash = bcrypt::hash("s3cret", 4).expect("hashes");
        let security = WebSecurity::parse(
            &format!("basic_auth_users:\n  prom: {hash}\n"),
            Path::new("."),
        )
        .expect("valid");
        let auth = &security.auth;
        assert!(auth.is_required());
        assert!(auth.allows(Some(&basic("prom", "s3cret"))));
        // Twice: the second time from the cache.
        assert!(auth.allows(Some(&basic("prom", "s3cret"))));
        for refused in [
            basic("prom", "wrong"),
            basic("other", "s3cret"),
            b"Bearer abc".to_vec(),
            b"Basic !!!".to_vec(),
            b"Basic".to_vec(),
        ] {
            assert!(!auth.allows(Some(&refused)), "{refused:?}");
        }
        assert!(!auth.allows(None));
        assert!(WebSecurity::open().auth.allows(None));
        // Unknown users cost a real verification too.
        assert!(bcrypt::HashParts::from_str(DECOY_HASH).is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let cases = [
            (
                "basic_auth_users:\n  prom: plain-text\n",
                "not a bcrypt hash",
            ),
            ("basic_auth_users: [1, 2]\n", "basic_auth_users"),
            ("tls_server_config:\n  cert_file: x\n", "key_file"),
            ("unknown_key: 1\n", "unknown field"),
            (
                "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
                "/nonexistent.crt",
            ),
        ];
        for (text, expected) in cases {
            let error = WebSecurity::parse(text, Path::new("/"))
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let empty = WebSecurity::parse("", Path::new("/")).expect("empty is plain HTTP");
        assert!(empty.tls.is_none() && !empty.auth.is_required());
    }
}
