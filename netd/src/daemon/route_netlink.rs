//! [`RouteOps`] over rtnetlink in the daemon's network namespace: lists, adds and
//! deletes main-table IPv4 routes carrying [`ROUTE_PROTOCOL`].

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::routes::{RouteError, RouteOps, ROUTE_PROTOCOL};

/// rtnetlink-backed route operations.
#[derive(Debug, Clone)]
pub struct NetlinkRoutes {
    handle: Handle,
}

impl NetlinkRoutes {
    /// Opens a netlink socket in the current network namespace (inside a tokio runtime).
    pub fn connect() -> Result<Self, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }
}

impl NetlinkRoutes {
    /// Names of every link in this namespace (one dump), for the IPAM GC.
    pub async fn link_names(&self) -> Result<Vec<String>, RouteError> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(RouteError::List)?;
        Ok(links
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .collect())
    }
}

fn message(dst: Ipv4Network, via: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix())
        .gateway(via)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

/// `(dst, via)` of a message if it is one of ours in the main table.
fn ours(m: &RouteMessage) -> Option<(Ipv4Network, Ipv4Addr)> {
    if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
        || m.header.table != RouteHeader::RT_TABLE_MAIN
    {
        return None;
    }
    let (mut dst, mut via) = (None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            _ => {}
        }
    }
    let net = Ipv4Network::new(dst?, m.header.destination_prefix_length).ok()?;
    Some((net, via?))
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

impl RouteOps for NetlinkRoutes {
    async fn list(&mut self) -> Result<Vec<(Ipv4Network, Ipv4Addr)>, RouteError> {
        let all: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(RouteError::List)?;
        Ok(all.iter().filter_map(ours).collect())
    }

    async fn add(&mut self, dst: Ipv4Network, via: Ipv4Addr) -> Result<(), RouteError> {
        self.handle
            .route()
            .add(message(dst, via))
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Netlink { action: "add", dst, via, source })
    }

    async fn delete(&mut self, dst: Ipv4Network, via: Ipv4Addr) -> Result<(), RouteError> {
        match self.handle.route().del(message(dst, via)).execute().await {
            Err(e) if errno(&e) != libc::ESRCH => {
                Err(RouteError::Netlink { action: "delete", dst, via, source: e })
            }
            _ => Ok(()),
        }
    }
}
