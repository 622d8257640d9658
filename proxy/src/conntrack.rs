//! Stale UDP conntrack entries (kube-proxy's `conntrack.CleanStaleEntries`): UDP has
//! no connection to end, so a flow's conntrack entry keeps DNATing to an endpoint
//! after the endpoint is gone. When a UDP Service port loses an endpoint (removed,
//! Service deleted, or down to zero endpoints) the entries NATed to it are deleted;
//! when a UDP Service port gets its first endpoint, entries to its ClusterIP (made
//! while it was rejected) are deleted too. This module plans the `conntrack -D`
//! filters; the applier runs them.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::model::ServicePortInfo;
use crate::names::{Protocol, ServicePortName};

/// Most `conntrack -D` runs per sync; more stale endpoints wait for the next one.
pub const MAX_DELETES_PER_SYNC: usize = 256;

/// What a UDP service port looked like when last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPort {
    /// ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// NodePort, if any.
    pub node_port: Option<u16>,
    /// Endpoints.
    pub endpoints: BTreeSet<SocketAddrV4>,
}

/// UDP service ports by name.
pub type UdpPorts = HashMap<ServicePortName, UdpPort>;

/// The UDP ports among `ports`.
pub fn udp_ports<'a>(ports: impl IntoIterator<Item = &'a ServicePortInfo>) -> UdpPorts {
    ports
        .into_iter()
        .filter(|p| p.protocol == Protocol::Udp)
        .map(|p| {
            let port = UdpPort {
                cluster_ip: p.cluster_ip,
                node_port: p.node_port,
                endpoints: p.endpoints.iter().copied().collect(),
            };
            (p.name.clone(), port)
        })
        .collect()
}

/// `conntrack` arguments (after `-D`) for every entry that went stale between
/// `old` and `new`, at most [`MAX_DELETES_PER_SYNC`], sorted.
pub fn stale_filters(old: &UdpPorts, new: &UdpPorts) -> Vec<Vec<String>> {
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    let none = BTreeSet::new();
    for (name, was) in old {
        let now = new.get(name);
        let kept = now.map_or(&none, |n| &n.endpoints);
        for ep in was.endpoints.difference(kept) {
            let dnat = ep.ip().to_string();
            out.insert(args(&[
                "--orig-dst",
                &was.cluster_ip.to_string(),
                "--dst-nat",
                &dnat,
            ]));
            if let Some(np) = was.node_port {
                out.insert(args(&[
                    "--orig-port-dst",
                    &np.to_string(),
                    "--dst-nat",
                    &dnat,
                ]));
            }
        }
    }
    for (name, now) in new {
        let had = old.get(name).is_some_and(|o| !o.endpoints.is_empty());
        if !had && !now.endpoints.is_empty() {
            out.insert(args(&["--orig-dst", &now.cluster_ip.to_string()]));
        }
    }
    out.into_iter().take(MAX_DELETES_PER_SYNC).collect()
}

fn args(rest: &[&str]) -> Vec<String> {
    ["-D", "-p", "udp"]
        .iter()
        .chain(rest)
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, np: Option<u16>, eps: &[&str]) -> UdpPort {
        UdpPort {
            cluster_ip: ip.parse().unwrap(),
            node_port: np,
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn spn(name: &str) -> ServicePortName {
        ServicePortName {
            namespace: "ns".into(),
            name: name.into(),
            port: "dns".into(),
        }
    }

    #[test]
    fn removed_endpoint_and_deleted_service_are_cleared() {
        let old: UdpPorts = [
            (
                spn("a"),
                port(
                    "10.96.0.10",
                    Some(30053),
                    &["10.244.1.2:53", "10.244.1.3:53"],
                ),
            ),
            (spn("gone"), port("10.96.0.11", None, &["10.244.1.4:53"])),
        ]
        .into();
        let new: UdpPorts = [(
            spn("a"),
            port("10.96.0.10", Some(30053), &["10.244.1.3:53"]),
        )]
        .into();
        let got = stale_filters(&old, &new);
        let want: Vec<Vec<String>> = [
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2",
            "-D -p udp --orig-dst 10.96.0.11 --dst-nat 10.244.1.4",
            "-D -p udp --orig-port-dst 30053 --dst-nat 10.244.1.2",
        ]
        .iter()
        .map(|s| s.split(' ').map(String::from).collect())
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn first_endpoint_clears_entries_to_the_cluster_ip() {
        let old: UdpPorts = [(spn("a"), port("10.96.0.10", None, &[]))].into();
        let new: UdpPorts = [(spn("a"), port("10.96.0.10", None, &["10.244.1.3:53"]))].into();
        assert_eq!(
            stale_filters(&old, &new),
            vec!["-D -p udp --orig-dst 10.96.0.10"
                .split(' ')
                .map(String::from)
                .collect::<Vec<_>>()]
        );
        assert!(stale_filters(&new, &new).is_empty());
    }
}
