//! Opening a compiled plan: [`Plan::open`] maps a file, [`Plan::from_bytes`] takes a
//! buffer; both run only the cheap header and footer checks, so a 50 M-key plan opens
//! in milliseconds. [`Plan::verify`] is the thorough check (checksum, every record,
//! every key findable).
//!
//! Every offset and length read from the file is checked against the buffer before use,
//! so a corrupt plan gives an error or a miss, never a panic or an out-of-bounds read.
//! The one thing a memory map cannot defend against is another process truncating the
//! file while it is mapped (the kernel then raises SIGBUS on access); that is why
//! [`super::compile_file`] never rewrites a plan in place but renames a new file over it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use memmap2::Mmap;

use super::error::PlanError;
use super::format::{
    self, CHUTE_SET_BYTES, FOOTER_BYTES, Header, KEY_BYTES_MAX, Layout, RECORD_FIXED_BYTES,
};
use super::types::{Chutes, DefaultKind, PlanStats};
use crate::decision::ChuteNumber;

/// Files smaller than this are read into memory instead of mapped.
const MAP_BYTES_MIN: u64 = 4096;

/// A compiled sort plan, memory-mapped or held in a buffer. Immutable; share it with
/// [`super::PlanHandle`].
pub struct Plan {
    backing: Backing,
    pub(super) header: Header,
    pub(super) layout: Layout,
    name: String,
    /// Prefix lengths present, longest first; only the first `prefix_length_count` count.
    pub(super) prefix_lengths_desc: [u8; KEY_BYTES_MAX],
    pub(super) prefix_length_count: usize,
    /// The footer checksum as written, read once at open ([`Plan::checksum`]).
    checksum: u64,
}

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

#[inline]
fn backing_bytes(backing: &Backing) -> &[u8] {
    match backing {
        Backing::Mapped(map) => map,
        Backing::Owned(bytes) => bytes,
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("name", &self.name)
            .field("version", &self.header.plan_version)
            .field("mapped", &matches!(self.backing, Backing::Mapped(_)))
            .field("header", &self.header)
            .finish()
    }
}

/// Map `file` read-only.
fn map_file(file: &File) -> Result<Mmap, PlanError> {
    // SAFETY: the mapping is read-only and every access goes through bounds-checked
    // slices of it, so corrupt contents cannot cause undefined behaviour. The remaining
    // hazard is another process truncating or rewriting the file while it is mapped
    // (SIGBUS or changing bytes); sortd itself only ever replaces plans by rename, and
    // operators are told to do the same (PLAN.md).
    let map = unsafe { Mmap::map(file) }?;
    Ok(map)
}

impl Plan {
    /// Open a compiled plan file: map it and check magic, versions, sizes, header and
    /// footer. O(1) in the number of keys. Run [`Plan::verify`] before trusting it fully.
    pub fn open(path: &Path) -> Result<Plan, PlanError> {
        let mut file = File::open(path)?;
        let file_bytes = file.metadata()?.len();
        if file_bytes < MAP_BYTES_MIN {
            let mut bytes = Vec::with_capacity(file_bytes as usize);
            file.read_to_end(&mut bytes)?;
            return Plan::from_bytes(bytes);
        }
        let map = map_file(&file)?;
        Plan::from_backing(Backing::Mapped(map))
    }

    /// Check a plan held in memory, with the same cheap checks as [`Plan::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Plan, PlanError> {
        Plan::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<Plan, PlanError> {
        let bytes: &[u8] = match &backing {
            Backing::Mapped(map) => map,
            Backing::Owned(bytes) => bytes,
        };
        let (header, layout) = Header::decode(bytes)?;
        let name_bytes = bytes
            .get(layout.name.0..layout.name.1)
            .ok_or(PlanError::Corrupt {
                what: "name outside the file",
                offset: layout.name.0 as u64,
            })?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| PlanError::Corrupt {
                what: "name is not UTF-8",
                offset: layout.name.0 as u64,
            })?
            .to_string();
        let mut prefix_lengths_desc = [0u8; KEY_BYTES_MAX];
        let mut prefix_length_count = 0;
        for len in (1..=KEY_BYTES_MAX as u8).rev() {
            if header.prefix_lengths & (1u128 << (len - 1)) != 0 {
                if let Some(slot) = prefix_lengths_desc.get_mut(prefix_length_count) {
                    *slot = len;
                }
                prefix_length_count += 1;
            }
        }
        let checksum = format::read_u64(backing_bytes(&backing), layout.footer).unwrap_or(0);
        Ok(Plan {
            backing,
            header,
            layout,
            name,
            prefix_lengths_desc,
            prefix_length_count,
            checksum,
        })
    }

    /// The whole file.
    #[inline]
    pub(super) fn data(&self) -> &[u8] {
        backing_bytes(&self.backing)
    }

    /// A section by its byte range; empty if out of range (cannot happen after open).
    #[inline]
    pub(super) fn section(&self, range: (usize, usize)) -> &[u8] {
        self.data().get(range.0..range.1).unwrap_or(&[])
    }

    /// The plan's name (`meta,name`), possibly empty.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan's version: `meta,version` or a hash of the content; never 0.
    pub fn version(&self) -> u32 {
        self.header.plan_version
    }

    /// The footer checksum (xxh3-64 of everything before the footer), as written: an id
    /// of the plan's content, read once at open; [`Plan::verify`] checks it.
    #[inline]
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// One of the four default chutes.
    pub fn default_chute(&self, which: DefaultKind) -> ChuteNumber {
        self.header
            .defaults
            .get(which.index())
            .copied()
            .unwrap_or(0)
    }

    /// The chute list with index `index`, or `None` when out of range or malformed.
    #[inline]
    pub(super) fn chute_set(&self, index: u32) -> Option<Chutes> {
        let table = self.section(self.layout.chute_sets);
        let start = (index as usize).checked_mul(CHUTE_SET_BYTES)?;
        let mut slots = [0u16; 4];
        for (slot_index, slot) in slots.iter_mut().enumerate() {
            *slot = format::read_u16(table, start + 2 * slot_index)?;
        }
        Chutes::from_slots(slots)
    }

    /// Sizes and shape of the plan.
    pub fn stats(&self) -> PlanStats {
        let header = &self.header;
        PlanStats {
            file_bytes: header.file_bytes,
            exact_keys: header.exact_key_count,
            exact_buckets: header.exact_bucket_count,
            exact_probe_max: header.exact_probe_max,
            exact_record_bytes: header.exact_record_bytes,
            prefix_keys: header.prefix_key_count,
            prefix_buckets: header.prefix_bucket_count,
            prefix_probe_max: header.prefix_probe_max,
            prefix_record_bytes: header.prefix_record_bytes,
            prefix_lengths: header.prefix_lengths,
            chute_sets: header.chute_set_count,
        }
    }

    /// The thorough check: the footer checksum over the whole content, every chute set,
    /// every record, and every key found by lookup at its own record. Reads the whole
    /// file and looks up every key: linear in the plan's size.
    pub fn verify(&self) -> Result<(), PlanError> {
        let data = self.data();
        let footer = self.layout.footer;
        let content = data.get(..footer).ok_or(PlanError::Truncated {
            expected_bytes: self.header.file_bytes,
            got_bytes: data.len() as u64,
        })?;
        let expected = format::read_u64(data, footer).ok_or(PlanError::Truncated {
            expected_bytes: self.header.file_bytes,
            got_bytes: data.len() as u64,
        })?;
        let got = xxhash_rust::xxh3::xxh3_64(content);
        if expected != got {
            return Err(PlanError::ChecksumMismatch { expected, got });
        }
        for index in 0..self.header.chute_set_count {
            if self.chute_set(index).is_none() {
                return Err(PlanError::Corrupt {
                    what: "invalid chute set",
                    offset: (self.layout.chute_sets.0 + index as usize * CHUTE_SET_BYTES) as u64,
                });
            }
        }
        for kind in [super::RuleKind::Exact, super::RuleKind::Prefix] {
            self.verify_table(kind)?;
        }
        debug_assert_eq!(footer + FOOTER_BYTES, data.len());
        Ok(())
    }

    fn verify_table(&self, kind: super::RuleKind) -> Result<(), PlanError> {
        let table = self.table(kind);
        let (records_start, key_count, lengths_expected) = match kind {
            super::RuleKind::Exact => (
                self.layout.exact_records.0,
                self.header.exact_key_count,
                None,
            ),
            super::RuleKind::Prefix => (
                self.layout.prefix_records.0,
                self.header.prefix_key_count,
                Some(self.header.prefix_lengths),
            ),
        };
        let corrupt = |what, offset: usize| PlanError::Corrupt {
            what,
            offset: (records_start + offset) as u64,
        };
        let mut offset = 0usize;
        let mut records = 0u64;
        let mut lengths = 0u128;
        while offset < table.records.len() {
            let record = table
                .record_at(offset as u32)
                .ok_or(corrupt("record runs past its section", offset))?;
            if record.line == 0 {
                return Err(corrupt("record has line 0", offset));
            }
            if record.chute_set >= self.header.chute_set_count {
                return Err(corrupt("record chute set out of range", offset + 4));
            }
            match table.find(record.key) {
                Some(found) if found.offset == record.offset => {}
                Some(_) => return Err(corrupt("duplicate key", offset)),
                None => return Err(corrupt("key not reachable in its table", offset)),
            }
            lengths |= 1u128 << (record.key.len() - 1);
            records += 1;
            offset += RECORD_FIXED_BYTES + record.key.len();
        }
        if records != key_count {
            return Err(corrupt("record count does not match key count", 0));
        }
        let occupied = table
            .buckets
            .chunks_exact(format::BUCKET_BYTES)
            .filter(|bucket| bucket.get(..4) != Some(&[0, 0, 0, 0]))
            .count() as u64;
        if occupied != key_count {
            return Err(corrupt("occupied buckets do not match key count", 0));
        }
        if let Some(expected) = lengths_expected {
            if expected != lengths {
                return Err(PlanError::Corrupt {
                    what: "prefix length set does not match the prefixes",
                    offset: format::field::PREFIX_LENGTHS as u64,
                });
            }
        }
        Ok(())
    }
}
