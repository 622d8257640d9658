//! Privileged end-to-end tests of Service NAT: a "node" network namespace with one veth
//! per "pod" namespace running busybox httpd; the rendered ruleset is applied with the
//! real iptables-restore inside the node namespace, and curl to the ClusterIP from the
//! node namespace must reach the pods. Nothing touches the host's network namespace.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_proxy::applier::IptablesApplier;
use minion_proxy::names::{endpoint_chain, service_chain, Protocol, ServicePortName};
use minion_proxy::{RenderConfig, Snapshot, Syncer};
use serde_json::json;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// True when running as root; skips (false) otherwise, or panics when `CI` is set.
fn require_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    if String::from_utf8_lossy(&out.stdout).trim() == "0" {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("privileged test needs root (CI is set, refusing to skip)");
    }
    eprintln!("skipping: privileged test needs root");
    false
}

fn run(argv: &[String]) -> Output {
    Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"))
}

fn ok(argv: &[String]) -> String {
    let out = run(argv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{argv:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Splits a command line on whitespace (no quoting needed in these tests).
fn words(cmd: &str) -> Vec<String> {
    cmd.split_whitespace().map(String::from).collect()
}

/// A node namespace, pod namespaces with their httpds, and a temp dir; all removed
/// on drop, httpds killed by pid.
struct Lab {
    node: String,
    pods: Vec<String>,
    httpds: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.httpds {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.pods.iter().chain([&self.node]) {
            let _ = run(&words(&format!("ip netns del {ns}")));
        }
    }
}

impl Lab {
    /// The node namespace, with lo up and the service CIDR routed into veth0 (the
    /// route only exists once pod 0 is added).
    fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let lab = Lab {
            node: format!("mtest-proxy-{}-{n}", std::process::id()),
            pods: Vec::new(),
            httpds: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ok(&words(&format!("ip netns add {}", lab.node)));
        ok(&words(&format!("ip -n {} link set lo up", lab.node)));
        lab
    }

    /// Pod `i`: namespace `<node>-pod<i>`, node side veth<i> 10.244.<i>.1/24, pod
    /// side eth0 10.244.<i>.2/24 serving `body` on :8080. Returns the pod IP.
    fn add_pod(&mut self, body: &str) -> String {
        let i = self.pods.len();
        let (node, pod) = (self.node.clone(), format!("{}-pod{i}", self.node));
        ok(&words(&format!("ip netns add {pod}")));
        self.pods.push(pod.clone());
        for cmd in [
            format!("ip -n {pod} link set lo up"),
            format!("ip -n {node} link add veth{i} type veth peer name eth0 netns {pod}"),
            format!("ip -n {node} addr add 10.244.{i}.1/24 dev veth{i}"),
            format!("ip -n {node} link set veth{i} up"),
            format!("ip -n {pod} addr add 10.244.{i}.2/24 dev eth0"),
            format!("ip -n {pod} link set eth0 up"),
            format!("ip -n {pod} route add default via 10.244.{i}.1"),
        ] {
            ok(&words(&cmd));
        }
        if i == 0 {
            ok(&words(&format!(
                "ip -n {node} route add 10.96.0.0/12 dev veth0"
            )));
        }
        self.start_httpd(&pod, i, body);
        format!("10.244.{i}.2")
    }

    fn start_httpd(&mut self, pod: &str, i: usize, body: &str) {
        let www = self.dir.path().join(format!("www{i}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args([
                "netns", "exec", pod, "busybox", "httpd", "-f", "-p", "8080", "-h",
            ])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn busybox httpd");
        self.httpds.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.curl(&format!("http://10.244.{i}.2:8080/")).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("httpd in {pod} did not come up");
    }

    fn node_ok(&self, cmd: &str) -> String {
        ok(&words(&format!("ip netns exec {} {cmd}", self.node)))
    }

    /// curl from the node namespace: Ok(body) or Err(curl's exit code).
    fn curl(&self, url: &str) -> Result<String, i32> {
        let out = run(&words(&format!(
            "ip netns exec {} curl -sS --max-time 5 {url}",
            self.node
        )));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(out.status.code().unwrap_or(-1))
        }
    }

    fn applier(&self) -> IptablesApplier {
        IptablesApplier::new("iptables-restore".into(), "iptables".into())
            .with_prefix(words(&format!("ip netns exec {}", self.node)))
    }

    fn per_service_chains(&self) -> Vec<String> {
        self.node_ok("iptables -w -t nat -S")
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SEP-"))
            .map(String::from)
            .collect()
    }

    /// Packet counter of the nat KUBE-SERVICES rule jumping to `target`.
    fn services_counter(&self, target: &str) -> u64 {
        let listing = self.node_ok("iptables -w -t nat -L KUBE-SERVICES -n -v -x");
        let line = listing.lines().find(|l| l.contains(target));
        let line = line.unwrap_or_else(|| panic!("no {target} in\n{listing}"));
        line.split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
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

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: None,
    }
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
    let mut lab = Lab::new();
    let pod_ip = lab.add_pod("hello from the pod\n");
    let mut syncer = Syncer::new(lab.applier(), cfg());
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

    let before = lab.services_counter(&svc_chain);
    let body = lab
        .curl("http://10.96.100.80:80/")
        .expect("curl to the ClusterIP");
    assert_eq!(body, "hello from the pod\n");
    assert!(
        lab.services_counter(&svc_chain) > before,
        "KUBE-SERVICES counter did not rise"
    );
    // A Service without endpoints is rejected (filter KUBE-SERVICES), not black-holed.
    let started = Instant::now();
    assert_eq!(
        lab.curl("http://10.96.100.81:80/"),
        Err(7),
        "expected connection refused"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A restarted proxy neither duplicates the jumps nor rewrites unchanged chains
    // after its first (full) sync.
    let mut again = Syncer::new(lab.applier(), cfg());
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
        lab.curl("http://10.96.100.80:80/").as_deref(),
        Ok("hello from the pod\n")
    );

    // Remove the Service: its chains go away in the same single restore.
    let stats = again
        .sync(&snapshot(None), false)
        .expect("sync without web");
    assert_eq!(stats.chains_deleted, 2);
    let left = lab.per_service_chains();
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
    let mut lab = Lab::new();
    let a = lab.add_pod("pod-a\n");
    let b = lab.add_pod("pod-b\n");
    let mut syncer = Syncer::new(lab.applier(), cfg());
    syncer.sync(&snapshot(Some(&[&a, &b])), true).expect("sync");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(
            lab.curl("http://10.96.100.80:80/")
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
            lab.curl("http://10.96.100.80:80/").as_deref(),
            Ok("pod-b\n")
        );
    }
}
