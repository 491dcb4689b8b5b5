//! Stream framing for the PLC link: a bounded receive buffer that cuts a TCP byte stream
//! into 40-byte telegrams and resynchronises on the sync word after garbage.
//!
//! Input arrives in any chunking; partial telegrams wait in the buffer. A candidate that
//! fails to decode is counted and the reader skips to the next occurrence of the sync
//! word, so one bad telegram costs only itself. Sequencing is not this module's job.

use super::stats::LinkStats;
use super::telegram::{MAGIC, TELEGRAM_BYTES, Telegram};

const MAGIC_BYTES: [u8; 2] = MAGIC.to_be_bytes();

/// Bounded buffer of received bytes not yet decoded.
#[derive(Debug)]
pub struct TelegramReader {
    buffer: Vec<u8>,
    start: usize,
    bytes_max: usize,
}

impl TelegramReader {
    /// An empty reader holding at most `bytes_max` bytes.
    pub fn new(bytes_max: usize) -> Self {
        TelegramReader {
            buffer: Vec::with_capacity(bytes_max),
            start: 0,
            bytes_max,
        }
    }

    /// Bytes that `push` would accept now.
    pub fn room(&self) -> usize {
        self.bytes_max.saturating_sub(self.buffered())
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// Forget everything buffered (the connection went away).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.start = 0;
    }

    /// Append as much of `bytes` as fits; returns how many were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        if self.start > 0 && self.buffer.len() + bytes.len() > self.bytes_max {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let take = bytes
            .len()
            .min(self.bytes_max.saturating_sub(self.buffer.len()));
        self.buffer
            .extend_from_slice(bytes.get(..take).unwrap_or(&[]));
        take
    }

    /// The next complete, valid telegram, skipping (and counting) garbage; `None` when
    /// only a partial telegram (or nothing) is left.
    pub fn next(&mut self, stats: &mut LinkStats) -> Option<Telegram> {
        loop {
            let available = self.buffer.get(self.start..).unwrap_or(&[]);
            if available.is_empty() {
                self.clear();
                return None;
            }
            if !starts_with_magic(available) {
                let skip = find_magic(available, 1);
                self.discard(skip, stats);
                continue;
            }
            if available.len() < TELEGRAM_BYTES {
                return None;
            }
            match Telegram::decode(available) {
                Ok(telegram) => {
                    self.start += TELEGRAM_BYTES;
                    return Some(telegram);
                }
                Err(error) => {
                    stats.telegrams_bad += 1;
                    stats.last_decode_error = Some(error);
                    let skip = find_magic(available, 1);
                    self.discard(skip, stats);
                }
            }
        }
    }

    fn discard(&mut self, count: usize, stats: &mut LinkStats) {
        stats.resyncs += 1;
        stats.bytes_skipped += count as u64;
        self.start = (self.start + count).min(self.buffer.len());
    }
}

/// Whether `bytes` begins with the sync word, or with its first byte if that is all.
fn starts_with_magic(bytes: &[u8]) -> bool {
    match bytes {
        [a, b, ..] => [*a, *b] == MAGIC_BYTES,
        [a] => *a == MAGIC_BYTES[0],
        [] => false,
    }
}

/// Offset of the first possible sync word at or after `from` (a lone first byte at the
/// end counts), or `bytes.len()` if none.
fn find_magic(bytes: &[u8], from: usize) -> usize {
    (from..bytes.len())
        .find(|&offset| starts_with_magic(bytes.get(offset..).unwrap_or(&[])))
        .unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(through_seq: u32) -> [u8; TELEGRAM_BYTES] {
        Telegram::Ack { through_seq }.encode()
    }

    #[test]
    fn byte_by_byte_and_garbage_between() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&ack(1));
        stream.extend_from_slice(b"\x00\x53garbage\x53");
        let mut broken = ack(2);
        broken[20] ^= 0x01;
        stream.extend_from_slice(&broken);
        stream.extend_from_slice(&ack(3));
        let mut reader = TelegramReader::new(128);
        let mut stats = LinkStats::default();
        let mut got = Vec::new();
        for byte in &stream {
            assert_eq!(reader.push(std::slice::from_ref(byte)), 1);
            while let Some(telegram) = reader.next(&mut stats) {
                got.push(telegram);
            }
        }
        assert_eq!(
            got,
            vec![
                Telegram::Ack { through_seq: 1 },
                Telegram::Ack { through_seq: 3 }
            ]
        );
        assert_eq!(stats.telegrams_bad, 1);
        assert_eq!(stats.bytes_skipped, 10 + 40);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn buffer_is_bounded() {
        let mut reader = TelegramReader::new(80);
        assert_eq!(reader.push(&[0x53; 100]), 80);
        assert_eq!(reader.room(), 0);
        let mut stats = LinkStats::default();
        assert_eq!(reader.next(&mut stats), None);
        assert!(reader.room() > 0);
    }
}
