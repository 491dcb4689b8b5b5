//! Listen mode's front door for the PLC link: accepts connections on the PLC port,
//! closes those from addresses outside `plc.allow` at once, and keeps a few allowed ones
//! as *candidates* until each has sent a valid PLC HELLO (decided by the sans-IO
//! [`HelloGate`]). Only then does it hand the socket and the HELLO's bytes to the egress
//! thread, which replaces the live connection with it. Until then the live PLC keeps
//! sorting: a stranger's connection never touches the link.
//!
//! Every refusal is counted (`sortd_plc_connections_refused_total{cause}`) and logged at
//! most once per interval. Not here: the link itself, and connect mode (sortd dials the
//! configured address and trusts what answers; see docs/security.md).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::plc::TELEGRAM_BYTES;
use crate::plc::admission::{GateVerdict, HelloGate, Rejection};
use crate::stats::Counters;
use crate::util::rate_limit::RateLimit;

use super::cidr::AllowList;

/// Candidate connections held at once; more are refused (`cause="busy"`).
pub const CANDIDATES_MAX: usize = 4;

/// A candidate that said HELLO: the socket (deregistered) and the bytes it sent.
#[derive(Debug)]
pub struct Promoted {
    /// The new PLC connection.
    pub stream: TcpStream,
    /// Where it comes from.
    pub peer: SocketAddr,
    /// The bytes read so far: one PLC HELLO telegram, for the link's `handle_input`.
    pub hello: Vec<u8>,
}

struct Candidate {
    stream: TcpStream,
    peer: SocketAddr,
    gate: HelloGate,
}

/// The PLC listener with its allow-list and candidate slots.
pub struct PlcAdmission {
    listener: TcpListener,
    allow: AllowList,
    hello_timeout: Duration,
    first_token: usize,
    slots: [Option<Candidate>; CANDIDATES_MAX],
    counters: Arc<Counters>,
    warn_refused: RateLimit,
}

impl std::fmt::Debug for PlcAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlcAdmission").finish_non_exhaustive()
    }
}

impl PlcAdmission {
    /// Takes over `listener` (already registered by the caller). Candidates are
    /// registered under tokens `first_token..first_token + CANDIDATES_MAX`.
    pub fn new(
        listener: TcpListener,
        allow: AllowList,
        hello_timeout: Duration,
        first_token: usize,
        counters: Arc<Counters>,
        warning_interval: Duration,
    ) -> PlcAdmission {
        PlcAdmission {
            listener,
            allow,
            hello_timeout,
            first_token,
            slots: std::array::from_fn(|_| None),
            counters,
            warn_refused: RateLimit::new(warning_interval),
        }
    }

    /// Whether `token` is one of the candidates' tokens.
    pub fn owns(&self, token: Token) -> bool {
        (self.first_token..self.first_token + CANDIDATES_MAX).contains(&token.0)
    }

    /// Accepts pending connections: each is refused or kept as a candidate. Returns a
    /// candidate whose HELLO had already arrived; call again until `None` (the listener
    /// is edge-triggered: `None` means every pending connection was taken).
    pub fn accept_ready(&mut self, registry: &Registry, now: Instant) -> Option<Promoted> {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(promoted) = self.admit(registry, stream, peer, now) {
                        return Some(promoted);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "PLC accept failed");
                    return None;
                }
            }
        }
    }

    fn admit(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<Promoted> {
        if !self.allow.allows(peer.ip()) {
            self.refuse(peer, "address", now);
            return None;
        }
        let Some(index) = self.slots.iter().position(Option::is_none) else {
            self.refuse(peer, "busy", now);
            return None;
        };
        let token = Token(self.first_token + index);
        if let Err(error) = registry.register(&mut stream, token, Interest::READABLE) {
            tracing::warn!(%peer, %error, "PLC connection dropped: cannot register it");
            return None;
        }
        tracing::debug!(%peer, "PLC connection accepted; waiting for its HELLO");
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some(Candidate {
                stream,
                peer,
                gate: HelloGate::new(now, self.hello_timeout),
            });
        }
        // Its HELLO may already be waiting, and no readable event would report it.
        self.on_candidate_event(registry, token, now)
    }

    /// A readable candidate: `Some` once it has sent a valid PLC HELLO.
    pub fn on_candidate_event(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Option<Promoted> {
        let index = token.0.checked_sub(self.first_token)?;
        let slot = self.slots.get_mut(index)?;
        let candidate = slot.as_mut()?;
        let mut buffer = [0u8; TELEGRAM_BYTES];
        let verdict = loop {
            let wanted = candidate.gate.wanted_bytes().min(buffer.len());
            if wanted == 0 {
                break candidate.gate.check_deadline(now);
            }
            let Some(room) = buffer.get_mut(..wanted) else {
                break candidate.gate.closed();
            };
            match candidate.stream.read(room) {
                Ok(0) => break candidate.gate.closed(),
                Ok(count) => {
                    let verdict = candidate.gate.push(room.get(..count).unwrap_or_default());
                    if verdict != GateVerdict::Pending {
                        break verdict;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    break candidate.gate.check_deadline(now);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break candidate.gate.closed(),
            }
        };
        self.settle(registry, index, verdict, now)
    }

    /// Closes candidates past their deadline.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        for index in 0..CANDIDATES_MAX {
            let verdict = match self.slots.get_mut(index) {
                Some(Some(candidate)) => candidate.gate.check_deadline(now),
                _ => continue,
            };
            let _ = self.settle(registry, index, verdict, now);
        }
    }

    fn settle(
        &mut self,
        registry: &Registry,
        index: usize,
        verdict: GateVerdict,
        now: Instant,
    ) -> Option<Promoted> {
        if verdict == GateVerdict::Pending {
            return None;
        }
        let mut candidate = self.slots.get_mut(index)?.take()?;
        let _ = registry.deregister(&mut candidate.stream);
        match verdict {
            GateVerdict::Hello => Some(Promoted {
                hello: candidate.gate.received().to_vec(),
                stream: candidate.stream,
                peer: candidate.peer,
            }),
            GateVerdict::Rejected(rejection) => {
                if let Rejection::BadTelegram(error) = rejection {
                    tracing::debug!(peer = %candidate.peer, ?error, "PLC candidate sent a bad telegram");
                }
                self.refuse(candidate.peer, rejection.cause(), now);
                None
            }
            GateVerdict::Pending => None,
        }
    }

    fn refuse(&mut self, peer: SocketAddr, cause: &'static str, now: Instant) {
        if let Some(counter) = self.counters.plc.refused.by_cause(cause) {
            Counters::add(counter, 1);
        }
        if let Some(held_back) = self.warn_refused.allow(now) {
            tracing::warn!(%peer, cause, held_back, "PLC connection refused; the live link is untouched");
        }
    }
}
