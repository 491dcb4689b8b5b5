//! Building a compiled plan from entries: [`PlanBuilder`] collects keys, chute lists,
//! defaults and metadata, then [`PlanBuilder::finish`] lays out the hash tables and
//! [`BuiltPlan::write_to`] streams the file.
//!
//! The builder takes entries from any source (the CSV compiler, the synthetic generator,
//! tests) and records the source line of each. It holds the records and tables in
//! memory (about 30 bytes per key plus the key); it does not touch the file system
//! (see [`super::compile_file`] for the atomic write).

use std::collections::HashMap;
use std::io::{self, Write};

use xxhash_rust::xxh3::Xxh3Default;

use super::error::{CompileErrorKind, CompileErrors};
use super::format::{
    self, BUCKET_BYTES, CHUTE_SETS_MAX, FOOTER_BYTES, FOOTER_MAGIC, Header, KEY_BYTES_MAX,
    NAME_BYTES_MAX, RECORD_FIXED_BYTES, RECORD_SECTION_BYTES_MAX, SECTION_ALIGN_BYTES,
    TABLE_KEYS_MAX,
};
use super::types::{Chutes, DefaultKind, RuleKind};
use crate::decision::ChuteNumber;

/// Collects a plan's entries; call [`PlanBuilder::finish`] to lay out the file.
#[derive(Debug, Default)]
pub struct PlanBuilder {
    name: String,
    version: Option<u32>,
    defaults: [Option<ChuteNumber>; 4],
    chute_sets: Vec<Chutes>,
    chute_set_index: HashMap<Chutes, u32>,
    exact: TableBuilder,
    prefix: TableBuilder,
}

/// One table's records in insertion order plus each record's hash.
#[derive(Debug, Default)]
struct TableBuilder {
    records: Vec<u8>,
    hashes: Vec<u64>,
    offsets: Vec<u32>,
    lengths: u128,
}

impl PlanBuilder {
    /// An empty builder (no name, derived version, no defaults).
    pub fn new() -> PlanBuilder {
        PlanBuilder::default()
    }

    /// Set the plan name (`meta,name,...`), at most [`NAME_BYTES_MAX`] bytes.
    pub fn set_name(&mut self, name: &str) -> Result<(), CompileErrorKind> {
        if name.len() > NAME_BYTES_MAX {
            return Err(CompileErrorKind::NameTooLong { bytes: name.len() });
        }
        self.name = name.to_string();
        Ok(())
    }

    /// Set the plan version (`meta,version,N`); 0 is rejected. Without it the version is
    /// derived from a hash of the content.
    pub fn set_version(&mut self, version: u32) -> Result<(), CompileErrorKind> {
        if version == 0 {
            return Err(CompileErrorKind::BadVersion {
                value: "0".to_string(),
            });
        }
        self.version = Some(version);
        Ok(())
    }

    /// Set one of the four defaults.
    pub fn set_default(&mut self, which: DefaultKind, chute: ChuteNumber) {
        if let Some(slot) = self.defaults.get_mut(which.index()) {
            *slot = (chute != 0).then_some(chute);
        }
    }

    /// Add an `exact` or `prefix` entry from CSV line `line`. Duplicates are found by
    /// [`PlanBuilder::finish`], which reports them with both lines.
    pub fn add(
        &mut self,
        kind: RuleKind,
        key: &[u8],
        chutes: Chutes,
        line: u32,
    ) -> Result<(), CompileErrorKind> {
        if key.is_empty() {
            return Err(CompileErrorKind::EmptyKey);
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(CompileErrorKind::KeyTooLong { bytes: key.len() });
        }
        let chute_set = self.chute_set(chutes)?;
        let table = match kind {
            RuleKind::Exact => &mut self.exact,
            RuleKind::Prefix => &mut self.prefix,
        };
        table.add(key, chute_set, line)
    }

    /// Number of `exact` entries added so far.
    pub fn exact_count(&self) -> u64 {
        self.exact.hashes.len() as u64
    }

    /// Number of `prefix` entries added so far.
    pub fn prefix_count(&self) -> u64 {
        self.prefix.hashes.len() as u64
    }

    fn chute_set(&mut self, chutes: Chutes) -> Result<u32, CompileErrorKind> {
        if let Some(&index) = self.chute_set_index.get(&chutes) {
            return Ok(index);
        }
        if self.chute_sets.len() as u64 >= CHUTE_SETS_MAX {
            return Err(CompileErrorKind::TooLarge {
                what: "too many distinct chute lists",
            });
        }
        let index = self.chute_sets.len() as u32;
        self.chute_sets.push(chutes);
        self.chute_set_index.insert(chutes, index);
        Ok(index)
    }

    /// Check the defaults, find duplicate keys and lay out both hash tables.
    pub fn finish(self) -> Result<BuiltPlan, CompileErrors> {
        let mut errors = CompileErrors::new("");
        let mut defaults = [0u16; 4];
        for which in DefaultKind::ALL {
            match self.defaults.get(which.index()).copied().flatten() {
                Some(chute) => {
                    if let Some(slot) = defaults.get_mut(which.index()) {
                        *slot = chute;
                    }
                }
                None => errors.push(0, CompileErrorKind::MissingDefault { which }),
            }
        }
        let exact = self.exact.build(RuleKind::Exact, &mut errors);
        let prefix = self.prefix.build(RuleKind::Prefix, &mut errors);
        if !errors.is_empty() {
            errors.sort();
            return Err(errors);
        }
        let mut built = BuiltPlan {
            header: Header {
                file_bytes: 0,
                plan_version: 0,
                defaults,
                chute_set_count: self.chute_sets.len() as u32,
                name_bytes: self.name.len() as u32,
                exact_key_count: exact.keys,
                exact_bucket_count: exact.buckets.len() as u64,
                exact_probe_max: exact.probe_max,
                prefix_key_count: prefix.keys,
                prefix_bucket_count: prefix.buckets.len() as u64,
                prefix_probe_max: prefix.probe_max,
                exact_record_bytes: exact.records.len() as u64,
                prefix_record_bytes: prefix.records.len() as u64,
                prefix_lengths: prefix.lengths,
            },
            name: self.name,
            chute_sets: self.chute_sets,
            exact,
            prefix,
        };
        let Some(layout) = built.header.layout() else {
            let mut errors = CompileErrors::new("");
            errors.push(
                0,
                CompileErrorKind::TooLarge {
                    what: "file size overflows",
                },
            );
            return Err(errors);
        };
        built.header.file_bytes = layout.file_bytes;
        built.header.plan_version = self.version.unwrap_or_else(|| built.content_version());
        Ok(built)
    }
}

impl TableBuilder {
    fn add(&mut self, key: &[u8], chute_set: u32, line: u32) -> Result<(), CompileErrorKind> {
        if self.hashes.len() as u64 >= TABLE_KEYS_MAX {
            return Err(CompileErrorKind::TooLarge {
                what: "too many keys in one table",
            });
        }
        let offset = self.records.len();
        let end = offset + RECORD_FIXED_BYTES + key.len();
        if end as u64 > RECORD_SECTION_BYTES_MAX {
            return Err(CompileErrorKind::TooLarge {
                what: "key bytes of one table exceed 4 GiB",
            });
        }
        self.records.extend_from_slice(&line.to_le_bytes());
        self.records.extend_from_slice(&chute_set.to_le_bytes());
        self.records.push(key.len() as u8);
        self.records.extend_from_slice(key);
        self.hashes.push(format::key_hash(key));
        self.offsets.push(offset as u32);
        self.lengths |= 1u128 << (key.len() - 1);
        Ok(())
    }

    /// Insert every record into an open-addressing table; report duplicates.
    fn build(self, kind: RuleKind, errors: &mut CompileErrors) -> BuiltTable {
        let keys = self.hashes.len() as u64;
        let bucket_count = format::bucket_count_for(keys);
        let mut buckets = vec![0u64; bucket_count as usize];
        let mut probe_max = 0u32;
        for (&hash, &offset) in self.hashes.iter().zip(&self.offsets) {
            let tag = format::bucket_tag(hash);
            let mut position = format::home_bucket(hash, bucket_count) as usize;
            let mut probes = 1u32;
            loop {
                let bucket = buckets[position];
                if bucket == 0 {
                    buckets[position] = u64::from(tag) | (u64::from(offset) << 32);
                    probe_max = probe_max.max(probes);
                    break;
                }
                let other_offset = (bucket >> 32) as u32;
                if bucket as u32 == tag
                    && record_key(&self.records, other_offset) == record_key(&self.records, offset)
                {
                    errors.push(
                        record_line(&self.records, offset),
                        CompileErrorKind::DuplicateKey {
                            kind: kind.as_str(),
                            key: CompileErrorKind::quote(record_key(&self.records, offset)),
                            first_line: record_line(&self.records, other_offset),
                        },
                    );
                    break;
                }
                position += 1;
                if position == buckets.len() {
                    position = 0;
                }
                probes += 1;
            }
        }
        BuiltTable {
            keys,
            buckets,
            probe_max,
            records: self.records,
            lengths: self.lengths,
        }
    }
}

fn record_key(records: &[u8], offset: u32) -> &[u8] {
    let start = offset as usize + RECORD_FIXED_BYTES;
    let len = records.get(start - 1).copied().unwrap_or(0) as usize;
    records.get(start..start + len).unwrap_or(&[])
}

fn record_line(records: &[u8], offset: u32) -> u32 {
    format::read_u32(records, offset as usize).unwrap_or(0)
}

/// One laid-out table.
#[derive(Debug)]
struct BuiltTable {
    keys: u64,
    buckets: Vec<u64>,
    probe_max: u32,
    records: Vec<u8>,
    lengths: u128,
}

/// A plan laid out in memory, ready to be written.
#[derive(Debug)]
pub struct BuiltPlan {
    header: Header,
    name: String,
    chute_sets: Vec<Chutes>,
    exact: BuiltTable,
    prefix: BuiltTable,
}

impl BuiltPlan {
    /// The plan version written to the header.
    pub fn version(&self) -> u32 {
        self.header.plan_version
    }

    /// The plan name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the file [`BuiltPlan::write_to`] writes.
    pub fn file_bytes(&self) -> u64 {
        self.header.file_bytes
    }

    /// Number of exact keys.
    pub fn exact_keys(&self) -> u64 {
        self.exact.keys
    }

    /// Number of prefix keys.
    pub fn prefix_keys(&self) -> u64 {
        self.prefix.keys
    }

    /// Number of distinct chute lists.
    pub fn chute_sets(&self) -> u32 {
        self.header.chute_set_count
    }

    /// A version derived from the content, never 0: xxh3-64 (seed 0) over the name,
    /// defaults, and every record's key and chutes (not its CSV line, so comments and
    /// blank lines do not change it), folded to 32 bits.
    fn content_version(&self) -> u32 {
        let mut hasher = Xxh3Default::new();
        hasher.update(self.name.as_bytes());
        for chute in self.header.defaults {
            hasher.update(&chute.to_le_bytes());
        }
        for table in [&self.exact, &self.prefix] {
            hasher.update(b"|table|");
            let mut offset = 0usize;
            while let Some(fixed) = table.records.get(offset..offset + RECORD_FIXED_BYTES) {
                let chute_set = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
                let key_len = usize::from(fixed[8]);
                let key_start = offset + RECORD_FIXED_BYTES;
                hasher.update(&[fixed[8]]);
                hasher.update(
                    table
                        .records
                        .get(key_start..key_start + key_len)
                        .unwrap_or(&[]),
                );
                let chutes = self.chute_sets.get(chute_set as usize);
                for chute in chutes.map(Chutes::slots).unwrap_or_default() {
                    hasher.update(&chute.to_le_bytes());
                }
                offset = key_start + key_len;
            }
        }
        let hash = hasher.digest();
        ((hash ^ (hash >> 32)) as u32).max(1)
    }

    /// Write the whole file. The caller handles temp files, fsync and rename.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<()> {
        let mut out = HashingWriter {
            inner: out,
            hasher: Xxh3Default::new(),
            written_bytes: 0,
        };
        out.write_all(&self.header.encode())?;
        out.write_all(self.name.as_bytes())?;
        out.pad()?;
        for set in &self.chute_sets {
            for chute in set.slots() {
                out.write_all(&chute.to_le_bytes())?;
            }
        }
        write_buckets(&mut out, &self.exact.buckets)?;
        write_buckets(&mut out, &self.prefix.buckets)?;
        out.write_all(&self.exact.records)?;
        out.pad()?;
        out.write_all(&self.prefix.records)?;
        out.pad()?;
        let checksum = out.hasher.digest();
        let mut footer = [0u8; FOOTER_BYTES];
        footer[..8].copy_from_slice(&checksum.to_le_bytes());
        footer[8..].copy_from_slice(&FOOTER_MAGIC);
        out.inner.write_all(&footer)?;
        out.written_bytes += FOOTER_BYTES as u64;
        if out.written_bytes != self.header.file_bytes {
            return Err(io::Error::other("plan layout and written size disagree"));
        }
        out.inner.flush()
    }

    /// The whole file as bytes (tests, fuzz seeds, small plans).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.header.file_bytes as usize);
        // Writing to a Vec cannot fail; the size check cannot fail for a layout we made.
        let _ = self.write_to(&mut bytes);
        bytes
    }
}

fn write_buckets<W: Write>(out: &mut W, buckets: &[u64]) -> io::Result<()> {
    const CHUNK_BUCKETS: usize = 8192;
    let mut chunk = Vec::with_capacity(CHUNK_BUCKETS * BUCKET_BYTES);
    for group in buckets.chunks(CHUNK_BUCKETS) {
        chunk.clear();
        for bucket in group {
            chunk.extend_from_slice(&bucket.to_le_bytes());
        }
        out.write_all(&chunk)?;
    }
    Ok(())
}

/// Counts and hashes everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Xxh3Default,
    written_bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Zero-pad to the section alignment.
    fn pad(&mut self) -> io::Result<()> {
        let padding = format::align_up(self.written_bytes) - self.written_bytes;
        const ZEROS: [u8; SECTION_ALIGN_BYTES] = [0; SECTION_ALIGN_BYTES];
        self.write_all(&ZEROS[..padding as usize])
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        let part = bytes.get(..written).unwrap_or(bytes);
        self.hasher.update(part);
        self.written_bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
