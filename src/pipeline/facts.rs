//! A scan's facts carried beside its decision, for the sort events: every barcode read,
//! the destination code, the scanner's measurements and the deciding plan's name.
//!
//! The scanner thread decides and the PLC thread journals, and only a small `Copy`
//! [`Decision`](super::decide::Decision) crosses between them; the frame it came from
//! borrows the ingress buffer and is gone by then. When events are on, each batch carries
//! a [`FactsArena`]: one byte arena plus one fixed [`FactsSlot`] per parcel holding
//! offsets into it, filled on the scanner thread and read back as borrowed
//! [`ScanFacts`] on the PLC thread. The arena is cleared and reused with its batch, so
//! the steady state allocates nothing, and it is bounded by the wire's own limits
//! ([`BARCODES_MAX`] barcodes of at most [`BARCODE_BYTES_MAX`] bytes, a destination of
//! at most [`DESTINATION_BYTES_MAX`] bytes) and [`PLAN_NAME_BYTES_MAX`]. With events off
//! no batch has an arena and nothing is copied. This module does not decide what a fact
//! means in a record: that is the journal hook's business.

use crate::wire::{
    BARCODE_BYTES_MAX, BARCODES_MAX, Barcodes, DESTINATION_BYTES_MAX, ScanFlags, ScanFrame,
};

/// Longest plan name carried; longer names are cut at a character boundary (the event
/// record keeps as many).
pub const PLAN_NAME_BYTES_MAX: usize = 255;
/// Each barcode's length before it in an arena (u16, little-endian).
const BARCODE_LENGTH_BYTES: usize = 2;
/// Most bytes one parcel's facts take in an arena.
pub const PARCEL_FACTS_BYTES_MAX: usize = BARCODES_MAX * (BARCODE_LENGTH_BYTES + BARCODE_BYTES_MAX)
    + DESTINATION_BYTES_MAX
    + PLAN_NAME_BYTES_MAX;
/// Arena bytes a batch plans for per parcel; a batch whose arena passed this many per
/// parcel reports itself full early ([`FactsArena::is_full`]), so an arena is bounded by
/// `parcels_max * FACTS_BYTES_PER_PARCEL + WARM_AHEAD * PARCEL_FACTS_BYTES_MAX`.
pub const FACTS_BYTES_PER_PARCEL: usize = 128;

const _: () = assert!(BARCODE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(DESTINATION_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(PLAN_NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(BARCODES_MAX <= u8::MAX as usize);

/// What the scanner said about a parcel beyond its id, and the plan that decided it,
/// borrowed (from the frame on the scanner thread, from an arena on the PLC thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanFacts<'a> {
    /// Every barcode read (empty: no read).
    pub barcodes: Barcodes<'a>,
    /// The destination code the scanner sent (empty: none).
    pub destination: &'a [u8],
    /// The deciding plan's name (at most [`PLAN_NAME_BYTES_MAX`] bytes once carried).
    pub plan_name: &'a str,
    /// The scanner's flags (which measurements are present, multi or partial read).
    pub flags: ScanFlags,
    /// Weight in grams; meaningful with [`ScanFlags::WEIGHT_MEASURED`].
    pub weight_g: u32,
    /// Length in millimetres; meaningful with [`ScanFlags::DIMENSIONS_MEASURED`].
    pub length_mm: u16,
    /// Width in millimetres.
    pub width_mm: u16,
    /// Height in millimetres.
    pub height_mm: u16,
}

impl<'a> ScanFacts<'a> {
    /// The facts of `scan`, decided by the plan named `plan_name`.
    #[inline]
    pub fn of_scan(scan: &ScanFrame<'a>, plan_name: &'a str) -> ScanFacts<'a> {
        ScanFacts {
            barcodes: scan.barcodes,
            destination: scan.destination.unwrap_or_default(),
            plan_name,
            flags: scan.flags,
            weight_g: scan.weight_g,
            length_mm: scan.length_mm,
            width_mm: scan.width_mm,
            height_mm: scan.height_mm,
        }
    }
}

/// One parcel's facts in an arena: fixed fields and the offsets of its bytes. 24 bytes:
/// the barcodes' lengths live in the arena, so that a batch's slots (written on the
/// scanner thread into memory that has been through the queue, read once on the PLC
/// thread) take few cache lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactsSlot {
    /// Arena offset of the first barcode; each barcode is its length (u16,
    /// little-endian) then its bytes, one after the other, then the destination.
    bytes_at: u32,
    /// Arena offset of the plan name (shared by the parcels of one plan).
    plan_name_at: u32,
    weight_g: u32,
    dimensions_mm: [u16; 3],
    barcode_count: u8,
    destination_bytes: u8,
    plan_name_bytes: u8,
    flags: ScanFlags,
}

const _: () = assert!(std::mem::size_of::<FactsSlot>() == 24);

/// The facts of a batch's parcels, in push order: a byte arena and one slot per parcel.
#[derive(Debug, Clone)]
pub struct FactsArena {
    slots: Vec<FactsSlot>,
    bytes: Vec<u8>,
    /// Bytes after which [`FactsArena::is_full`] says so.
    bytes_planned: usize,
    /// Capacity kept when cleared; more is given back.
    bytes_kept: usize,
    /// The last plan name stored: (offset, length).
    last_plan_name: Option<(u32, u8)>,
}

/// `name` cut to at most [`PLAN_NAME_BYTES_MAX`] bytes at a character boundary.
fn plan_name_cut(name: &str) -> &str {
    let mut end = name.len().min(PLAN_NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or_default()
}

impl FactsArena {
    /// An arena for batches of up to `parcels_max` parcels, its memory taken now.
    pub fn new(parcels_max: usize) -> FactsArena {
        let bytes_planned = parcels_max.max(1) * FACTS_BYTES_PER_PARCEL;
        let bytes_kept = bytes_planned + PARCEL_FACTS_BYTES_MAX;
        FactsArena {
            slots: Vec::with_capacity(parcels_max),
            bytes: Vec::with_capacity(bytes_kept),
            bytes_planned,
            bytes_kept,
            last_plan_name: None,
        }
    }

    /// Parcels held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no parcel is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Arena bytes in use.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the arena used the bytes planned for its batch: the batch should be handed
    /// over before it takes more parcels (only parcels with unusually long codes get it
    /// here before the batch is full).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.bytes.len() >= self.bytes_planned
    }

    /// Forgets every parcel; keeps the memory planned (gives back what an unusual batch
    /// made it grow by).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.bytes.clear();
        self.last_plan_name = None;
        if self.bytes.capacity() > self.bytes_kept {
            self.bytes.shrink_to(self.bytes_kept);
        }
    }

    fn offset(&self) -> u32 {
        // Bounded by parcels_max * PARCEL_FACTS_BYTES_MAX: far below u32::MAX for any
        // batch the configuration allows.
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }

    /// Copies `facts` in as the next parcel's. Barcodes and destination longer than the
    /// wire allows (never from a decoder) are cut to its limits.
    pub fn push(&mut self, facts: &ScanFacts<'_>) {
        let mut slot = FactsSlot {
            bytes_at: self.offset(),
            barcode_count: facts.barcodes.len() as u8,
            flags: facts.flags,
            weight_g: facts.weight_g,
            dimensions_mm: [facts.length_mm, facts.width_mm, facts.height_mm],
            ..FactsSlot::default()
        };
        for code in facts.barcodes.iter() {
            let code = code.get(..BARCODE_BYTES_MAX).unwrap_or(code);
            self.bytes
                .extend_from_slice(&(code.len() as u16).to_le_bytes());
            self.bytes.extend_from_slice(code);
        }
        let destination = facts
            .destination
            .get(..DESTINATION_BYTES_MAX)
            .unwrap_or(facts.destination);
        slot.destination_bytes = destination.len() as u8;
        self.bytes.extend_from_slice(destination);
        let name = plan_name_cut(facts.plan_name);
        let stored = self.last_plan_name.filter(|&(at, length)| {
            usize::from(length) == name.len()
                && self
                    .bytes
                    .get(at as usize..at as usize + usize::from(length))
                    == Some(name.as_bytes())
        });
        let (at, length) = stored.unwrap_or_else(|| {
            let at = self.offset();
            self.bytes.extend_from_slice(name.as_bytes());
            (at, name.len() as u8)
        });
        self.last_plan_name = Some((at, length));
        slot.plan_name_at = at;
        slot.plan_name_bytes = length;
        self.slots.push(slot);
    }

    /// The facts of the parcel pushed `index`-th, borrowed from the arena.
    pub fn get(&self, index: usize) -> Option<ScanFacts<'_>> {
        let slot = self.slots.get(index)?;
        let mut at = slot.bytes_at as usize;
        let mut barcodes = Barcodes::new();
        for _ in 0..slot.barcode_count {
            let length = self.bytes.get(at..at + BARCODE_LENGTH_BYTES)?;
            at += BARCODE_LENGTH_BYTES;
            let end = at + usize::from(u16::from_le_bytes([length[0], length[1]]));
            let _ = barcodes.push(self.bytes.get(at..end)?);
            at = end;
        }
        let destination = self
            .bytes
            .get(at..at + usize::from(slot.destination_bytes))?;
        let name_at = slot.plan_name_at as usize;
        let plan_name = self
            .bytes
            .get(name_at..name_at + usize::from(slot.plan_name_bytes))
            .and_then(|name| std::str::from_utf8(name).ok())
            .unwrap_or_default();
        let [length_mm, width_mm, height_mm] = slot.dimensions_mm;
        Some(ScanFacts {
            barcodes,
            destination,
            plan_name,
            flags: slot.flags,
            weight_g: slot.weight_g,
            length_mm,
            width_mm,
            height_mm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(codes: &[&'a [u8]], destination: &'a [u8], plan_name: &'a str) -> ScanFacts<'a> {
        ScanFacts {
            barcodes: Barcodes::from_slice(codes).unwrap_or_default(),
            destination,
            plan_name,
            flags: ScanFlags::WEIGHT_MEASURED,
            weight_g: 1234,
            length_mm: 300,
            width_mm: 200,
            height_mm: 100,
        }
    }

    #[test]
    fn facts_come_back_as_pushed_and_a_plan_name_is_stored_once_per_run() {
        let mut arena = FactsArena::new(4);
        let cases = [
            facts(&[b"YT1", b"JD22"], b"330106", "wave-1"),
            facts(&[], b"", "wave-1"),
            facts(&[b"YT3"], b"", "wave-2"),
            ScanFacts::default(),
        ];
        for case in &cases {
            arena.push(case);
        }
        assert_eq!(arena.len(), cases.len());
        for (index, case) in cases.iter().enumerate() {
            assert_eq!(arena.get(index).as_ref(), Some(case), "parcel {index}");
        }
        assert_eq!(arena.get(cases.len()), None);
        assert_eq!(
            arena.bytes_len(),
            2 + 3 + 2 + 4 + 6 + "wave-1".len() + 2 + 3 + "wave-2".len(),
            "wave-1 stored once for its two parcels"
        );
        arena.clear();
        assert!(arena.is_empty());
        assert_eq!(arena.bytes_len(), 0);
    }

    #[test]
    fn the_longest_facts_fit_and_an_unusual_batch_gives_its_growth_back() {
        let longest = vec![b'9'; BARCODE_BYTES_MAX];
        let codes: Vec<&[u8]> = vec![&longest; BARCODES_MAX];
        let destination = vec![b'3'; DESTINATION_BYTES_MAX];
        let name = "é".repeat(200);
        let mut arena = FactsArena::new(2);
        assert!(!arena.is_full());
        for _ in 0..4 {
            arena.push(&facts(&codes, &destination, &name));
        }
        assert!(arena.is_full());
        let back = arena.get(3).expect("held");
        assert_eq!(back.barcodes.as_slice(), codes.as_slice());
        assert_eq!(back.destination, destination.as_slice());
        assert_eq!(back.plan_name.len(), 254, "cut at a character boundary");
        arena.clear();
        assert!(arena.bytes.capacity() <= arena.bytes_kept);
    }
}
