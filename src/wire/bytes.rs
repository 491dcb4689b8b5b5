//! Byte search eight bytes at a time (SWAR), for finding telegram ends and separators
//! without a per-byte loop.
//!
//! Pure helpers over slices; they know nothing of frames or profiles.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `word` that is zero. Bits above the first zero byte may be
/// wrong (borrow), but the lowest set bit is always exact, which is all callers use.
#[inline(always)]
const fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

#[inline(always)]
const fn first_set_byte(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// Index of the first byte of `haystack` equal to `a` or `b`.
#[inline]
pub(super) fn find_either(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    let (broadcast_a, broadcast_b) = (ONES * u64::from(a), ONES * u64::from(b));
    let chunks = haystack.chunks_exact(8);
    let tail = chunks.remainder();
    let mut at = 0;
    for chunk in chunks {
        if let Some(word) = chunk.first_chunk::<8>() {
            let word = u64::from_le_bytes(*word);
            let mask = zero_bytes(word ^ broadcast_a) | zero_bytes(word ^ broadcast_b);
            if mask != 0 {
                return Some(at + first_set_byte(mask));
            }
        }
        at += 8;
    }
    tail.iter()
        .position(|&byte| byte == a || byte == b)
        .map(|found| at + found)
}

/// Index of the first byte of `haystack` equal to `needle`.
#[inline]
pub(super) fn find(haystack: &[u8], needle: u8) -> Option<usize> {
    find_either(haystack, needle, needle)
}

/// Pieces of a slice between separator bytes (one piece if there is no separator), like
/// `split` but searching eight bytes at a time.
#[derive(Debug)]
pub(super) struct Pieces<'a> {
    rest: Option<&'a [u8]>,
    separator: Option<u8>,
}

impl<'a> Pieces<'a> {
    pub(super) fn new(bytes: &'a [u8], separator: Option<u8>) -> Self {
        Pieces {
            rest: Some(bytes),
            separator,
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let split = self
            .separator
            .and_then(|separator| find(rest, separator))
            .and_then(|at| Some((rest.get(..at)?, rest.get(at + 1..)?)));
        match split {
            Some((piece, after)) => {
                self.rest = Some(after);
                Some(piece)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_match_the_naive_search_at_every_position_and_length() {
        for length in 0..40 {
            for target in 0..=length {
                let mut haystack = vec![b'x'; length];
                if let Some(slot) = haystack.get_mut(target) {
                    *slot = b';';
                }
                // A byte just below the needle and a borrow-prone 0x00 after the match.
                if let Some(slot) = haystack.get_mut(target + 1) {
                    *slot = 0x00;
                }
                let naive = haystack.iter().position(|&b| b == b';' || b == 0x02);
                assert_eq!(
                    find_either(&haystack, b';', 0x02),
                    naive,
                    "{length} {target}"
                );
                assert_eq!(find(&haystack, b';'), naive, "{length} {target}");
            }
        }
        assert_eq!(find(b"\x01\x01\x01\x01\x01\x01\x01\x01\x00", 0x00), Some(8));
        assert_eq!(find(&[0x80; 9], 0x00), None);
    }

    #[test]
    fn pieces_split_like_std() {
        let cases: [(&[u8], Option<u8>); 6] = [
            (b"", Some(b';')),
            (b";", Some(b';')),
            (b"a;b;;c", Some(b';')),
            (
                b"0145;1JVGL0012345;000081212;g;0;0321;0150;0087;mm;0000;4189050",
                Some(b';'),
            ),
            (b"a;b", None),
            (b"no separator here at all, long enough", Some(b'|')),
        ];
        for (bytes, separator) in cases {
            let ours: Vec<&[u8]> = Pieces::new(bytes, separator).collect();
            let std: Vec<&[u8]> = bytes.split(|&b| Some(b) == separator).collect();
            assert_eq!(ours, std);
        }
    }
}
