//! A scanner connection's receive buffer and the clocks that guard it: how long a started
//! frame may take to complete (slowloris), and how long the connection may stay silent.
//!
//! Pure: the scanner session (and through it the event loop) reads into [`InputBuffer::spare`], commits what it read, and asks
//! for the unread bytes; time comes in as an argument.

use std::time::{Duration, Instant};

/// A fixed-size receive buffer, allocated once per connection.
#[derive(Debug)]
pub struct InputBuffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
    /// When the oldest unread byte arrived, while unread bytes exist.
    partial_since: Option<Instant>,
    last_byte_at: Instant,
}

/// Why a connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A frame started and did not complete within the frame deadline.
    FrameDeadline,
    /// Nothing arrived within the idle timeout.
    Idle,
}

impl InputBuffer {
    /// A buffer of `capacity_bytes`, created at `now`.
    pub fn new(capacity_bytes: usize, now: Instant) -> InputBuffer {
        InputBuffer {
            bytes: vec![0; capacity_bytes].into_boxed_slice(),
            start: 0,
            end: 0,
            partial_since: None,
            last_byte_at: now,
        }
    }

    /// Room to read into; moves unread bytes to the front first when that makes room.
    /// Empty only when the buffer is full of unread bytes.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.bytes.len() && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.bytes.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that `count` bytes were read into [`InputBuffer::spare`] at `now`.
    pub fn commit(&mut self, count: usize, now: Instant) {
        let count = count.min(self.bytes.len() - self.end);
        if count == 0 {
            return;
        }
        if self.start == self.end {
            self.partial_since = Some(now);
        }
        self.end += count;
        self.last_byte_at = now;
    }

    /// The unread bytes.
    pub fn unread(&self) -> &[u8] {
        self.bytes.get(self.start..self.end).unwrap_or_default()
    }

    /// Marks `count` unread bytes as consumed at `now`. A frame that completed resets the
    /// frame clock: what is left starts a new frame now.
    pub fn consume(&mut self, count: usize, now: Instant) {
        self.start = (self.start + count).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.partial_since = None;
        } else if count > 0 {
            self.partial_since = Some(now);
        }
    }

    /// Whether the buffer is full of unread bytes (a frame larger than the buffer).
    pub fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.bytes.len()
    }

    /// The earliest moment one of the clocks can run out (see [`InputBuffer::expiry`]).
    pub fn next_expiry(&self, frame_deadline: Duration, idle_timeout: Duration) -> Instant {
        let idle_at = self.last_byte_at + idle_timeout;
        self.partial_since
            .map_or(idle_at, |since| idle_at.min(since + frame_deadline))
    }

    /// Whether the connection has outlived one of its clocks at `now`.
    pub fn expiry(
        &self,
        now: Instant,
        frame_deadline: Duration,
        idle_timeout: Duration,
    ) -> Option<Expiry> {
        if let Some(since) = self.partial_since {
            if now.saturating_duration_since(since) > frame_deadline {
                return Some(Expiry::FrameDeadline);
            }
        }
        if now.saturating_duration_since(self.last_byte_at) > idle_timeout {
            return Some(Expiry::Idle);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(buffer: &mut InputBuffer, data: &[u8], now: Instant) {
        let spare = buffer.spare();
        spare[..data.len()].copy_from_slice(data);
        buffer.commit(data.len(), now);
    }

    #[test]
    fn compacts_when_full_and_keeps_unread_order() {
        let now = Instant::now();
        let mut buffer = InputBuffer::new(8, now);
        feed(&mut buffer, b"abcdef", now);
        buffer.consume(4, now);
        feed(&mut buffer, b"gh", now);
        assert_eq!(buffer.unread(), b"efgh");
        assert_eq!(buffer.spare().len(), 4, "compacted to the front");
        feed(&mut buffer, b"ijkl", now);
        assert_eq!(buffer.unread(), b"efghijkl");
        assert!(buffer.is_full());
        assert!(buffer.spare().is_empty());
    }

    #[test]
    fn frame_clock_runs_only_while_bytes_are_unread() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut buffer = InputBuffer::new(64, start);
        let (deadline, idle) = (ms(100), ms(1_000));
        feed(&mut buffer, b"half", start);
        assert_eq!(buffer.expiry(start + ms(100), deadline, idle), None);
        assert_eq!(
            buffer.expiry(start + ms(101), deadline, idle),
            Some(Expiry::FrameDeadline)
        );
        // A slow trickle does not restart the frame clock.
        feed(&mut buffer, b"more", start + ms(90));
        assert_eq!(
            buffer.expiry(start + ms(101), deadline, idle),
            Some(Expiry::FrameDeadline)
        );
        // Completing the frame stops it.
        buffer.consume(8, start + ms(95));
        assert_eq!(buffer.expiry(start + ms(500), deadline, idle), None);
        assert_eq!(
            buffer.expiry(start + ms(1_091), deadline, idle),
            Some(Expiry::Idle)
        );
    }

    #[test]
    fn partial_consumption_restarts_the_frame_clock_for_the_rest() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut buffer = InputBuffer::new(64, start);
        feed(&mut buffer, b"frame1frame2-part", start);
        buffer.consume(12, start + ms(50));
        assert_eq!(buffer.unread(), b"-part");
        assert_eq!(buffer.expiry(start + ms(140), ms(100), ms(1_000)), None);
        assert_eq!(
            buffer.expiry(start + ms(151), ms(100), ms(1_000)),
            Some(Expiry::FrameDeadline)
        );
    }
}
