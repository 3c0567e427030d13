//! IPv4 CIDR arithmetic for hollow nodes: the `i`-th per-node pod CIDR carved out of
//! the cluster CIDR (as the node IPAM controller does with `--cluster-cidr` and
//! `--node-cidr-mask-size`), the `i`-th node address, and pod addresses inside a
//! node's pod CIDR (host-local IPAM: the first address is the bridge gateway, the last
//! is the broadcast address, neither is handed to a pod).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A malformed CIDR or one too small for what is asked of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `A.B.C.D/LEN` with an IPv4 address and a length of 0..=32.
    #[error("{0:?} is not an IPv4 CIDR (A.B.C.D/LEN)")]
    Syntax(String),
    /// The range cannot hold the requested number of subnets or addresses.
    #[error("{cidr} holds {available} {what}, {wanted} are needed")]
    TooSmall {
        /// The range.
        cidr: Ipv4Cidr,
        /// What is counted (`/24 subnets`, `addresses`).
        what: String,
        /// How many fit.
        available: u64,
        /// How many were asked for.
        wanted: u64,
    },
}

/// An IPv4 network: base address (host bits cleared) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    base: u32,
    len: u8,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError::Syntax(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        if len > 32 {
            return Err(err());
        }
        Ok(Self {
            base: u32::from(addr) & mask(len),
            len,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

impl Ipv4Cidr {
    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Number of addresses in the range (`2^(32-len)`).
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.len)
    }

    /// The `i`-th address of the range (0 is the network address), if inside it.
    pub fn address(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(self.base.wrapping_add(i as u32)))
    }

    /// Offset of `ip` from the network address, if `ip` is inside the range.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        let ip = u32::from(ip);
        (ip & mask(self.len) == self.base).then(|| u64::from(ip - self.base))
    }

    /// The `i`-th subnet of prefix length `len` (0-based), if it fits.
    pub fn subnet(&self, len: u8, i: u64) -> Option<Ipv4Cidr> {
        if len < self.len || len > 32 || i >= self.subnets(len) {
            return None;
        }
        let step = 1u64 << (32 - len);
        Some(Ipv4Cidr {
            base: self.base.wrapping_add((i * step) as u32),
            len,
        })
    }

    /// How many subnets of prefix length `len` the range holds (0 if `len` is shorter).
    pub fn subnets(&self, len: u8) -> u64 {
        if len < self.len || len > 32 {
            0
        } else {
            1u64 << (len - self.len)
        }
    }

    /// Offsets a pod may get in this range as a node's pod CIDR: all but the network
    /// address, the gateway (`.1`) and the broadcast address; empty for ranges smaller
    /// than a /30.
    pub fn pod_offsets(&self) -> std::ops::Range<u32> {
        if self.size() < 4 {
            return 0..0;
        }
        2..(self.size() - 1) as u32
    }

    /// Checks that the range holds `wanted` subnets of prefix length `len`.
    pub fn check_subnets(&self, len: u8, wanted: u64) -> Result<(), CidrError> {
        let available = self.subnets(len);
        if available < wanted {
            return Err(CidrError::TooSmall {
                cidr: *self,
                what: format!("/{len} subnets"),
                available,
                wanted,
            });
        }
        Ok(())
    }

    /// Checks that the range holds `wanted` host addresses (network address excluded).
    pub fn check_addresses(&self, wanted: u64) -> Result<(), CidrError> {
        let available = self.size().saturating_sub(2);
        if available < wanted {
            return Err(CidrError::TooSmall {
                cidr: *self,
                what: "addresses".into(),
                available,
                wanted,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(c("10.200.7.9/16").to_string(), "10.200.0.0/16");
        assert_eq!(c("0.0.0.0/0").size(), 1 << 32);
        for bad in ["10.0.0.0", "10.0.0/8", "10.0.0.0/33", "x/8", "10.0.0.0/-1", ""] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn carves_node_subnets_in_order() {
        let cluster = c("10.128.0.0/9");
        assert_eq!(cluster.subnets(24), 32768);
        assert_eq!(cluster.subnet(24, 0).unwrap().to_string(), "10.128.0.0/24");
        assert_eq!(cluster.subnet(24, 1).unwrap().to_string(), "10.128.1.0/24");
        assert_eq!(cluster.subnet(24, 256).unwrap().to_string(), "10.129.0.0/24");
        assert_eq!(cluster.subnet(24, 32767).unwrap().to_string(), "10.255.255.0/24");
        assert_eq!(cluster.subnet(24, 32768), None);
        assert_eq!(cluster.subnet(8, 0), None);
        assert!(c("10.200.0.0/16").check_subnets(24, 5000).is_err());
        let msg = c("10.200.0.0/16").check_subnets(24, 5000).unwrap_err().to_string();
        assert_eq!(msg, "10.200.0.0/16 holds 256 /24 subnets, 5000 are needed");
    }

    #[test]
    fn pod_addresses_skip_network_gateway_and_broadcast() {
        let node = c("10.128.3.0/24");
        assert_eq!(node.pod_offsets(), 2..255);
        assert_eq!(node.address(2).unwrap().to_string(), "10.128.3.2");
        assert_eq!(node.offset_of("10.128.3.77".parse().unwrap()), Some(77));
        assert_eq!(node.offset_of("10.128.4.77".parse().unwrap()), None);
        assert_eq!(c("10.0.0.0/31").pod_offsets(), 0..0);
        assert_eq!(c("10.0.0.0/30").pod_offsets(), 2..3);
    }
}
