use super::*;
use crate::model::tests::{endpoints, service};
use crate::model::Snapshot;
use crate::names::{Protocol, ServicePortName};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use serde_json::json;

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: None,
    }
}

#[test]
fn probabilities_follow_one_over_remaining() {
    assert_eq!(probability(3, 0), "0.3333333333");
    assert_eq!(probability(3, 1), "0.5000000000");
    assert_eq!(probability(4, 0), "0.2500000000");
}

fn one_port(svc: Service, eps: Endpoints, node: Option<&str>) -> ServicePortRules {
    let snap = Snapshot {
        services: vec![svc],
        endpoints: vec![eps],
    };
    let ports = snap.service_ports_on(node);
    assert_eq!(ports.len(), 1);
    render_service_port(&ports[0], &cfg())
}

fn lines(r: &ServicePortRules) -> String {
    let mut out: Vec<String> = Vec::new();
    out.extend(r.nat_services.iter().cloned());
    out.extend(r.nat_nodeports.iter().cloned());
    out.extend(r.filter_services.iter().map(|l| format!("filter {l}")));
    out.extend(r.filter_external.iter().map(|l| format!("filter {l}")));
    for c in &r.chains {
        out.push(format!(":{}", c.name));
        out.extend(c.rules.iter().cloned());
    }
    out.join("\n") + "\n"
}

/// `ns1/np` at 10.96.0.50 with `ports`.
fn np_service(ports: serde_json::Value) -> Service {
    service("ns1", "np", "10.96.0.50", ports)
}

/// `ns1/np` as a NodePort Service (port p80: 80, NodePort 30080) with
/// `externalTrafficPolicy: policy`.
fn node_port_service(policy: &str) -> Service {
    let mut svc = np_service(json!([{"name": "p80", "port": 80, "nodePort": 30080}]));
    let spec = svc.spec.as_mut().unwrap();
    spec.type_ = Some("NodePort".into());
    spec.external_traffic_policy = Some(policy.into());
    svc
}

/// `ns1/np`'s port block as a NodePort Service with `externalTrafficPolicy: policy`
/// and one endpoint on each of node-1 and node-2, rendered on `node`.
fn node_port(policy: &str, node: Option<&str>) -> ServicePortRules {
    one_port(node_port_service(policy), two_nodes_endpoints(), node)
}

/// One endpoint (port p80: 8080) on each of node-1 and node-2.
fn two_nodes_endpoints() -> Endpoints {
    endpoints(
        "ns1",
        "np",
        json!([{"addresses": [{"ip": "10.244.1.2", "nodeName": "node-1"},
                              {"ip": "10.244.2.2", "nodeName": "node-2"}],
                "ports": [{"name": "p80", "port": 8080}]}]),
    )
}

const NODE_PORT_CLUSTER: &str = r#"-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment "ns1/np:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-KP4WNIAONBKYQZEC
-A KUBE-NODEPORTS -p tcp -m comment --comment "ns1/np:p80" -m tcp --dport 30080 -j KUBE-EXT-KP4WNIAONBKYQZEC
:KUBE-SVC-KP4WNIAONBKYQZEC
-A KUBE-SVC-KP4WNIAONBKYQZEC ! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m comment --comment "ns1/np:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-KP4WNIAONBKYQZEC -m comment --comment "ns1/np:p80 -> 10.244.1.2:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-XXXX
-A KUBE-SVC-KP4WNIAONBKYQZEC -m comment --comment "ns1/np:p80 -> 10.244.2.2:8080" -j KUBE-SEP-YYYY
:KUBE-EXT-KP4WNIAONBKYQZEC
-A KUBE-EXT-KP4WNIAONBKYQZEC -m comment --comment "masquerade traffic for ns1/np:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-KP4WNIAONBKYQZEC -j KUBE-SVC-KP4WNIAONBKYQZEC
"#;

/// The block's [`lines`] with the SEP hashes of `ns1/np:p80`'s endpoints
/// 10.244.1.2:8080 and 10.244.2.2:8080 replaced by `KUBE-SEP-XXXX` and
/// `KUBE-SEP-YYYY`, so goldens stay readable.
fn placeholders(r: &ServicePortRules) -> String {
    let spn = ServicePortName {
        namespace: "ns1".into(),
        name: "np".into(),
        port: "p80".into(),
    };
    let mut out = lines(r);
    for (ep, ph) in [
        ("10.244.1.2:8080", "KUBE-SEP-XXXX"),
        ("10.244.2.2:8080", "KUBE-SEP-YYYY"),
    ] {
        let chain = endpoint_chain(&spn, Protocol::Tcp, ep.parse().unwrap());
        out = out.replace(&chain, ph);
    }
    out
}

#[test]
fn node_port_cluster_policy_golden() {
    let r = node_port("Cluster", Some("node-1"));
    let got = placeholders(&r);
    let (head, seps) = got.split_at(got.find(":KUBE-SEP-XXXX").unwrap());
    assert_eq!(head, NODE_PORT_CLUSTER);
    assert!(seps.contains("-j DNAT --to-destination 10.244.2.2:8080"));
}

const NODE_PORT_LOCAL: &str = r#":KUBE-EXT-KP4WNIAONBKYQZEC
-A KUBE-EXT-KP4WNIAONBKYQZEC -s 10.244.0.0/16 -m comment --comment "pod traffic for ns1/np:p80 external destinations" -j KUBE-SVC-KP4WNIAONBKYQZEC
-A KUBE-EXT-KP4WNIAONBKYQZEC -m comment --comment "masquerade LOCAL traffic for ns1/np:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-KP4WNIAONBKYQZEC -m comment --comment "route LOCAL traffic for ns1/np:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-KP4WNIAONBKYQZEC
-A KUBE-EXT-KP4WNIAONBKYQZEC -j KUBE-SVL-KP4WNIAONBKYQZEC
"#;

#[test]
fn node_port_local_policy_uses_local_endpoints_only() {
    let r = node_port("Local", Some("node-1"));
    let got = placeholders(&r);
    assert!(got.contains(NODE_PORT_LOCAL), "{got}");
    assert!(got.contains(
        ":KUBE-SVL-KP4WNIAONBKYQZEC\n-A KUBE-SVL-KP4WNIAONBKYQZEC -m comment --comment \"ns1/np:p80 -> 10.244.1.2:8080\" -j KUBE-SEP-XXXX\n"
    ), "{got}");
    assert!(r.filter_external.is_empty());

    // On a node without endpoints: external NodePort traffic is dropped.
    let r = node_port("Local", Some("node-3"));
    assert!(!r.chains.iter().any(|c| c.name.starts_with("KUBE-SVL-")));
    assert_eq!(
        r.filter_external,
        vec![
            r#"-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns1/np:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DROP"#
        ]
    );
}

#[test]
fn node_port_without_endpoints_is_rejected() {
    let r = one_port(
        node_port_service("Cluster"),
        endpoints("ns1", "np", json!([])),
        None,
    );
    assert!(r.chains.is_empty() && r.nat_nodeports.is_empty());
    assert_eq!(
        r.filter_external,
        vec![
            r#"-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns1/np:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable"#
        ]
    );
    assert_eq!(
        r.filter_services,
        vec![
            r#"-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment "ns1/np:p80 has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"#
        ]
    );
}

const AFFINITY: &str = r#":KUBE-SVC-KP4WNIAONBKYQZEC
-A KUBE-SVC-KP4WNIAONBKYQZEC ! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m comment --comment "ns1/np:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-KP4WNIAONBKYQZEC -m comment --comment "ns1/np:p80 -> 10.244.1.2:8080" -m recent --rcheck --seconds 600 --reap --name KUBE-SEP-XXXX --mask 255.255.255.255 --rsource -j KUBE-SEP-XXXX
-A KUBE-SVC-KP4WNIAONBKYQZEC -m comment --comment "ns1/np:p80 -> 10.244.2.2:8080" -m recent --rcheck --seconds 600 --reap --name KUBE-SEP-YYYY --mask 255.255.255.255 --rsource -j KUBE-SEP-YYYY
-A KUBE-SVC-KP4WNIAONBKYQZEC -m comment --comment "ns1/np:p80 -> 10.244.1.2:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-XXXX
-A KUBE-SVC-KP4WNIAONBKYQZEC -m comment --comment "ns1/np:p80 -> 10.244.2.2:8080" -j KUBE-SEP-YYYY
:KUBE-SEP-XXXX
-A KUBE-SEP-XXXX -s 10.244.1.2/32 -m comment --comment "ns1/np:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-XXXX -p tcp -m comment --comment "ns1/np:p80" -m recent --set --name KUBE-SEP-XXXX --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.2:8080
"#;

#[test]
fn session_affinity_client_ip_golden() {
    let mut svc = np_service(json!([{"name": "p80", "port": 80}]));
    let spec = svc.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config =
        Some(serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 600}})).unwrap());
    let r = one_port(svc, two_nodes_endpoints(), None);
    let got = placeholders(&r);
    assert!(got.contains(AFFINITY), "{got}");
}

#[test]
fn client_ip_affinity_without_timeout_uses_kube_proxys_three_hours() {
    let mut svc = np_service(json!([{"name": "p80", "port": 80}]));
    svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let r = one_port(svc, two_nodes_endpoints(), None);
    let svc_rules = &r.chains[0].rules;
    assert_eq!(
        svc_rules
            .iter()
            .filter(|l| l.contains("-m recent --rcheck --seconds 10800 --reap"))
            .count(),
        2,
        "{svc_rules:#?}"
    );
}
