//! The kernel seam of the CNI plugin: every link, address, route and sysctl change the
//! pod network needs, as one narrow trait. [`crate::netlink::NetlinkOps`] implements it
//! with rtnetlink; [`RecordingOps`] records calls so ADD/DEL orchestration is tested
//! without root.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;

/// Errors of kernel operations, naming the interface or namespace touched.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error("{action} {target}: {source}")]
    Netlink {
        /// What was attempted ("create bridge", "add address", ...).
        action: &'static str,
        /// Interface / address / route concerned.
        target: String,
        /// The cause.
        source: rtnetlink::Error,
    },
    /// An interface that must exist does not.
    #[error("interface {0} not found")]
    NoSuchLink(String),
    /// A link with the bridge's name exists but is something else.
    #[error("{0} already exists but is not a bridge")]
    NotABridge(String),
    /// The pod's network namespace could not be opened or entered.
    #[error("network namespace {path}: {action}: {source}")]
    Netns {
        /// What was attempted.
        action: &'static str,
        /// CNI_NETNS.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file under /proc/sys could not be written.
    #[error("sysctl {path}: {source}")]
    Sysctl {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Opening a netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    /// A link to create already exists (an earlier ADD left it).
    #[error("interface {0} already exists")]
    LinkExists(String),
}

impl NetError {
    /// True when the pod's network namespace itself is missing (ENOENT on open).
    pub fn is_missing_netns(&self) -> bool {
        matches!(self, NetError::Netns { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A link as seen after creating or finding it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// Interface name.
    pub name: String,
    /// ifindex in its namespace (0 when it was not looked up).
    pub index: u32,
    /// MAC address bytes.
    pub mac: Vec<u8>,
}

/// A node-side link as a link dump shows it (for the stale-veth sweep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    /// Interface name.
    pub name: String,
    /// ifindex in the node's namespace.
    pub index: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// ifindex of its master (bridge), None when detached.
    pub master: Option<u32>,
    /// True for a veth.
    pub veth: bool,
}

/// A veth pair to create: host side on the node, peer directly inside the pod's netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Host-side name, `veth<8 hex>`.
    pub host_name: String,
    /// Container-side name (CNI_IFNAME).
    pub container_ifname: String,
    /// Pod netns path (CNI_NETNS).
    pub netns: PathBuf,
    /// MTU for both ends.
    pub mtu: Option<u32>,
    /// ifindex of the bridge the host side joins (set in the creating request).
    pub master: u32,
    /// Hairpin mode on the bridge port.
    pub hairpin: bool,
    /// MAC of the pod's interface ([`pod_mac`] of its address), so neighbours' ARP
    /// caches stay right when the same address is wired again.
    pub container_mac: [u8; 6],
    /// MAC of the host side, chosen by the caller so that creating the pair needs no
    /// lookup afterwards (see `plugin::host_veth_mac`).
    pub host_mac: [u8; 6],
}

/// The pod interface's MAC: `0a:58:` + its IPv4 bytes (as the CNI bridge plugin and
/// OVN-Kubernetes derive it). A re-ADD or a reused address keeps caches valid.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let b = ip.octets();
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

/// The bridge's pinned MAC, derived from its gateway address (`0a:58:` + the IPv4
/// bytes, as OVN-Kubernetes does), so it never changes as ports come and go and is the
/// same after a node restart.
pub fn bridge_mac(gateway: Option<Ipv4Addr>, bridge: &str) -> [u8; 6] {
    let b = match gateway {
        Some(g) => g.octets(),
        None => {
            let h = bridge.bytes().fold(0x811c_9dc5u32, |h, c| {
                (h ^ u32::from(c)).wrapping_mul(0x0100_0193)
            });
            h.to_be_bytes()
        }
    };
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

/// Address setup inside the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// The pod IP with the subnet's prefix.
    pub address: Ipv4Network,
    /// Default route next hop.
    pub gateway: Ipv4Addr,
}

/// Kernel operations the bridge plugin performs. All run in the node's network
/// namespace except those taking a `netns` path, which act inside the pod's.
#[allow(async_fn_in_trait)]
pub trait NetOps {
    /// Finds or creates bridge `name`, sets it up (and its MTU and pinned MAC
    /// [`bridge_mac`] when creating), and when `gateway` is set makes sure it carries
    /// that address. Returns the bridge.
    async fn ensure_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        gateway: Option<Ipv4Network>,
    ) -> Result<LinkInfo, NetError>;
    /// Turns on IPv4 forwarding, and `bridge-nf-call-iptables` when br_netfilter is
    /// present, in the node's netns (so Service NAT sees bridged pod-to-pod traffic).
    async fn enable_ip_forward(&mut self) -> Result<(), NetError>;
    /// Deletes a node-side link by name; Ok(false) when it did not exist.
    async fn delete_link(&mut self, name: &str) -> Result<bool, NetError>;
    /// Creates the veth pair in one request (peer already in the pod's netns, host side
    /// up on the bridge, both MACs as given), then sets hairpin mode; returns the host
    /// side. An existing link of either name is [`NetError::LinkExists`].
    async fn create_veth(&mut self, spec: &VethSpec) -> Result<LinkInfo, NetError>;
    /// Inside the pod: lo up, address on `ifname`, `ifname` up, default route via the
    /// gateway. Returns the pod interface.
    async fn configure_pod(
        &mut self,
        netns: &Path,
        ifname: &str,
        addr: &PodAddress,
    ) -> Result<LinkInfo, NetError>;
    /// IPv4 addresses of `ifname` inside the pod (for CHECK).
    async fn pod_addresses(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Vec<Ipv4Network>, NetError>;
    /// Whether a node-side link exists.
    async fn link_exists(&mut self, name: &str) -> Result<bool, NetError>;
    /// Sets a node-side link down (a bridge port that is down forwards nothing and
    /// the bridge forgets the MACs it learnt on it) without deleting it: deleting a
    /// veth waits for RCU grace periods in the kernel. Ok(false) when it does not exist.
    async fn isolate_link(&mut self, name: &str) -> Result<bool, NetError>;
    /// Inside the pod: removes every IPv4 address of `ifname` (the kernel drops the
    /// routes through it with the last one). Returns the removed addresses; a missing
    /// interface has none. A missing namespace is a [`NetError::Netns`].
    async fn unconfigure_pod(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Vec<Ipv4Network>, NetError>;
    /// Inside the pod: deletes `ifname` when it is a veth this plugin made (MAC
    /// `0a:58:...`, see [`pod_mac`]), left by an earlier sandbox whose DEL kept it for
    /// the namespace's destruction. Ok(false) when there is no such link or it is
    /// not ours.
    async fn remove_stale_pod_link(&mut self, netns: &Path, ifname: &str)
        -> Result<bool, NetError>;
    /// Every link of the node's namespace (one dump).
    async fn host_links(&mut self) -> Result<Vec<HostLink>, NetError>;
    /// Deletes the node-side link with ifindex `index` (`name` is for errors): by
    /// index, so a link re-created under the same name since it was listed is not
    /// touched. Ok(false) when it no longer exists.
    async fn delete_link_index(&mut self, index: u32, name: &str) -> Result<bool, NetError>;
}

/// True when `mac` is one [`pod_mac`] gives (the prefix this plugin puts on pod
/// interfaces).
pub fn is_pod_mac(mac: &[u8]) -> bool {
    mac.len() == 6 && mac[..2] == [0x0a, 0x58]
}

/// One recorded call of [`RecordingOps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// ensure_bridge(name, mtu, gateway)
    EnsureBridge(String, Option<u32>, Option<Ipv4Network>),
    /// enable_ip_forward()
    EnableIpForward,
    /// delete_link(name)
    DeleteLink(String),
    /// create_veth(spec)
    CreateVeth(VethSpec),
    /// configure_pod(netns, ifname, address)
    ConfigurePod(PathBuf, String, PodAddress),
    /// pod_addresses(netns, ifname)
    PodAddresses(PathBuf, String),
    /// link_exists(name)
    LinkExists(String),
    /// isolate_link(name)
    IsolateLink(String),
    /// unconfigure_pod(netns, ifname)
    UnconfigurePod(PathBuf, String),
    /// remove_stale_pod_link(netns, ifname)
    RemoveStalePodLink(PathBuf, String),
    /// host_links()
    HostLinks,
    /// delete_link_index(index, name)
    DeleteLinkIndex(u32, String),
}

/// A fake [`NetOps`] that records calls and keeps a tiny model of node links and pod
/// addresses, for unit tests.
#[derive(Debug, Default)]
pub struct RecordingOps {
    /// Calls in order.
    pub calls: Vec<Call>,
    /// Node-side links that exist.
    pub links: Vec<String>,
    /// Pod addresses by (netns, ifname).
    pub pod_addrs: Vec<(PathBuf, String, Ipv4Network)>,
    /// Netns paths that "exist" (others fail like a missing file).
    pub netns_present: Vec<PathBuf>,
    /// Pod-side veth ends: (netns, ifname, host-side name).
    pub pod_links: Vec<(PathBuf, String, String)>,
    /// Node-side links that were set down.
    pub down: Vec<String>,
    /// What `host_links` returns (a link dump; `delete_link_index` removes from it).
    pub dump: Vec<HostLink>,
}

impl RecordingOps {
    fn check_netns(&self, netns: &Path) -> Result<(), NetError> {
        if self.netns_present.iter().any(|p| p == netns) {
            return Ok(());
        }
        Err(NetError::Netns {
            action: "open",
            path: netns.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }
}

fn fake_link(name: &str, index: u32) -> LinkInfo {
    LinkInfo {
        name: name.to_string(),
        index,
        mac: vec![2, 0, 0, 0, 0, index as u8],
    }
}

impl NetOps for RecordingOps {
    async fn ensure_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        gw: Option<Ipv4Network>,
    ) -> Result<LinkInfo, NetError> {
        self.calls
            .push(Call::EnsureBridge(name.to_string(), mtu, gw));
        if !self.links.iter().any(|l| l == name) {
            self.links.push(name.to_string());
        }
        Ok(fake_link(name, 1))
    }

    async fn enable_ip_forward(&mut self) -> Result<(), NetError> {
        self.calls.push(Call::EnableIpForward);
        Ok(())
    }

    async fn delete_link(&mut self, name: &str) -> Result<bool, NetError> {
        self.calls.push(Call::DeleteLink(name.to_string()));
        let before = self.links.len();
        self.links.retain(|l| l != name);
        self.pod_links.retain(|(_, _, h)| h != name);
        self.down.retain(|l| l != name);
        Ok(self.links.len() != before)
    }

    async fn create_veth(&mut self, spec: &VethSpec) -> Result<LinkInfo, NetError> {
        self.calls.push(Call::CreateVeth(spec.clone()));
        self.check_netns(&spec.netns)?;
        let pod_taken = self
            .pod_links
            .iter()
            .any(|(n, i, _)| *n == spec.netns && *i == spec.container_ifname);
        if self.links.contains(&spec.host_name) || pod_taken {
            return Err(NetError::LinkExists(spec.host_name.clone()));
        }
        self.links.push(spec.host_name.clone());
        self.pod_links.push((
            spec.netns.clone(),
            spec.container_ifname.clone(),
            spec.host_name.clone(),
        ));
        Ok(fake_link(&spec.host_name, 7))
    }

    async fn configure_pod(
        &mut self,
        netns: &Path,
        ifname: &str,
        addr: &PodAddress,
    ) -> Result<LinkInfo, NetError> {
        self.calls.push(Call::ConfigurePod(
            netns.to_path_buf(),
            ifname.to_string(),
            addr.clone(),
        ));
        self.check_netns(netns)?;
        self.pod_addrs
            .push((netns.to_path_buf(), ifname.to_string(), addr.address));
        Ok(fake_link(ifname, 2))
    }

    async fn pod_addresses(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Vec<Ipv4Network>, NetError> {
        self.calls
            .push(Call::PodAddresses(netns.to_path_buf(), ifname.to_string()));
        self.check_netns(netns)?;
        Ok(self
            .pod_addrs
            .iter()
            .filter(|(n, i, _)| n == netns && i == ifname)
            .map(|(_, _, a)| *a)
            .collect())
    }

    async fn link_exists(&mut self, name: &str) -> Result<bool, NetError> {
        self.calls.push(Call::LinkExists(name.to_string()));
        Ok(self.links.iter().any(|l| l == name))
    }

    async fn isolate_link(&mut self, name: &str) -> Result<bool, NetError> {
        self.calls.push(Call::IsolateLink(name.to_string()));
        let exists = self.links.iter().any(|l| l == name);
        if exists && !self.down.iter().any(|l| l == name) {
            self.down.push(name.to_string());
        }
        Ok(exists)
    }

    async fn unconfigure_pod(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Vec<Ipv4Network>, NetError> {
        self.calls.push(Call::UnconfigurePod(
            netns.to_path_buf(),
            ifname.to_string(),
        ));
        self.check_netns(netns)?;
        let (gone, kept) = std::mem::take(&mut self.pod_addrs)
            .into_iter()
            .partition(|(n, i, _)| n == netns && i == ifname);
        self.pod_addrs = kept;
        Ok(gone
            .into_iter()
            .map(|(_, _, a): (PathBuf, String, Ipv4Network)| a)
            .collect())
    }

    async fn remove_stale_pod_link(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<bool, NetError> {
        self.calls.push(Call::RemoveStalePodLink(
            netns.to_path_buf(),
            ifname.to_string(),
        ));
        self.check_netns(netns)?;
        let Some(pos) = self
            .pod_links
            .iter()
            .position(|(n, i, _)| n == netns && i == ifname)
        else {
            return Ok(false);
        };
        let (_, _, host) = self.pod_links.remove(pos);
        self.links.retain(|l| *l != host);
        self.down.retain(|l| *l != host);
        Ok(true)
    }

    async fn host_links(&mut self) -> Result<Vec<HostLink>, NetError> {
        self.calls.push(Call::HostLinks);
        Ok(self.dump.clone())
    }

    async fn delete_link_index(&mut self, index: u32, name: &str) -> Result<bool, NetError> {
        self.calls.push(Call::DeleteLinkIndex(index, name.to_string()));
        let Some(pos) = self.dump.iter().position(|l| l.index == index) else {
            return Ok(false);
        };
        let gone = self.dump.remove(pos);
        self.links.retain(|l| *l != gone.name);
        Ok(true)
    }
}
