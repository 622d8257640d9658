//! Privileged end-to-end tests of Service NAT: a "node" network namespace with one veth
//! per "pod" namespace running busybox httpd; the rendered ruleset is applied with the
//! real iptables-restore inside the node namespace, and curl to the ClusterIP from the
//! node namespace must reach the pods. Nothing touches the host's network namespace.

mod common;

use std::time::{Duration, Instant};

use common::{require_root, Lab};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_proxy::names::{endpoint_chain, service_chain, Protocol, ServicePortName};
use minion_proxy::Snapshot;
use serde_json::json;

/// A pod serving `body` on :8080; returns its IP.
fn web_pod(lab: &mut Lab, body: &str) -> String {
    let ip = lab.add_pod();
    lab.start_httpd(lab.pods.len() - 1, body);
    ip
}

/// curl from the node namespace: Ok(body) or Err(curl's exit code).
fn curl(lab: &Lab, url: &str) -> Result<String, i32> {
    lab.curl(&lab.node, url)
}

/// The KUBE-SVC-/KUBE-SEP- chains that exist in the node's nat table.
fn per_service_chains(lab: &Lab) -> Vec<String> {
    lab.node_ok("iptables -w -t nat -S")
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SEP-"))
        .map(String::from)
        .collect()
}

/// Packet counter of the nat KUBE-SERVICES rule jumping to `target`.
fn services_counter(lab: &Lab, target: &str) -> u64 {
    let listing = lab.node_ok("iptables -w -t nat -L KUBE-SERVICES -n -v -x");
    let line = listing.lines().find(|l| l.contains(target));
    let line = line.unwrap_or_else(|| panic!("no {target} in\n{listing}"));
    line.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap()
}

fn endpoints(name: &str, ips: &[&str]) -> Endpoints {
    let addrs: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "subsets": [{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]
    }))
    .unwrap()
}

/// `default/empty` (no endpoints) and, if `web_ips` is given, `default/web`.
fn snapshot(web_ips: Option<&[&str]>) -> Snapshot {
    let mut s = Snapshot {
        services: vec![service("empty", "10.96.100.81")],
        endpoints: vec![],
    };
    if let Some(ips) = web_ips {
        s.services.push(service("web", "10.96.100.80"));
        s.endpoints.push(endpoints("web", ips));
    }
    s
}

fn web_port() -> ServicePortName {
    ServicePortName {
        namespace: "default".into(),
        name: "web".into(),
        port: "http".into(),
    }
}

#[test]
fn cluster_ip_reaches_pod_through_real_iptables() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("nat");
    let pod_ip = web_pod(&mut lab, "hello from the pod\n");
    let mut syncer = lab.syncer();
    let stats = syncer
        .sync(&snapshot(Some(&[&pod_ip])), true)
        .expect("first sync");
    assert_eq!(stats.chains_written, 2);
    let svc_chain = service_chain(&web_port(), Protocol::Tcp);
    let sep_chain = endpoint_chain(
        &web_port(),
        Protocol::Tcp,
        "10.244.0.2:8080".parse().unwrap(),
    );
    eprintln!("{}", lab.node_ok("iptables-save"));

    let before = services_counter(&lab, &svc_chain);
    let body = curl(&lab, "http://10.96.100.80:80/")
        .expect("curl to the ClusterIP");
    assert_eq!(body, "hello from the pod\n");
    assert!(
        services_counter(&lab, &svc_chain) > before,
        "KUBE-SERVICES counter did not rise"
    );
    // A Service without endpoints is rejected (filter KUBE-SERVICES), not black-holed.
    let started = Instant::now();
    assert_eq!(
        curl(&lab, "http://10.96.100.81:80/"),
        Err(7),
        "expected connection refused"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A restarted proxy neither duplicates the jumps nor rewrites unchanged chains
    // after its first (full) sync.
    let mut again = lab.syncer();
    again
        .sync(&snapshot(Some(&[&pod_ip])), true)
        .expect("restart sync");
    let partial = again
        .sync(&snapshot(Some(&[&pod_ip])), false)
        .expect("partial sync");
    assert_eq!(partial.chains_written, 0);
    let output = lab.node_ok("iptables -w -t nat -S OUTPUT");
    assert_eq!(
        output.matches("kubernetes service portals").count(),
        1,
        "{output}"
    );
    assert_eq!(
        curl(&lab, "http://10.96.100.80:80/").as_deref(),
        Ok("hello from the pod\n")
    );

    // Remove the Service: its chains go away in the same single restore.
    let stats = again
        .sync(&snapshot(None), false)
        .expect("sync without web");
    assert_eq!(stats.chains_deleted, 2);
    let left = per_service_chains(&lab);
    assert!(
        !left.contains(&svc_chain) && !left.contains(&sep_chain),
        "{left:?}"
    );
    assert!(left.is_empty(), "stale chains left: {left:?}");
}

#[test]
fn statistic_rules_spread_connections_over_endpoints() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("nat");
    let a = web_pod(&mut lab, "pod-a\n");
    let b = web_pod(&mut lab, "pod-b\n");
    let mut syncer = lab.syncer();
    syncer.sync(&snapshot(Some(&[&a, &b])), true).expect("sync");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(
            curl(&lab, "http://10.96.100.80:80/")
                .expect("curl to the ClusterIP"),
        );
        if seen.len() == 2 {
            break;
        }
    }
    // Each connection picks pod-a with probability 0.5: missing one in 30 tries is 2^-29.
    assert_eq!(seen.len(), 2, "only reached {seen:?}");

    // Scale down to pod-b: pod-a's KUBE-SEP chain is deleted, all traffic goes to b.
    let stats = syncer
        .sync(&snapshot(Some(&[&b])), false)
        .expect("scale down");
    assert_eq!((stats.chains_written, stats.chains_deleted), (2, 1));
    for _ in 0..5 {
        assert_eq!(
            curl(&lab, "http://10.96.100.80:80/").as_deref(),
            Ok("pod-b\n")
        );
    }
}
