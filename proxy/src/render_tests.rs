use super::*;
use crate::model::tests::{endpoints, service};
use serde_json::json;

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
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
