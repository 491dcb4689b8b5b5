//! A hint to the CPU that memory is about to be read: the hot path's lookups (plan
//! buckets and records, the duplicate window's slots) issue it for a whole batch before
//! resolving any, so their cache and TLB misses overlap.
//!
//! A prefetch is not a load: it retires at once and never faults, so a batch's worth of
//! them is in flight together, where plain loads of the same addresses stall the
//! processor's reorder buffer after a few. It changes no value anywhere; on targets
//! without the instruction it does nothing.

/// Asks for the cache line holding `value` to be brought close (all cache levels).
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let address = std::ptr::from_ref(value).cast::<i8>();
        // SAFETY: a prefetch only hints at an address; it never reads it architecturally
        // and cannot fault. The address comes from a reference, so it is valid anyway.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(address)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_changes_nothing() {
        let values = [1u64, 2, 3];
        for value in &values {
            prefetch_read(value);
        }
        assert_eq!(values, [1, 2, 3]);
    }
}
