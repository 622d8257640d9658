//! CNI ADD then DEL for 50 pod network namespaces: minion-netd against the reference
//! `bridge` + `host-local` plugins (Debian's containernetworking-plugins), in the same
//! run, each in a fresh node namespace of the same kind. Prints per-call medians and
//! the ratio ours / reference.
//!
//! `cargo bench -p minion-netd --bench cni_add_del` (as root). Both plugins run as
//! processes forked from a thread that has entered the node namespace (no `ip netns
//! exec` in the timing). Reference config: bridge cni0, isGateway, hairpinMode, no
//! ipMasq (minion-netd's masquerade is a per-node daemon rule, not per-pod work).
//! Everything lives in namespaces and temp dirs this bench makes and removes.
//!
//! A third line is the kernel floor: the same veth create (peer in the pod netns, on
//! the bridge) and delete as single netlink requests from this process, no plugin
//! process, no IPAM (ADD times the veth request only; the pod side is configured
//! untimed so that DEL tears down an up interface with an address, as in a real DEL). Deleting a veth waits for RCU grace periods in
//! the kernel (netdev unregister), which bounds how fast any DEL can be.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const PODS: usize = 50;
const ROUNDS: usize = 2;
const REFERENCE_DIR: &str = "/usr/lib/cni";

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(kind: &str, i: usize) -> Netns {
        let name = format!("mbench-{kind}-{}-{i}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "ip netns add {name} failed");
        Netns(name)
    }
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Plugin {
    label: &'static str,
    bin: PathBuf,
    config: fn(&Path) -> String,
}

fn ours_config(data: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"minion-netd","bridge":"cni0","isGateway":true,"hairpinMode":true,"ipam":{{"subnet":"10.244.200.0/24","dataDir":"{}"}}}}"#,
        data.display()
    )
}

fn reference_config(data: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cni0","isGateway":true,"hairpinMode":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.200.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}"#,
        data.display()
    )
}

/// One plugin invocation; panics with the plugin's output when it fails.
fn invoke(p: &Plugin, command: &str, id: &str, netns: &Path, config: &str) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(&p.bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().expect("stdin").write_all(config.as_bytes()).expect("write config");
    let out = child.wait_with_output().expect("wait plugin");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{} {command} {id} failed: {}{}",
        p.label,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// ADD for every pod, then DEL for every pod, from inside `node`.
fn round(p: &Plugin, node: &Netns, pods: &[Netns], data: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let ns = std::fs::File::open(node.path()).expect("open node netns");
    let config = (p.config)(data);
    let pod_paths: Vec<PathBuf> = pods.iter().map(Netns::path).collect();
    let p = Plugin { label: p.label, bin: p.bin.clone(), config: p.config };
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns node");
        let adds = pod_paths
            .iter()
            .enumerate()
            .map(|(i, path)| invoke(&p, "ADD", &format!("bench-{i}"), path, &config))
            .collect();
        let dels = pod_paths
            .iter()
            .enumerate()
            .map(|(i, path)| invoke(&p, "DEL", &format!("bench-{i}"), path, &config))
            .collect();
        (adds, dels)
    })
    .join()
    .expect("bench thread")
}

/// The kernel floor: create the veth for every pod, then delete every one, timing each
/// netlink request (through minion-netd's own NetOps, in one process).
fn kernel_floor(node: &Netns, pods: &[Netns]) -> (Vec<Duration>, Vec<Duration>) {
    use minion_netd::netlink::NetlinkOps;
    use minion_netd::netops::{NetOps, PodAddress, VethSpec};
    let ns = std::fs::File::open(node.path()).expect("open node netns");
    let pod_paths: Vec<PathBuf> = pods.iter().map(Netns::path).collect();
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns node");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut ops = NetlinkOps::connect(Path::new("/proc/sys")).expect("netlink");
            let gw = "10.244.200.1/24".parse().expect("gateway");
            let bridge = ops.ensure_bridge("cni0", None, Some(gw)).await.expect("bridge");
            let mut adds = Vec::new();
            for (i, path) in pod_paths.iter().enumerate() {
                let spec = VethSpec {
                    host_name: format!("vfloor{i}"),
                    container_ifname: "eth0".to_string(),
                    netns: path.clone(),
                    mtu: None,
                    master: bridge.index,
                    hairpin: false,
                    container_mac: [0x0a, 0x58, 10, 244, 200, i as u8 + 2],
                };
                let start = Instant::now();
                ops.create_veth(&spec).await.expect("create veth");
                adds.push(start.elapsed());
                // Untimed: the pod side as a plugin leaves it (up, address, route), so
                // the timed delete tears down what a real DEL does.
                let addr = PodAddress {
                    address: format!("10.244.200.{}/24", i + 2).parse().expect("address"),
                    gateway: "10.244.200.1".parse().expect("gateway"),
                };
                ops.configure_pod(path, "eth0", &addr).await.expect("configure pod");
            }
            let mut dels = Vec::new();
            for i in 0..pod_paths.len() {
                let start = Instant::now();
                assert!(ops.delete_link(&format!("vfloor{i}")).await.expect("delete veth"));
                dels.push(start.elapsed());
            }
            (adds, dels)
        })
    })
    .join()
    .expect("floor thread")
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var_os("CI").is_some() {
            panic!("cni_add_del needs root (CI is set, refusing to skip)");
        }
        eprintln!("skipping cni_add_del: needs root");
        return;
    }
    let plugins = [
        Plugin { label: "reference bridge+host-local", bin: Path::new(REFERENCE_DIR).join("bridge"), config: reference_config },
        Plugin { label: "minion-netd", bin: PathBuf::from(env!("CARGO_BIN_EXE_minion-netd")), config: ours_config },
    ];
    let mut results: Vec<(Vec<Duration>, Vec<Duration>)> = vec![(Vec::new(), Vec::new()); plugins.len() + 1];
    for r in 0..ROUNDS {
        for (k, p) in plugins.iter().enumerate() {
            let node = Netns::new("node", r * 10 + k);
            let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new("pod", (r * 10 + k) * 1000 + i)).collect();
            let data = tempfile::tempdir().expect("temp dir");
            let (adds, dels) = round(p, &node, &pods, data.path());
            results[k].0.extend(adds);
            results[k].1.extend(dels);
        }
        let k = plugins.len();
        let node = Netns::new("node", r * 10 + k);
        let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new("pod", (r * 10 + k) * 1000 + i)).collect();
        let (adds, dels) = kernel_floor(&node, &pods);
        results[k].0.extend(adds);
        results[k].1.extend(dels);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("cni_add_del: {PODS} pods x {ROUNDS} rounds, load {}", load.trim());
    let labels = plugins.iter().map(|p| p.label).chain(["kernel floor (veth only)"]);
    let mut medians = Vec::new();
    for (label, (adds, dels)) in labels.zip(results.iter_mut()) {
        let (a, d) = (median(adds), median(dels));
        println!("  {label:<28} ADD median {:>7.2} ms   DEL median {:>7.2} ms", ms(a), ms(d));
        medians.push((a, d));
    }
    let (r, o, f) = (medians[0], medians[1], medians[2]);
    println!(
        "  ratio ours/reference: ADD {:.3}x   DEL {:.3}x   (goal <= 0.25x)",
        ms(o.0) / ms(r.0),
        ms(o.1) / ms(r.1)
    );
    println!(
        "  kernel floor/reference: ADD {:.3}x   DEL {:.3}x   (no plugin can beat these)",
        ms(f.0) / ms(r.0),
        ms(f.1) / ms(r.1)
    );
    println!(
        "  ours minus floor: ADD {:.2} ms   DEL {:.2} ms   (process start, IPAM, pod setup)",
        ms(o.0) - ms(f.0),
        ms(o.1) - ms(f.1)
    );
}
