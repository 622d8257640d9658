use super::*;
use crate::model::tests::{endpoints, service};
use crate::names::endpoint_chain;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use serde_json::json;

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: None,
    }
}

/// kube-proxy's fixture Service ns1/svc1:p80 with two endpoints, plus one Service
/// without endpoints and one headless Service.
fn snapshot() -> Snapshot {
    Snapshot {
        services: vec![
            service(
                "ns1",
                "svc1",
                "10.96.0.41",
                json!([{"name": "p80", "port": 80}]),
            ),
            service(
                "ns2",
                "empty",
                "10.96.0.42",
                json!([{"name": "p80", "port": 80}]),
            ),
            service(
                "ns3",
                "headless",
                "None",
                json!([{"name": "p80", "port": 80}]),
            ),
        ],
        endpoints: vec![endpoints(
            "ns1",
            "svc1",
            json!([{"addresses": [{"ip": "10.180.0.1"}, {"ip": "10.180.0.2"}],
                    "ports": [{"name": "p80", "port": 80}]}]),
        )],
    }
}

const GOLDEN: &str = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A KUBE-SERVICES -d 10.96.0.42/32 -p tcp -m comment --comment "ns2/empty:p80 has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-LXVODXWDISEETFEF - [0:0]
-A KUBE-SERVICES -d 10.96.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.244.0.0/16 -d 10.96.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j KUBE-SEP-LXVODXWDISEETFEF
-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-LXVODXWDISEETFEF -s 10.180.0.2/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-LXVODXWDISEETFEF -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 10.180.0.2:80
COMMIT
"#;

#[test]
fn renders_kube_proxy_layout() {
    let got = render(&snapshot(), &cfg());
    assert_eq!(got, GOLDEN);
}

#[test]
fn probabilities_follow_one_over_remaining() {
    assert_eq!(probability(3, 0), "0.3333333333");
    assert_eq!(probability(3, 1), "0.5000000000");
    assert_eq!(probability(4, 0), "0.2500000000");
}

#[test]
fn skipped_blocks_keep_their_jump_but_not_their_chains() {
    let blocks = render_blocks(&snapshot(), &cfg());
    let svc_idx = blocks.iter().position(|b| !b.chains.is_empty()).unwrap();
    let out = RestoreInput::new(&blocks).skip_chains_of(svc_idx).render();
    assert!(out.contains("-j KUBE-SVC-XPGD46QRK7WJZT7O\n"));
    assert!(!out.contains(":KUBE-SVC-XPGD46QRK7WJZT7O"));
    assert!(!out.contains("KUBE-SEP-"));
}

#[test]
fn stale_chains_are_flushed_then_deleted() {
    let blocks = render_blocks(&Snapshot::default(), &cfg());
    let out = RestoreInput::new(&blocks)
        .delete_chains(vec!["KUBE-SVC-OLD".into(), "KUBE-SEP-OLD".into()])
        .render();
    let decl = out.find(":KUBE-SVC-OLD - [0:0]").unwrap();
    let del = out.find("-X KUBE-SVC-OLD\n").unwrap();
    assert!(decl < del);
    assert!(out.contains("-X KUBE-SEP-OLD\n"));
    assert!(out.ends_with("-X KUBE-SEP-OLD\nCOMMIT\n"));
}

#[test]
fn three_endpoints_split_a_third_each() {
    let snap = Snapshot {
        services: vec![service(
            "ns",
            "web",
            "10.96.0.50",
            json!([{"port": 80, "protocol": "UDP"}]),
        )],
        endpoints: vec![endpoints(
            "ns",
            "web",
            json!([{"addresses": [{"ip": "10.244.0.2"}, {"ip": "10.244.0.3"}, {"ip": "10.244.0.4"}],
                    "ports": [{"port": 53, "protocol": "UDP"}]}]),
        )],
    };
    let out = render(&snap, &cfg());
    assert!(out.contains("--comment \"ns/web -> 10.244.0.2:53\" -m statistic --mode random --probability 0.3333333333"));
    assert!(out.contains("--comment \"ns/web -> 10.244.0.3:53\" -m statistic --mode random --probability 0.5000000000"));
    assert!(out.contains(
        "-p udp -m comment --comment \"ns/web\" -m udp -j DNAT --to-destination 10.244.0.4:53"
    ));
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

fn node_port_service(policy: &str) -> Service {
    let mut svc = service(
        "ns1",
        "np",
        "10.96.0.50",
        json!([{"name": "p80", "port": 80, "nodePort": 30080}]),
    );
    let spec = svc.spec.as_mut().unwrap();
    spec.type_ = Some("NodePort".into());
    spec.external_traffic_policy = Some(policy.into());
    svc
}

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

/// Replaces the SEP hashes by placeholders so goldens stay readable.
fn placeholders(text: &str, info_eps: &[(&str, &str)]) -> String {
    let spn = crate::names::ServicePortName {
        namespace: "ns1".into(),
        name: "np".into(),
        port: "p80".into(),
    };
    let mut out = text.to_string();
    for (ep, ph) in info_eps {
        let chain = endpoint_chain(&spn, crate::names::Protocol::Tcp, ep.parse().unwrap());
        out = out.replace(&chain, ph);
    }
    out
}

#[test]
fn node_port_cluster_policy_golden() {
    let r = one_port(
        node_port_service("Cluster"),
        two_nodes_endpoints(),
        Some("node-1"),
    );
    let got = placeholders(
        &lines(&r),
        &[
            ("10.244.1.2:8080", "KUBE-SEP-XXXX"),
            ("10.244.2.2:8080", "KUBE-SEP-YYYY"),
        ],
    );
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
    let r = one_port(
        node_port_service("Local"),
        two_nodes_endpoints(),
        Some("node-1"),
    );
    let got = placeholders(
        &lines(&r),
        &[
            ("10.244.1.2:8080", "KUBE-SEP-XXXX"),
            ("10.244.2.2:8080", "KUBE-SEP-YYYY"),
        ],
    );
    assert!(got.contains(NODE_PORT_LOCAL), "{got}");
    assert!(got.contains(
        ":KUBE-SVL-KP4WNIAONBKYQZEC\n-A KUBE-SVL-KP4WNIAONBKYQZEC -m comment --comment \"ns1/np:p80 -> 10.244.1.2:8080\" -j KUBE-SEP-XXXX\n"
    ), "{got}");
    assert!(r.filter_external.is_empty());

    // On a node without endpoints: external NodePort traffic is dropped.
    let r = one_port(
        node_port_service("Local"),
        two_nodes_endpoints(),
        Some("node-3"),
    );
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
    let mut svc = service(
        "ns1",
        "np",
        "10.96.0.50",
        json!([{"name": "p80", "port": 80}]),
    );
    let spec = svc.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config =
        Some(serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 600}})).unwrap());
    let r = one_port(svc, two_nodes_endpoints(), None);
    let got = placeholders(
        &lines(&r),
        &[
            ("10.244.1.2:8080", "KUBE-SEP-XXXX"),
            ("10.244.2.2:8080", "KUBE-SEP-YYYY"),
        ],
    );
    assert!(got.contains(AFFINITY), "{got}");
}

#[test]
fn several_ports_per_service_over_tcp_udp_and_sctp_get_their_own_chains() {
    let snap = Snapshot {
        services: vec![service(
            "ns1",
            "multi",
            "10.96.0.60",
            json!([{"name": "web", "port": 80},
                   {"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "sig", "port": 3868, "protocol": "SCTP"}]),
        )],
        endpoints: vec![endpoints(
            "ns1",
            "multi",
            json!([{"addresses": [{"ip": "10.244.0.9"}],
                    "ports": [{"name": "web", "port": 8080},
                              {"name": "dns", "port": 5353, "protocol": "UDP"},
                              {"name": "sig", "port": 3869, "protocol": "SCTP"}]}]),
        )],
    };
    let blocks = render_blocks(&snap, &cfg());
    assert_eq!(blocks.len(), 3);
    let svc_chains: std::collections::BTreeSet<_> =
        blocks.iter().map(|b| b.chains[0].name.clone()).collect();
    assert_eq!(svc_chains.len(), 3, "one KUBE-SVC- chain per port");
    let out = render(&snap, &cfg());
    for (proto, port, target, spn) in [
        ("tcp", 80, "10.244.0.9:8080", "ns1/multi:web"),
        ("udp", 53, "10.244.0.9:5353", "ns1/multi:dns"),
        ("sctp", 3868, "10.244.0.9:3869", "ns1/multi:sig"),
    ] {
        assert!(out.contains(&format!(
            "-d 10.96.0.60/32 -p {proto} -m comment --comment \"{spn} cluster IP\" -m {proto} --dport {port} -j KUBE-SVC-"
        )), "{proto}:\n{out}");
        assert!(out.contains(&format!(
            "-p {proto} -m comment --comment \"{spn}\" -m {proto} -j DNAT --to-destination {target}\n"
        )), "{proto}:\n{out}");
    }
}

#[test]
fn client_ip_affinity_without_timeout_uses_kube_proxys_three_hours() {
    let mut svc = service(
        "ns1",
        "np",
        "10.96.0.50",
        json!([{"name": "p80", "port": 80}]),
    );
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

/// `n` NodePort Services `ns/s<i>` with one endpoint each.
fn node_ports(n: usize) -> Snapshot {
    let mut snap = Snapshot::default();
    for i in 0..n {
        let name = format!("s{i}");
        let mut svc = service(
            "ns",
            &name,
            &format!("10.96.1.{}", i + 1),
            json!([{"name": "p", "port": 80, "nodePort": 30000 + i}]),
        );
        svc.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        snap.services.push(svc);
        snap.endpoints.push(endpoints(
            "ns",
            &name,
            json!([{"addresses": [{"ip": format!("10.244.1.{}", i + 1)}],
                    "ports": [{"name": "p", "port": 8080}]}]),
        ));
    }
    snap
}

/// Targets of the `-A <chain>` rules of the nat section, in order.
fn nat_targets<'a>(out: &'a str, chain: &str) -> Vec<&'a str> {
    let nat = out.split("*nat\n").nth(1).unwrap();
    let prefix = format!("-A {chain} ");
    nat.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit_once(" -j ").unwrap().1)
        .collect()
}

#[test]
fn top_level_jumps_are_written_in_descending_target_order() {
    let out = render(&node_ports(30), &cfg());
    let services = nat_targets(&out, KUBE_SERVICES);
    assert_eq!(services.len(), 31);
    assert_eq!(
        services.last(),
        Some(&KUBE_NODEPORTS),
        "NODEPORTS jump stays last"
    );
    let svcs = &services[..30];
    assert!(svcs.iter().all(|t| t.starts_with("KUBE-SVC-")), "{svcs:?}");
    assert!(svcs.windows(2).all(|w| w[0] > w[1]), "{svcs:?}");
    let exts = nat_targets(&out, KUBE_NODEPORTS);
    assert_eq!(exts.len(), 30);
    assert!(exts.iter().all(|t| t.starts_with("KUBE-EXT-")), "{exts:?}");
    assert!(exts.windows(2).all(|w| w[0] > w[1]), "{exts:?}");
}

#[test]
fn stale_deletion_deletes_each_chain_after_the_chains_jumping_to_it() {
    let stale: Vec<String> = [
        "KUBE-SEP-AAA",
        "KUBE-EXT-AAA",
        "KUBE-SVC-AAA",
        "KUBE-SVL-AAA",
        "KUBE-SEP-ZZZ",
        "KUBE-EXT-ZZZ",
        "KUBE-SVC-ZZZ",
    ]
    .map(String::from)
    .to_vec();
    let mut out = String::new();
    render_stale_deletion(&stale, &mut out);
    let order = [
        "KUBE-EXT-ZZZ",
        "KUBE-EXT-AAA",
        "KUBE-SVL-AAA",
        "KUBE-SVC-ZZZ",
        "KUBE-SVC-AAA",
        "KUBE-SEP-ZZZ",
        "KUBE-SEP-AAA",
    ];
    let mut want = String::from("*nat\n");
    for c in order {
        want.push_str(&format!(":{c} - [0:0]\n-X {c}\n"));
    }
    want.push_str("COMMIT\n");
    assert_eq!(out, want);
}
