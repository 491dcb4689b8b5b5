//! The exporter's decisions, sans-IO: which batches are in flight, where to resume after
//! a lost connection, and how old the oldest unexported event is. No sockets, no clock
//! (instants are passed in), so the cases are unit-tested here and the shell in
//! [`super::exporter`] only drives it.
//!
//! The rule it keeps: a batch is never published twice with different boundaries.
//! Batches that were in flight when a connection died are remembered by their bounds;
//! after the stream says what it holds, the ones it lacks are published again with the
//! same bounds (so the same `Nats-Msg-Id`), before anything new.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The first and last event sequence of one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// First event sequence in the message.
    pub first_seq: u64,
    /// Last event sequence in the message.
    pub last_seq: u64,
}

impl Bounds {
    /// Events in the message.
    pub fn records(self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

/// Where to start after a (re)connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The first event sequence to publish.
    pub next_seq: u64,
    /// Batches to publish again with these bounds first.
    pub replays: usize,
}

/// In-flight and to-be-replayed batches, bounded by the publish window.
#[derive(Debug, Default)]
pub struct Ledger {
    in_flight: VecDeque<Bounds>,
    replay: VecDeque<Bounds>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message with these bounds was handed to the connection.
    pub fn published(&mut self, bounds: Bounds) {
        debug_assert!(
            self.in_flight
                .back()
                .is_none_or(|last| last.last_seq + 1 == bounds.first_seq)
        );
        self.in_flight.push_back(bounds);
    }

    /// The oldest in-flight message was acknowledged (acks resolve in publish order).
    pub fn acked(&mut self) -> Option<Bounds> {
        self.in_flight.pop_front()
    }

    /// Messages published and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The connection is gone, and with it every buffer that could still send a message:
    /// what was in flight is unknown (stored or not) and is kept for replay.
    pub fn connection_lost(&mut self) {
        let mut replay: VecDeque<Bounds> = self.in_flight.drain(..).collect();
        replay.extend(self.replay.drain(..));
        replay.make_contiguous().sort_by_key(|b| b.first_seq);
        self.replay = replay;
    }

    /// Decides where to go on once the stream said what it holds for this subject:
    /// `stream_last` is the last event sequence of the newest message (None when the
    /// subject is empty), `cursor` the locally stored acknowledged sequence (used only
    /// when the subject is empty: a new, purged or aged-out stream).
    pub fn resume(&mut self, stream_last: Option<u64>, cursor: u64) -> Resume {
        debug_assert!(self.in_flight.is_empty(), "resume follows connection_lost");
        let base = stream_last.unwrap_or(cursor);
        while self.replay.front().is_some_and(|b| b.last_seq <= base) {
            self.replay.pop_front();
        }
        // Keep only a chain that starts right after what the stream holds.
        let mut expected = base + 1;
        let mut kept = 0;
        for bounds in &self.replay {
            if bounds.first_seq != expected {
                break;
            }
            expected = bounds.last_seq + 1;
            kept += 1;
        }
        self.replay.truncate(kept);
        Resume {
            next_seq: base + 1,
            replays: kept,
        }
    }

    /// The next batch to publish again, with its bounds.
    pub fn next_replay(&self) -> Option<Bounds> {
        self.replay.front().copied()
    }

    /// The batch from [`Ledger::next_replay`] was published (it is now in flight).
    pub fn replayed(&mut self) {
        self.replay.pop_front();
    }
}

/// Samples of "the source's newest sequence was S at time T", to tell how long the
/// oldest unacknowledged event has waited. Bounded: when full, the newest sample is
/// stretched (the age it reports can only be too high, never too low).
#[derive(Debug)]
pub struct LagClock {
    samples: VecDeque<(u64, Instant)>,
    capacity: usize,
}

impl LagClock {
    /// A clock keeping at most `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        LagClock {
            samples: VecDeque::with_capacity(capacity.max(2)),
            capacity: capacity.max(2),
        }
    }

    /// The source's newest sequence is `last_seq` at `now`.
    pub fn observe(&mut self, last_seq: u64, now: Instant) {
        let full = self.samples.len() == self.capacity;
        match self.samples.back_mut() {
            Some((seq, _)) if *seq >= last_seq => {}
            Some((seq, _)) if full => *seq = last_seq,
            _ => self.samples.push_back((last_seq, now)),
        }
    }

    /// Everything up to `acked_seq` is in the stream.
    pub fn acked(&mut self, acked_seq: u64) {
        while self
            .samples
            .front()
            .is_some_and(|(seq, _)| *seq <= acked_seq)
        {
            self.samples.pop_front();
        }
    }

    /// How long the oldest unacknowledged event has been in the source (zero when
    /// everything is acknowledged).
    pub fn lag(&self, now: Instant) -> Duration {
        self.samples
            .front()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first_seq: u64, last_seq: u64) -> Bounds {
        Bounds {
            first_seq,
            last_seq,
        }
    }

    fn ledger_with_in_flight(batches: &[Bounds]) -> Ledger {
        let mut ledger = Ledger::new();
        for bounds in batches {
            ledger.published(*bounds);
        }
        ledger
    }

    /// In flight at the loss, the stream's last, the cursor; then the next sequence and
    /// the replays in order.
    type ResumeCase<'a> = (&'a [Bounds], Option<u64>, u64, u64, &'a [Bounds]);

    #[test]
    fn resume_replays_the_in_flight_batches_the_stream_lacks_with_the_same_bounds() {
        let cases: &[ResumeCase] = &[
            // Nothing arrived: all three again, same bounds.
            (
                &[b(1, 10), b(11, 20), b(21, 30)],
                None,
                0,
                1,
                &[b(1, 10), b(11, 20), b(21, 30)],
            ),
            // A prefix arrived (TCP keeps order on one connection).
            (
                &[b(1, 10), b(11, 20), b(21, 30)],
                Some(20),
                0,
                21,
                &[b(21, 30)],
            ),
            // Everything arrived, the acks did not.
            (&[b(1, 10), b(11, 20)], Some(20), 0, 21, &[]),
            // The stream ends inside a batch (another writer, or a different run's
            // boundaries): the bounds are not ours, replay nothing.
            (&[b(11, 20), b(21, 30)], Some(15), 0, 16, &[]),
            // The stream lost its tail (acked before fsync, then power loss): the
            // stream, not the cursor, decides.
            (&[], Some(5), 30, 6, &[]),
            // Empty subject: the local cursor decides.
            (&[b(31, 40)], None, 30, 31, &[b(31, 40)]),
        ];
        for (in_flight, stream_last, cursor, next, replays) in cases {
            let mut ledger = ledger_with_in_flight(in_flight);
            ledger.connection_lost();
            let resume = ledger.resume(*stream_last, *cursor);
            assert_eq!(resume.next_seq, *next, "{in_flight:?} {stream_last:?}");
            let mut got = Vec::new();
            while let Some(bounds) = ledger.next_replay() {
                got.push(bounds);
                ledger.replayed();
            }
            assert_eq!(got, *replays, "{in_flight:?} {stream_last:?}");
            assert_eq!(resume.replays, replays.len());
        }
    }

    #[test]
    fn a_loss_during_a_replay_keeps_the_rest_of_the_replay() {
        let mut ledger = ledger_with_in_flight(&[b(1, 10), b(11, 20), b(21, 30)]);
        ledger.connection_lost();
        assert_eq!(ledger.resume(None, 0).replays, 3);
        ledger.published(ledger.next_replay().unwrap());
        ledger.replayed();
        ledger.connection_lost();
        let resume = ledger.resume(None, 0);
        assert_eq!(resume.replays, 3);
        assert_eq!(ledger.next_replay(), Some(b(1, 10)));
    }

    #[test]
    fn acks_come_off_the_front() {
        let mut ledger = ledger_with_in_flight(&[b(1, 10), b(11, 20)]);
        assert_eq!(ledger.acked(), Some(b(1, 10)));
        assert_eq!(ledger.in_flight(), 1);
        assert_eq!(b(11, 20).records(), 10);
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unacked_event_and_never_too_low() {
        let t0 = Instant::now();
        let mut clock = LagClock::new(2);
        assert_eq!(clock.lag(t0), Duration::ZERO);
        clock.observe(10, t0);
        clock.observe(20, t0 + Duration::from_secs(1));
        clock.observe(30, t0 + Duration::from_secs(2)); // full: stretches the newest
        let now = t0 + Duration::from_secs(3);
        assert_eq!(clock.lag(now), Duration::from_secs(3));
        clock.acked(10);
        assert_eq!(clock.lag(now), Duration::from_secs(2));
        clock.acked(25); // events 26..=30 appeared by t0+2 at the latest in the sample
        assert_eq!(clock.lag(now), Duration::from_secs(2));
        clock.acked(30);
        assert_eq!(clock.lag(now), Duration::ZERO);
    }
}
