//! The receiving half of a numbered stream: in-order acceptance, de-duplication by
//! sequence number, and when to send the cumulative ACK.
//!
//! Used by the PLC side for SORTs and by the host for confirmations and chute status.
//! A telegram is accepted exactly when its number is the next expected one; older
//! numbers are duplicates (re-ACKed at once, never delivered again), newer ones are gaps
//! (dropped; the sender's go-back-N retransmission fills them). It does not decode and
//! does not read a clock.

use std::time::{Duration, Instant};

use super::config::AckPolicy;
use super::seq::seq_after;
use super::telegram::Hello;

/// What to do with an arriving numbered telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected number: deliver it.
    New,
    /// Already delivered: drop it and re-ACK.
    Duplicate,
    /// Ahead of the next expected number: drop it, the sender will resend in order.
    Gap,
}

/// In-order receive state for the other side's numbered telegrams.
#[derive(Debug)]
pub struct InboundSequence {
    /// The other side's session these numbers belong to (0 = never heard from it).
    peer_session: u64,
    next_expected: u32,
    policy: AckPolicy,
    unacked: u32,
    ack_at: Option<Instant>,
    ack_now: bool,
}

impl InboundSequence {
    /// Nothing received yet.
    pub fn new(policy: AckPolicy) -> Self {
        InboundSequence {
            peer_session: 0,
            next_expected: 0,
            policy,
            unacked: 0,
            ack_at: None,
            ack_now: false,
        }
    }

    /// The other side's session, 0 if none yet.
    pub fn peer_session(&self) -> u64 {
        self.peer_session
    }

    /// The last number received in order (cumulative ACK value).
    pub fn acked_through(&self) -> u32 {
        self.next_expected.wrapping_sub(1)
    }

    /// Adopt the other side's HELLO. A new session restarts numbering at its window;
    /// the same session keeps what we have unless its window already moved past it.
    /// Returns whether the session changed.
    pub fn resync(&mut self, hello: &Hello) -> bool {
        let changed = hello.session != self.peer_session;
        if changed {
            self.peer_session = hello.session;
            self.next_expected = hello.window_first_seq;
        } else if seq_after(hello.window_first_seq, self.next_expected) {
            self.next_expected = hello.window_first_seq;
        }
        self.clear_pending_ack();
        changed
    }

    /// Classify an arriving number and advance on `New`.
    pub fn receive(&mut self, now: Instant, seq: u32) -> Arrival {
        if seq == self.next_expected {
            self.next_expected = seq.wrapping_add(1);
            self.unacked = self.unacked.saturating_add(1);
            if self.unacked >= self.policy.every_telegrams || self.policy.delay_ms_max == 0 {
                self.ack_now = true;
            } else if self.ack_at.is_none() {
                self.ack_at =
                    Some(now + Duration::from_millis(u64::from(self.policy.delay_ms_max)));
            }
            Arrival::New
        } else if seq_after(seq, self.next_expected) {
            Arrival::Gap
        } else {
            self.ack_now = true;
            Arrival::Duplicate
        }
    }

    /// When the delayed ACK falls due, if one is pending.
    pub fn ack_at(&self) -> Option<Instant> {
        if self.ack_now { None } else { self.ack_at }
    }

    /// Make the delayed ACK due if its time came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ack_at.is_some_and(|at| at <= now) {
            self.ack_now = true;
        }
    }

    /// The cumulative ACK to send now, if one is due.
    pub fn take_ack(&mut self) -> Option<u32> {
        if !self.ack_now {
            return None;
        }
        self.clear_pending_ack();
        Some(self.acked_through())
    }

    /// Drop any pending ACK (the connection went away; the next HELLO carries it).
    pub fn clear_pending_ack(&mut self) {
        self.unacked = 0;
        self.ack_at = None;
        self.ack_now = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plc::telegram::Role;

    fn hello(session: u64, window_first_seq: u32) -> Hello {
        Hello {
            role: Role::Plc,
            session,
            ack_session: 0,
            acked_through_seq: 0,
            window_first_seq,
            next_seq: window_first_seq,
        }
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let now = Instant::now();
        let mut inbound = InboundSequence::new(AckPolicy::IMMEDIATE);
        assert!(inbound.resync(&hello(9, 100)));
        assert_eq!(inbound.receive(now, 101), Arrival::Gap);
        assert_eq!(inbound.take_ack(), None);
        assert_eq!(inbound.receive(now, 100), Arrival::New);
        assert_eq!(inbound.receive(now, 101), Arrival::New);
        assert_eq!(inbound.take_ack(), Some(101));
        assert_eq!(inbound.receive(now, 100), Arrival::Duplicate);
        assert_eq!(inbound.take_ack(), Some(101));
        // Same session again: keeps its place; an older window does not move it back.
        assert!(!inbound.resync(&hello(9, 50)));
        assert_eq!(inbound.acked_through(), 101);
        assert!(inbound.resync(&hello(10, 7)));
        assert_eq!(inbound.acked_through(), 6);
    }

    #[test]
    fn batching_policy_waits_for_count_or_delay() {
        let now = Instant::now();
        let policy = AckPolicy {
            every_telegrams: 3,
            delay_ms_max: 50,
        };
        let mut inbound = InboundSequence::new(policy);
        inbound.resync(&hello(1, 0));
        inbound.receive(now, 0);
        inbound.receive(now, 1);
        assert_eq!(inbound.take_ack(), None);
        assert_eq!(inbound.ack_at(), Some(now + Duration::from_millis(50)));
        inbound.receive(now, 2);
        assert_eq!(inbound.take_ack(), Some(2));
        inbound.receive(now, 3);
        inbound.handle_timeout(now + Duration::from_millis(49));
        assert_eq!(inbound.take_ack(), None);
        inbound.handle_timeout(now + Duration::from_millis(50));
        assert_eq!(inbound.take_ack(), Some(3));
    }
}
