//! The daemon's stale-veth sweep against the real kernel: in a throwaway node
//! namespace, a pod whose netns outlived its CNI DEL loses its host veth, and a live
//! pod's veth is untouched. Nothing touches the host netns.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use minion_netd::daemon::veth_sweep::{sweep_once, MAX_PER_PASS};
use minion_netd::netlink::NetlinkOps;
use nix::sched::{setns, CloneFlags};

fn cni(node: &Netns, command: &str, id: &str, pod: &Netns, config: &str) -> PluginOutput {
    let netns = pod.path();
    let inv = Invocation {
        command,
        container_id: id,
        netns: &netns,
        ifname: "eth0",
    };
    let out = run_plugin(&netd_bin(), node, &inv, config);
    assert!(
        out.success,
        "{command} {id} failed: {} {}",
        out.stdout, out.stderr
    );
    out
}

/// Runs one sweep pass from a thread inside `node`.
fn sweep_in(node: &Netns, network_dir: &Path) -> Vec<String> {
    let ns = std::fs::File::open(PathBuf::from(node.path())).expect("open node netns");
    let dir = network_dir.to_path_buf();
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns node");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut ops = NetlinkOps::connect(Path::new("/proc/sys")).expect("netlink");
            sweep_once(&mut ops, &dir, "cni0", MAX_PER_PASS)
                .await
                .expect("sweep")
        })
    })
    .join()
    .expect("sweep thread")
}

#[test]
fn sweep_removes_a_deleted_pods_veth_and_keeps_a_live_one() {
    if !require_root() {
        return;
    }
    let node = Netns::new("sweep-node");
    let (dead_pod, live_pod) = (Netns::new("sweep-pod"), Netns::new("sweep-pod"));
    let dir = data_dir();
    let config = netd_config("10.244.43.0/24", dir.path());

    let dead = cni(&node, "ADD", "pod-dead", &dead_pod, &config).json()["interfaces"][1]["name"]
        .as_str()
        .expect("host veth")
        .to_string();
    let live = cni(&node, "ADD", "pod-live", &live_pod, &config).json()["interfaces"][1]["name"]
        .as_str()
        .expect("host veth")
        .to_string();
    // DEL without deleting the pod netns (the agent "crashed" right after DEL).
    cni(&node, "DEL", "pod-dead", &dead_pod, &config);
    let before = node.sh(&["ip", "-o", "link", "show", &dead]);
    assert!(
        !before.contains(",UP"),
        "DEL left the host veth up: {before}"
    );

    let removed = sweep_in(&node, &dir.path().join("minion"));
    assert_eq!(removed, [dead.as_str()]);
    assert!(
        !node.exec(&["ip", "link", "show", &dead]).status.success(),
        "stale veth still there"
    );
    // Its pod end went with it; the pod netns itself is the runtime's.
    assert!(!dead_pod
        .exec(&["ip", "link", "show", "eth0"])
        .status
        .success());
    let kept = node.sh(&["ip", "-d", "link", "show", &live]);
    assert!(
        kept.contains(",UP") && kept.contains("master cni0"),
        "live veth touched: {kept}"
    );
    assert!(ping(&node, "10.244.43.3"), "live pod lost connectivity");
    // Nothing left to do.
    assert!(sweep_in(&node, &dir.path().join("minion")).is_empty());
}
