//! What the exporter reads from and where it keeps its cursor: two small traits the
//! journal's reader and cursor implement (a few lines each), and [`MemoryLog`], an
//! in-memory stand-in for the journal used by tests and the export benchmark.
//!
//! Records are opaque here: the exporter never decodes them, it only concatenates whole
//! encoded records into one NATS message and names the first and last sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What one [`ExportSource::read_batch`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadBatch {
    /// Whole records appended; 0 when nothing new is there yet (poll again).
    pub records: usize,
    /// Sequence of the first appended record (meaningless when `records` is 0).
    pub first_seq: u64,
    /// Sequence of the last appended record (meaningless when `records` is 0).
    pub last_seq: u64,
}

/// A sequence of encoded records, numbered gap-free from 1, readable from any point.
pub trait ExportSource: Send {
    /// Why a read failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The next read starts at the first record with sequence `>= seq`.
    fn seek(&mut self, seq: u64) -> Result<(), Self::Error>;

    /// Appends whole records to `out`, at most `records_max` of them and at most
    /// `bytes_max` bytes (at least one record when one is there, even if it is larger).
    fn read_batch(
        &mut self,
        out: &mut Vec<u8>,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<ReadBatch, Self::Error>;

    /// The sequence of the newest record, 0 when there is none.
    fn last_seq(&self) -> u64;
}

/// Durable storage of the highest sequence the stream acknowledged (for the journal's
/// retention: a segment may go once the cursor has passed it).
pub trait CursorStore: Send {
    /// Why the cursor could not be read or written.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stored cursor, 0 when none was stored.
    fn load(&mut self) -> Result<u64, Self::Error>;

    /// Stores `acked_seq` durably.
    fn store(&mut self, acked_seq: u64) -> Result<(), Self::Error>;
}

/// An error that cannot happen (the in-memory types never fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

/// An append-only list of opaque records in memory, shared between a writer (the test)
/// and any number of [`MemorySource`] readers. Record `i` (from 0) has sequence `i + 1`.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    records: Arc<Mutex<Vec<bytes::Bytes>>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one record; returns its sequence.
    pub fn append(&self, record: &[u8]) -> u64 {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push(bytes::Bytes::copy_from_slice(record));
        records.len() as u64
    }

    /// The newest sequence, 0 when empty.
    pub fn last_seq(&self) -> u64 {
        self.records.lock().map(|r| r.len() as u64).unwrap_or(0)
    }

    /// A reader positioned at the first record.
    pub fn source(&self) -> MemorySource {
        MemorySource {
            log: self.clone(),
            next_seq: 1,
        }
    }
}

/// A reader of a [`MemoryLog`].
#[derive(Debug)]
pub struct MemorySource {
    log: MemoryLog,
    next_seq: u64,
}

impl ExportSource for MemorySource {
    type Error = Never;

    fn seek(&mut self, seq: u64) -> Result<(), Never> {
        self.next_seq = seq.max(1);
        Ok(())
    }

    fn read_batch(
        &mut self,
        out: &mut Vec<u8>,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<ReadBatch, Never> {
        let records = self.log.records.lock().unwrap_or_else(|e| e.into_inner());
        let first_seq = self.next_seq;
        let mut batch = ReadBatch {
            records: 0,
            first_seq,
            last_seq: first_seq.saturating_sub(1),
        };
        let mut bytes = 0;
        while batch.records < records_max {
            let Some(record) = usize::try_from(self.next_seq - 1)
                .ok()
                .and_then(|index| records.get(index))
            else {
                break;
            };
            if batch.records > 0 && bytes + record.len() > bytes_max {
                break;
            }
            out.extend_from_slice(record);
            bytes += record.len();
            batch.records += 1;
            batch.last_seq = self.next_seq;
            self.next_seq += 1;
        }
        Ok(batch)
    }

    fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }
}

/// A cursor kept in memory (shared, so a test can read what the exporter stored).
#[derive(Debug, Default, Clone)]
pub struct MemoryCursor {
    acked_seq: Arc<AtomicU64>,
}

impl MemoryCursor {
    /// The stored value.
    pub fn get(&self) -> u64 {
        self.acked_seq.load(Ordering::Acquire)
    }
}

impl CursorStore for MemoryCursor {
    type Error = Never;

    fn load(&mut self) -> Result<u64, Never> {
        Ok(self.get())
    }

    fn store(&mut self, acked_seq: u64) -> Result<(), Never> {
        self.acked_seq.store(acked_seq, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_records_within_limits_and_seeks() {
        let log = MemoryLog::new();
        for i in 0..10u8 {
            log.append(&[i; 4]);
        }
        let mut source = log.source();
        let mut out = Vec::new();
        let batch = source.read_batch(&mut out, 3, 1 << 20).unwrap();
        assert_eq!((batch.records, batch.first_seq, batch.last_seq), (3, 1, 3));
        out.clear();
        let batch = source.read_batch(&mut out, 100, 9).unwrap();
        assert_eq!((batch.records, batch.first_seq, batch.last_seq), (2, 4, 5));
        assert_eq!(out.len(), 8);
        source.seek(10).unwrap();
        out.clear();
        let batch = source.read_batch(&mut out, 100, 100).unwrap();
        assert_eq!((batch.records, batch.first_seq), (1, 10));
        let batch = source.read_batch(&mut out, 100, 100).unwrap();
        assert_eq!(batch.records, 0);
        // One record larger than the byte limit still goes out alone.
        source.seek(1).unwrap();
        let batch = source.read_batch(&mut out, 100, 1).unwrap();
        assert_eq!(batch.records, 1);
    }
}
