//! The proxier's view of the cluster: a `Snapshot` of Services and Endpoints, flattened
//! into one `ServicePortInfo` per proxied Service port (kube-proxy's `ServicePort` +
//! its ready endpoints). Headless (`clusterIP: None`) and ExternalName Services get none.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;

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
    /// The ready endpoints on this node (endpoint `nodeName` == the proxy's node).
    pub local_endpoints: Vec<SocketAddrV4>,
    /// The NodePort, for `type: NodePort` and `LoadBalancer` Services.
    pub node_port: Option<u16>,
    /// `externalTrafficPolicy: Local`: external traffic only to local endpoints.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity_seconds: Option<u32>,
}

/// kube-proxy's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

type Key = (String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Snapshot {
    /// Every proxied service port, sorted by `ServicePortName` then protocol, as seen
    /// from no particular node (no endpoint is local).
    pub fn service_ports(&self) -> Vec<ServicePortInfo> {
        self.service_ports_on(None)
    }

    /// Every proxied service port as seen from node `node` (which decides the local
    /// endpoints), sorted by `ServicePortName` then protocol.
    pub fn service_ports_on(&self, node: Option<&str>) -> Vec<ServicePortInfo> {
        let eps: BTreeMap<Key, &Endpoints> = self
            .endpoints
            .iter()
            .map(|e| (key_of(&e.metadata), e))
            .collect();
        let mut out: Vec<ServicePortInfo> = self
            .services
            .iter()
            .flat_map(|svc| ports_of(svc, eps.get(&key_of(&svc.metadata)).copied(), node))
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

/// The ClientIP affinity timeout of a Service, if it asks for affinity.
fn affinity_seconds(svc: &Service) -> Option<u32> {
    let spec = svc.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0);
    Some(timeout.unwrap_or(DEFAULT_AFFINITY_SECONDS))
}

/// The proxied ports of one Service with its Endpoints (if any), in spec order,
/// as seen from node `node`.
pub(crate) fn ports_of(
    svc: &Service,
    eps: Option<&Endpoints>,
    node: Option<&str>,
) -> Vec<ServicePortInfo> {
    let Some(cluster_ip) = proxied_cluster_ip(svc) else {
        return Vec::new();
    };
    let (namespace, name) = key_of(&svc.metadata);
    let spec = svc.spec.as_ref();
    let has_node_ports = matches!(
        spec.and_then(|s| s.type_.as_deref()),
        Some("NodePort" | "LoadBalancer")
    );
    let external_local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    let affinity = affinity_seconds(svc);
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
            let all = ready_endpoints(eps, sp, protocol);
            let node_port = sp
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| has_node_ports && *p > 0);
            Some(ServicePortInfo {
                endpoints: all.iter().map(|(a, _)| *a).collect(),
                local_endpoints: all
                    .iter()
                    .filter(|(_, n)| node.is_some() && n.as_deref() == node)
                    .map(|(a, _)| *a)
                    .collect(),
                node_port,
                external_local,
                affinity_seconds: affinity,
                name: spn,
                cluster_ip,
                port,
                protocol,
            })
        })
        .collect()
}

/// An endpoint address and the node it runs on.
type Located = (SocketAddrV4, Option<String>);

/// Ready addresses of `eps` for the endpoint port with the same name (and protocol)
/// as the service port `sp`, with their nodes.
fn ready_endpoints(eps: Option<&Endpoints>, sp: &ServicePort, proto: Protocol) -> Vec<Located> {
    let want = sp.name.as_deref().unwrap_or("");
    let subsets = eps.and_then(|e| e.subsets.as_ref());
    let mut out: Vec<Located> = subsets
        .into_iter()
        .flatten()
        .flat_map(|ss| subset_endpoints(ss, want, proto))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn subset_endpoints(ss: &EndpointSubset, want: &str, proto: Protocol) -> Vec<Located> {
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
        .filter_map(|a| Some((a.ip.parse::<Ipv4Addr>().ok()?, a.node_name.clone())))
        .map(|(ip, node)| (SocketAddrV4::new(ip, port), node))
        .collect()
}

/// Label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// EndpointSlices (discovery.k8s.io/v1) folded into one Endpoints object per Service,
/// one subset per slice: ready endpoints (`conditions.ready` not false) become
/// `addresses` with their `nodeName`, the rest `notReadyAddresses`. IPv4 slices only.
pub fn endpoints_from_slices(slices: &[EndpointSlice]) -> Vec<Endpoints> {
    let mut by_service: BTreeMap<Key, Vec<EndpointSubset>> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let labels = slice.metadata.labels.as_ref();
        let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service
            .entry((ns, svc.clone()))
            .or_default()
            .push(subset_of_slice(slice));
    }
    by_service
        .into_iter()
        .map(|((ns, name), subsets)| Endpoints {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some(ns),
                name: Some(name),
                ..Default::default()
            },
            subsets: Some(subsets),
        })
        .collect()
}

fn subset_of_slice(slice: &EndpointSlice) -> EndpointSubset {
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for ep in &slice.endpoints {
        let is_ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
        for ip in ep.addresses.iter().take(1) {
            let addr = EndpointAddress {
                ip: ip.clone(),
                node_name: ep.node_name.clone(),
                ..Default::default()
            };
            if is_ready {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
        }
    }
    let ports = slice.ports.iter().flatten().filter_map(|p| {
        Some(EndpointPort {
            name: p.name.clone(),
            port: p.port?,
            protocol: p.protocol.clone(),
            ..Default::default()
        })
    });
    EndpointSubset {
        addresses: Some(ready),
        not_ready_addresses: Some(not_ready),
        ports: Some(ports.collect()),
    }
}

/// The Endpoints to proxy: Services with EndpointSlices use them, the others their
/// Endpoints object.
pub fn merge_endpoints(endpoints: Vec<Endpoints>, slices: &[EndpointSlice]) -> Vec<Endpoints> {
    let from_slices = endpoints_from_slices(slices);
    let covered: std::collections::BTreeSet<Key> =
        from_slices.iter().map(|e| key_of(&e.metadata)).collect();
    endpoints
        .into_iter()
        .filter(|e| !covered.contains(&key_of(&e.metadata)))
        .chain(from_slices)
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

    #[test]
    fn endpoint_slices_are_understood_and_preferred() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns1", "name": "svc1-abc",
                         "labels": {"kubernetes.io/service-name": "svc1"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": false}},
                {"addresses": ["10.244.2.7"], "nodeName": "n2"}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let stale = endpoints(
            "ns1",
            "svc1",
            json!([{"addresses": [{"ip": "10.244.9.9"}], "ports": [{"name": "http", "port": 1}]}]),
        );
        let snap = Snapshot {
            services: vec![service(
                "ns1",
                "svc1",
                "10.96.0.20",
                json!([{"name": "http", "port": 80}]),
            )],
            endpoints: merge_endpoints(vec![stale], &[slice]),
        };
        let ports = snap.service_ports_on(Some("n1"));
        assert_eq!(
            ports[0].endpoints,
            vec![
                "10.244.1.5:8080".parse().unwrap(),
                "10.244.2.7:8080".parse().unwrap()
            ]
        );
        assert_eq!(
            ports[0].local_endpoints,
            vec!["10.244.1.5:8080".parse().unwrap()]
        );
    }
}
