//! The options every NATS-talking subcommand takes (`plan publish`, `plan status`,
//! `plan preadvice publish`, `events reconcile`): server URLs, one way to authenticate,
//! TLS. One clap struct, flattened into each command, turned into the same validated
//! `NatsConnection` the daemon's `[export]` and `[hub]` sections give; and the exit code
//! for a connection that failed.
//!
//! What it does not do: connect (that is `sortd::export::connection::connect`, called by
//! the command's library function), or read a configuration file (`plan publish|status
//! --config` reads `[hub]` instead of these options).
//!
//! Secrets come only from files: a token or password on the command line would be seen
//! by every user through `ps`.

use std::path::PathBuf;
use std::process::ExitCode;

use sortd::export::connection::{AuthSection, ConnectError, NatsConnection, TlsSection};

/// Where NATS is when no `--nats` is given.
pub const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";

/// Exit status when NATS cannot be reached (refused, timed out, TLS handshake failed)
/// (BSD `EX_UNAVAILABLE`).
pub const EXIT_NATS_UNAVAILABLE: u8 = 69;
/// Exit status when NATS refuses the credentials, or a secret file cannot be read
/// (BSD `EX_NOPERM`).
pub const EXIT_NATS_CREDENTIALS: u8 = 77;

/// The clap ids of these options (`--config` conflicts with each).
pub const IDS: [&str; 10] = [
    "urls",
    "creds_file",
    "nkey_seed_file",
    "token_file",
    "user",
    "password_file",
    "tls_ca_file",
    "tls_client_cert_file",
    "tls_client_key_file",
    "tls_required",
];

/// How to reach NATS: URLs, credentials (at most one way), TLS.
#[derive(Debug, Default, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL, `nats://host:port` or `tls://host:port`; repeat it for the
    /// servers of a cluster [default: nats://127.0.0.1:4222].
    #[arg(long = "nats", value_name = "URL")]
    pub urls: Vec<String>,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nkey_seed_file", "token_file", "user"])]
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["token_file", "user"])]
    pub nkey_seed_file: Option<PathBuf>,
    /// A file holding a token.
    #[arg(long, value_name = "FILE", conflicts_with = "user")]
    pub token_file: Option<PathBuf>,
    /// User name, with --password-file.
    #[arg(long, requires = "password_file")]
    pub user: Option<String>,
    /// A file holding the password of --user.
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the server's certificate (implies TLS; the
    /// certificate must name the host in the URL).
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with --tls-client-key-file).
    #[arg(long, value_name = "FILE", requires = "tls_client_key_file")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-client-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_client_cert_file")]
    pub tls_client_key_file: Option<PathBuf>,
    /// Refuse a server without TLS even when the URL says `nats://`.
    #[arg(long)]
    pub tls_required: bool,
}

impl NatsArgs {
    /// The validated connection, with `timeout_ms` to connect and for each request.
    pub fn connection(&self, timeout_ms: u64) -> anyhow::Result<NatsConnection> {
        let urls = if self.urls.is_empty() {
            vec![NATS_URL_DEFAULT.to_string()]
        } else {
            self.urls.clone()
        };
        let auth = AuthSection {
            creds_file: self.creds_file.clone(),
            nkey_seed_file: self.nkey_seed_file.clone(),
            token_file: self.token_file.clone(),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            ..AuthSection::default()
        };
        let tls = TlsSection {
            required: self.tls_required,
            ca_file: self.tls_ca_file.clone(),
            client_cert_file: self.tls_client_cert_file.clone(),
            client_key_file: self.tls_client_key_file.clone(),
        };
        // clap already refused conflicting options; what is left is the URLs.
        NatsConnection::validate("nats", &urls, timeout_ms, timeout_ms, &auth, &tls)
            .map_err(|error| anyhow::anyhow!("--nats: {}", error.message))
    }
}

/// A command's result, with a failure to connect to NATS turned into its own exit status
/// (printed first): [`EXIT_NATS_CREDENTIALS`] or [`EXIT_NATS_UNAVAILABLE`]. Any other
/// error is left to the dispatcher.
pub fn exit_on_connect_error(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    let error = match result {
        Ok(code) => return Ok(code),
        Err(error) => error,
    };
    let Some(connect) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ConnectError>())
    else {
        return Err(error);
    };
    eprintln!("sortd: {}", super::one_line(&error));
    Ok(ExitCode::from(if connect.is_credentials() {
        EXIT_NATS_CREDENTIALS
    } else {
        EXIT_NATS_UNAVAILABLE
    }))
}
