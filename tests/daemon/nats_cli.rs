//! The NATS-talking commands (`plan publish`, `plan status`, `plan preadvice publish`,
//! `events reconcile`) against a real nats-server that wants TLS (a test-made CA) and a
//! user with a password: each takes the same credential and TLS options; missing or
//! wrong credentials exit 77, a server it cannot reach or trust exits 69, each with one
//! clear line; the right ones work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::nats::{NatsServer, free_port};
use crate::export_nats::make_certificates;
use sortd::export::connection::{AuthSection, NatsConnection, TlsSection, connect};

const EXIT_CREDENTIALS: i32 = 77;
const EXIT_UNAVAILABLE: i32 = 69;

/// A TLS server with one user, and the files a client needs.
struct Secured {
    server: NatsServer,
    _certs: tempfile::TempDir,
    ca_file: PathBuf,
    files: tempfile::TempDir,
}

impl Secured {
    fn start() -> Secured {
        let certs = tempfile::tempdir().expect("temp dir");
        let (ca_file, tls) = make_certificates(certs.path(), &["127.0.0.1"]);
        let server = NatsServer::start_with_config(&format!(
            "{tls}authorization {{\n  user: hub-operator\n  password: \"right-pass\"\n}}\n"
        ));
        let files = tempfile::tempdir().expect("temp dir");
        std::fs::write(files.path().join("right"), "right-pass\n").expect("write password");
        std::fs::write(files.path().join("wrong"), "wrong-pass\n").expect("write password");
        let plan_csv = files.path().join("plan.csv");
        std::fs::write(
            &plan_csv,
            "kind,key,chutes\nmeta,name,tls\nmeta,version,3\nprefix,33,12\n\
             default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n",
        )
        .expect("plan written");
        sortd::plan::compile_file(&plan_csv, &files.path().join("plan.sortplan"))
            .expect("plan compiles");
        std::fs::write(
            files.path().join("batch.jsonl"),
            "{\"op\":\"add\",\"barcode\":\"YT1\",\"chutes\":[7]}\n",
        )
        .expect("batch written");
        Secured {
            server,
            _certs: certs,
            ca_file,
            files,
        }
    }

    fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.server.port)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// The options for this server: `password` names the password file ("right",
    /// "wrong") or None for no credentials; `ca` whether the CA is given.
    fn options(&self, password: Option<&str>, ca: bool) -> Vec<String> {
        let mut options = vec!["--nats".to_string(), self.url()];
        if let Some(name) = password {
            options.extend(["--user".into(), "hub-operator".into()]);
            options.extend(["--password-file".into(), path(&self.file(name))]);
        }
        if ca {
            options.extend(["--tls-ca-file".into(), path(&self.ca_file)]);
        }
        options
    }

    /// Creates the (empty) sort-event stream, as an exporting node would.
    fn create_event_stream(&self) {
        let auth = AuthSection {
            user: Some("hub-operator".into()),
            password_file: Some(self.file("right")),
            ..AuthSection::default()
        };
        let tls = TlsSection {
            ca_file: Some(self.ca_file.clone()),
            ..TlsSection::default()
        };
        let connection = NatsConnection::validate("test", &[self.url()], 5_000, 5_000, &auth, &tls)
            .expect("valid connection");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let client = connect(&connection, "test".into(), None)
                .await
                .expect("test client connects");
            async_nats::jetstream::new(client)
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "SORTD_EVENTS".into(),
                    subjects: vec!["sortd.events.>".into()],
                    ..Default::default()
                })
                .await
                .expect("stream created");
        });
    }
}

fn path(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

/// The four commands, each with `options` spliced in.
fn commands(secured: &Secured, options: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let with = |head: &[&str], tail: &[String]| -> Vec<String> {
        let mut args: Vec<String> = head.iter().map(|arg| arg.to_string()).collect();
        args.extend_from_slice(options);
        args.extend_from_slice(tail);
        args
    };
    let group = ["--group".to_string(), "north".to_string()];
    vec![
        (
            "plan publish",
            with(
                &["plan", "publish", &path(&secured.file("plan.sortplan"))],
                &group,
            ),
        ),
        ("plan status", with(&["plan", "status"], &group)),
        (
            "plan preadvice publish",
            with(
                &["plan", "preadvice", "publish"],
                &[
                    group[0].clone(),
                    group[1].clone(),
                    path(&secured.file("batch.jsonl")),
                ],
            ),
        ),
        ("events reconcile", with(&["events", "reconcile"], &[])),
    ]
}

fn sortd(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .output()
        .expect("sortd runs")
}

fn assert_exit(name: &str, output: &Output, code: i32, says: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{name}: exit status; stderr: {stderr}"
    );
    assert!(
        stderr.contains(says),
        "{name}: stderr should say {says:?}: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{name}: one line of error: {stderr}"
    );
}

#[test]
fn every_nats_command_takes_credentials_and_a_ca_and_says_clearly_when_they_are_wrong() {
    let secured = Secured::start();
    secured.create_event_stream();

    for (name, args) in commands(&secured, &secured.options(None, true)) {
        let output = sortd(&args);
        assert_exit(name, &output, EXIT_CREDENTIALS, "authorization violation");
    }
    for (name, args) in commands(&secured, &secured.options(Some("wrong"), true)) {
        let output = sortd(&args);
        assert_exit(name, &output, EXIT_CREDENTIALS, "authorization violation");
    }
    // Right password, but the server's certificate is not trusted without the CA.
    for (name, args) in commands(&secured, &secured.options(Some("right"), false)) {
        let output = sortd(&args);
        assert_exit(name, &output, EXIT_UNAVAILABLE, "connecting");
    }
    // A password file that is not there is the credentials' fault too.
    for (name, args) in commands(&secured, &secured.options(Some("missing"), true)) {
        let output = sortd(&args);
        assert_exit(name, &output, EXIT_CREDENTIALS, "missing");
    }
    // Nobody listening.
    let nowhere = vec![
        "--nats".to_string(),
        format!("nats://127.0.0.1:{}", free_port()),
    ];
    for (name, args) in commands(&secured, &nowhere) {
        let output = sortd(&args);
        assert_exit(name, &output, EXIT_UNAVAILABLE, "connect");
    }

    for (name, args) in commands(&secured, &secured.options(Some("right"), true)) {
        let output = sortd(&args);
        assert!(output.status.success(), "{name}: {output:?}");
    }
    let status = sortd(&commands(&secured, &secured.options(Some("right"), true))[1].1);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("published plan \"tls\" version 3"),
        "plan status: {stdout}"
    );
}

#[test]
fn conflicting_or_incomplete_nats_options_are_refused_before_connecting() {
    let refused = [
        vec!["events", "reconcile", "--user", "u"],
        vec!["events", "reconcile", "--password-file", "p"],
        vec![
            "events",
            "reconcile",
            "--token-file",
            "t",
            "--creds-file",
            "c",
        ],
        vec!["events", "reconcile", "--tls-client-cert-file", "c.pem"],
        vec![
            "plan",
            "status",
            "--group",
            "g",
            "--config",
            "s.toml",
            "--token-file",
            "t",
        ],
    ];
    for args in refused {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let output = sortd(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
}
