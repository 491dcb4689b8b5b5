//! Admission of a new PLC connection in `listen` mode: a connection from an allowed
//! address is only a *candidate* until its first telegram is a valid PLC HELLO. The
//! [`HelloGate`] decides that from the candidate's bytes (any chunking), reusing the
//! telegram codec; the shell keeps the bytes and, once the gate says
//! [`GateVerdict::Hello`], hands the socket and those bytes to the [`crate::plc::HostLink`].
//!
//! Not here: sockets, the allow-list check (the shell does it at accept), deadlines'
//! clock (the caller passes `now`), and the link's own resynchronisation, which the
//! HELLO then drives as on any connection.

use std::time::{Duration, Instant};

use super::error::TelegramDecodeError;
use super::telegram::{Role, TELEGRAM_BYTES, Telegram};

/// Why a candidate connection was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The first telegram did not decode.
    BadTelegram(TelegramDecodeError),
    /// The first telegram decoded but is not a HELLO from a PLC.
    NotPlcHello,
    /// No complete telegram before the deadline.
    HelloTimeout,
    /// The peer closed before sending a HELLO.
    Closed,
}

impl Rejection {
    /// The cause label of `sortd_plc_connections_refused_total`.
    pub const fn cause(&self) -> &'static str {
        match self {
            Rejection::BadTelegram(_) | Rejection::NotPlcHello => "bad_hello",
            Rejection::HelloTimeout => "hello_timeout",
            Rejection::Closed => "closed",
        }
    }
}

/// What the gate made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not a whole telegram yet.
    Pending,
    /// A valid PLC HELLO arrived: promote the candidate, feeding the link
    /// [`HelloGate::received`].
    Hello,
    /// Give the candidate up.
    Rejected(Rejection),
}

/// Watches one candidate connection's first bytes until a PLC HELLO or a deadline.
#[derive(Debug, Clone)]
pub struct HelloGate {
    received: Vec<u8>,
    deadline: Instant,
    verdict: GateVerdict,
}

impl HelloGate {
    /// A gate for a connection accepted at `now`, given `hello_timeout` to say HELLO.
    pub fn new(now: Instant, hello_timeout: Duration) -> HelloGate {
        HelloGate {
            received: Vec::with_capacity(TELEGRAM_BYTES),
            deadline: now + hello_timeout,
            verdict: GateVerdict::Pending,
        }
    }

    /// When the candidate must have said HELLO.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How many more bytes the gate wants (read no more than this, so nothing beyond the
    /// first telegram is held here; the link reads the rest from the socket itself).
    pub fn wanted_bytes(&self) -> usize {
        match self.verdict {
            GateVerdict::Pending => TELEGRAM_BYTES.saturating_sub(self.received.len()),
            _ => 0,
        }
    }

    /// The bytes received so far: the HELLO once the verdict is [`GateVerdict::Hello`].
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Bytes from the candidate. Takes at most [`HelloGate::wanted_bytes`]; the rest is
    /// the caller's to keep.
    pub fn push(&mut self, bytes: &[u8]) -> GateVerdict {
        let take = bytes.len().min(self.wanted_bytes());
        self.received
            .extend_from_slice(bytes.get(..take).unwrap_or_default());
        if self.verdict == GateVerdict::Pending && self.received.len() == TELEGRAM_BYTES {
            self.verdict = match Telegram::decode(&self.received) {
                Ok(Telegram::Hello(hello)) if hello.role == Role::Plc => GateVerdict::Hello,
                Ok(_) => GateVerdict::Rejected(Rejection::NotPlcHello),
                Err(error) => GateVerdict::Rejected(Rejection::BadTelegram(error)),
            };
        }
        self.verdict
    }

    /// The peer closed its side.
    pub fn closed(&mut self) -> GateVerdict {
        if self.verdict == GateVerdict::Pending {
            self.verdict = GateVerdict::Rejected(Rejection::Closed);
        }
        self.verdict
    }

    /// The verdict at `now`: a pending gate past its deadline is rejected.
    pub fn check_deadline(&mut self, now: Instant) -> GateVerdict {
        if self.verdict == GateVerdict::Pending && now >= self.deadline {
            self.verdict = GateVerdict::Rejected(Rejection::HelloTimeout);
        }
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plc::telegram::Hello;

    fn hello(role: Role) -> [u8; TELEGRAM_BYTES] {
        Telegram::Hello(Hello {
            role,
            session: 7,
            ack_session: 0,
            acked_through_seq: 0,
            window_first_seq: 1,
            next_seq: 1,
        })
        .encode()
    }

    #[test]
    fn plc_hello_in_any_chunking_passes_and_keeps_its_bytes() {
        let now = Instant::now();
        let bytes = hello(Role::Plc);
        for split in [1, 13, TELEGRAM_BYTES - 1] {
            let mut gate = HelloGate::new(now, Duration::from_secs(1));
            assert_eq!(gate.push(&bytes[..split]), GateVerdict::Pending);
            assert_eq!(gate.wanted_bytes(), TELEGRAM_BYTES - split);
            assert_eq!(gate.push(&bytes[split..]), GateVerdict::Hello);
            assert_eq!(gate.received(), &bytes[..]);
            assert_eq!(gate.wanted_bytes(), 0);
        }
    }

    #[test]
    fn only_the_first_telegram_is_taken() {
        let mut gate = HelloGate::new(Instant::now(), Duration::from_secs(1));
        let mut bytes = hello(Role::Plc).to_vec();
        bytes.extend_from_slice(&[0xAA; 10]);
        assert_eq!(gate.push(&bytes), GateVerdict::Hello);
        assert_eq!(gate.received().len(), TELEGRAM_BYTES);
    }

    #[test]
    fn host_hello_garbage_silence_and_close_are_rejected() {
        let now = Instant::now();
        let mut gate = HelloGate::new(now, Duration::from_secs(1));
        assert_eq!(
            gate.push(&hello(Role::Host)),
            GateVerdict::Rejected(Rejection::NotPlcHello)
        );

        let mut gate = HelloGate::new(now, Duration::from_secs(1));
        let verdict = gate.push(&[0x55; TELEGRAM_BYTES]);
        assert!(matches!(
            verdict,
            GateVerdict::Rejected(Rejection::BadTelegram(_))
        ));
        assert_eq!(gate.wanted_bytes(), 0);

        let mut gate = HelloGate::new(now, Duration::from_secs(1));
        gate.push(&[1, 2, 3]);
        assert_eq!(
            gate.check_deadline(now + Duration::from_millis(999)),
            GateVerdict::Pending
        );
        assert_eq!(
            gate.check_deadline(now + Duration::from_secs(1)),
            GateVerdict::Rejected(Rejection::HelloTimeout)
        );

        let mut gate = HelloGate::new(now, Duration::from_secs(1));
        assert_eq!(gate.closed(), GateVerdict::Rejected(Rejection::Closed));
        assert_eq!(Rejection::Closed.cause(), "closed");
    }
}
