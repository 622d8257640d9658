//! Names of kube-proxy's iptables objects: the `ServicePortName` ("ns/svc:port") that
//! comments and hashes are built from, and the `KUBE-SVC-`/`KUBE-SEP-` chain names,
//! hashed exactly like kube-proxy's `servicePortChainName` and
//! `servicePortEndpointChainName` so a learner's knowledge of kube-proxy holds here.

use std::fmt;
use std::net::SocketAddrV4;

use sha2::{Digest, Sha256};

/// Prefix of the per-service-port chain.
pub const SVC_CHAIN_PREFIX: &str = "KUBE-SVC-";
/// Prefix of the per-endpoint chain.
pub const SEP_CHAIN_PREFIX: &str = "KUBE-SEP-";
/// Prefix of the per-service-port chain for external (NodePort) traffic.
pub const EXT_CHAIN_PREFIX: &str = "KUBE-EXT-";
/// Prefix of the per-service-port chain of local endpoints only
/// (`externalTrafficPolicy: Local`).
pub const SVL_CHAIN_PREFIX: &str = "KUBE-SVL-";

/// A port of a Service, named like kube-proxy's `ServicePortName`:
/// `ns/name:port`, or `ns/name` when the port has no name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (may be empty for single-port Services).
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API's spelling (`TCP`, `UDP`, `SCTP`); `None` defaults to TCP.
    pub fn from_api(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lowercase name as iptables (and kube-proxy's hash) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// First 16 characters of base32(sha256(input)), kube-proxy's chain-name hash.
fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut encoded = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
    encoded.truncate(16);
    encoded
}

/// `KUBE-SVC-<hash>` for a service port (kube-proxy's `servicePortChainName`).
pub fn service_chain(spn: &ServicePortName, proto: Protocol) -> String {
    format!(
        "{SVC_CHAIN_PREFIX}{}",
        hash16(&format!("{spn}{}", proto.as_str()))
    )
}

/// `KUBE-EXT-<hash>` (kube-proxy's `serviceExternalChainName`): same hash as the SVC.
pub fn external_chain(spn: &ServicePortName, proto: Protocol) -> String {
    format!(
        "{EXT_CHAIN_PREFIX}{}",
        hash16(&format!("{spn}{}", proto.as_str()))
    )
}

/// `KUBE-SVL-<hash>` (kube-proxy's `serviceLocalChainName`): same hash as the SVC.
pub fn local_chain(spn: &ServicePortName, proto: Protocol) -> String {
    format!(
        "{SVL_CHAIN_PREFIX}{}",
        hash16(&format!("{spn}{}", proto.as_str()))
    )
}

/// `KUBE-SEP-<hash>` for one endpoint of a service port
/// (kube-proxy's `servicePortEndpointChainName`).
pub fn endpoint_chain(spn: &ServicePortName, proto: Protocol, ep: SocketAddrV4) -> String {
    format!(
        "{SEP_CHAIN_PREFIX}{}",
        hash16(&format!("{spn}{}{ep}", proto.as_str()))
    )
}

/// True for chains this proxier creates per service and may delete when stale.
pub fn is_per_service_chain(chain: &str) -> bool {
    [
        SVC_CHAIN_PREFIX,
        SEP_CHAIN_PREFIX,
        EXT_CHAIN_PREFIX,
        SVL_CHAIN_PREFIX,
    ]
    .iter()
    .any(|p| chain.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: ns.into(),
            name: name.into(),
            port: port.into(),
        }
    }

    #[test]
    fn chain_names_match_kube_proxy_test_fixtures() {
        // Values from kube-proxy's pkg/proxy/iptables/proxier_test.go.
        let p = spn("ns1", "svc1", "p80");
        assert_eq!(
            service_chain(&p, Protocol::Tcp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        let ep: SocketAddrV4 = "10.180.0.1:80".parse().unwrap();
        assert_eq!(
            endpoint_chain(&p, Protocol::Tcp, ep),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn chain_names_match_every_kubeadm_cluster() {
        // Seen on any kubeadm/kind cluster: the kubernetes and kube-dns Services.
        let k = spn("default", "kubernetes", "https");
        assert_eq!(
            service_chain(&k, Protocol::Tcp),
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
        let dns = spn("kube-system", "kube-dns", "dns");
        assert_eq!(
            service_chain(&dns, Protocol::Udp),
            "KUBE-SVC-TCOU7JCQXEZGVUNU"
        );
        let dns_tcp = spn("kube-system", "kube-dns", "dns-tcp");
        assert_eq!(
            service_chain(&dns_tcp, Protocol::Tcp),
            "KUBE-SVC-ERIFXISQEP7F7OF4"
        );
    }

    #[test]
    fn unnamed_port_has_no_colon() {
        assert_eq!(spn("default", "web", "").to_string(), "default/web");
        assert_eq!(
            spn("default", "web", "http").to_string(),
            "default/web:http"
        );
    }
}
