//! A real `nats-server` for tests: JetStream on, loopback only, a free port and its own
//! store directory; killed on drop. It can be stopped and started again on the same port
//! and store (a broker restart), and started from extra configuration text (users,
//! TLS). `.ci/run` installs Debian's nats-server (2.9.x).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_PATIENCE: Duration = Duration::from_secs(15);

/// A running (or stopped, between restarts) nats-server.
pub struct NatsServer {
    /// The client port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl NatsServer {
    /// A plain JetStream server.
    pub fn start() -> NatsServer {
        Self::start_on(free_port(), None)
    }

    /// A server with `extra` appended to its configuration file (e.g. an
    /// `authorization { }` or `tls { }` block). `extra` may name files in
    /// [`NatsServer::dir`]-relative paths the caller wrote before.
    pub fn start_with_config(extra: &str) -> NatsServer {
        Self::start_on(free_port(), Some(extra))
    }

    /// A server on `port` (which may be one a client already tries to reach).
    pub fn start_on(port: u16, extra: Option<&str>) -> NatsServer {
        let dir = tempfile::tempdir().expect("nats temp dir");
        let config = extra.map(|extra| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, extra).expect("write nats config");
            path
        });
        let mut server = NatsServer {
            port,
            dir,
            config,
            child: None,
        };
        server.run();
        server
    }

    /// The temp directory the server's store and config live in (tests may put
    /// certificates here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client address.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn run(&mut self) {
        let store = self.dir.path().join("store");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("nats log");
        let mut command = Command::new("nats-server");
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .expect("nats-server runs (install it: apt-get install nats-server)");
        self.child = Some(child);
        self.wait_accepting();
    }

    fn wait_accepting(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server exited at start: {status}; log:\n{}",
                    self.log()
                );
            }
            if let Ok(mut stream) =
                TcpStream::connect_timeout(&self.address(), Duration::from_millis(200))
            {
                // The server greets with INFO once it serves clients.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut greeting = [0u8; 4];
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept on {}; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL: a crash, not a shutdown) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
