//! host-gw pod routes: how every node reaches the other nodes' pod CIDRs, the way
//! kindnet and flannel's host-gw backend do it. For each other Node with a
//! `spec.podCIDR` and an `InternalIP`, one route `podCIDR via InternalIP` in the
//! daemon's network namespace. Pure planning here; the kernel side is [`RouteOps`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// The route protocol number marking minion-netd's routes (`ip route show proto 109`),
/// so reconciliation only ever touches routes it made.
pub const ROUTE_PROTOCOL: u8 = 109;

/// What the daemon needs from one Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// metadata.name.
    pub name: String,
    /// spec.podCIDR, when set and IPv4.
    pub pod_cidr: Option<Ipv4Network>,
    /// The first InternalIP in status.addresses, when IPv4.
    pub internal_ip: Option<Ipv4Addr>,
}

/// Routes wanted: destination pod CIDR → next hop.
pub type RouteTable = BTreeMap<Ipv4Network, Ipv4Addr>;

/// The routes this node wants: one per other node with both a pod CIDR and an address.
/// Two nodes claiming the same CIDR: the first by name wins (the other is logged).
pub fn desired_routes(nodes: &[NodeRoute], self_name: &str) -> RouteTable {
    let mut sorted: Vec<&NodeRoute> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = RouteTable::new();
    for n in sorted.into_iter().filter(|n| n.name != self_name) {
        let (Some(cidr), Some(ip)) = (n.pod_cidr, n.internal_ip) else { continue };
        if out.contains_key(&cidr) {
            tracing::warn!(node = %n.name, %cidr, "pod CIDR already routed to another node");
            continue;
        }
        out.insert(cidr, ip);
    }
    out
}

/// The changes that turn `current` (our routes in the kernel) into `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to delete (gone, or with another next hop).
    pub delete: Vec<(Ipv4Network, Ipv4Addr)>,
    /// Routes to add.
    pub add: Vec<(Ipv4Network, Ipv4Addr)>,
}

impl RoutePlan {
    /// True when nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// Diffs our installed routes against the desired table.
pub fn plan(current: &[(Ipv4Network, Ipv4Addr)], desired: &RouteTable) -> RoutePlan {
    let mut p = RoutePlan::default();
    for (dst, via) in current {
        if desired.get(dst) != Some(via) {
            p.delete.push((*dst, *via));
        }
    }
    for (dst, via) in desired {
        if !current.iter().any(|c| c == &(*dst, *via)) {
            p.add.push((*dst, *via));
        }
    }
    p
}

/// Errors of route operations, naming the route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A netlink request failed.
    #[error("{action} route {dst} via {via}: {source}")]
    Netlink {
        /// add / delete.
        action: &'static str,
        /// Destination.
        dst: Ipv4Network,
        /// Next hop.
        via: Ipv4Addr,
        /// The cause.
        source: rtnetlink::Error,
    },
    /// Listing routes failed.
    #[error("list routes: {0}")]
    List(rtnetlink::Error),
    /// Opening the netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
}

/// The kernel seam of the route controller: only routes marked with
/// [`ROUTE_PROTOCOL`] in the main table.
#[allow(async_fn_in_trait)]
pub trait RouteOps {
    /// Our routes currently installed.
    async fn list(&mut self) -> Result<Vec<(Ipv4Network, Ipv4Addr)>, RouteError>;
    /// Adds (or replaces) `dst via via`.
    async fn add(&mut self, dst: Ipv4Network, via: Ipv4Addr) -> Result<(), RouteError>;
    /// Deletes `dst via via`; a missing route is fine.
    async fn delete(&mut self, dst: Ipv4Network, via: Ipv4Addr) -> Result<(), RouteError>;
}

/// What one reconcile did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    /// Routes added.
    pub added: u64,
    /// Routes deleted.
    pub deleted: u64,
    /// Our routes installed afterwards.
    pub installed: u64,
}

/// Level-triggered: reads our routes, applies the whole diff. Deletes go first, so a
/// node whose address changed gets its new route.
pub async fn reconcile<O: RouteOps>(
    ops: &mut O,
    desired: &RouteTable,
) -> Result<ReconcileStats, RouteError> {
    let current = ops.list().await?;
    let p = plan(&current, desired);
    for (dst, via) in &p.delete {
        ops.delete(*dst, *via).await?;
        tracing::info!(%dst, %via, "removed pod route");
    }
    for (dst, via) in &p.add {
        ops.add(*dst, *via).await?;
        tracing::info!(%dst, %via, "installed pod route");
    }
    Ok(ReconcileStats {
        added: p.add.len() as u64,
        deleted: p.delete.len() as u64,
        installed: desired.len() as u64,
    })
}

/// One recorded call of [`RecordingRoutes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteCall {
    /// list()
    List,
    /// add(dst, via)
    Add(Ipv4Network, Ipv4Addr),
    /// delete(dst, via)
    Delete(Ipv4Network, Ipv4Addr),
}

/// A fake [`RouteOps`]: a routing table in memory plus the calls made.
#[derive(Debug, Default)]
pub struct RecordingRoutes {
    /// Our routes "in the kernel".
    pub routes: Vec<(Ipv4Network, Ipv4Addr)>,
    /// Calls in order.
    pub calls: Vec<RouteCall>,
}

impl RouteOps for RecordingRoutes {
    async fn list(&mut self) -> Result<Vec<(Ipv4Network, Ipv4Addr)>, RouteError> {
        self.calls.push(RouteCall::List);
        Ok(self.routes.clone())
    }

    async fn add(&mut self, dst: Ipv4Network, via: Ipv4Addr) -> Result<(), RouteError> {
        self.calls.push(RouteCall::Add(dst, via));
        self.routes.retain(|(d, _)| *d != dst);
        self.routes.push((dst, via));
        Ok(())
    }

    async fn delete(&mut self, dst: Ipv4Network, via: Ipv4Addr) -> Result<(), RouteError> {
        self.calls.push(RouteCall::Delete(dst, via));
        self.routes.retain(|r| *r != (dst, via));
        Ok(())
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
