//! The journal reader: what the exporter follows and the tools read. It hands out whole
//! encoded records in sequence order, from any sequence on, and keeps up with a journal
//! that is being written (follow mode: an empty batch means "nothing new yet").
//!
//! Damage never stops it: a torn or corrupt record ends its segment (everything intact
//! before it was delivered) and reading goes on in the next segment; a segment whose
//! header is unreadable is skipped. Each skip is counted in [`ReaderDamage`]. The reader
//! never writes; cutting torn tails is the writer's job at open.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::super::record::{RECORD_BYTES_MAX, RecordDecoded, decode};
use super::super::segment::{SEGMENT_HEADER_BYTES_MAX, decode_header};
use super::{JournalError, SegmentFile, list_segments};

/// Bytes read from a segment per read call (at least one largest record).
const READ_CHUNK_BYTES: usize = 256 * 1024;
const _: () = assert!(READ_CHUNK_BYTES >= 2 * RECORD_BYTES_MAX);

/// What one [`JournalReader::read_batch`] appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// Records appended (0: nothing new).
    pub records: usize,
    /// Sequence of the first one (0 when none).
    pub first_seq: u64,
    /// Sequence of the last one (0 when none).
    pub last_seq: u64,
}

/// Damage the reader stepped over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderDamage {
    /// Segments left early at a torn or corrupt record (a newer segment followed).
    pub segments_cut_short: u64,
    /// Segments skipped because their header is unreadable.
    pub segments_unreadable: u64,
    /// Sequence numbers missing between two records delivered one after the other.
    pub seqs_missing: u64,
}

/// The segment being read.
#[derive(Debug)]
struct Current {
    path: PathBuf,
    first_seq: u64,
    file: File,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    used: usize,
    /// The sequence the next record in this segment must have.
    next_seq: u64,
    /// The segment stopped at damage (or a sequence break): nothing more comes from it.
    damaged: bool,
    hub_id: String,
    sorter_id: String,
}

/// Reads a journal directory. See the module docs.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    current: Option<Current>,
    /// The next sequence the caller wants (records below it are skipped).
    want_seq: u64,
    /// The last sequence delivered (0: none), to count gaps.
    delivered_seq: u64,
    damage: ReaderDamage,
    /// Cache for [`JournalReader::last_seq`]: segment first seq, bytes scanned, next seq.
    tail: Option<(u64, u64, u64)>,
    /// Records above this sequence are not handed out (yet).
    seq_max: u64,
}

impl JournalReader {
    /// Opens the journal in `dir` (which may be empty or not exist yet), positioned at
    /// its first record.
    pub fn open(dir: &Path) -> Result<JournalReader, JournalError> {
        Ok(JournalReader {
            dir: dir.to_path_buf(),
            current: None,
            want_seq: 1,
            delivered_seq: 0,
            damage: ReaderDamage::default(),
            tail: None,
            seq_max: u64::MAX,
        })
    }

    /// Hands out no record above `seq_max` until it is raised (the exporter reads only
    /// what is durable; the default is no limit).
    pub fn set_seq_max(&mut self, seq_max: u64) {
        self.seq_max = seq_max;
    }

    /// Positions at the first record with sequence `>= seq` (or the first record there
    /// is, if the journal starts later).
    pub fn seek(&mut self, seq: u64) -> Result<(), JournalError> {
        self.current = None;
        self.want_seq = seq.max(1);
        self.delivered_seq = 0;
        Ok(())
    }

    /// Damage stepped over so far.
    pub fn damage(&self) -> ReaderDamage {
        self.damage
    }

    /// Hub and sorter ids of the segment being read (`None` before the first read).
    pub fn ids(&self) -> Option<(&str, &str)> {
        self.current
            .as_ref()
            .map(|c| (c.hub_id.as_str(), c.sorter_id.as_str()))
    }

    /// Appends whole encoded records to `out`, in sequence order from the position, at
    /// most `records_max` of them and at most `bytes_max` bytes (but always at least one
    /// record when one is there, however long). `records: 0` means nothing new yet.
    pub fn read_batch(
        &mut self,
        out: &mut Vec<u8>,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<ReadBatch, JournalError> {
        let mut batch = ReadBatch::default();
        let start_len = out.len();
        while batch.records < records_max {
            if self.current.is_none() && !self.open_next()? {
                break;
            }
            let Some(current) = self.current.as_mut() else {
                break;
            };
            let rest = current.buf.get(current.used..).unwrap_or_default();
            match decode(rest) {
                RecordDecoded::Complete { record, consumed } => {
                    if record.seq != current.next_seq {
                        // A sequence break is damage: this segment ends here.
                        current.damaged = true;
                        if !self.advance_if_newer()? {
                            break;
                        }
                        continue;
                    }
                    if record.seq >= self.want_seq {
                        if record.seq > self.seq_max {
                            break;
                        }
                        let taken = out.len() - start_len;
                        if batch.records > 0 && taken + consumed > bytes_max {
                            break;
                        }
                        out.extend_from_slice(rest.get(..consumed).unwrap_or_default());
                        if batch.records == 0 {
                            batch.first_seq = record.seq;
                        }
                        batch.records += 1;
                        batch.last_seq = record.seq;
                        if self.delivered_seq > 0 {
                            self.damage.seqs_missing +=
                                record.seq.saturating_sub(self.delivered_seq + 1);
                        }
                        self.delivered_seq = record.seq;
                        self.want_seq = record.seq + 1;
                    }
                    current.used += consumed;
                    current.next_seq += 1;
                }
                RecordDecoded::NeedMore => {
                    if current.damaged || !fill(current)? {
                        // At the end of what this segment holds now.
                        if !self.advance_if_newer()? {
                            break;
                        }
                    }
                }
                RecordDecoded::Corrupt(_) => {
                    current.damaged = true;
                    if !self.advance_if_newer()? {
                        break;
                    }
                }
            }
        }
        Ok(batch)
    }

    /// The sequence of the last complete record in the journal (0: empty).
    pub fn last_seq(&mut self) -> Result<u64, JournalError> {
        let segments = list_segments(&self.dir)?;
        for segment in segments.iter().rev() {
            let (mut offset, mut next_seq) = match self.tail {
                Some((first, offset, next)) if first == segment.first_seq => (offset, next),
                _ => {
                    let Ok(file) = File::open(&segment.path) else {
                        continue;
                    };
                    let mut head = vec![0u8; SEGMENT_HEADER_BYTES_MAX];
                    let got = read_at(&file, &mut head, 0, &segment.path)?;
                    let Ok((header, header_bytes)) =
                        decode_header(head.get(..got).unwrap_or_default())
                    else {
                        continue;
                    };
                    (header_bytes as u64, header.first_seq)
                }
            };
            let Ok(file) = File::open(&segment.path) else {
                continue;
            };
            let mut buf = vec![0u8; READ_CHUNK_BYTES];
            let mut filled = 0usize;
            loop {
                let got = read_at(
                    &file,
                    buf.get_mut(filled..).unwrap_or_default(),
                    offset + filled as u64,
                    &segment.path,
                )?;
                filled += got;
                let mut used = 0usize;
                while let RecordDecoded::Complete { record, consumed } =
                    decode(buf.get(used..filled).unwrap_or_default())
                {
                    if record.seq != next_seq {
                        break;
                    }
                    used += consumed;
                    next_seq += 1;
                }
                offset += used as u64;
                buf.copy_within(used..filled, 0);
                filled -= used;
                if got == 0 || used == 0 {
                    break;
                }
            }
            self.tail = Some((segment.first_seq, offset, next_seq));
            if next_seq > segment.first_seq {
                return Ok(next_seq - 1);
            }
        }
        Ok(0)
    }

    /// Opens the segment holding `want_seq` (or the first after it). False if none.
    fn open_next(&mut self) -> Result<bool, JournalError> {
        let segments = list_segments(&self.dir)?;
        // The last segment starting at or before the wanted sequence, else the first
        // starting after it.
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= self.want_seq)
            .unwrap_or(0);
        for segment in segments.get(start..).unwrap_or_default() {
            if self.open_segment(segment)? {
                return Ok(true);
            }
            // Unreadable header: skip it, unless it may still be being created (the
            // newest segment), in which case try again on the next call.
            if Some(segment) == segments.last() {
                return Ok(false);
            }
            self.damage.segments_unreadable += 1;
            self.want_seq = self.want_seq.max(segment.first_seq);
        }
        Ok(false)
    }

    /// Opens `segment` and reads its header; false if the header is unreadable.
    fn open_segment(&mut self, segment: &SegmentFile) -> Result<bool, JournalError> {
        let file = match File::open(&segment.path) {
            Ok(file) => file,
            // Deleted by retention since the listing.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(JournalError::io("open segment", &segment.path, error)),
        };
        let mut current = Current {
            path: segment.path.clone(),
            first_seq: segment.first_seq,
            file,
            buf_offset: 0,
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
            used: 0,
            next_seq: segment.first_seq,
            damaged: false,
            hub_id: String::new(),
            sorter_id: String::new(),
        };
        fill(&mut current)?;
        let header_bytes = match decode_header(&current.buf) {
            Ok((header, bytes)) if header.first_seq == segment.first_seq => {
                current.hub_id = header.hub_id.to_string();
                current.sorter_id = header.sorter_id.to_string();
                bytes
            }
            _ => return Ok(false),
        };
        current.used = header_bytes;
        self.current = Some(current);
        Ok(true)
    }

    /// At the end of what the current segment holds: if a newer segment exists, the
    /// current one is finished, so read what is left of it once more, then move on.
    /// False when there is nothing more to read now (follow mode).
    fn advance_if_newer(&mut self) -> Result<bool, JournalError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(false);
        };
        let segments = list_segments(&self.dir)?;
        let Some(next) = segments.iter().find(|s| s.first_seq > current.first_seq) else {
            return Ok(false);
        };
        // The writer rolled only after its last write here: take that write first.
        if !current.damaged && fill(current)? {
            return Ok(true);
        }
        if current.damaged || current.used < current.buf.len() {
            self.damage.segments_cut_short += 1;
        }
        self.want_seq = self.want_seq.max(next.first_seq);
        self.current = None;
        self.open_next()
    }
}

/// Reads more of the current segment into its buffer (dropping consumed bytes first).
/// False at the end of the file.
fn fill(current: &mut Current) -> Result<bool, JournalError> {
    if current.used > 0 {
        current.buf.drain(..current.used);
        current.buf_offset += current.used as u64;
        current.used = 0;
    }
    let have = current.buf.len();
    current.buf.resize(have + READ_CHUNK_BYTES, 0);
    let offset = current.buf_offset + have as u64;
    let got = current
        .file
        .read_at(current.buf.get_mut(have..).unwrap_or_default(), offset);
    let got = match got {
        Ok(got) => got,
        Err(error) => {
            current.buf.truncate(have);
            return Err(JournalError::io("read segment", &current.path, error));
        }
    };
    current.buf.truncate(have + got);
    Ok(got > 0)
}

fn read_at(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<usize, JournalError> {
    loop {
        match file.read_at(buf, offset) {
            Ok(got) => return Ok(got),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(JournalError::io("read segment", path, error)),
        }
    }
}
