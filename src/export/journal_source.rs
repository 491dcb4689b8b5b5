//! The journal as the exporter's source and cursor store: [`JournalSource`] wraps a
//! [`JournalReader`] (the newest sequence comes from the writer's counters, no file
//! read), and [`ExportCursor`] stores the acknowledged position. Nothing else: the
//! exporter and the journal keep their own rules.

use std::sync::Arc;

use crate::events::journal::{ExportCursor, JournalError, JournalReader, JournalStats};

use super::source::{CursorStore, ExportSource, ReadBatch};

/// A journal read for export.
#[derive(Debug)]
pub struct JournalSource {
    reader: JournalReader,
    stats: Arc<JournalStats>,
}

impl JournalSource {
    /// Reads through `reader`; `stats` are the running writer's (its newest sequence).
    pub fn new(reader: JournalReader, stats: Arc<JournalStats>) -> JournalSource {
        JournalSource { reader, stats }
    }
}

impl ExportSource for JournalSource {
    type Error = JournalError;

    fn seek(&mut self, seq: u64) -> Result<(), JournalError> {
        self.reader.seek(seq)
    }

    fn read_batch(
        &mut self,
        out: &mut Vec<u8>,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<ReadBatch, JournalError> {
        let batch = self.reader.read_batch(out, records_max, bytes_max)?;
        Ok(ReadBatch {
            records: batch.records,
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
        })
    }

    fn last_seq(&self) -> u64 {
        self.stats.snapshot().written_seq
    }
}

impl CursorStore for ExportCursor {
    type Error = JournalError;

    fn load(&mut self) -> Result<u64, JournalError> {
        ExportCursor::load(self)
    }

    fn store(&mut self, acked_seq: u64) -> Result<(), JournalError> {
        ExportCursor::store(self, acked_seq)
    }
}
