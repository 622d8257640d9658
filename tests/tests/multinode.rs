//! Pod networking across nodes (issue 6), end to end on a 2-node lab through the real
//! binaries and kubectl: minion-netd's daemon installs host-gw routes to the other
//! node's podCIDR, so a pod on node-1 reaches a pod on node-2 by IP and through a
//! ClusterIP; a restart of the daemon changes nothing; deleting a Node removes its
//! route. A 3-node lab checks every pod reaches the pods of both other nodes by IP and
//! that deleting a node removes its route on both others. Another test runs the
//! walking-skeleton basics with the reference CNI plugins (bridge + host-local) in
//! place of minion-netd.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use minion_tests::{require_root, wait_until, Lab, RunningPod};

fn step(what: &str) {
    eprintln!("multinode: {what}");
}

/// Two httpd pods pinned to `node-1` and `node-2`, each behind its own Service.
fn manifest(nodes: &[&str]) -> String {
    let mut out = String::new();
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("mn-{}", i + 1);
        out.push_str(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  nodeName: {node}
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
    ports:
    - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
"#
        ));
    }
    out
}

/// One running pod.
/// Applies the manifest and waits for every pod to run with an IP.
fn start_pods(lab: &Lab, nodes: &[&str]) -> Result<Vec<RunningPod>> {
    let path = lab.state_dir().join("multinode.yaml");
    std::fs::write(&path, manifest(nodes))?;
    lab.kubectl(&["apply", "-f", &path.display().to_string()])?;
    lab.wait_running(&[], nodes.len(), Duration::from_secs(60))
}

/// `wget` from inside `from` until it answers "hello from <expect>" (busybox 1.35's
/// `wget -T` crashes, so the time limit is the `timeout` applet).
fn fetch(lab: &Lab, from: &RunningPod, url: &str, expect: &str) -> Result<()> {
    let want = format!("hello from {expect}");
    wait_until(&format!("{url} from {}", from.name), Duration::from_secs(20), || {
        let body = lab.in_pod(from, "httpd", &["timeout", "5", "wget", "-qO-", url]).ok()?;
        (body.trim() == want).then_some(())
    })
}

fn cluster_ip(lab: &Lab, svc: &str) -> Result<String> {
    let v = lab.json(&["get", "svc", svc, "-o", "json"])?;
    Ok(v["spec"]["clusterIP"].as_str().context("no clusterIP")?.to_string())
}

fn wait_endpoints(lab: &Lab, svc: &str) -> Result<()> {
    wait_until(&format!("endpoints of {svc}"), Duration::from_secs(30), || {
        let ep = lab.json(&["get", "endpoints", svc, "-o", "json"]).ok()?;
        ep["subsets"][0]["addresses"].as_array().filter(|a| !a.is_empty()).map(|_| ())
    })
}

/// node's routes installed by minion-netd (`proto 109`).
fn netd_routes(lab: &Lab, node: &str) -> Result<String> {
    lab.exec(node, &["ip", "route", "show", "proto", "109"])
}

fn netd_metric(lab: &Lab, node: &str, metric: &str) -> Result<u64> {
    let text = lab.exec(node, &["curl", "-sf", "--max-time", "2", "http://127.0.0.1:9101/metrics"])?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{metric} ")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{metric} missing from:\n{text}"))
}

#[test]
fn pods_reach_each_other_across_nodes() -> Result<()> {
    if !require_root("pods_reach_each_other_across_nodes") {
        return Ok(());
    }
    let lab = Lab::up("mn", 2)?;
    step("1. routes to the other node's podCIDR, healthz");
    let r1 = wait_until("node-1's route to node-2", Duration::from_secs(15), || {
        netd_routes(&lab, "node-1").ok().filter(|r| r.contains("10.244.2.0/24 via 172.18.0.12 dev eth0"))
    })?;
    let r2 = wait_until("node-2's route to node-1", Duration::from_secs(15), || {
        netd_routes(&lab, "node-2").ok().filter(|r| r.contains("10.244.1.0/24 via 172.18.0.11 dev eth0"))
    })?;
    ensure!(r1.lines().count() == 1 && r2.lines().count() == 1, "extra routes: {r1} / {r2}");
    let health = lab.exec("node-1", &["curl", "-sf", "--max-time", "2", "http://127.0.0.1:9101/healthz"])?;
    ensure!(health.trim() == "ok", "healthz: {health}");

    step("2. pods pinned to node-1 and node-2 run in their nodes' podCIDRs");
    let pods = start_pods(&lab, &["node-1", "node-2"])?;
    let (a, b) = (&pods[0], &pods[1]);
    ensure!(a.node == "node-1" && a.ip.starts_with("10.244.1."), "{a:?}");
    ensure!(b.node == "node-2" && b.ip.starts_with("10.244.2."), "{b:?}");

    step("3. node-1's pod reaches node-2's pod by IP and through its ClusterIP");
    fetch(&lab, a, &format!("http://{}:8080/", b.ip), &b.name)?;
    fetch(&lab, b, &format!("http://{}:8080/", a.ip), &a.name)?;
    wait_endpoints(&lab, &b.name)?;
    fetch(&lab, a, &format!("http://{}/", cluster_ip(&lab, &b.name)?), &b.name)?;

    step("4. a pod reaches itself through its own Service");
    wait_endpoints(&lab, &a.name)?;
    fetch(&lab, a, &format!("http://{}/", cluster_ip(&lab, &a.name)?), &a.name)?;

    step("5. restarting netd changes nothing");
    let nat_before = masq_rules(&lab, "node-1")?;
    ensure!(nat_before.contains("-A MINION-NETD-MASQ -s 10.244.1.0/24 ! -d 10.244.0.0/16"), "{nat_before}");
    lab.restart("node-1/netd")?;
    wait_until("restarted netd healthy", Duration::from_secs(15), || {
        let h = lab.exec("node-1", &["curl", "-sf", "--max-time", "1", "http://127.0.0.1:9101/healthz"]).ok()?;
        (h.trim() == "ok").then_some(())
    })?;
    ensure!(netd_routes(&lab, "node-1")? == r1, "routes changed across a restart");
    ensure!(masq_rules(&lab, "node-1")? == nat_before, "masquerade rules changed across a restart");
    ensure!(netd_metric(&lab, "node-1", "minion_netd_routes_added_total")? == 0, "restart re-added routes");
    ensure!(netd_metric(&lab, "node-1", "minion_netd_routes_deleted_total")? == 0, "restart deleted routes");
    fetch(&lab, a, &format!("http://{}:8080/", b.ip), &b.name)?;

    step("6. deleting node-2 removes its route on node-1");
    lab.kubectl(&["delete", "pod", &b.name, "--timeout=30s"])?;
    lab.kubectl(&["delete", "node", "node-2"])?;
    wait_until("node-1's route to node-2 removed", Duration::from_secs(10), || {
        let deleted = netd_metric(&lab, "node-1", "minion_netd_routes_deleted_total").ok()?;
        (deleted >= 1).then_some(())
    })?;
    lab.down()?;
    Ok(())
}

/// The route to `node`'s podCIDR (`10.244.<n>.0/24 via 172.18.0.1<n>`) as netd installs it.
fn route_to(n: usize) -> String {
    format!("10.244.{n}.0/24 via 172.18.0.1{n} dev eth0")
}

#[test]
fn three_nodes_route_pods_to_each_other() -> Result<()> {
    if !require_root("three_nodes_route_pods_to_each_other") {
        return Ok(());
    }
    let lab = Lab::up("mn3", 3)?;
    let nodes = ["node-1", "node-2", "node-3"];
    step("3 nodes: each has host-gw routes to the two others' podCIDRs");
    for (i, node) in nodes.iter().enumerate() {
        let want: Vec<String> = (1..=3).filter(|n| *n != i + 1).map(route_to).collect();
        let routes = wait_until(&format!("{node}'s routes"), Duration::from_secs(20), || {
            netd_routes(&lab, node).ok().filter(|r| want.iter().all(|w| r.contains(w.as_str())))
        })?;
        ensure!(routes.lines().count() == 2, "{node}: extra routes: {routes}");
    }
    step("3 nodes: a pod on each node reaches the pods on the two others by IP");
    let pods = start_pods(&lab, &nodes)?;
    for (i, pod) in pods.iter().enumerate() {
        ensure!(pod.node == nodes[i] && pod.ip.starts_with(&format!("10.244.{}.", i + 1)), "{pod:?}");
    }
    for from in &pods {
        for to in pods.iter().filter(|p| p.name != from.name) {
            fetch(&lab, from, &format!("http://{}:8080/", to.ip), &to.name)?;
        }
    }
    step("3 nodes: deleting node-3 removes its route on node-1 and node-2");
    lab.kubectl(&["delete", "pod", &pods[2].name, "--timeout=30s"])?;
    lab.kubectl(&["delete", "node", "node-3"])?;
    for node in ["node-1", "node-2"] {
        wait_until(&format!("{node}'s route to node-3 removed"), Duration::from_secs(15), || {
            netd_routes(&lab, node).ok().filter(|r| !r.contains("10.244.3.0/24") && r.lines().count() == 1)
        })?;
    }
    fetch(&lab, &pods[0], &format!("http://{}:8080/", pods[1].ip), &pods[1].name)?;
    lab.down()?;
    Ok(())
}

/// minion-netd's nat rules on a node (the chain and the POSTROUTING jump).
fn masq_rules(lab: &Lab, node: &str) -> Result<String> {
    let all = lab.exec(node, &["iptables", "-t", "nat", "-S"])?;
    Ok(all.lines().filter(|l| l.contains("MINION-NETD")).collect::<Vec<_>>().join("\n"))
}

#[test]
fn reference_cni_plugins_pass_the_basics() -> Result<()> {
    if !require_root("reference_cni_plugins_pass_the_basics") {
        return Ok(());
    }
    let lab = Lab::up_with("mnref", 1, &["--cni", "reference"])?;
    let conf = std::fs::read_to_string(lab.state_dir().join("nodes/node-1/cni/net.d/10-reference.conflist"))?;
    ensure!(conf.contains("\"type\": \"bridge\"") && conf.contains("\"type\": \"host-local\""), "{conf}");
    step("reference: pods Running, ClusterIP answers, pod reaches itself");
    let pods = start_pods(&lab, &["node-1", "node-1"])?;
    let (a, b) = (&pods[0], &pods[1]);
    ensure!(a.ip != b.ip && a.ip.starts_with("10.244.1.") && b.ip.starts_with("10.244.1."), "{pods:?}");
    wait_endpoints(&lab, &b.name)?;
    let ip = cluster_ip(&lab, &b.name)?;
    wait_until("the ClusterIP to answer from the node", Duration::from_secs(20), || {
        lab.exec("node-1", &["curl", "-sf", "--max-time", "2", &format!("http://{ip}/")]).ok()
    })?;
    fetch(&lab, a, &format!("http://{ip}/"), &b.name)?;
    wait_endpoints(&lab, &a.name)?;
    fetch(&lab, a, &format!("http://{}/", cluster_ip(&lab, &a.name)?), &a.name)?;
    let veths = lab.exec("node-1", &["ip", "-o", "link", "show", "master", "cni0"])?;
    ensure!(veths.lines().filter(|l| l.contains("veth")).count() == 2, "{veths}");
    lab.down()?;
    Ok(())
}
