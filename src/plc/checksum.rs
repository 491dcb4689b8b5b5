//! CRC-16/CCITT-FALSE, the integrity check at the end of every PLC telegram.
//!
//! Polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; the check
//! value of the ASCII bytes `123456789` is 0x29B1. A PLC computes it with a 16-bit
//! shift-and-XOR loop (no table needed); this module uses a 256-entry table built at
//! compile time. It does not decide which bytes are covered: the telegram codec does.

const POLYNOMIAL: u16 = 0x1021;
const INITIAL: u16 = 0xFFFF;

static TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0usize;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLYNOMIAL
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// CRC-16/CCITT-FALSE of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = INITIAL;
    for &byte in bytes {
        let index = usize::from(((crc >> 8) as u8) ^ byte);
        // The table has 256 entries and the index is a u8, so this never misses.
        crc = (crc << 8) ^ TABLE.get(index).copied().unwrap_or(0);
    }
    crc
}

/// The bitwise form a PLC program would use; kept to prove the table matches it.
#[cfg(test)]
fn crc16_bitwise(bytes: &[u8]) -> u16 {
    let mut crc = INITIAL;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLYNOMIAL
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_the_catalogue() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    #[test]
    fn table_matches_bitwise_loop() {
        let mut rng = fastrand::Rng::with_seed(7);
        for length in 0..64 {
            let bytes: Vec<u8> = (0..length).map(|_| rng.u8(..)).collect();
            assert_eq!(crc16(&bytes), crc16_bitwise(&bytes), "length {length}");
        }
    }
}
