//! The journal as the exporter's source and cursor store: [`JournalSource`] wraps a
//! [`JournalReader`] (the newest sequence comes from the writer's counters, no file
//! read), and [`ExportCursor`] stores the acknowledged position. Nothing else: the
//! exporter and the journal keep their own rules.
//!
//! It hands out only events that are durable (fsynced, the writer's `durable_seq`):
//! the stream must never hold an event a power loss can take from the journal, or the
//! restarted writer would give its sequence to a new event and the exporter, resuming
//! after the stream's last id, would skip the new one (found by the deterministic
//! simulator). The price is up to one fsync interval of export latency.

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
        self.reader.set_seq_max(self.stats.durable_seq());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::journal::{JournalWriter, WriterConfig};
    use crate::events::record::{Event, OutcomeEvent};
    use crate::plc::Outcome;

    fn outcome(parcel_id: u64) -> Event<'static> {
        Event::Outcome(OutcomeEvent {
            parcel_id,
            scanner_id: 1,
            chute: 2,
            outcome: Outcome::Diverted,
            plc_seq: 3,
            decision_seq: 0,
            confirmed_us: 4,
        })
    }

    #[test]
    fn only_fsynced_events_are_handed_to_the_exporter() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WriterConfig::new(dir.path(), "hub", "s1");
        config.sync_thread = false;
        let mut writer = JournalWriter::open(config).unwrap();
        let mut source =
            JournalSource::new(JournalReader::open(dir.path()).unwrap(), writer.stats());
        for parcel in 1..=3 {
            writer.append(&outcome(parcel));
        }
        writer.write_batch();
        let mut out = Vec::new();
        // Written (a kill -9 keeps them), not fsynced (a power loss may not).
        assert_eq!(
            source.read_batch(&mut out, 100, 1 << 20).unwrap().records,
            0
        );
        assert_eq!(source.last_seq(), 3);
        assert_eq!(writer.sync().unwrap(), 3);
        let batch = source.read_batch(&mut out, 100, 1 << 20).unwrap();
        assert_eq!((batch.records, batch.first_seq, batch.last_seq), (3, 1, 3));
        writer.append(&outcome(4));
        writer.write_batch();
        assert_eq!(
            source.read_batch(&mut out, 100, 1 << 20).unwrap().records,
            0
        );
        writer.sync().unwrap();
        assert_eq!(
            source.read_batch(&mut out, 100, 1 << 20).unwrap().first_seq,
            4
        );
    }
}
