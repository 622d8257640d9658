//! The proxier's view of the cluster: a `Snapshot` of Services and Endpoints, flattened
//! into one `ServicePortInfo` per proxied Service port (kube-proxy's `ServicePort` +
//! its ready endpoints). Headless (`clusterIP: None`) and ExternalName Services get none.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints, Service, ServicePort};

use crate::names::{Protocol, ServicePortName};

/// Services and Endpoints as last seen from the API server.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// All Services, any order.
    pub services: Vec<Service>,
    /// All Endpoints, any order.
    pub endpoints: Vec<Endpoints>,
}

/// One Service port with a ClusterIP and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortInfo {
    /// `ns/svc:port`.
    pub name: ServicePortName,
    /// The Service's IPv4 ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// Ready endpoints (`ip:targetPort`), sorted and deduplicated.
    pub endpoints: Vec<SocketAddrV4>,
}

type Key = (String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Snapshot {
    /// Every proxied service port, sorted by `ServicePortName` then protocol.
    pub fn service_ports(&self) -> Vec<ServicePortInfo> {
        let eps: BTreeMap<Key, &Endpoints> = self
            .endpoints
            .iter()
            .map(|e| (key_of(&e.metadata), e))
            .collect();
        let mut out: Vec<ServicePortInfo> = self
            .services
            .iter()
            .flat_map(|svc| ports_of(svc, eps.get(&key_of(&svc.metadata)).copied()))
            .collect();
        out.sort_by(|a, b| (&a.name, a.protocol).cmp(&(&b.name, b.protocol)));
        out
    }
}

/// The IPv4 ClusterIP of a Service that kube-proxy would program, if any.
fn proxied_cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // "None" (headless) and "" do not parse; IPv6 is not proxied here.
    spec.cluster_ip.as_deref()?.parse().ok()
}

fn ports_of(svc: &Service, eps: Option<&Endpoints>) -> Vec<ServicePortInfo> {
    let Some(cluster_ip) = proxied_cluster_ip(svc) else {
        return Vec::new();
    };
    let (namespace, name) = key_of(&svc.metadata);
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let protocol = Protocol::from_api(sp.protocol.as_deref())?;
            let port = u16::try_from(sp.port).ok()?;
            let spn = ServicePortName {
                namespace: namespace.clone(),
                name: name.clone(),
                port: sp.name.clone().unwrap_or_default(),
            };
            Some(ServicePortInfo {
                endpoints: ready_endpoints(eps, sp, protocol),
                name: spn,
                cluster_ip,
                port,
                protocol,
            })
        })
        .collect()
}

/// Ready addresses of `eps` for the endpoint port with the same name (and protocol)
/// as the service port `sp`.
fn ready_endpoints(
    eps: Option<&Endpoints>,
    sp: &ServicePort,
    proto: Protocol,
) -> Vec<SocketAddrV4> {
    let want = sp.name.as_deref().unwrap_or("");
    let subsets = eps.and_then(|e| e.subsets.as_ref());
    let mut out: Vec<SocketAddrV4> = subsets
        .into_iter()
        .flatten()
        .flat_map(|ss| subset_endpoints(ss, want, proto))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn subset_endpoints(ss: &EndpointSubset, want: &str, proto: Protocol) -> Vec<SocketAddrV4> {
    let port = ss.ports.iter().flatten().find(|p| {
        p.name.as_deref().unwrap_or("") == want
            && Protocol::from_api(p.protocol.as_deref()) == Some(proto)
    });
    let Some(port) = port
        .and_then(|p| u16::try_from(p.port).ok())
        .filter(|p| *p > 0)
    else {
        return Vec::new();
    };
    ss.addresses
        .iter()
        .flatten()
        .filter_map(|a| a.ip.parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddrV4::new(ip, port))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    pub(crate) fn endpoints(ns: &str, name: &str, subsets: serde_json::Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "subsets": subsets
        }))
        .unwrap()
    }

    #[test]
    fn matches_endpoint_ports_by_name_and_uses_ready_addresses_only() {
        let snap = Snapshot {
            services: vec![service(
                "ns1",
                "svc1",
                "10.96.0.20",
                json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
            )],
            endpoints: vec![endpoints(
                "ns1",
                "svc1",
                json!([{
                    "addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.1.2"}],
                    "notReadyAddresses": [{"ip": "10.244.1.9"}],
                    "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]
                }]),
            )],
        };
        let ports = snap.service_ports();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].name.to_string(), "ns1/svc1:dns");
        assert_eq!(ports[0].protocol, Protocol::Udp);
        assert_eq!(
            ports[0].endpoints,
            vec![
                "10.244.1.2:5353".parse().unwrap(),
                "10.244.1.3:5353".parse().unwrap()
            ]
        );
        assert_eq!(ports[1].name.to_string(), "ns1/svc1:http");
        assert_eq!(ports[1].endpoints.len(), 2);
        assert_eq!(ports[1].endpoints[0].port(), 8080);
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let mut ext = service("ns", "ext", "", json!([{"port": 80}]));
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let snap = Snapshot {
            services: vec![
                service("ns", "headless", "None", json!([{"port": 80}])),
                ext,
            ],
            endpoints: vec![],
        };
        assert!(snap.service_ports().is_empty());
    }

    #[test]
    fn service_without_endpoints_has_empty_list() {
        let snap = Snapshot {
            services: vec![service("ns", "web", "10.96.0.30", json!([{"port": 80}]))],
            endpoints: vec![],
        };
        let ports = snap.service_ports();
        assert_eq!(ports.len(), 1);
        assert!(ports[0].endpoints.is_empty());
        assert_eq!(ports[0].name.to_string(), "ns/web");
    }
}
