//! The metrics endpoint's one thread: accept a connection, read one request head (bounded
//! in size and time), answer it, close, next.
//!
//! Connections are served one at a time, so the endpoint uses one thread and one buffer
//! whatever the number of clients; a slow or silent client holds it for at most
//! [`CONNECTION_TIMEOUT`], and others wait in the listen backlog meanwhile. The thread
//! only reads the counters, so nothing it does (or fails to do) can slow the pipeline.
//! Parsing and routing are in [`super::http`], the exposition in [`super::exposition`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::exposition::{CONTENT_TYPE, Exposition};
use super::http::{self, Parsed, Route};

/// Longest request head read; a scrape's is a few hundred bytes.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Everything about one connection (reading the request, writing the answer) must be done
/// within this time, or the connection is dropped.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

const LISTENER_TOKEN: Token = Token(0);
const WAKE_TOKEN: Token = Token(1);

/// A running metrics endpoint. Dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` and serves `exposition` from a new thread.
    pub fn start(address: SocketAddr, exposition: Exposition) -> io::Result<MetricsServer> {
        let mut listener = TcpListener::bind(address)?;
        let local = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE_TOKEN)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sortd-metrics".into())
                .spawn(move || serve_forever(poll, listener, &exposition, &stop))?
        };
        Ok(MetricsServer {
            address: local,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address the endpoint is bound to.
    pub fn local_address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the thread (after the connection it is serving, if any).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn serve_forever(
    mut poll: Poll,
    listener: TcpListener,
    exposition: &Exposition,
    stop: &AtomicBool,
) {
    let mut events = Events::with_capacity(8);
    let mut head = vec![0u8; HEAD_BYTES_MAX];
    let mut body = String::new();
    let mut response = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(%error, "metrics endpoint stopped");
            return;
        }
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    let stream = std::net::TcpStream::from(stream);
                    if let Err(error) =
                        answer(stream, exposition, &mut head, &mut body, &mut response)
                    {
                        tracing::debug!(%peer, %error, "metrics request not answered");
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors and the like: try again on the next event.
                    tracing::debug!(%error, "metrics accept failed");
                    break;
                }
            }
        }
    }
}

/// Time left until `deadline`, or a timed-out error.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// Reads one request head and writes its answer, all before the connection's deadline.
fn answer(
    mut stream: std::net::TcpStream,
    exposition: &Exposition,
    head: &mut [u8],
    body: &mut String,
    response: &mut Vec<u8>,
) -> io::Result<()> {
    let deadline = Instant::now() + CONNECTION_TIMEOUT;
    stream.set_nonblocking(false)?;
    let mut received = 0;
    let route = loop {
        match http::parse_request(head.get(..received).unwrap_or_default(), head.len()) {
            Parsed::Complete(route) => break route,
            Parsed::Partial => {}
        }
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let spare = head.get_mut(received..).unwrap_or_default();
        match stream.read(spare) {
            Ok(0) => return Ok(()),
            Ok(count) => received += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    };
    body.clear();
    response.clear();
    if route == Route::Metrics {
        exposition
            .render(body)
            .map_err(|_| io::Error::other("metrics encoding failed"))?;
        http::write_response(route, CONTENT_TYPE, body.as_bytes(), response);
    } else {
        let text = http::refusal_body(route);
        http::write_response(
            route,
            "text/plain; charset=utf-8",
            text.as_bytes(),
            response,
        );
    }
    let mut written = 0;
    while let Some(rest) = response.get(written..).filter(|rest| !rest.is_empty()) {
        // The timeout applies per call, so it shrinks as the deadline nears.
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}
