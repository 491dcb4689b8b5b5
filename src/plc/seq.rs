//! Sequence-number arithmetic that survives wrap-around (RFC 1982 serial numbers).
//!
//! A u32 sequence wraps after about 71 minutes at a million telegrams per second, so
//! "after" is decided by the signed distance, which is valid while the two numbers are
//! less than 2^31 apart; every window in this layer is far smaller (checked in
//! [`super::config`]). This module only compares; it does not assign numbers.

/// Largest distance between two sequence numbers that can still be ordered.
pub const SEQ_DISTANCE_MAX: u32 = (1 << 31) - 1;

/// `a - b` as a signed distance: positive when `a` is after `b`.
pub const fn seq_distance(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

/// Whether `a` comes strictly after `b`.
pub const fn seq_after(a: u32, b: u32) -> bool {
    seq_distance(a, b) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_across_the_wrap() {
        let cases: &[(u32, u32, bool)] = &[
            (2, 1, true),
            (1, 2, false),
            (1, 1, false),
            (0, u32::MAX, true),
            (5, u32::MAX - 5, true),
            (u32::MAX - 5, 5, false),
        ];
        for &(a, b, after) in cases {
            assert_eq!(seq_after(a, b), after, "{a} after {b}");
        }
        assert_eq!(seq_distance(1, u32::MAX), 2);
    }
}
