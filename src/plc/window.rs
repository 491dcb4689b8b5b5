//! The sending half of a numbered stream: a bounded window of telegrams awaiting a
//! cumulative ACK, with go-back-N retransmission on timeout.
//!
//! Used by the host for SORTs and by the PLC side for confirmations and chute status.
//! It numbers items, remembers which were sent on the current connection and which ever
//! were (to count retransmissions), and applies ACKs. It does not encode, and it does
//! not read a clock: callers pass `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error::WindowFull;
use super::seq::seq_distance;

/// What an incoming cumulative ACK did to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEffect {
    /// It acknowledged `count` more telegrams.
    Advanced {
        /// Telegrams newly acknowledged.
        count: u32,
    },
    /// It acknowledged nothing new (a repeat, or older than the window).
    Stale,
    /// It acknowledges a sequence number that was never sent.
    Invalid,
}

/// Bounded queue of numbered items not yet acknowledged.
#[derive(Debug)]
pub struct OutboundWindow<T> {
    items: VecDeque<T>,
    window_max: usize,
    /// Sequence number of `items[0]` (or of the next item when empty).
    first_seq: u32,
    /// Items at the front already sent on the current connection.
    sent_on_connection: usize,
    /// Items at the front ever sent (on any connection).
    ever_sent: usize,
    ack_timeout: Duration,
    retransmit_at: Option<Instant>,
}

impl<T: Copy> OutboundWindow<T> {
    /// An empty window whose first item gets `first_seq`.
    pub fn new(window_max: usize, first_seq: u32, ack_timeout: Duration) -> Self {
        OutboundWindow {
            items: VecDeque::with_capacity(window_max),
            window_max,
            first_seq,
            sent_on_connection: 0,
            ever_sent: 0,
            ack_timeout,
            retransmit_at: None,
        }
    }

    /// Number and queue an item.
    pub fn push(&mut self, item: T) -> Result<u32, WindowFull> {
        if self.items.len() >= self.window_max {
            return Err(WindowFull {
                window_max: self.window_max,
            });
        }
        let seq = self.next_seq();
        self.items.push_back(item);
        Ok(seq)
    }

    /// Room left, in telegrams.
    pub fn free(&self) -> usize {
        self.window_max.saturating_sub(self.items.len())
    }

    /// Items held (sent or not) and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Sequence number of the oldest unacknowledged item (the next one if none).
    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    /// Sequence number the next pushed item gets.
    pub fn next_seq(&self) -> u32 {
        self.first_seq.wrapping_add(self.items.len() as u32)
    }

    /// Apply a cumulative ACK "received everything up to `through_seq`" at `now`. While
    /// telegrams sent on this connection stay unacknowledged, the retransmission timer
    /// restarts at `now`: it fires when no ACK has advanced for `ack_timeout`.
    pub fn ack(&mut self, now: Instant, through_seq: u32) -> AckEffect {
        let before_first = self.first_seq.wrapping_sub(1);
        // The window is far smaller than half the sequence space, so the sign decides:
        // at or behind the window's start is stale, beyond anything sent is invalid.
        let distance = seq_distance(through_seq, before_first);
        if distance <= 0 {
            return AckEffect::Stale;
        }
        if distance > self.ever_sent as i64 {
            return AckEffect::Invalid;
        }
        let count = distance as usize;
        self.items.drain(..count.min(self.items.len()));
        self.first_seq = through_seq.wrapping_add(1);
        self.sent_on_connection = self.sent_on_connection.saturating_sub(count);
        self.ever_sent = self.ever_sent.saturating_sub(count);
        self.retransmit_at = if self.sent_on_connection > 0 {
            Some(now + self.ack_timeout)
        } else {
            None
        };
        AckEffect::Advanced {
            count: count as u32,
        }
    }

    /// Forget what was sent on this connection: everything held goes out again.
    pub fn rewind(&mut self) {
        self.sent_on_connection = 0;
        self.retransmit_at = None;
    }

    /// When the retransmission timer fires, if it runs.
    pub fn retransmit_at(&self) -> Option<Instant> {
        self.retransmit_at
    }

    /// Fire the retransmission timer if due; returns whether it fired.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.retransmit_at {
            Some(at) if at <= now => {
                self.rewind();
                true
            }
            _ => false,
        }
    }

    /// Hand every item not yet sent on this connection to `send(seq, item,
    /// is_retransmission)`, in order. Returns how many were sent. If nothing sent was
    /// waiting for an ACK, the retransmission timer starts at `now`, which must be the
    /// time of sending (a stale `now` makes the timer fire at once).
    pub fn transmit(&mut self, now: Instant, mut send: impl FnMut(u32, T, bool)) -> usize {
        let start = self.sent_on_connection;
        for (index, item) in self.items.iter().enumerate().skip(start) {
            let seq = self.first_seq.wrapping_add(index as u32);
            send(seq, *item, index < self.ever_sent);
        }
        let sent = self.items.len() - start;
        self.sent_on_connection = self.items.len();
        self.ever_sent = self.ever_sent.max(self.items.len());
        if sent > 0 && self.retransmit_at.is_none() {
            self.retransmit_at = Some(now + self.ack_timeout);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(window: &mut OutboundWindow<u8>, now: Instant) -> Vec<(u32, u8, bool)> {
        let mut out = Vec::new();
        window.transmit(now, |seq, item, again| out.push((seq, item, again)));
        out
    }

    #[test]
    fn acks_free_room_and_classify() {
        let now = Instant::now();
        let mut window = OutboundWindow::new(3, u32::MAX, Duration::from_millis(10));
        assert_eq!(window.push(1), Ok(u32::MAX));
        assert_eq!(window.push(2), Ok(0));
        assert_eq!(collect(&mut window, now).len(), 2);
        assert_eq!(window.push(3), Ok(1));
        assert_eq!(window.push(4), Err(WindowFull { window_max: 3 }));
        // Seq 1 is queued but not sent: it cannot be acknowledged yet.
        assert_eq!(window.ack(now, 1), AckEffect::Invalid);
        assert_eq!(window.ack(now, 5), AckEffect::Invalid);
        assert_eq!(window.ack(now, u32::MAX - 1), AckEffect::Stale);
        assert_eq!(window.ack(now, 0), AckEffect::Advanced { count: 2 });
        assert_eq!(window.ack(now, 0), AckEffect::Stale);
        assert_eq!(window.free(), 2);
        assert_eq!(window.first_seq(), 1);
        assert_eq!(window.retransmit_at(), None);
        assert_eq!(collect(&mut window, now), vec![(1, 3, false)]);
        assert_eq!(window.ack(now, 1), AckEffect::Advanced { count: 1 });
        assert_eq!(window.len(), 0);
        assert_eq!(window.retransmit_at(), None);
    }

    #[test]
    fn timeout_resends_everything_unacked_marked_as_retransmission() {
        let now = Instant::now();
        let mut window = OutboundWindow::new(8, 10, Duration::from_millis(10));
        for item in 0..3 {
            window.push(item).ok();
        }
        assert_eq!(
            collect(&mut window, now),
            vec![(10, 0, false), (11, 1, false), (12, 2, false)]
        );
        assert!(!window.handle_timeout(now + Duration::from_millis(9)));
        assert!(window.handle_timeout(now + Duration::from_millis(10)));
        window.push(3).ok();
        assert_eq!(
            collect(&mut window, now),
            vec![(10, 0, true), (11, 1, true), (12, 2, true), (13, 3, false)]
        );
    }

    #[test]
    fn the_timer_runs_from_the_first_send_and_restarts_on_each_advancing_ack() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut window = OutboundWindow::new(8, 1, ms(200));
        // Nothing sent: no timer, even after a transmit call.
        assert_eq!(window.transmit(start, |_, _, _| {}), 0);
        assert_eq!(window.retransmit_at(), None);
        window.push(0).ok();
        // The timer starts when the item is sent, not before.
        assert_eq!(window.retransmit_at(), None);
        assert_eq!(window.transmit(start + ms(500), |_, _, _| {}), 1);
        assert_eq!(window.retransmit_at(), Some(start + ms(700)));
        // More sent while the first waits: the timer keeps running from the first send.
        window.push(1).ok();
        window.push(2).ok();
        assert_eq!(window.len(), 3);
        assert_eq!(window.transmit(start + ms(550), |_, _, _| {}), 2);
        assert_eq!(window.retransmit_at(), Some(start + ms(700)));
        // A transmit with nothing new leaves it alone too.
        assert_eq!(window.transmit(start + ms(560), |_, _, _| {}), 0);
        assert_eq!(window.retransmit_at(), Some(start + ms(700)));
        // An ACK that advances restarts it from the ACK while items wait...
        assert_eq!(
            window.ack(start + ms(600), 1),
            AckEffect::Advanced { count: 1 }
        );
        assert_eq!(window.retransmit_at(), Some(start + ms(800)));
        // ...a repeated one does not...
        assert_eq!(window.ack(start + ms(650), 1), AckEffect::Stale);
        assert_eq!(window.retransmit_at(), Some(start + ms(800)));
        assert!(!window.handle_timeout(start + ms(799)));
        // ...and once all is acknowledged, it stops.
        assert_eq!(
            window.ack(start + ms(700), 3),
            AckEffect::Advanced { count: 2 }
        );
        assert_eq!(window.retransmit_at(), None);
        assert!(!window.handle_timeout(start + ms(10_000)));
    }

    #[test]
    fn acks_at_the_edges_of_what_was_sent() {
        let now = Instant::now();
        let mut window = OutboundWindow::new(8, 10, Duration::from_millis(10));
        for item in 0..4 {
            window.push(item).ok();
        }
        window.transmit(now, |_, _, _| {});
        // The last telegram sent can be acknowledged; one more cannot.
        assert_eq!(window.ack(now, 14), AckEffect::Invalid);
        assert_eq!(window.ack(now, 9), AckEffect::Stale);
        assert_eq!(window.ack(now, 13), AckEffect::Advanced { count: 4 });
        assert_eq!(window.ack(now, 13), AckEffect::Stale);
        assert_eq!(window.first_seq(), 14);
        // After a rewind nothing was sent on this connection, but what was sent before
        // still counts as sent: a resync ACK may cover it.
        window.push(4).ok();
        window.push(5).ok();
        window.transmit(now, |_, _, _| {});
        window.rewind();
        assert_eq!(window.retransmit_at(), None);
        assert_eq!(window.ack(now, 14), AckEffect::Advanced { count: 1 });
        assert_eq!(window.retransmit_at(), None);
        let mut again = Vec::new();
        window.transmit(now, |seq, item, resent| again.push((seq, item, resent)));
        assert_eq!(again, vec![(15, 5, true)]);
    }
}
