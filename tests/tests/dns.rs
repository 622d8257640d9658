//! Cluster DNS in the lab (issue 8): names in another namespace through the search
//! path, headless Services, NXDOMAIN, and a dnsd replica restarting, then killed
//! (SIGKILL), while a pod keeps resolving. Two nodes, so kube-dns has two replicas
//! (one minion-dnsd per node).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use minion_tests::{require_root, wait_until, Lab, RunningPod};

/// The kube-dns Service's ClusterIP, every pod's nameserver.
const KUBE_DNS: &str = "10.96.0.10";

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: other
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: other
  labels: {app: db}
spec:
  nodeName: node-2
  containers:
  - name: httpd
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: other
spec:
  selector: {app: db}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: db-headless
  namespace: other
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: http, port: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: node-1
  containers:
  - name: httpd
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"#;

fn step(what: &str) {
    eprintln!("dns: {what}");
}

fn kube_dns_addresses(lab: &Lab) -> usize {
    let ep = lab.json(&["get", "endpoints", "kube-dns", "-n", "kube-system", "-o", "json"]);
    ep.ok().and_then(|e| e["subsets"][0]["addresses"].as_array().map(Vec::len)).unwrap_or(0)
}

/// The pid of a lab daemon (`node-1/dnsd`) from the lab's daemons file.
fn daemon_pid(lab: &Lab, daemon: &str) -> Result<i32> {
    let text = std::fs::read_to_string(lab.state_dir().join("daemons.json"))?;
    let daemons: serde_json::Value = serde_json::from_str(&text)?;
    daemons
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == daemon)
        .and_then(|d| d["pid"].as_i64())
        .and_then(|pid| i32::try_from(pid).ok())
        .with_context(|| format!("no pid for {daemon} in the lab's daemons.json"))
}

/// One lookup through kube-dns, with one client retry as the lesson allows.
fn lookup(lab: &Lab, client: &RunningPod, name: &str) -> Result<String> {
    let try_once = || lab.in_pod(client, "httpd", &["nslookup", name, KUBE_DNS]);
    try_once().or_else(|_| try_once())
}

#[test]
fn cluster_dns_in_the_lab() -> Result<()> {
    if !require_root("cluster_dns_in_the_lab") {
        return Ok(());
    }
    let lab = Lab::up("dns", 2)?;
    let path = lab.state_dir().join("dns.yaml");
    std::fs::write(&path, MANIFEST)?;
    lab.kubectl(&["apply", "-f", &path.display().to_string()])?;
    let client = lab.wait_running(&[], 1, Duration::from_secs(60))?.remove(0);
    let db = lab.wait_running(&["-n", "other"], 1, Duration::from_secs(60))?.remove(0);
    wait_until("two kube-dns replicas", Duration::from_secs(30), || (kube_dns_addresses(&lab) == 2).then_some(()))?;

    step("a name in another namespace through the search path (ndots:5)");
    let body = wait_until("http://db.other/ from the client pod", Duration::from_secs(30), || {
        lab.in_pod(&client, "httpd", &["timeout", "5", "wget", "-qO-", "http://db.other/"]).ok()
    })?;
    ensure!(body.trim() == "hello from db-0", "db.other answered {body:?}");

    step("a headless Service answers with the pod's own address");
    let headless = lookup(&lab, &client, "db-headless.other.svc.cluster.local")?;
    ensure!(headless.contains(&db.ip), "headless lookup did not return {}:\n{headless}", db.ip);
    ensure!(!headless.contains("Address: 10.96."), "headless lookup returned a ClusterIP:\n{headless}");

    step("an unknown name is NXDOMAIN");
    let nx = lab.in_pod(&client, "httpd", &["nslookup", "nosuch.other.svc.cluster.local", KUBE_DNS]);
    let text = format!("{nx:?}");
    ensure!(nx.is_err() && text.contains("NXDOMAIN"), "unknown name: {text}");

    step("node-1's dnsd restarts while the client keeps resolving");
    let restarting = std::thread::scope(|scope| -> Result<usize> {
        let restart = scope.spawn(|| lab.restart("node-1/dnsd"));
        let mut answered = 0;
        for _ in 0..30 {
            let out = lookup(&lab, &client, "db.other.svc.cluster.local").context("a lookup failed twice during the restart")?;
            ensure!(out.contains("Name:"), "lookup printed no answer:\n{out}");
            answered += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        restart.join().map_err(|_| anyhow::anyhow!("restart thread panicked"))??;
        Ok(answered)
    })?;
    ensure!(restarting == 30, "only {restarting} of 30 lookups answered");
    wait_until("both replicas registered again", Duration::from_secs(30), || (kube_dns_addresses(&lab) == 2).then_some(()))?;

    step("node-1's dnsd is killed (SIGKILL): its peer drops it from kube-dns within seconds");
    let dead_ip = lab.kubectl(&["get", "node", "node-1", "-o", "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}"])?;
    let dead = format!("--to-destination {}:53", dead_ip.trim());
    let pid = daemon_pid(&lab, "node-1/dnsd")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .with_context(|| format!("kill -9 node-1/dnsd (pid {pid})"))?;
    let killed = std::time::Instant::now();
    wait_until("the killed replica removed from kube-dns", Duration::from_secs(10), || (kube_dns_addresses(&lab) == 1).then_some(()))?;
    let removed_after = killed.elapsed();
    // A probe refused by the kernel (nothing listens any more) removes a peer at once;
    // kube-proxy then drops its DNAT rule and deletes the flows pinned to it.
    wait_until("the client node's NAT rules no longer reach the killed replica", Duration::from_secs(10), || {
        lab.exec(&client.node, &["iptables-save", "-t", "nat"]).ok().filter(|nat| !nat.contains(&dead)).map(drop)
    })?;
    eprintln!("dns: killed replica out of kube-dns after {removed_after:?}, out of the NAT rules after {:?}", killed.elapsed());
    ensure!(removed_after < Duration::from_secs(5), "the dead replica stayed in kube-dns for {removed_after:?}");
    step("after the kill: every lookup is answered at the first try");
    for _ in 0..15 {
        let out = lab.in_pod(&client, "httpd", &["nslookup", "db.other.svc.cluster.local", KUBE_DNS]).context("a lookup failed after the dead replica was removed")?;
        ensure!(out.contains("Name:"), "lookup printed no answer:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.restart("node-1/dnsd")?;
    wait_until("both replicas registered after the kill", Duration::from_secs(30), || (kube_dns_addresses(&lab) == 2).then_some(()))?;
    Ok(())
}
