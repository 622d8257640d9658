//! [`NetOps`] over rtnetlink: the node-side bridge and veth in the namespace the plugin
//! runs in, the pod side through a second netlink socket opened inside the pod's network
//! namespace (the thread enters it for the `socket(2)` call only and returns at once;
//! it aborts rather than go on in the wrong namespace).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec,
    LinkVeth, RouteMessageBuilder,
};

use crate::netops::{bridge_mac, is_pod_mac, HostLink, LinkInfo, NetError, NetOps, PodAddress, VethSpec};

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

/// rtnetlink-backed kernel operations.
#[derive(Debug, Clone)]
pub struct NetlinkOps {
    handle: Handle,
    proc_sys: PathBuf,
}

impl NetlinkOps {
    /// Opens a netlink socket in the current network namespace (must run inside a tokio
    /// runtime). `proc_sys` is normally `/proc/sys`.
    pub fn connect(proc_sys: &Path) -> Result<Self, NetError> {
        let handle = spawn_connection()?;
        Ok(Self {
            handle,
            proc_sys: proc_sys.to_path_buf(),
        })
    }
}

fn spawn_connection() -> Result<Handle, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

fn nl(
    action: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let target = target.into();
    move |source| NetError::Netlink {
        action,
        target,
        source,
    }
}

fn to_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        ..Default::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Address(a) => info.mac = a.clone(),
            _ => {}
        }
    }
    info
}

fn is_kind(msg: &LinkMessage, kind: &InfoKind) -> bool {
    msg.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, NlLinkInfo::Kind(k) if k == kind)),
        _ => false,
    })
}

fn is_bridge(msg: &LinkMessage) -> bool {
    is_kind(msg, &InfoKind::Bridge)
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == ENODEV => Ok(None),
        Err(e) => Err(nl("get link", name)(e)),
    }
}

async fn must_find(handle: &Handle, name: &str) -> Result<LinkMessage, NetError> {
    find_link(handle, name)
        .await?
        .ok_or_else(|| NetError::NoSuchLink(name.to_string()))
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), NetError> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    handle
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(nl("set up", name))
}

async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<Ipv4Network>, NetError> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses of", format!("ifindex {index}")))?;
    let mut out = Vec::new();
    for m in msgs.iter().filter(|m| m.header.index == index) {
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                if let Ok(net) = Ipv4Network::new(*ip, m.header.prefix_len) {
                    out.push(net);
                }
            }
        }
    }
    Ok(out)
}

/// Adds `addr` to link `index`; already there (EEXIST) is fine. No listing first: the
/// node's address dump grows with every pod veth.
async fn add_address(
    handle: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Network,
) -> Result<(), NetError> {
    match handle
        .address()
        .add(index, IpAddr::V4(addr.ip()), addr.prefix())
        .execute()
        .await
    {
        Err(e) if errno(&e) != EEXIST => Err(nl("add address", format!("{addr} to {name}"))(e)),
        _ => Ok(()),
    }
}

async fn create_bridge(
    handle: &Handle,
    name: &str,
    mtu: Option<u32>,
    mac: [u8; 6],
) -> Result<(), NetError> {
    let mut builder = LinkBridge::new(name).address(mac.to_vec());
    if let Some(m) = mtu {
        builder = builder.mtu(m);
    }
    match handle.link().add(builder.build()).execute().await {
        // Another ADD created it concurrently.
        Err(e) if errno(&e) != EEXIST => Err(nl("create bridge", name)(e)),
        _ => Ok(()),
    }
}

/// Sets a boolean sysctl to 1 unless it already is; a missing file is an error only
/// when `required` (bridge-nf-call-iptables exists only with br_netfilter loaded).
fn ensure_sysctl(path: &Path, required: bool) -> Result<(), NetError> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim() == "1" => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            tracing::debug!(path = %path.display(), "sysctl absent, skipped");
            return Ok(());
        }
        _ => {}
    }
    std::fs::write(path, b"1").map_err(|source| NetError::Sysctl {
        path: path.to_path_buf(),
        source,
    })
}

fn open_netns(path: &Path) -> Result<File, NetError> {
    File::open(path).map_err(|source| NetError::Netns {
        action: "open",
        path: path.to_path_buf(),
        source,
    })
}

/// Opens a netlink socket inside the network namespace `netns` and returns its handle
/// (the connection task is spawned on the current runtime). The calling thread enters
/// `netns` only for the `socket(2)` call and returns to its own namespace at once: a
/// netlink socket stays bound to the namespace it was created in. No thread and no
/// second runtime are started (the plugin runs once per pod, so start-up costs count).
fn handle_in_netns(netns: &Path) -> Result<Handle, NetError> {
    let ns = open_netns(netns)?;
    let ns_err = |action, source: nix::errno::Errno| NetError::Netns {
        action,
        path: netns.to_path_buf(),
        source: source.into(),
    };
    let home = File::open("/proc/thread-self/ns/net").map_err(|source| NetError::Netns {
        action: "open own namespace",
        path: PathBuf::from("/proc/thread-self/ns/net"),
        source,
    })?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err("setns", e))?;
    let conn = rtnetlink::new_connection();
    if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
        // Going on in the pod's namespace would touch the wrong links: stop here.
        eprintln!("minion-netd: error: return to own network namespace from {}: {e}", netns.display());
        std::process::abort();
    }
    let (conn, handle, _) = conn.map_err(NetError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Runs `job` with a netlink handle opened inside the network namespace `netns`.
async fn in_netns<T, F, Fut>(netns: &Path, job: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, NetError>>,
{
    job(handle_in_netns(netns)?).await
}

/// The loopback device's ifindex in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

async fn pod_setup(handle: Handle, ifname: String, addr: PodAddress) -> Result<LinkInfo, NetError> {
    set_up(&handle, LOOPBACK_IFINDEX, "lo").await?;
    let link = to_info(&must_find(&handle, &ifname).await?);
    // The interface was just created: add without listing first (EEXIST is fine).
    add_address(&handle, link.index, &ifname, addr.address).await?;
    set_up(&handle, link.index, &ifname).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(addr.gateway)
        .output_interface(link.index)
        .build();
    match handle.route().add(route).execute().await {
        Err(e) if errno(&e) != EEXIST => Err(nl(
            "add default route via",
            format!("{} dev {ifname}", addr.gateway),
        )(e)),
        _ => Ok(link),
    }
}

/// Removes every IPv4 address of `ifname` (in the namespace `handle` lives in).
async fn pod_teardown(handle: Handle, ifname: String) -> Result<Vec<Ipv4Network>, NetError> {
    let Some(link) = find_link(&handle, &ifname).await? else {
        return Ok(Vec::new());
    };
    let index = link.header.index;
    let addrs = ipv4_addresses(&handle, index).await?;
    for a in &addrs {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a.ip(), a.prefix())
            .build();
        match handle.address().del(msg).execute().await {
            // Went with an address deleted before it (a primary takes its secondaries).
            Err(e) if errno(&e) != EADDRNOTAVAIL => {
                return Err(nl("delete address", format!("{a} from {ifname}"))(e))
            }
            _ => {}
        }
    }
    Ok(addrs)
}

/// Deletes `ifname` (in the namespace `handle` lives in) when it is a veth with a pod
/// MAC of ours.
async fn remove_if_ours(handle: Handle, ifname: String) -> Result<bool, NetError> {
    let Some(msg) = find_link(&handle, &ifname).await? else {
        return Ok(false);
    };
    let info = to_info(&msg);
    if !is_kind(&msg, &InfoKind::Veth) || !is_pod_mac(&info.mac) {
        return Ok(false);
    }
    match handle.link().del(info.index).execute().await {
        Err(e) if errno(&e) != ENODEV => Err(nl("delete leftover link", ifname)(e)),
        _ => Ok(true),
    }
}

fn to_host_link(msg: &LinkMessage) -> HostLink {
    let info = to_info(msg);
    HostLink {
        name: info.name,
        index: info.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(m) => Some(*m),
            _ => None,
        }),
        veth: is_kind(msg, &InfoKind::Veth),
    }
}

impl NetOps for NetlinkOps {
    async fn ensure_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        gateway: Option<Ipv4Network>,
    ) -> Result<LinkInfo, NetError> {
        let msg = match find_link(&self.handle, name).await? {
            Some(m) => m,
            None => {
                let mac = bridge_mac(gateway.map(|g| g.ip()), name);
                create_bridge(&self.handle, name, mtu, mac).await?;
                must_find(&self.handle, name).await?
            }
        };
        if !is_bridge(&msg) {
            return Err(NetError::NotABridge(name.to_string()));
        }
        let info = to_info(&msg);
        if !msg.header.flags.contains(LinkFlags::Up) {
            set_up(&self.handle, info.index, name).await?;
        }
        if let Some(gw) = gateway {
            add_address(&self.handle, info.index, name, gw).await?;
        }
        Ok(info)
    }

    async fn enable_ip_forward(&mut self) -> Result<(), NetError> {
        ensure_sysctl(&self.proc_sys.join("net/ipv4/ip_forward"), true)?;
        ensure_sysctl(&self.proc_sys.join("net/bridge/bridge-nf-call-iptables"), false)
    }

    async fn delete_link(&mut self, name: &str) -> Result<bool, NetError> {
        // One request: RTM_DELLINK by name (ifindex 0), no lookup first.
        let mut req = self.handle.link().del(0);
        req.message_mut()
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == ENODEV => Ok(false),
            Err(e) => Err(nl("delete link", name)(e)),
        }
    }

    async fn create_veth(&mut self, spec: &VethSpec) -> Result<LinkInfo, NetError> {
        let ns = open_netns(&spec.netns)?;
        let mut peer =
            LinkUnspec::new_with_name(&spec.container_ifname)
                .setns_by_fd(ns.as_raw_fd())
                .address(spec.container_mac.to_vec());
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_name.clone())
            .address(spec.host_mac.to_vec())
            .controller(spec.master)
            .up();
        if let Some(m) = spec.mtu {
            peer = peer.mtu(m);
            host = host.mtu(m);
        }
        let host = host.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        let target = format!(
            "{} (peer {} in {})",
            spec.host_name,
            spec.container_ifname,
            spec.netns.display()
        );
        match self.handle.link().add(host.build()).execute().await {
            Err(e) if errno(&e) == EEXIST => {
                return Err(NetError::LinkExists(spec.host_name.clone()))
            }
            Err(e) => return Err(nl("create veth", target)(e)),
            Ok(()) => {}
        }
        drop(ns);
        // The MAC was set in the request, so no lookup: the port is named, not indexed.
        let info = LinkInfo {
            name: spec.host_name.clone(),
            index: 0,
            mac: spec.host_mac.to_vec(),
        };
        if spec.hairpin {
            let msg = LinkBridgePort::new(0)
                .name(spec.host_name.clone())
                .hairpin(true)
                .build();
            self.handle
                .link()
                .set_port(msg)
                .execute()
                .await
                .map_err(nl("set hairpin mode on", spec.host_name.clone()))?;
        }
        Ok(info)
    }

    async fn configure_pod(
        &mut self,
        netns: &Path,
        ifname: &str,
        addr: &PodAddress,
    ) -> Result<LinkInfo, NetError> {
        let (ifname, addr) = (ifname.to_string(), addr.clone());
        in_netns(netns, move |h| pod_setup(h, ifname, addr)).await
    }

    async fn pod_addresses(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Vec<Ipv4Network>, NetError> {
        let ifname = ifname.to_string();
        in_netns(netns, move |h| async move {
            let index = must_find(&h, &ifname).await?.header.index;
            ipv4_addresses(&h, index).await
        })
        .await
    }

    async fn link_exists(&mut self, name: &str) -> Result<bool, NetError> {
        Ok(find_link(&self.handle, name).await?.is_some())
    }

    async fn isolate_link(&mut self, name: &str) -> Result<bool, NetError> {
        // One request by name (ifindex 0), no lookup first.
        let msg = LinkUnspec::new_with_name(name).down().build();
        match self.handle.link().change(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == ENODEV => Ok(false),
            Err(e) => Err(nl("set down", name)(e)),
        }
    }

    async fn unconfigure_pod(
        &mut self,
        netns: &Path,
        ifname: &str,
    ) -> Result<Vec<Ipv4Network>, NetError> {
        let ifname = ifname.to_string();
        in_netns(netns, move |h| pod_teardown(h, ifname)).await
    }

    async fn remove_stale_pod_link(&mut self, netns: &Path, ifname: &str) -> Result<bool, NetError> {
        let ifname = ifname.to_string();
        in_netns(netns, move |h| remove_if_ours(h, ifname)).await
    }

    async fn host_links(&mut self) -> Result<Vec<HostLink>, NetError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list links", "node namespace"))?;
        Ok(msgs.iter().map(to_host_link).collect())
    }

    async fn delete_link_index(&mut self, index: u32, name: &str) -> Result<bool, NetError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == ENODEV => Ok(false),
            Err(e) => Err(nl("delete link", format!("{name} (ifindex {index})"))(e)),
        }
    }
}
