use super::*;
use crate::model::tests::{endpoints, service};
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
