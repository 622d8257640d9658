//! The walking skeleton, end to end: kubectl → apiserver → agent → runtime + netd →
//! pod IP → ClusterIP NAT → DNS name, on one lab node, through the real binaries and
//! the real kubectl. Each numbered step is one claim of issue 2.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use minion_tests::{bin_dir, require_root, run, wait_until, workspace, Lab, RunningPod};
use serde_json::Value;

const NODE: &str = "node-1";

fn step(what: &str) {
    eprintln!("walking_skeleton: {what}");
}

#[test]
fn walking_skeleton() -> Result<()> {
    if !require_root("walking_skeleton") {
        return Ok(());
    }
    let lab = Lab::up("e2e", 1)?;
    step("1. node Ready, describe node");
    node_is_ready(&lab)?;
    step("2. apply examples/web.yaml, pods Running with their own IPs");
    let pods = web_pods_run(&lab)?;
    step("3. ClusterIP from the node: both pods answer, NAT counters rise");
    let cluster_ip = cluster_ip_balances(&lab)?;
    step("4. DNS name from inside a pod");
    dns_from_inside_a_pod(&lab, &pods[0])?;
    step("5. hairpin: a pod reaches itself through its Service");
    hairpin(&lab, &pods[0], &cluster_ip)?;
    step("6. delete cleans up; lab down leaves nothing");
    delete_cleans_up(&lab, &pods)?;
    lab.down()?;
    nothing_left(&lab)
}

/// Step 1: the node is Ready and `describe node` has the sections a learner reads.
fn node_is_ready(lab: &Lab) -> Result<()> {
    let nodes = lab.kubectl(&["get", "nodes"])?;
    ensure!(nodes.lines().any(|l| l.starts_with(NODE) && l.contains(" Ready ")), "get nodes:\n{nodes}");
    let describe = lab.kubectl(&["describe", "node", NODE])?;
    for section in ["Conditions:", "Addresses:", "Capacity:", "Allocatable:", "InternalIP:", "KubeletReady"] {
        ensure!(describe.contains(section), "describe node lacks {section}:\n{describe}");
    }
    Ok(())
}

/// Step 2: apply the example; both pods Running with distinct IPs from the podCIDR.
fn web_pods_run(lab: &Lab) -> Result<Vec<RunningPod>> {
    let manifest = workspace().join("examples/web.yaml");
    let out = lab.kubectl(&["apply", "-f", &manifest.display().to_string()])?;
    ensure!(out.contains("pod/web-1 created") && out.contains("service/web created"), "apply printed:\n{out}");
    let pods = lab.wait_running(&["-l", "app=web"], 2, Duration::from_secs(90))?;
    let ips: BTreeSet<&str> = pods.iter().map(|p| p.ip.as_str()).collect();
    ensure!(ips.len() == 2, "pods share an IP: {pods:?}");
    ensure!(pods.iter().all(|p| p.ip.starts_with("10.244.1.")), "pod IPs outside node-1's podCIDR: {pods:?}");
    let wide = lab.kubectl(&["get", "pods", "-o", "wide"])?;
    for p in &pods {
        let line = wide.lines().find(|l| l.starts_with(&p.name)).context("pod missing from get pods -o wide")?;
        ensure!(line.contains("Running") && line.contains(&p.ip) && line.contains(NODE), "get pods -o wide:\n{wide}");
    }
    let veths = lab.exec(NODE, &["ip", "-o", "link", "show", "master", "cni0"])?;
    let count = veths.lines().filter(|l| l.contains("veth")).count();
    ensure!(count == 2, "expected 2 veths on cni0, found:\n{veths}");
    Ok(pods)
}

/// The KUBE-SERVICES rule's packet counter for the web Service.
fn web_rule_packets(lab: &Lab) -> Result<u64> {
    let table = lab.exec(NODE, &["iptables", "-t", "nat", "-L", "KUBE-SERVICES", "-n", "-v", "-x"])?;
    let line = table
        .lines()
        .find(|l| l.contains("default/web:http cluster IP") && l.contains("KUBE-SVC-"))
        .with_context(|| format!("no rule for default/web:http in KUBE-SERVICES:\n{table}"))?;
    line.split_whitespace().next().and_then(|n| n.parse().ok()).context("unparsable counter")
}

/// Step 3: 20 curls from the node's namespace reach both pods, and the NAT counters rise.
fn cluster_ip_balances(lab: &Lab) -> Result<String> {
    let svc = lab.json(&["get", "svc", "web", "-o", "json"])?;
    let ip = svc["spec"]["clusterIP"].as_str().context("web has no clusterIP")?.to_string();
    ensure!(ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"), "clusterIP {ip} outside 10.96.0.0/12");
    wait_until("web endpoints to list both pods", Duration::from_secs(30), || {
        let ep = lab.json(&["get", "endpoints", "web", "-o", "json"]).ok()?;
        let n = ep["subsets"][0]["addresses"].as_array().map(Vec::len).unwrap_or(0);
        (n == 2).then_some(())
    })?;
    let url = format!("http://{ip}/");
    wait_until("the ClusterIP to answer", Duration::from_secs(30), || {
        lab.exec(NODE, &["curl", "-sf", "--max-time", "2", &url]).ok()
    })?;
    let before = web_rule_packets(lab)?;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let body = lab.exec(NODE, &["curl", "-sf", "--max-time", "2", &url])?;
        seen.insert(body.trim().to_string());
    }
    ensure!(
        seen.contains("hello from web-1") && seen.contains("hello from web-2"),
        "20 requests to {url} reached only {seen:?}"
    );
    let after = web_rule_packets(lab)?;
    ensure!(after >= before + 20, "KUBE-SERVICES counter went {before} -> {after} over 20 connections");
    Ok(ip)
}

/// Step 4: inside a pod, the Service name resolves through kube-dns and answers.
fn dns_from_inside_a_pod(lab: &Lab, pod: &RunningPod) -> Result<()> {
    let resolv = lab.in_pod(pod, "httpd", &["cat", "/etc/resolv.conf"])?;
    for line in ["nameserver 10.96.0.10", "search default.svc.cluster.local svc.cluster.local cluster.local", "options ndots:5"] {
        ensure!(resolv.lines().any(|l| l.trim() == line), "resolv.conf lacks {line:?}:\n{resolv}");
    }
    let body = wait_until("web.default.svc.cluster.local from inside a pod", Duration::from_secs(30), || {
        lab.in_pod(pod, "httpd", &["timeout", "5", "wget", "-qO-", "http://web.default.svc.cluster.local/"]).ok()
    })?;
    ensure!(body.starts_with("hello from web-"), "wget printed {body:?}");
    let nx = lab.in_pod(pod, "httpd", &["nslookup", "nosuch.default.svc.cluster.local", "10.96.0.10"]);
    ensure!(nx.is_err(), "an unknown name resolved: {nx:?}");
    Ok(())
}

/// Step 5: a pod reaches itself through its own Service (hairpin).
fn hairpin(lab: &Lab, pod: &RunningPod, cluster_ip: &str) -> Result<()> {
    let url = format!("http://{cluster_ip}/");
    let me = format!("hello from {}", pod.name);
    for _ in 0..40 {
        let body = lab.in_pod(pod, "httpd", &["timeout", "5", "wget", "-qO-", &url])?;
        if body.trim() == me {
            return Ok(());
        }
    }
    anyhow::bail!("{} never reached itself through {url} in 40 tries", pod.name)
}

/// Step 6: delete stops containers and removes veths, IPs, cgroups, netns and NAT chains.
fn delete_cleans_up(lab: &Lab, pods: &[RunningPod]) -> Result<()> {
    let chains_before = lab.exec(NODE, &["iptables-save", "-t", "nat"])?;
    ensure!(chains_before.contains("KUBE-SVC-"), "no service chains before delete");
    let manifest = workspace().join("examples/web.yaml");
    lab.kubectl(&["delete", "-f", &manifest.display().to_string(), "--timeout=60s"])?;
    let left = lab.kubectl(&["get", "pods", "-o", "name"])?;
    ensure!(left.trim().is_empty(), "pods left after delete: {left}");
    let node_dir = lab.state_dir().join(format!("nodes/{NODE}"));
    wait_until("veths, NAT chains and allocations to go", Duration::from_secs(30), || {
        let links = lab.exec(NODE, &["ip", "-o", "link", "show", "master", "cni0"]).ok()?;
        let nat = lab.exec(NODE, &["iptables-save", "-t", "nat"]).ok()?;
        let web_chains = nat.lines().any(|l| l.contains("default/web"));
        let allocated = count_ip_files(&node_dir.join("ipam"));
        (!links.contains("veth") && !web_chains && allocated == 0).then_some(())
    })?;
    for p in pods {
        let netns = Path::new("/run/netns").join(format!("minion-{}", p.uid));
        ensure!(!netns.exists(), "{} still exists", netns.display());
        ensure!(!node_dir.join(format!("agent/pods/{}", p.uid)).exists(), "pod dir of {} left", p.name);
        let cg = cgroup_dirs_named(&format!("pod{}", p.uid));
        ensure!(cg.is_empty(), "cgroups left for {}: {cg:?}", p.name);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        ensure!(!mounts.contains(&p.uid), "mounts left for {}", p.name);
    }
    let containers = run(Command::new(bin_dir().join("minion-runtime")).arg("--root").arg(node_dir.join("runtime")).arg("list"))?;
    let list: Value = serde_json::from_str(&containers)?;
    ensure!(list.as_array().is_some_and(Vec::is_empty), "containers left: {containers}");
    Ok(())
}

/// IP allocation files under an IPAM data dir (files named like an address).
fn count_ip_files(dir: &Path) -> usize {
    let mut n = 0;
    for net in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// cgroup directories (v1 controllers and v2) whose path contains `needle`, 4 levels deep.
fn cgroup_dirs_named(needle: &str) -> Vec<String> {
    let out = Command::new("find").args(["/sys/fs/cgroup", "-maxdepth", "4", "-type", "d", "-name", &format!("*{needle}*")]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()).unwrap_or_default()
}

/// After `down`: no namespaces, cgroups, processes or state of the lab remain.
fn nothing_left(lab: &Lab) -> Result<()> {
    let netns = run(Command::new("ip").args(["netns", "list"]))?;
    ensure!(!netns.contains(&lab.name), "namespaces left: {netns}");
    ensure!(!lab.state_dir().exists(), "state dir left");
    let cg = cgroup_dirs_named(&format!("minion-{}", lab.name));
    ensure!(cg.is_empty(), "cgroups left: {cg:?}");
    Ok(())
}
