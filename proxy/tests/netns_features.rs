//! Privileged tests of the Service features in private network namespaces: load
//! spreading over 3 endpoints, foreign rules surviving syncs, an established TCP
//! connection surviving a proxy restart, NodePort from another namespace, and a UDP
//! flow moving off a removed endpoint (conntrack cleanup).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{in_netns, require_root, Lab};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_proxy::Snapshot;
use serde_json::{json, Value};

fn service(name: &str, ip: &str, extra: Value, ports: Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "ports": ports});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": spec
    }))
    .unwrap()
}

fn endpoints(name: &str, ips: &[String], ports: Value) -> Endpoints {
    let addrs: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip, "nodeName": "node-1"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "subsets": [{"addresses": addrs, "ports": ports}]
    }))
    .unwrap()
}

fn web(ips: &[String]) -> Snapshot {
    Snapshot {
        services: vec![service(
            "web",
            "10.96.100.80",
            json!({"type": "NodePort"}),
            json!([{"name": "http", "port": 80, "nodePort": 30080}]),
        )],
        endpoints: vec![endpoints(
            "web",
            ips,
            json!([{"name": "http", "port": 8080}]),
        )],
    }
}

#[test]
fn three_endpoints_each_get_20_to_47_percent_of_300_requests() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("spread");
    let ips: Vec<String> = (0..3).map(|_| lab.add_pod()).collect();
    for i in 0..3 {
        lab.start_httpd(i, &format!("pod-{i}\n"));
    }
    let mut syncer = lab.syncer();
    syncer.sync(&web(&ips), true).expect("sync");
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let body = lab
            .curl(&lab.node, "http://10.96.100.80/")
            .expect("curl ClusterIP");
        *hits.entry(body).or_default() += 1;
    }
    eprintln!("hits: {hits:?}");
    assert_eq!(hits.len(), 3, "{hits:?}");
    for (pod, n) in &hits {
        assert!((60..=141).contains(n), "{pod} got {n}/300: {hits:?}");
    }
}

#[test]
fn foreign_nat_rules_survive_ten_syncs() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("foreign");
    let a = lab.add_pod();
    let b = lab.add_pod();
    lab.node_ok("iptables -w -t nat -N FOREIGN");
    lab.node_ok("iptables -w -t nat -A FOREIGN -s 192.0.2.0/24 -j RETURN");
    lab.node_ok("iptables -w -t nat -A POSTROUTING -s 198.51.100.0/24 -j FOREIGN");
    lab.node_ok("iptables -w -t filter -A FORWARD -s 198.51.100.0/24 -j ACCEPT");
    let mut syncer = lab.syncer();
    for round in 0..10 {
        let ips = if round % 2 == 0 {
            vec![a.clone(), b.clone()]
        } else {
            vec![b.clone()]
        };
        syncer.sync(&web(&ips), round % 3 == 0).expect("sync");
    }
    let nat = lab.node_ok("iptables -w -t nat -S");
    assert!(
        nat.contains("-A FOREIGN -s 192.0.2.0/24 -j RETURN"),
        "{nat}"
    );
    assert!(
        nat.contains("-A POSTROUTING -s 198.51.100.0/24 -j FOREIGN"),
        "{nat}"
    );
    let filter = lab.node_ok("iptables -w -t filter -S FORWARD");
    assert!(filter.contains("-s 198.51.100.0/24 -j ACCEPT"), "{filter}");
}

#[test]
fn established_tcp_connection_survives_a_proxy_restart() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("restart");
    let a = lab.add_pod();
    lab.start_tcp_echo(0, 9000);
    let snap = Snapshot {
        services: vec![service(
            "echo",
            "10.96.100.70",
            json!({}),
            json!([{"name": "tcp", "port": 7000}]),
        )],
        endpoints: vec![endpoints(
            "echo",
            &[a],
            json!([{"name": "tcp", "port": 9000}]),
        )],
    };
    let mut first = lab.syncer();
    first.sync(&snap, true).expect("first sync");
    let mut conn = in_netns(&lab.node, || {
        TcpStream::connect_timeout(
            &"10.96.100.70:7000".parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect to ClusterIP")
    });
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut echo = |msg: &[u8]| {
        conn.write_all(msg).expect("write");
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf).expect("read echo");
        assert_eq!(buf, msg);
    };
    echo(b"before restart\n");
    // The proxy dies (its memory is gone, its rules stay) and a new one starts with a
    // full sync, then a partial one.
    drop(first);
    let mut second = lab.syncer();
    let stats = second.sync(&snap, true).expect("restart sync");
    assert!(stats.chains_written > 0);
    second.sync(&snap, false).expect("partial sync");
    echo(b"after restart\n");
}

#[test]
fn node_port_works_from_another_namespace() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("np");
    let a = lab.add_pod();
    lab.start_httpd(0, "via node port\n");
    let client = lab.add_client();
    let mut syncer = lab.syncer();
    syncer.sync(&web(&[a]), true).expect("sync");
    assert_eq!(
        lab.curl(&client, "http://192.168.77.1:30080/").as_deref(),
        Ok("via node port\n")
    );
    // Without endpoints the NodePort is rejected, not black-holed.
    syncer
        .sync(&web(&[]), false)
        .expect("sync without endpoints");
    let started = std::time::Instant::now();
    assert_eq!(lab.curl(&client, "http://192.168.77.1:30080/"), Err(7));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn udp_flow_moves_to_the_new_endpoint_after_its_endpoint_is_removed() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("udp");
    let a = lab.add_pod();
    let b = lab.add_pod();
    lab.start_udp_echo(0, 5353, "pod-a");
    lab.start_udp_echo(1, 5353, "pod-b");
    let dns = |ips: &[String]| Snapshot {
        services: vec![service(
            "dns",
            "10.96.100.90",
            json!({}),
            json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
        )],
        endpoints: vec![endpoints(
            "dns",
            ips,
            json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]),
        )],
    };
    let mut syncer = lab.syncer();
    syncer
        .sync(&dns(&[a.clone(), b.clone()]), true)
        .expect("sync");
    let sock = in_netns(&lab.node, || UdpSocket::bind("0.0.0.0:0").expect("bind"));
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ask = || {
        sock.send_to(b"who", "10.96.100.90:53").expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = sock.recv_from(&mut buf).expect("answer");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let pinned = ask();
    for _ in 0..3 {
        assert_eq!(ask(), pinned, "one UDP flow sticks to one endpoint");
    }
    let (gone, stays) = if pinned == "pod-a" { (a, b) } else { (b, a) };
    let stats = syncer.sync(&dns(&[stays]), false).expect("remove endpoint");
    assert_eq!(stats.conntrack_deletes, 1);
    let other = if pinned == "pod-a" { "pod-b" } else { "pod-a" };
    assert_eq!(ask(), other, "the flow left removed endpoint {gone}");
}

#[test]
fn hairpin_pod_reaches_itself_through_its_service() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("hairpin");
    let a = lab.add_pod();
    lab.start_httpd(0, "myself\n");
    let mut syncer = lab.syncer();
    syncer.sync(&web(&[a]), true).expect("sync");
    // The SEP chain's `-s <pod> -j KUBE-MARK-MASQ` makes the node masquerade the
    // pod's own connection, so the reply comes back through the node's NAT.
    let pod = lab.pods[0].clone();
    assert_eq!(
        lab.curl(&pod, "http://10.96.100.80/").as_deref(),
        Ok("myself\n")
    );
}

#[test]
fn deleting_many_services_removes_every_chain_in_a_trailing_transaction() {
    if !require_root() {
        return;
    }
    let lab = Lab::new("stale");
    lab.node_ok("iptables -w -t nat -N FOREIGN");
    lab.node_ok("iptables -w -t nat -A FOREIGN -s 192.0.2.0/24 -j RETURN");
    let mut snap = Snapshot::default();
    for i in 0..30u16 {
        let name = format!("np{i}");
        let policy = if i % 2 == 0 { "Local" } else { "Cluster" };
        snap.services.push(service(
            &name,
            &format!("10.96.101.{}", i + 1),
            json!({"type": "NodePort", "externalTrafficPolicy": policy}),
            json!([{"name": "http", "port": 80, "nodePort": 31000 + i}]),
        ));
        let ips = [
            format!("10.244.9.{}", 2 * i + 1),
            format!("10.244.9.{}", 2 * i + 2),
        ];
        snap.endpoints.push(endpoints(
            &name,
            &ips,
            json!([{"name": "http", "port": 8080}]),
        ));
    }
    let mut syncer = lab.syncer();
    syncer.sync(&snap, true).expect("first sync");
    let ours = |nat: &str| -> Vec<String> {
        nat.lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| minion_proxy::names::is_per_service_chain(c))
            .map(String::from)
            .collect()
    };
    let before = ours(&lab.node_ok("iptables -w -t nat -S"));
    assert!(
        before.iter().any(|c| c.starts_with("KUBE-SVL-")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|c| c.starts_with("KUBE-EXT-")),
        "{before:?}"
    );
    let stats = syncer
        .sync(&Snapshot::default(), false)
        .expect("delete all");
    assert_eq!(stats.chains_deleted, before.len());
    assert!(
        before.len() > 64,
        "more than the top level takes: {}",
        before.len()
    );
    assert_eq!(stats.commits, 3, "filter, nat top level, stale deletion");
    let nat = lab.node_ok("iptables -w -t nat -S");
    assert!(ours(&nat).is_empty(), "{nat}");
    assert!(
        nat.contains("-A FOREIGN -s 192.0.2.0/24 -j RETURN"),
        "{nat}"
    );
}
