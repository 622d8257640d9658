//! ClusterIP allocation from the service CIDR (10.96.0.0/12), as kube-apiserver's
//! service IP allocator does: the network address is never handed out, `.1`
//! (`kubernetes`) and `.10` (`kube-dns`) only when asked for by name.

pub mod shared;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Why an address cannot be allocated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("provided IP {ip} is not in the valid range. The range of valid IPs is {range}")]
    OutOfRange { ip: String, range: String },
    #[error("provided IP {ip} is already allocated")]
    Taken { ip: String },
    #[error("{ip:?} is not a valid IPv4 address")]
    NotAnIp { ip: String },
    #[error("range is full: no ClusterIP left in {range}")]
    Full { range: String },
}

/// Allocated ClusterIPs.
#[derive(Debug, Clone)]
pub struct ClusterIpAllocator {
    net: Ipv4Network,
    used: BTreeSet<u32>,
    next: u32,
    reserved: Vec<u32>,
}

impl ClusterIpAllocator {
    /// An allocator over `net`; `.1` and `.10` are only given on request.
    pub fn new(net: Ipv4Network) -> Self {
        let base = u32::from(net.network());
        ClusterIpAllocator { net, used: BTreeSet::new(), next: base + 11, reserved: vec![base + 1, base + 10] }
    }

    /// The default service CIDR from `minion_api`.
    pub fn service_cidr() -> Self {
        let net: Ipv4Network = minion_api::SERVICE_CIDR.parse().unwrap_or_else(|_| {
            Ipv4Network::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_else(|_| unreachable_net())
        });
        Self::new(net)
    }

    fn range(&self) -> String {
        self.net.to_string()
    }

    fn in_range(&self, ip: u32) -> bool {
        let base = u32::from(self.net.network());
        let last = u32::from(self.net.broadcast());
        ip > base && ip < last
    }

    /// Allocates a specific address (`spec.clusterIP` given).
    pub fn allocate_ip(&mut self, ip: &str) -> Result<Ipv4Addr, AllocError> {
        let addr: Ipv4Addr = ip.parse().map_err(|_| AllocError::NotAnIp { ip: ip.into() })?;
        let n = u32::from(addr);
        if !self.in_range(n) {
            return Err(AllocError::OutOfRange { ip: ip.into(), range: self.range() });
        }
        if !self.used.insert(n) {
            return Err(AllocError::Taken { ip: ip.into() });
        }
        Ok(addr)
    }

    /// Allocates the next free address.
    pub fn allocate_next(&mut self) -> Result<Ipv4Addr, AllocError> {
        let base = u32::from(self.net.network());
        let last = u32::from(self.net.broadcast());
        let size = last - base;
        for i in 0..size {
            let candidate = base + 1 + (self.next - base - 1 + i) % (size - 1);
            if self.reserved.contains(&candidate) || self.used.contains(&candidate) {
                continue;
            }
            self.used.insert(candidate);
            self.next = if candidate + 1 >= last { base + 1 } else { candidate + 1 };
            return Ok(Ipv4Addr::from(candidate));
        }
        Err(AllocError::Full { range: self.range() })
    }

    /// Releases an address (ignores addresses it does not hold).
    pub fn release(&mut self, ip: &str) {
        if let Ok(addr) = ip.parse::<Ipv4Addr>() {
            self.used.remove(&u32::from(addr));
        }
    }

    /// Replaces the used set with `ips` (reloaded from a shared store).
    pub fn set_used<'a>(&mut self, ips: impl IntoIterator<Item = &'a str>) {
        self.used.clear();
        for ip in ips {
            self.mark(ip);
        }
    }

    /// Marks an already stored Service's address as used (at start-up).
    pub fn mark(&mut self, ip: &str) {
        if let Ok(addr) = ip.parse::<Ipv4Addr>() {
            if self.in_range(u32::from(addr)) {
                self.used.insert(u32::from(addr));
            }
        }
    }
}

fn unreachable_net() -> Ipv4Network {
    Ipv4Network::from(Ipv4Addr::new(10, 96, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_reserved_and_network() {
        let mut a = ClusterIpAllocator::service_cidr();
        assert_eq!(a.allocate_next().unwrap(), Ipv4Addr::new(10, 96, 0, 11));
        assert_eq!(a.allocate_ip("10.96.0.1").unwrap(), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(a.allocate_ip("10.96.0.1"), Err(AllocError::Taken { ip: "10.96.0.1".into() }));
        assert!(matches!(a.allocate_ip("10.0.0.1"), Err(AllocError::OutOfRange { .. })));
        assert!(matches!(a.allocate_ip("10.96.0.0"), Err(AllocError::OutOfRange { .. })));
        assert!(matches!(a.allocate_ip("nope"), Err(AllocError::NotAnIp { .. })));
    }

    #[test]
    fn release_and_reuse_in_small_range() {
        let mut a = ClusterIpAllocator::new("192.168.0.0/28".parse().unwrap());
        let mut got = Vec::new();
        while let Ok(ip) = a.allocate_next() {
            got.push(ip);
        }
        // 16 addresses - network - broadcast - .1 - .10
        assert_eq!(got.len(), 12);
        assert!(!got.contains(&Ipv4Addr::new(192, 168, 0, 10)));
        a.release("192.168.0.5");
        assert_eq!(a.allocate_next().unwrap(), Ipv4Addr::new(192, 168, 0, 5));
    }
}
