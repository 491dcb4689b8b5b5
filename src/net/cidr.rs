//! Scanner address allow-list: CIDR blocks checked when a connection is accepted.
//!
//! Parsing and matching only; the accept loop decides what to do with a refusal.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block, such as `10.20.0.0/16` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_bits: u8,
}

/// Why a CIDR block did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    BadAddress(String),
    /// The prefix length is not a number or is longer than the address.
    BadPrefix(String),
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress(text) => write!(f, "`{text}` is not an IP address"),
            CidrError::BadPrefix(text) => write!(f, "`{text}` is not a valid prefix length"),
        }
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (address_text, prefix_text) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address_text
            .trim()
            .parse()
            .map_err(|_| CidrError::BadAddress(address_text.to_string()))?;
        let width_bits: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix_text {
            None => width_bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|bits| *bits <= width_bits)
                .ok_or_else(|| CidrError::BadPrefix(prefix.to_string()))?,
        };
        Ok(Cidr {
            network,
            prefix_bits,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_bits)
    }
}

impl Cidr {
    /// Whether `address` lies inside this block. IPv4-mapped IPv6 addresses match IPv4
    /// blocks, so a dual-stack listener treats `::ffff:10.0.0.1` as `10.0.0.1`.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(candidate)) => {
                let mask = mask_u32(self.prefix_bits);
                u32::from(network) & mask == u32::from(candidate) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(candidate)) => {
                let mask = mask_u128(self.prefix_bits);
                u128::from(network) & mask == u128::from(candidate) & mask
            }
            _ => false,
        }
    }
}

fn mask_u32(prefix_bits: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_bits))
        .unwrap_or(0)
}

fn mask_u128(prefix_bits: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_bits))
        .unwrap_or(0)
}

/// A list of blocks; an address is allowed when any block contains it.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    blocks: Vec<Cidr>,
}

impl AllowList {
    /// An allow-list of these blocks. An empty list allows nobody.
    pub fn new(blocks: Vec<Cidr>) -> AllowList {
        AllowList { blocks }
    }

    /// A list that allows every IPv4 and IPv6 address.
    pub fn everyone() -> AllowList {
        AllowList::new(vec![
            Cidr {
                network: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                prefix_bits: 0,
            },
            Cidr {
                network: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                prefix_bits: 0,
            },
        ])
    }

    /// Whether the list has no block (allows nobody).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether a peer at `address` may connect.
    pub fn allows(&self, address: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.20.0.0/16", "10.20.3.4", true),
            ("10.20.0.0/16", "10.21.0.1", false),
            ("10.20.0.7", "10.20.0.7", true),
            ("10.20.0.7", "10.20.0.8", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "::1", true),
            ("::1/128", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("192.0.2.0/31", "192.0.2.1", true),
            ("192.0.2.0/32", "192.0.2.1", false),
        ];
        for (block, address, expected) in cases {
            let cidr: Cidr = block.parse().expect(block);
            let address: IpAddr = address.parse().expect(address);
            assert_eq!(
                cidr.contains(address),
                *expected,
                "{block} contains {address}"
            );
        }
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::BadPrefix("33".into()))
        );
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::BadAddress("10.0.0".into()))
        );
        assert_eq!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::BadPrefix("129".into()))
        );
        assert_eq!(
            "1.2.3.4/x".parse::<Cidr>(),
            Err(CidrError::BadPrefix("x".into()))
        );
    }

    #[test]
    fn empty_list_allows_nobody_and_any_block_suffices() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!AllowList::new(vec![]).allows(local));
        let list = AllowList::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ]);
        assert!(list.allows(local));
        assert!(!list.allows("192.0.2.1".parse().unwrap()));
    }
}
