//! The real `minion-proxy` binary against a real API server, both in a test node
//! namespace: it programs a Service, is killed with SIGKILL, and started again. No
//! packet path may change: an established connection through the ClusterIP keeps
//! working, a connection made while no proxy runs works, the rule set after the new
//! process's first sync equals the old one (modulo counters), and other users' rules
//! in the nat and filter tables survive.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{in_netns, require_root, Lab};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

const CLUSTER_IP: &str = "10.96.100.90";

/// An API server (and the objects of the test) on a thread inside the node
/// namespace, so its listener is the node's 127.0.0.1. Stops on drop.
struct ApiServer {
    kubeconfig: std::path::PathBuf,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the API server in `ns` and creates `default/echo` (ClusterIP, port 7000 →
/// 9000 on `pod_ip`).
fn start_api(ns: &str, dir: &std::path::Path, pod_ip: &str) -> ApiServer {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (path, dir, pod_ip) = (
        format!("/run/netns/{ns}"),
        dir.to_path_buf(),
        pod_ip.to_string(),
    );
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (port, stop_api) = minion_apiserver::testing::start_local(&dir)
                .await
                .expect("start the API server");
            let kubeconfig =
                minion_apiserver::testing::write_kubeconfig(&dir, port).expect("kubeconfig");
            create_echo(&kubeconfig, &pod_ip).await;
            ready_tx.send(kubeconfig).expect("report ready");
            // Serve until the test drops its sender.
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            let _ = stop_api.send(());
        });
    });
    let kubeconfig = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("API server ready");
    ApiServer {
        kubeconfig,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

async fn create_echo(kubeconfig: &std::path::Path, pod_ip: &str) {
    let client = minion_proxy::kube_client(kubeconfig).await.expect("client");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {"clusterIP": CLUSTER_IP,
                 "ports": [{"name": "tcp", "port": 7000, "targetPort": 9000}]}
    }))
    .unwrap();
    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "subsets": [{"addresses": [{"ip": pod_ip, "nodeName": "node-1"}],
                     "ports": [{"name": "tcp", "port": 9000}]}]
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &svc)
        .await
        .expect("create service");
    Api::<Endpoints>::namespaced(client, "default")
        .create(&pp, &eps)
        .await
        .expect("create endpoints");
}

/// The proxy binary in the node namespace (`ip netns exec` execs it: same pid).
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proxy {
    fn start(lab: &Lab, kubeconfig: &std::path::Path, metrics: &str) -> Proxy {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_minion-proxy")])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--cluster-cidr",
                "10.244.0.0/16",
                "--hostname-override",
                "node-1",
                "--min-sync-period",
                "0ms",
                "--sync-period",
                "1h",
                "--metrics-listen",
                metrics,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn minion-proxy");
        Proxy(child)
    }

    /// SIGKILL by pid, then reap.
    fn kill_hard(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
        let status = self.0.wait().expect("wait for the killed proxy");
        assert!(!status.success(), "{status}");
    }
}

/// Polls (bounded) until the proxy's `/metrics` reports a completed sync.
fn wait_synced(lab: &Lab, metrics: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let out = common::run(&format!(
            "ip netns exec {} curl -sS --max-time 2 http://{metrics}/metrics",
            lab.node
        ));
        let text = String::from_utf8_lossy(&out.stdout);
        let synced = text
            .lines()
            .filter_map(|l| l.strip_prefix("kubeproxy_sync_proxy_rules_duration_seconds_count "))
            .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n >= 1));
        if synced {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("minion-proxy did not report a sync at {metrics}");
}

/// `iptables-save` of the nat and filter tables with counters zeroed.
fn rules(lab: &Lab) -> String {
    let mut out = String::new();
    for table in ["nat", "filter"] {
        let text = lab.node_ok(&format!("iptables-save -t {table}"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let line = match line.rfind(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn connect(lab: &Lab) -> TcpStream {
    let conn = in_netns(&lab.node, || {
        TcpStream::connect_timeout(
            &format!("{CLUSTER_IP}:7000").parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect to the ClusterIP")
    });
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn
}

fn echo(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    conn.read_exact(&mut buf).expect("read the echo");
    assert_eq!(buf, msg);
}

#[test]
fn sigkilled_binary_restarts_without_changing_any_packet_path() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new("rbin");
    let pod_ip = lab.add_pod();
    lab.start_tcp_echo(0, 9000);
    // Other users' rules, in foreign chains of both tables, jumped to from built-ins.
    for cmd in [
        "iptables -w -t nat -N FOREIGN-NAT",
        "iptables -w -t nat -A FOREIGN-NAT -s 192.0.2.1/32 -j RETURN",
        "iptables -w -t nat -A PREROUTING -j FOREIGN-NAT",
        "iptables -w -t filter -N FOREIGN-FILTER",
        "iptables -w -t filter -A FOREIGN-FILTER -s 192.0.2.1/32 -j DROP",
        "iptables -w -t filter -A INPUT -j FOREIGN-FILTER",
    ] {
        lab.node_ok(cmd);
    }
    let api = start_api(&lab.node, lab.dir.path(), &pod_ip);
    let metrics = "127.0.0.1:10249";

    let first = Proxy::start(&lab, &api.kubeconfig, metrics);
    wait_synced(&lab, metrics);
    let before = rules(&lab);
    assert!(before.contains(&format!("-d {CLUSTER_IP}/32")), "{before}");
    assert!(before.contains("-A FOREIGN-NAT -s 192.0.2.1/32 -j RETURN"));
    let mut established = connect(&lab);
    echo(&mut established, b"before the kill\n");

    first.kill_hard();
    // No proxy runs: the kernel's rules still carry old and new connections.
    let mut during = connect(&lab);
    echo(&mut during, b"while no proxy runs\n");
    echo(&mut established, b"while no proxy runs\n");
    assert_eq!(rules(&lab), before, "SIGKILL changed the rules");

    let _second = Proxy::start(&lab, &api.kubeconfig, metrics);
    wait_synced(&lab, metrics);
    let after = rules(&lab);
    assert_eq!(after, before, "the restarted proxy's first sync changed the rules");
    for line in [
        "-A FOREIGN-NAT -s 192.0.2.1/32 -j RETURN",
        "-A PREROUTING -j FOREIGN-NAT",
        "-A FOREIGN-FILTER -s 192.0.2.1/32 -j DROP",
        "-A INPUT -j FOREIGN-FILTER",
    ] {
        assert!(after.contains(line), "foreign rule {line:?} lost:\n{after}");
    }
    echo(&mut established, b"after the restart\n");
    echo(&mut during, b"after the restart\n");
    let mut fresh = connect(&lab);
    echo(&mut fresh, b"new connection\n");
}
