//! Zeroed in-memory buffers advised to use transparent huge pages: for tables that are
//! probed at random (the pre-advice overlay's filter and joint index), where every 4 KiB
//! page would otherwise cost a TLB miss, two-level on a virtual machine.
//!
//! A buffer of at least 1 MiB is an anonymous mapping rounded up to whole 2 MiB pages
//! and advised `MADV_HUGEPAGE` (Linux; the kernel's `transparent_hugepage` setting
//! decides); a smaller one, or one whose mapping fails, is a plain vector. Either way the
//! caller gets at least the bytes it asked for, all zero. Does not lock memory or
//! require huge pages: the advice is a hint.

/// The huge page size the rounding aims at (x86-64 and aarch64 with 4 KiB base pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// A zeroed byte buffer, possibly backed by huge pages.
#[derive(Debug)]
pub enum HugePageBuffer {
    /// An anonymous mapping advised to use huge pages.
    Mapped(memmap2::MmapMut),
    /// A plain allocation (small buffers, or when the mapping failed).
    Heap(Vec<u8>),
}

impl HugePageBuffer {
    /// A zeroed buffer of at least `bytes` bytes ([`HugePageBuffer::len`] says how
    /// many: a mapped one is rounded up to whole huge pages).
    pub fn zeroed(bytes: usize) -> HugePageBuffer {
        if bytes >= HUGE_PAGE_BYTES / 2 {
            let rounded = bytes.div_ceil(HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES;
            if let Ok(map) = memmap2::MmapMut::map_anon(rounded) {
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                return HugePageBuffer::Mapped(map);
            }
        }
        HugePageBuffer::Heap(vec![0; bytes])
    }

    /// The bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            HugePageBuffer::Mapped(map) => map,
            HugePageBuffer::Heap(bytes) => bytes,
        }
    }

    /// The bytes, for filling.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            HugePageBuffer::Mapped(map) => map,
            HugePageBuffer::Heap(bytes) => bytes,
        }
    }

    /// Length in bytes (at least what was asked for).
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The little-endian `u64` at byte `offset`, if it fits.
    #[inline]
    pub fn read_u64(&self, offset: usize) -> Option<u64> {
        let bytes = self.bytes().get(offset..offset.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Stores `value` little-endian at byte `offset`; false when it does not fit.
    pub fn write_u64(&mut self, offset: usize, value: u64) -> bool {
        let Some(end) = offset.checked_add(8) else {
            return false;
        };
        match self.bytes_mut().get_mut(offset..end) {
            Some(field) => {
                field.copy_from_slice(&value.to_le_bytes());
                true
            }
            None => false,
        }
    }
}

impl Clone for HugePageBuffer {
    fn clone(&self) -> HugePageBuffer {
        let mut copy = HugePageBuffer::zeroed(self.len());
        if let Some(bytes) = copy.bytes_mut().get_mut(..self.len()) {
            bytes.copy_from_slice(self.bytes());
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_are_zeroed_and_hold_what_is_written() {
        for bytes in [0usize, 64, HUGE_PAGE_BYTES / 2 + 8, HUGE_PAGE_BYTES + 1] {
            let mut buffer = HugePageBuffer::zeroed(bytes);
            assert!(buffer.len() >= bytes);
            assert!(buffer.bytes().iter().all(|byte| *byte == 0));
            if bytes >= 8 {
                assert!(buffer.write_u64(bytes - 8, 0x0102_0304_0506_0708));
                assert_eq!(buffer.read_u64(bytes - 8), Some(0x0102_0304_0506_0708));
                assert_eq!(
                    buffer.clone().read_u64(bytes - 8),
                    buffer.read_u64(bytes - 8)
                );
            }
            let len = buffer.len();
            if len >= 8 {
                assert!(
                    !buffer.write_u64(len - 7, 1),
                    "a write past the end is refused"
                );
            }
            assert_eq!(buffer.read_u64(buffer.len()), None);
        }
        assert!(matches!(
            HugePageBuffer::zeroed(HUGE_PAGE_BYTES + 1),
            HugePageBuffer::Mapped(_)
        ));
    }
}
