//! The compiled plan file format, byte by byte: constants, the header, the hash that
//! places keys, and the little-endian field readers.
//!
//! This module knows the layout and checks that a header is self-consistent and fits the
//! file; it never maps files, never reads past a slice, and does not walk the tables
//! (that is `Plan::verify`). PLAN.md at the repository root describes the same format
//! in prose; the two must agree.
//!
//! Layout (all integers little-endian, every section starts at a multiple of 8 bytes,
//! padding bytes are zero):
//!
//! ```text
//! header           HEADER_BYTES (128)
//! name             name_bytes (UTF-8), padded to 8
//! chute sets       chute_set_count x 8   ([u16; 4], unused slots zero)
//! exact buckets    exact_bucket_count x 8  (tag u32, record_offset u32)
//! prefix buckets   prefix_bucket_count x 8
//! exact records    exact_record_bytes, padded to 8   (line u32, chute_set u32, key_len u8, key)
//! prefix records   prefix_record_bytes, padded to 8
//! footer           FOOTER_BYTES (16): xxh3-64 (seed 0) of everything before it, FOOTER_MAGIC
//! ```

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::error::PlanError;
use super::types::DefaultKind;

/// First eight bytes of every compiled plan.
pub const MAGIC: [u8; 8] = *b"SORTPLAN";
/// Last eight bytes of every compiled plan.
pub const FOOTER_MAGIC: [u8; 8] = *b"SPLANEND";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_BYTES: usize = 128;
/// Size of the footer: checksum u64 then [`FOOTER_MAGIC`].
pub const FOOTER_BYTES: usize = 16;
/// Size of one hash-table bucket.
pub const BUCKET_BYTES: usize = 8;
/// Size of one chute set: four u16 slots.
pub const CHUTE_SET_BYTES: usize = 8;
/// Fixed part of a record before the key bytes: line u32, chute_set u32, key_len u8.
pub const RECORD_FIXED_BYTES: usize = 9;
/// Section alignment.
pub const SECTION_ALIGN_BYTES: usize = 8;

/// Seed of the key hash (xxh3-64). Part of the format: never change it within a version.
pub const KEY_HASH_SEED: u64 = 0x736f_7274_645f_706c; // "sortd_pl"

pub use super::types::{KEY_BYTES_MAX, LINE_BYTES_MAX, NAME_BYTES_MAX};
/// Most keys per table (bucket indices and record offsets are u32).
pub const TABLE_KEYS_MAX: u64 = 1 << 30;
/// Most bytes in one record section (record offsets are u32).
pub const RECORD_SECTION_BYTES_MAX: u64 = u32::MAX as u64;
/// Most distinct chute lists (chute set indices are u32; far more than any sorter has).
pub const CHUTE_SETS_MAX: u64 = 1 << 24;

const _: () = assert!(KEY_BYTES_MAX <= u8::MAX as usize, "key_len is one byte");
const _: () = assert!(KEY_BYTES_MAX <= 128, "prefix lengths are a 128-bit set");
const _: () = assert!(HEADER_BYTES % SECTION_ALIGN_BYTES == 0);
const _: () = assert!(BUCKET_BYTES % SECTION_ALIGN_BYTES == 0);
const _: () = assert!(CHUTE_SET_BYTES % SECTION_ALIGN_BYTES == 0);
const _: () = assert!(FOOTER_BYTES % SECTION_ALIGN_BYTES == 0);
const _: () = assert!(LINE_BYTES_MAX > KEY_BYTES_MAX + NAME_BYTES_MAX);
const _: () = assert!(bucket_count_for(TABLE_KEYS_MAX) <= u32::MAX as u64);

/// Buckets for `keys` keys: load factor at most 2/3 so probe sequences stay short.
pub const fn bucket_count_for(keys: u64) -> u64 {
    if keys == 0 { 0 } else { keys + keys / 2 + 1 }
}

/// The key hash. Its output is fixed forever for a format version.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, KEY_HASH_SEED)
}

/// The home bucket of a hash: the low 32 bits scaled to the bucket count.
#[inline]
pub fn home_bucket(hash: u64, bucket_count: u64) -> u64 {
    ((hash & 0xffff_ffff) * bucket_count) >> 32
}

/// The tag stored in a bucket: the high 32 bits of the hash, never 0 (0 marks empty).
#[inline]
pub fn bucket_tag(hash: u64) -> u32 {
    ((hash >> 32) as u32).max(1)
}

/// Round up to the section alignment.
pub const fn align_up(bytes: u64) -> u64 {
    bytes.div_ceil(SECTION_ALIGN_BYTES as u64) * SECTION_ALIGN_BYTES as u64
}

/// Read a little-endian u16 at `offset`, or `None` past the end.
#[inline]
pub fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(field.try_into().ok()?))
}

/// Read a little-endian u32 at `offset`, or `None` past the end.
#[inline]
pub fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// Read a little-endian u64 at `offset`, or `None` past the end.
#[inline]
pub fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

/// Byte offsets of the header fields.
pub mod field {
    /// magic, 8 bytes
    pub const MAGIC: usize = 0;
    /// format version, u32
    pub const FORMAT_VERSION: usize = 8;
    /// header size, u32
    pub const HEADER_BYTES: usize = 12;
    /// whole file size, u64
    pub const FILE_BYTES: usize = 16;
    /// plan version, u32
    pub const PLAN_VERSION: usize = 24;
    /// flags, u32, must be 0
    pub const FLAGS: usize = 28;
    /// four default chutes, u16 each, in `DefaultKind` order
    pub const DEFAULTS: usize = 32;
    /// number of chute sets, u32
    pub const CHUTE_SET_COUNT: usize = 40;
    /// name length in bytes, u32
    pub const NAME_BYTES: usize = 44;
    /// exact keys, u64
    pub const EXACT_KEY_COUNT: usize = 48;
    /// exact buckets, u64
    pub const EXACT_BUCKET_COUNT: usize = 56;
    /// longest exact probe sequence, u32
    pub const EXACT_PROBE_MAX: usize = 64;
    /// longest prefix probe sequence, u32
    pub const PREFIX_PROBE_MAX: usize = 68;
    /// prefix keys, u64
    pub const PREFIX_KEY_COUNT: usize = 72;
    /// prefix buckets, u64
    pub const PREFIX_BUCKET_COUNT: usize = 80;
    /// exact record section bytes (unpadded), u64
    pub const EXACT_RECORD_BYTES: usize = 88;
    /// prefix record section bytes (unpadded), u64
    pub const PREFIX_RECORD_BYTES: usize = 96;
    /// set of prefix lengths, u128 (bit n-1 = some prefix has n bytes)
    pub const PREFIX_LENGTHS: usize = 104;
    /// key hash seed, u64, must equal `KEY_HASH_SEED`
    pub const KEY_HASH_SEED: usize = 120;
}

const _: () = assert!(field::KEY_HASH_SEED + 8 == HEADER_BYTES);

/// The header fields, decoded. Section positions are derived from the sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Whole file size.
    pub file_bytes: u64,
    /// The plan's version (never 0).
    pub plan_version: u32,
    /// Default chutes in [`DefaultKind`] order.
    pub defaults: [u16; 4],
    /// Distinct chute lists.
    pub chute_set_count: u32,
    /// Name length in bytes.
    pub name_bytes: u32,
    /// Keys in the exact table.
    pub exact_key_count: u64,
    /// Buckets in the exact table.
    pub exact_bucket_count: u64,
    /// Longest exact probe sequence.
    pub exact_probe_max: u32,
    /// Keys in the prefix table.
    pub prefix_key_count: u64,
    /// Buckets in the prefix table.
    pub prefix_bucket_count: u64,
    /// Longest prefix probe sequence.
    pub prefix_probe_max: u32,
    /// Exact record bytes (unpadded).
    pub exact_record_bytes: u64,
    /// Prefix record bytes (unpadded).
    pub prefix_record_bytes: u64,
    /// Set of prefix lengths.
    pub prefix_lengths: u128,
}

/// Where each section sits in the file, as byte ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The name bytes.
    pub name: (usize, usize),
    /// The chute set table.
    pub chute_sets: (usize, usize),
    /// The exact buckets.
    pub exact_buckets: (usize, usize),
    /// The prefix buckets.
    pub prefix_buckets: (usize, usize),
    /// The exact records.
    pub exact_records: (usize, usize),
    /// The prefix records.
    pub prefix_records: (usize, usize),
    /// The footer.
    pub footer: usize,
    /// Total bytes.
    pub file_bytes: u64,
}

impl Header {
    /// Compute the section layout; `None` when the sizes overflow.
    pub fn layout(&self) -> Option<Layout> {
        let mut at = HEADER_BYTES as u64;
        let mut take = |bytes: u64| -> Option<(usize, usize)> {
            let start = at;
            let end = start.checked_add(bytes)?;
            at = align_up(end);
            Some((usize::try_from(start).ok()?, usize::try_from(end).ok()?))
        };
        let name = take(u64::from(self.name_bytes))?;
        let chute_sets =
            take(u64::from(self.chute_set_count).checked_mul(CHUTE_SET_BYTES as u64)?)?;
        let exact_buckets = take(self.exact_bucket_count.checked_mul(BUCKET_BYTES as u64)?)?;
        let prefix_buckets = take(self.prefix_bucket_count.checked_mul(BUCKET_BYTES as u64)?)?;
        let exact_records = take(self.exact_record_bytes)?;
        let prefix_records = take(self.prefix_record_bytes)?;
        let footer = usize::try_from(at).ok()?;
        let file_bytes = at.checked_add(FOOTER_BYTES as u64)?;
        usize::try_from(file_bytes).ok()?;
        Some(Layout {
            name,
            chute_sets,
            exact_buckets,
            prefix_buckets,
            exact_records,
            prefix_records,
            footer,
            file_bytes,
        })
    }

    /// Encode the header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        let mut put = |offset: usize, bytes: &[u8]| {
            if let Some(slot) = out.get_mut(offset..offset + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
        };
        put(field::MAGIC, &MAGIC);
        put(field::FORMAT_VERSION, &FORMAT_VERSION.to_le_bytes());
        put(field::HEADER_BYTES, &(HEADER_BYTES as u32).to_le_bytes());
        put(field::FILE_BYTES, &self.file_bytes.to_le_bytes());
        put(field::PLAN_VERSION, &self.plan_version.to_le_bytes());
        put(field::FLAGS, &0u32.to_le_bytes());
        for (index, chute) in self.defaults.iter().enumerate() {
            put(field::DEFAULTS + 2 * index, &chute.to_le_bytes());
        }
        put(field::CHUTE_SET_COUNT, &self.chute_set_count.to_le_bytes());
        put(field::NAME_BYTES, &self.name_bytes.to_le_bytes());
        put(field::EXACT_KEY_COUNT, &self.exact_key_count.to_le_bytes());
        put(
            field::EXACT_BUCKET_COUNT,
            &self.exact_bucket_count.to_le_bytes(),
        );
        put(field::EXACT_PROBE_MAX, &self.exact_probe_max.to_le_bytes());
        put(
            field::PREFIX_PROBE_MAX,
            &self.prefix_probe_max.to_le_bytes(),
        );
        put(
            field::PREFIX_KEY_COUNT,
            &self.prefix_key_count.to_le_bytes(),
        );
        put(
            field::PREFIX_BUCKET_COUNT,
            &self.prefix_bucket_count.to_le_bytes(),
        );
        put(
            field::EXACT_RECORD_BYTES,
            &self.exact_record_bytes.to_le_bytes(),
        );
        put(
            field::PREFIX_RECORD_BYTES,
            &self.prefix_record_bytes.to_le_bytes(),
        );
        put(field::PREFIX_LENGTHS, &self.prefix_lengths.to_le_bytes());
        put(field::KEY_HASH_SEED, &KEY_HASH_SEED.to_le_bytes());
        out
    }

    /// Decode and check a header against the whole file (`bytes`). This is the cheap
    /// check `open` runs: O(1) in the number of keys, it reads only the header and footer.
    pub fn decode(bytes: &[u8]) -> Result<(Header, Layout), PlanError> {
        let got_bytes = bytes.len() as u64;
        let minimum_bytes = (HEADER_BYTES + FOOTER_BYTES) as u64;
        let truncated = PlanError::Truncated {
            expected_bytes: minimum_bytes,
            got_bytes,
        };
        let mut magic = [0u8; 8];
        for (slot, byte) in magic.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(truncated);
        }
        if magic != MAGIC {
            return Err(PlanError::BadMagic { got: magic });
        }
        let u32_at = |offset| read_u32(bytes, offset).ok_or(truncated);
        let u64_at = |offset| read_u64(bytes, offset).ok_or(truncated);
        let format_version = u32_at(field::FORMAT_VERSION)?;
        if format_version != FORMAT_VERSION {
            return Err(PlanError::UnsupportedVersion {
                expected: FORMAT_VERSION,
                got: format_version,
            });
        }
        if got_bytes < minimum_bytes {
            return Err(truncated);
        }
        let corrupt = |what, offset: usize| PlanError::Corrupt {
            what,
            offset: offset as u64,
        };
        if u32_at(field::HEADER_BYTES)? != HEADER_BYTES as u32 {
            return Err(corrupt("header size field", field::HEADER_BYTES));
        }
        let file_bytes = u64_at(field::FILE_BYTES)?;
        if file_bytes != got_bytes {
            return Err(PlanError::Truncated {
                expected_bytes: file_bytes,
                got_bytes,
            });
        }
        if u32_at(field::FLAGS)? != 0 {
            return Err(corrupt("unknown flags set", field::FLAGS));
        }
        if u64_at(field::KEY_HASH_SEED)? != KEY_HASH_SEED {
            return Err(corrupt("unknown key hash seed", field::KEY_HASH_SEED));
        }
        let mut defaults = [0u16; 4];
        for kind in DefaultKind::ALL {
            let offset = field::DEFAULTS + 2 * kind.index();
            let chute = read_u16(bytes, offset).ok_or(truncated)?;
            if chute == 0 {
                return Err(corrupt("default chute is 0", offset));
            }
            if let Some(slot) = defaults.get_mut(kind.index()) {
                *slot = chute;
            }
        }
        let lengths_low = u64_at(field::PREFIX_LENGTHS)?;
        let lengths_high = u64_at(field::PREFIX_LENGTHS + 8)?;
        let header = Header {
            file_bytes,
            plan_version: u32_at(field::PLAN_VERSION)?,
            defaults,
            chute_set_count: u32_at(field::CHUTE_SET_COUNT)?,
            name_bytes: u32_at(field::NAME_BYTES)?,
            exact_key_count: u64_at(field::EXACT_KEY_COUNT)?,
            exact_bucket_count: u64_at(field::EXACT_BUCKET_COUNT)?,
            exact_probe_max: u32_at(field::EXACT_PROBE_MAX)?,
            prefix_key_count: u64_at(field::PREFIX_KEY_COUNT)?,
            prefix_bucket_count: u64_at(field::PREFIX_BUCKET_COUNT)?,
            prefix_probe_max: u32_at(field::PREFIX_PROBE_MAX)?,
            exact_record_bytes: u64_at(field::EXACT_RECORD_BYTES)?,
            prefix_record_bytes: u64_at(field::PREFIX_RECORD_BYTES)?,
            prefix_lengths: u128::from(lengths_low) | (u128::from(lengths_high) << 64),
        };
        header.check_limits()?;
        let layout = header
            .layout()
            .ok_or(corrupt("section sizes overflow", field::EXACT_BUCKET_COUNT))?;
        if layout.file_bytes != file_bytes {
            return Err(corrupt(
                "section sizes do not add up to the file size",
                field::FILE_BYTES,
            ));
        }
        let footer_magic = bytes
            .get(layout.footer + 8..layout.footer + FOOTER_BYTES)
            .ok_or(truncated)?;
        if footer_magic != FOOTER_MAGIC {
            return Err(corrupt("bad footer magic", layout.footer + 8));
        }
        Ok((header, layout))
    }

    /// Limits that keep every later computation in range.
    fn check_limits(&self) -> Result<(), PlanError> {
        let corrupt = |what, offset: usize| {
            Err(PlanError::Corrupt {
                what,
                offset: offset as u64,
            })
        };
        if self.plan_version == 0 {
            return corrupt("plan version is 0", field::PLAN_VERSION);
        }
        if self.name_bytes as usize > NAME_BYTES_MAX {
            return corrupt("name too long", field::NAME_BYTES);
        }
        if u64::from(self.chute_set_count) > CHUTE_SETS_MAX {
            return corrupt("too many chute sets", field::CHUTE_SET_COUNT);
        }
        for (keys, buckets, probe_max, record_bytes, offset) in [
            (
                self.exact_key_count,
                self.exact_bucket_count,
                self.exact_probe_max,
                self.exact_record_bytes,
                field::EXACT_KEY_COUNT,
            ),
            (
                self.prefix_key_count,
                self.prefix_bucket_count,
                self.prefix_probe_max,
                self.prefix_record_bytes,
                field::PREFIX_KEY_COUNT,
            ),
        ] {
            if keys > TABLE_KEYS_MAX {
                return corrupt("too many keys", offset);
            }
            if buckets != bucket_count_for(keys) {
                return corrupt("bucket count does not match key count", offset + 8);
            }
            if u64::from(probe_max) > buckets {
                return corrupt("probe length exceeds bucket count", offset);
            }
            if record_bytes > RECORD_SECTION_BYTES_MAX {
                return corrupt("record section too large", offset);
            }
            let record_bytes_min = keys.saturating_mul(RECORD_FIXED_BYTES as u64 + 1);
            let record_bytes_max = keys.saturating_mul((RECORD_FIXED_BYTES + KEY_BYTES_MAX) as u64);
            if record_bytes < record_bytes_min || record_bytes > record_bytes_max {
                return corrupt("record section size does not match key count", offset);
            }
        }
        if (self.prefix_lengths == 0) != (self.prefix_key_count == 0) {
            return corrupt(
                "prefix length set does not match prefix count",
                field::PREFIX_LENGTHS,
            );
        }
        Ok(())
    }
}
