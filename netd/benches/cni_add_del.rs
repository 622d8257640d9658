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
//! A third line is the kernel floor: the netlink requests of our ADD and DEL from this
//! process, no plugin process, no IPAM. ADD times the veth create (peer in the pod
//! netns, on the bridge, hairpin); DEL times what minion-netd's DEL does in the kernel:
//! the host veth down and the pod's address removed (through a socket opened in the
//! pod netns). Then the kernel cost of each candidate DEL step, RTM_DELLINK of the veth
//! included: deleting a veth waits for RCU grace periods (netdev unregister), which is
//! why DEL leaves the pair to the pod namespace's destruction. Last, the bare process
//! start of each binary (CNI VERSION).
//!
//! Between rounds the pod namespaces are deleted and the bench waits until the kernel
//! has removed their veths, and the plugins take turns going first, so no round pays
//! for the teardown the previous one left to the kernel.

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
                    host_mac: [0x02, 0, 0, 0, 0, i as u8 + 2],
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
            for (i, path) in pod_paths.iter().enumerate() {
                let start = Instant::now();
                assert!(ops.isolate_link(&format!("vfloor{i}")).await.expect("host veth down"));
                let removed = ops.unconfigure_pod(path, "eth0").await.expect("pod address");
                dels.push(start.elapsed());
                assert_eq!(removed.len(), 1);
            }
            (adds, dels)
        })
    })
    .join()
    .expect("floor thread")
}

/// A netlink handle opened inside `netns` (the calling thread enters it for the
/// socket(2) call only).
fn handle_in(netns: &Path) -> rtnetlink::Handle {
    let home = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
    let ns = std::fs::File::open(netns).expect("open pod netns");
    setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns pod");
    let conn = rtnetlink::new_connection();
    setns(&home, CloneFlags::CLONE_NEWNET).expect("setns back");
    let (conn, handle, _) = conn.expect("netlink in pod");
    tokio::spawn(conn);
    handle
}

/// Kernel cost of each step a DEL could take, per pod, in the order a DEL would take
/// them: the pod address (RTM_DELADDR, which also drops its routes), the pod link down,
/// the host veth down, the host veth off the bridge (nomaster), then RTM_DELLINK.
fn del_steps(node: &Netns, pods: &[Netns]) -> Vec<(&'static str, Vec<Duration>)> {
    use futures::TryStreamExt;
    use minion_netd::netlink::NetlinkOps;
    use minion_netd::netops::{NetOps, PodAddress, VethSpec};
    use rtnetlink::{LinkMessageBuilder, LinkUnspec};
    let ns = std::fs::File::open(node.path()).expect("open node netns");
    let pod_paths: Vec<PathBuf> = pods.iter().map(Netns::path).collect();
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns node");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut ops = NetlinkOps::connect(Path::new("/proc/sys")).expect("netlink");
            let (conn, node_h, _) = rtnetlink::new_connection().expect("netlink");
            tokio::spawn(conn);
            let gw = "10.244.200.1/24".parse().expect("gateway");
            let bridge = ops.ensure_bridge("cni0", None, Some(gw)).await.expect("bridge");
            let mut out: Vec<(&'static str, Vec<Duration>)> = ["pod RTM_DELADDR", "pod link down", "host veth down", "host veth nomaster", "host RTM_DELLINK"]
                .into_iter()
                .map(|l| (l, Vec::new()))
                .collect();
            for (i, path) in pod_paths.iter().enumerate() {
                let host = format!("vstep{i}");
                let spec = VethSpec {
                    host_name: host.clone(),
                    container_ifname: "eth0".to_string(),
                    netns: path.clone(),
                    mtu: None,
                    master: bridge.index,
                    hairpin: true,
                    container_mac: [0x0a, 0x58, 10, 244, 200, i as u8 + 2],
                    host_mac: [0x02, 0, 0, 0, 0, i as u8 + 2],
                };
                ops.create_veth(&spec).await.expect("create veth");
                let host_index = node_h
                    .link()
                    .get()
                    .match_name(host.clone())
                    .execute()
                    .try_next()
                    .await
                    .expect("get host veth")
                    .expect("host veth")
                    .header
                    .index;
                let addr = PodAddress {
                    address: format!("10.244.200.{}/24", i + 2).parse().expect("address"),
                    gateway: "10.244.200.1".parse().expect("gateway"),
                };
                let pod_index = ops.configure_pod(path, "eth0", &addr).await.expect("configure pod").index;
                let pod_h = handle_in(path);
                let a = rtnetlink::AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                    .index(pod_index)
                    .address(addr.address.ip(), addr.address.prefix())
                    .build();
                let t = Instant::now();
                pod_h.address().del(a).execute().await.expect("del addr");
                out[0].1.push(t.elapsed());
                let t = Instant::now();
                pod_h.link().change(LinkUnspec::new_with_index(pod_index).down().build()).execute().await.expect("pod down");
                out[1].1.push(t.elapsed());
                let t = Instant::now();
                node_h.link().change(LinkUnspec::new_with_index(host_index).down().build()).execute().await.expect("host down");
                out[2].1.push(t.elapsed());
                let t = Instant::now();
                node_h.link().change(LinkMessageBuilder::<LinkUnspec>::new().index(host_index).nocontroller().build()).execute().await.expect("nomaster");
                out[3].1.push(t.elapsed());
                let left: Vec<_> = pod_h.route().get(rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()).execute().try_collect().await.expect("routes");
                assert!(left.iter().all(|r| r.header.table != 254), "pod routes left after DELADDR: {left:?}");
                let t = Instant::now();
                assert!(ops.delete_link(&host).await.expect("delete veth"));
                out[4].1.push(t.elapsed());
            }
            out
        })
    })
    .join()
    .expect("del steps thread")
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Deletes the pod namespaces, then waits (bounded) until the kernel's namespace
/// cleanup has removed every veth they took with them from `node`, so that one
/// plugin's leftovers (minion-netd leaves the pairs to the namespace's destruction) are
/// not torn down while the next round is being timed.
fn settle(node: Netns, pods: Vec<Netns>) {
    drop(pods);
    for _ in 0..200 {
        let out = Command::new("ip").args(["-n", &node.0, "-o", "link", "show", "type", "veth"]).output();
        if out.is_ok_and(|o| o.status.success() && o.stdout.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(node);
    // The rest of cleanup_net (and the node namespace's own) runs after the links go.
    std::thread::sleep(Duration::from_millis(500));
}

/// One VERSION call of `bin` (process start and exit, no work).
fn version_call(bin: &Path) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().expect("stdin").write_all(br#"{"cniVersion":"1.0.0"}"#).expect("write");
    let out = child.wait_with_output().expect("wait plugin");
    assert!(out.status.success(), "{} VERSION failed", bin.display());
    start.elapsed()
}

/// Median VERSION wall time of each of `bins`, calls interleaved (`n` each).
fn startup(bins: &[PathBuf], n: usize) -> Vec<Duration> {
    let mut times = vec![Vec::new(); bins.len()];
    for _ in 0..n {
        for (t, b) in times.iter_mut().zip(bins) {
            t.push(version_call(b));
        }
    }
    times.iter_mut().map(|t| median(t)).collect()
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
        // Alternate which plugin goes first.
        for j in 0..plugins.len() {
            let k = (j + r) % plugins.len();
            let node = Netns::new("node", r * 10 + k);
            let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new("pod", (r * 10 + k) * 1000 + i)).collect();
            let data = tempfile::tempdir().expect("temp dir");
            let (adds, dels) = round(&plugins[k], &node, &pods, data.path());
            results[k].0.extend(adds);
            results[k].1.extend(dels);
            settle(node, pods);
        }
        let k = plugins.len();
        let node = Netns::new("node", r * 10 + k);
        let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new("pod", (r * 10 + k) * 1000 + i)).collect();
        let (adds, dels) = kernel_floor(&node, &pods);
        results[k].0.extend(adds);
        results[k].1.extend(dels);
        settle(node, pods);
    }
    let steps = {
        let node = Netns::new("node", 99);
        let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new("pod", 99_000 + i)).collect();
        let steps = del_steps(&node, &pods);
        settle(node, pods);
        steps
    };
    let starts = startup(&[plugins[0].bin.clone(), Path::new(REFERENCE_DIR).join("host-local"), plugins[1].bin.clone()], PODS);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("cni_add_del: {PODS} pods x {ROUNDS} rounds, load {}", load.trim());
    let labels = plugins.iter().map(|p| p.label).chain(["kernel floor (our requests)"]);
    let mut medians = Vec::new();
    for (label, (adds, dels)) in labels.zip(results.iter_mut()) {
        let (a, d) = (median(adds), median(dels));
        println!("  {label:<28} ADD median {:>7.2} ms   DEL median {:>7.2} ms", ms(a), ms(d));
        medians.push((a, d));
    }
    println!(
        "  process start (VERSION): bridge {:.2} ms + host-local {:.2} ms; minion-netd {:.2} ms",
        ms(starts[0]),
        ms(starts[1]),
        ms(starts[2])
    );
    println!("  kernel cost of DEL steps (median per pod, in this order):");
    for (label, mut v) in steps {
        println!("    {label:<22} {:>7.3} ms", ms(median(&mut v)));
    }
    let (r, o, f) = (medians[0], medians[1], medians[2]);
    println!(
        "  ratio ours/reference: ADD {:.3}x   DEL {:.3}x   (goal <= 0.25x)",
        ms(o.0) / ms(r.0),
        ms(o.1) / ms(r.1)
    );
    println!(
        "  kernel floor/reference: ADD {:.3}x   DEL {:.3}x",
        ms(f.0) / ms(r.0),
        ms(f.1) / ms(r.1)
    );
    println!(
        "  ours minus floor: ADD {:.2} ms   DEL {:.2} ms   (process start, IPAM, netns, lookups)",
        ms(o.0) - ms(f.0),
        ms(o.1) - ms(f.1)
    );
}
