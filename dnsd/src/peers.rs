//! Dead replicas leave kube-dns. A dnsd that exits normally removes its own address
//! from the `kube-system/kube-dns` Endpoints, but one that is killed (SIGKILL, OOM, a
//! lost node) cannot; its address would keep taking half of the lookups that
//! kube-proxy spreads over the replicas. In Kubernetes the kubelet's readiness probe
//! and the endpoints controller catch that; kube-dns has no selector here, so every
//! dnsd probes its peers instead: each address in the Endpoints other than its own
//! gets a DNS query (the zone's SOA) every [`PROBE_INTERVAL`], and after
//! [`FAILURES_TO_REMOVE`] probes in a row without any answer it is removed. A probe
//! refused outright (ICMP port unreachable: nothing listens there, as right after a
//! SIGKILL) removes it at once: that is the kernel's word, not a slow answer. A replica
//! that was removed by mistake (a partition) adds itself back at its next
//! registration check.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use kube::{Api, Client};
use tokio::net::UdpSocket;

use crate::register::{self, Registration, KUBE_DNS_NAME, KUBE_DNS_NAMESPACE};

/// Time between two probe rounds. With [`FAILURES_TO_REMOVE`] a dead replica leaves
/// after about 3 s: much faster than a kubelet's readiness probe (10 s x 3), slow
/// enough that a live replica on a loaded 2-core node is not dropped for a late answer.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes in a row without an answer before a peer is removed.
pub const FAILURES_TO_REMOVE: u32 = 3;

/// The UDP `dns` address of every replica in `endpoints` except `own`.
pub fn peers(endpoints: &Endpoints, own: IpAddr) -> Vec<SocketAddr> {
    let mut peers = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let port = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.protocol.as_deref() == Some("UDP"))
            .and_then(|p| u16::try_from(p.port).ok());
        let Some(port) = port else { continue };
        for address in subset.addresses.iter().flatten() {
            match address.ip.parse::<IpAddr>() {
                Ok(ip) if ip != own => peers.push(SocketAddr::new(ip, port)),
                _ => {}
            }
        }
    }
    peers
}

/// What one probe of a peer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A response with the query's id came back in time.
    Answered,
    /// The peer's host said nothing listens on the port (ECONNREFUSED).
    Refused,
    /// No answer within the timeout.
    Silent,
}

/// Consecutive probe failures per peer; says which ones to remove.
#[derive(Debug, Default)]
pub struct Failures(HashMap<SocketAddr, u32>);

impl Failures {
    /// Records one round: `results` holds every current peer and whether it answered.
    /// Returns the peers that reached [`FAILURES_TO_REMOVE`]. Peers no longer listed
    /// are forgotten.
    pub fn record(&mut self, results: &[(SocketAddr, Probe)]) -> Vec<SocketAddr> {
        self.0
            .retain(|peer, _| results.iter().any(|(p, _)| p == peer));
        let mut dead = Vec::new();
        for &(peer, probe) in results {
            let count = self.0.entry(peer).or_insert(0);
            *count = match probe {
                Probe::Answered => 0,
                Probe::Refused => FAILURES_TO_REMOVE,
                Probe::Silent => *count + 1,
            };
            if *count >= FAILURES_TO_REMOVE {
                dead.push(peer);
                *count = 0;
            }
        }
        dead
    }
}

/// A query for `zone`'s SOA (`zone` in wire form) with id `id`.
pub fn probe_query(zone: &[u8], id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(zone.len() + 16);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(zone);
    q.extend_from_slice(&[0, 6, 0, 1]);
    q
}

/// Whether `peer` answers `query` (any response with its id) in time.
async fn answers(peer: SocketAddr, query: &[u8]) -> Probe {
    let local: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let refused = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Silent,
    };
    let exchange = async {
        let socket = UdpSocket::bind(local).await.map_err(refused)?;
        socket.connect(peer).await.map_err(refused)?;
        socket.send(query).await.map_err(refused)?;
        let mut buf = [0u8; 512];
        loop {
            let n = socket.recv(&mut buf).await.map_err(refused)?;
            if n >= 3 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
                return Ok::<Probe, Probe>(Probe::Answered);
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Ok(Ok(probe) | Err(probe)) => probe,
        Err(_) => Probe::Silent,
    }
}

/// Probes the other replicas in kube-dns forever and removes the ones that stopped
/// answering. `zone` is the cluster zone in wire form.
pub async fn prune_dead_peers(client: Client, own: Registration, zone: Vec<u8>) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), KUBE_DNS_NAMESPACE);
    let mut failures = Failures::default();
    let mut id: u16 = 0x5eed;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let endpoints = match api.get_opt(KUBE_DNS_NAME).await {
            Ok(Some(endpoints)) => endpoints,
            Ok(None) => continue,
            Err(error) => {
                tracing::debug!(%error, "reading kube-dns for the peer probe failed");
                continue;
            }
        };
        id = id.wrapping_add(1);
        let query = probe_query(&zone, id);
        let peers = peers(&endpoints, own.address);
        let probes = peers.iter().map(|&peer| {
            let query = &query;
            async move { (peer, answers(peer, query).await) }
        });
        let results = futures::future::join_all(probes).await;
        for peer in failures.record(&results) {
            tracing::warn!(%peer, "a kube-dns replica stopped answering, removing it");
            let dead = Registration {
                address: peer.ip(),
                port: peer.port(),
                node_name: None,
            };
            if let Err(error) = register::deregister(&client, &dead).await {
                tracing::warn!(%error, %peer, "removing a dead replica failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peers_are_the_other_udp_addresses() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "bad"}],
                         "notReadyAddresses": [{"ip": "10.0.0.3"}],
                         "ports": [{"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                                   {"name": "dns", "port": 53, "protocol": "UDP"}]}]
        }))
        .unwrap();
        let own: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(peers(&endpoints, own), vec!["10.0.0.2:53".parse().unwrap()]);
    }

    #[test]
    fn a_peer_is_removed_after_consecutive_failures_only() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.2:53".parse().unwrap(),
            "10.0.0.3:53".parse().unwrap(),
        );
        let mut failures = Failures::default();
        let silent = [(a, Probe::Silent), (b, Probe::Silent)];
        for _ in 1..FAILURES_TO_REMOVE {
            assert!(failures.record(&silent).is_empty());
        }
        // One answer starts the counts over.
        assert!(failures.record(&[(a, Probe::Answered), (b, Probe::Answered)]).is_empty());
        for _ in 1..FAILURES_TO_REMOVE {
            assert!(failures.record(&silent).is_empty());
        }
        assert_eq!(failures.record(&silent), vec![a, b]);
    }

    #[test]
    fn a_refused_probe_removes_the_peer_at_once() {
        let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.2:53".parse().unwrap(), "10.0.0.3:53".parse().unwrap());
        let mut failures = Failures::default();
        assert_eq!(failures.record(&[(a, Probe::Refused), (b, Probe::Silent)]), vec![a]);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_live_one_answers() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let query = probe_query(b"\x07cluster\x05local\x00", 9);
        assert_eq!(answers(addr, &query).await, Probe::Refused);
        let live = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = live.recv_from(&mut buf).await {
                buf[2] |= 0x80;
                let _ = live.send_to(&buf[..n], from).await;
            }
        });
        assert_eq!(answers(live_addr, &query).await, Probe::Answered);
    }

    #[test]
    fn the_probe_is_a_soa_query() {
        let q = probe_query(b"\x07cluster\x05local\x00", 7);
        let parsed = crate::wire::parse(&q).unwrap();
        assert_eq!((parsed.id(), parsed.qtype), (7, 6));
    }
}
