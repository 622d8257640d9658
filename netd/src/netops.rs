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
    /// ifindex in its namespace.
    pub index: u32,
    /// MAC address bytes.
    pub mac: Vec<u8>,
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
    /// Finds or creates bridge `name`, sets it up (and its MTU when creating), and when
    /// `gateway` is set makes sure it carries that address. Returns the bridge.
    async fn ensure_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        gateway: Option<Ipv4Network>,
    ) -> Result<LinkInfo, NetError>;
    /// Turns on IPv4 forwarding in the node's netns.
    async fn enable_ip_forward(&mut self) -> Result<(), NetError>;
    /// Deletes a node-side link by name; Ok(false) when it did not exist.
    async fn delete_link(&mut self, name: &str) -> Result<bool, NetError>;
    /// Creates the veth pair; returns the host side (the peer is configured later).
    async fn create_veth(&mut self, spec: &VethSpec) -> Result<LinkInfo, NetError>;
    /// Enslaves `port` to `bridge` (by index), sets hairpin mode, sets it up. Returns the
    /// bridge as it is now (its MAC may change when its first port is added).
    async fn attach_to_bridge(
        &mut self,
        port: &str,
        bridge: u32,
        hairpin: bool,
    ) -> Result<LinkInfo, NetError>;
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
    /// attach_to_bridge(port, bridge index, hairpin)
    AttachToBridge(String, u32, bool),
    /// configure_pod(netns, ifname, address)
    ConfigurePod(PathBuf, String, PodAddress),
    /// pod_addresses(netns, ifname)
    PodAddresses(PathBuf, String),
    /// link_exists(name)
    LinkExists(String),
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
        Ok(self.links.len() != before)
    }

    async fn create_veth(&mut self, spec: &VethSpec) -> Result<LinkInfo, NetError> {
        self.calls.push(Call::CreateVeth(spec.clone()));
        self.check_netns(&spec.netns)?;
        self.links.push(spec.host_name.clone());
        Ok(fake_link(&spec.host_name, 7))
    }

    async fn attach_to_bridge(
        &mut self,
        port: &str,
        bridge: u32,
        hairpin: bool,
    ) -> Result<LinkInfo, NetError> {
        self.calls
            .push(Call::AttachToBridge(port.to_string(), bridge, hairpin));
        Ok(fake_link("cni0", bridge))
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
}
