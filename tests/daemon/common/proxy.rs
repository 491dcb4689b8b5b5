//! A fault-injecting TCP proxy for tests, after Toxiproxy: it sits between a client
//! (scanner, or sortd dialling the PLC) and a server and applies toxics that the test
//! changes while it runs: latency, a bandwidth limit, slicing into tiny writes, a
//! blackhole, a stop in reading (TCP backpressure), refusing new connections, and a reset
//! of every connection. It can also keep the first bytes each connection sent upstream,
//! so a test can read the telegrams that went through.
//!
//! Threads are bounded: one acceptor and two pumps per connection, at most
//! `connections_max` connections (more are accepted and closed at once). Everything
//! stops when the proxy is dropped: sockets poll their stop flag every few milliseconds.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often blocked threads look at their stop flag and the toxics.
const POLL: Duration = Duration::from_millis(5);
/// Bytes moved per read.
const CHUNK_BYTES: usize = 16 * 1024;
/// Upstream bytes kept per connection when recording.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// What is done to the bytes of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toxic {
    /// Delay added before each chunk is forwarded.
    pub latency: Duration,
    /// Forward at most this many bytes per second.
    pub bytes_per_s: Option<u64>,
    /// Forward in writes of at most this many bytes, `slice_gap` apart.
    pub slice_bytes_max: Option<usize>,
    /// Pause between slices.
    pub slice_gap: Duration,
    /// Read and discard: the peer hears nothing, the sender sees no error.
    pub blackhole: bool,
    /// Stop reading from the sender: its writes back up (TCP backpressure).
    pub stop_reading: bool,
}

/// The toxics of both directions and of the listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toxics {
    /// Client to server.
    pub upstream: Toxic,
    /// Server to client.
    pub downstream: Toxic,
    /// New connections are accepted and closed at once (the server looks down).
    pub refuse_new: bool,
}

struct Shared {
    toxics: Mutex<Toxics>,
    stop: AtomicBool,
    /// Bumped by [`Proxy::reset_all`]; pumps that see a new value reset their connection.
    reset_generation: AtomicU64,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    record_upstream: AtomicBool,
    recorded: Mutex<Vec<Vec<u8>>>,
}

/// A running proxy.
pub struct Proxy {
    /// Where clients connect.
    pub address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr, connections_max: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let address = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            toxics: Mutex::new(Toxics::default()),
            stop: AtomicBool::new(false),
            reset_generation: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            record_upstream: AtomicBool::new(false),
            recorded: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, target, connections_max, &shared))
        };
        Proxy {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Changes the toxics; applies to every connection from its next chunk on.
    pub fn set(&self, change: impl FnOnce(&mut Toxics)) {
        if let Ok(mut toxics) = self.shared.toxics.lock() {
            change(&mut toxics);
        }
    }

    /// Removes every toxic.
    pub fn heal(&self) {
        self.set(|toxics| *toxics = Toxics::default());
    }

    /// Resets (RST) every open connection, both ends.
    pub fn reset_all(&self) {
        self.shared.reset_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Keep the first bytes every new connection sends upstream.
    pub fn record_upstream(&self) {
        self.shared.record_upstream.store(true, Ordering::SeqCst);
    }

    /// What each recorded connection sent upstream, in connection order.
    pub fn recorded_upstream(&self) -> Vec<Vec<u8>> {
        self.shared
            .recorded
            .lock()
            .map(|recorded| recorded.clone())
            .unwrap_or_default()
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused (limit or `refuse_new`).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    connections_max: usize,
    shared: &Arc<Shared>,
) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        pumps.retain(|pump| !pump.is_finished());
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let refuse = shared.toxics.lock().map(|t| t.refuse_new).unwrap_or(false)
            || shared.open.load(Ordering::SeqCst) >= connections_max;
        let server = if refuse {
            None
        } else {
            TcpStream::connect(target).ok()
        };
        let Some(server) = server else {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let record = shared
            .record_upstream
            .load(Ordering::SeqCst)
            .then(|| {
                shared.recorded.lock().ok().map(|mut recorded| {
                    recorded.push(Vec::new());
                    recorded.len() - 1
                })
            })
            .flatten();
        let generation = shared.reset_generation.load(Ordering::SeqCst);
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            continue;
        };
        let finished = Arc::new(AtomicUsize::new(0));
        for (from, to, upstream) in [
            (client_reader, server, true),
            (server_reader, client, false),
        ] {
            let shared = shared.clone();
            let finished = finished.clone();
            let record = if upstream { record } else { None };
            pumps.push(std::thread::spawn(move || {
                pump(from, to, upstream, generation, record, &shared);
                if finished.fetch_add(1, Ordering::SeqCst) == 1 {
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

/// Makes the last close of `stream` send a reset rather than a FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Writes all of `bytes`, giving up when the proxy stops, a reset is ordered, or the
/// socket fails. A peer that stops reading blocks this pump, not the proxy.
fn write_fully(to: &mut TcpStream, mut bytes: &[u8], generation: u64, shared: &Shared) -> bool {
    while !bytes.is_empty() {
        if shared.stop.load(Ordering::SeqCst)
            || shared.reset_generation.load(Ordering::SeqCst) != generation
        {
            return false;
        }
        match to.write(bytes) {
            Ok(0) => return false,
            Ok(count) => bytes = bytes.get(count..).unwrap_or_default(),
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn toxic(shared: &Shared, upstream: bool) -> Toxic {
    shared
        .toxics
        .lock()
        .map(|toxics| {
            if upstream {
                toxics.upstream.clone()
            } else {
                toxics.downstream.clone()
            }
        })
        .unwrap_or_default()
}

/// Moves bytes from `from` to `to` through the direction's toxics until either side
/// closes, the proxy stops, or a reset is ordered.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    upstream: bool,
    generation: u64,
    record: Option<usize>,
    shared: &Shared,
) {
    let _ = from.set_read_timeout(Some(POLL));
    let _ = to.set_write_timeout(Some(POLL));
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if shared.reset_generation.load(Ordering::SeqCst) != generation {
            // SO_LINGER 0 on both: the last descriptor to close sends RST.
            reset(&from);
            reset(&to);
            return;
        }
        let toxic = toxic(shared, upstream);
        if toxic.stop_reading {
            std::thread::sleep(POLL);
            continue;
        }
        let count = match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(count) => count,
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        };
        let bytes = buffer.get(..count).unwrap_or_default();
        if let Some(index) = record {
            if let Ok(mut recorded) = shared.recorded.lock() {
                if let Some(kept) = recorded.get_mut(index) {
                    let room = RECORD_BYTES_MAX.saturating_sub(kept.len());
                    kept.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
                }
            }
        }
        if toxic.blackhole {
            continue;
        }
        if !toxic.latency.is_zero() {
            std::thread::sleep(toxic.latency);
        }
        let slice = toxic.slice_bytes_max.unwrap_or(usize::MAX).max(1);
        for piece in bytes.chunks(slice) {
            if !write_fully(&mut to, piece, generation, shared) {
                if shared.reset_generation.load(Ordering::SeqCst) != generation {
                    reset(&from);
                    reset(&to);
                } else {
                    let _ = from.shutdown(Shutdown::Both);
                }
                return;
            }
            if let Some(rate) = toxic.bytes_per_s {
                let micros = piece.len() as u64 * 1_000_000 / rate.max(1);
                std::thread::sleep(Duration::from_micros(micros));
            }
            if toxic.slice_bytes_max.is_some() && !toxic.slice_gap.is_zero() {
                std::thread::sleep(toxic.slice_gap);
            }
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}
