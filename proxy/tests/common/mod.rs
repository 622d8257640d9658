//! A node network namespace with "pod" namespaces on veths, for privileged tests of
//! Service NAT. Everything (namespaces, server threads, processes) goes on drop.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use minion_proxy::applier::IptablesApplier;
use minion_proxy::{RenderConfig, Syncer};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// True when running as root; skips (false) otherwise, or panics when `CI` is set.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("privileged test needs root (CI is set, refusing to skip)");
    }
    eprintln!("skipping: privileged test needs root");
    false
}

pub fn run(cmd: &str) -> Output {
    let argv: Vec<&str> = cmd.split_whitespace().collect();
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"))
}

pub fn ok(cmd: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that joined network namespace `ns`; sockets made there stay
/// in `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

pub fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: Some("node-1".into()),
    }
}

pub struct Lab {
    pub node: String,
    pub extra: Vec<String>,
    pub pods: Vec<String>,
    children: Vec<Child>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pub dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in self.pods.iter().chain(&self.extra).chain([&self.node]) {
            let _ = run(&format!("ip netns del {ns}"));
        }
    }
}

impl Lab {
    /// The node namespace, lo up, forwarding on.
    pub fn new(tag: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let lab = Lab {
            node: format!("mtest-px{tag}-{}-{n}", std::process::id()),
            extra: Vec::new(),
            pods: Vec::new(),
            children: Vec::new(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ok(&format!("ip netns add {}", lab.node));
        ok(&format!("ip -n {} link set lo up", lab.node));
        ok(&format!(
            "ip netns exec {} sysctl -qw net.ipv4.ip_forward=1",
            lab.node
        ));
        lab
    }

    /// Pod `i`: veth<i> 10.244.<i>.1/24 on the node, eth0 10.244.<i>.2/24 in the pod.
    /// Returns the pod IP. The first pod also carries the service CIDR route.
    pub fn add_pod(&mut self) -> String {
        let i = self.pods.len();
        let (node, pod) = (self.node.clone(), format!("{}-p{i}", self.node));
        ok(&format!("ip netns add {pod}"));
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
            ok(&cmd);
        }
        if i == 0 {
            ok(&format!("ip -n {node} route add 10.96.0.0/12 dev veth0"));
        }
        format!("10.244.{i}.2")
    }

    /// A "client" namespace linked to the node: node 192.168.77.1, client .2.
    pub fn add_client(&mut self) -> String {
        let (node, client) = (self.node.clone(), format!("{}-c", self.node));
        ok(&format!("ip netns add {client}"));
        self.extra.push(client.clone());
        for cmd in [
            format!("ip -n {client} link set lo up"),
            format!("ip -n {node} link add vclient type veth peer name eth0 netns {client}"),
            format!("ip -n {node} addr add 192.168.77.1/24 dev vclient"),
            format!("ip -n {node} link set vclient up"),
            format!("ip -n {client} addr add 192.168.77.2/24 dev eth0"),
            format!("ip -n {client} link set eth0 up"),
        ] {
            ok(&cmd);
        }
        client
    }

    /// busybox httpd on :8080 in pod `i` serving `body`.
    pub fn start_httpd(&mut self, i: usize, body: &str) {
        let www = self.dir.path().join(format!("www{i}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pods[i],
                "busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
            ])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn busybox httpd");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .curl(&self.node, &format!("http://10.244.{i}.2:8080/"))
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("httpd in pod {i} did not come up");
    }

    /// A UDP server on `port` in pod `i` answering every datagram with `name`.
    pub fn start_udp_echo(&mut self, i: usize, port: u16, name: &'static str) {
        let sock = in_netns(&self.pods[i], move || {
            UdpSocket::bind(("0.0.0.0", port)).expect("bind udp")
        });
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(name.as_bytes(), peer);
                }
            }
        }));
    }

    /// A TCP echo server on `port` in pod `i` (one thread per connection).
    pub fn start_tcp_echo(&mut self, i: usize, port: u16) {
        let listener = in_netns(&self.pods[i], move || {
            TcpListener::bind(("0.0.0.0", port)).expect("bind tcp")
        });
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let stop = stop.clone();
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_millis(100)))
                            .unwrap();
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 512];
                            while !stop.load(Ordering::SeqCst) {
                                match conn.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        let _ = conn.write_all(&buf[..n]);
                                    }
                                    Err(_) => continue,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }

    /// curl from namespace `ns`: Ok(body) or Err(curl's exit code).
    pub fn curl(&self, ns: &str, url: &str) -> Result<String, i32> {
        let out = run(&format!("ip netns exec {ns} curl -sS --max-time 5 {url}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(out.status.code().unwrap_or(-1))
        }
    }

    pub fn node_ok(&self, cmd: &str) -> String {
        ok(&format!("ip netns exec {} {cmd}", self.node))
    }

    /// A fresh proxy (nothing applied yet) for the node namespace, on [`cfg`].
    pub fn syncer(&self) -> Syncer<IptablesApplier> {
        Syncer::new(self.applier(), cfg())
    }

    /// The real iptables binaries, run inside the node namespace.
    pub fn applier(&self) -> IptablesApplier {
        IptablesApplier::new("iptables-restore".into(), "iptables".into()).with_prefix(
            ["ip", "netns", "exec", &self.node]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }
}
