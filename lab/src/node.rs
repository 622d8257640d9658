//! One lab node: its directories, CNI (minion-netd or the reference bridge +
//! host-local plugins), image, and the daemons a kubelet node runs (agent, proxy, dnsd,
//! netd) in its network namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::{CniChoice, UpOptions, NETD_METRICS, REFERENCE_CNI_DIR};
use crate::error::io_err;
use crate::net::{self, run, NETNS_DIR};
use crate::process::{self, Daemon};
use crate::topology::Topology;
use crate::LabError;

/// Lays out one node's directories, CNI config and image, then starts its daemons.
pub(crate) fn start_node(t: &Topology, opts: &UpOptions, node: &str, index: usize, rootfs: &Path) -> Result<Vec<Daemon>, LabError> {
    let bin_dir = &opts.bin_dir;
    let dir = t.node_dir(node);
    let d = |sub: &str| dir.join(sub).display().to_string();
    for sub in ["agent", "runtime", "images", "cni/bin", "cni/net.d", "ipam"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io_err(dir.join(sub)))?;
    }
    install_cni(t, opts, &dir, index)?;
    let ns = t.node_netns(node);
    net::enable_bridge_nf(&ns)?;
    let runtime = bin_dir.join("minion-runtime");
    run(Command::new(&runtime).args(["--root", &d("runtime"), "--image-root", &d("images"), "image", "import", "busybox"]).arg(rootfs))?;
    let kubeconfig = t.node_kubeconfig(node).display().to_string();
    let node_ip = t.node_ip(index);
    let mut agent_args: Vec<String> = [
        "--kubeconfig", &kubeconfig, "--node-name", node, "--node-ip", &node_ip,
        "--pod-cidr", &t.pod_cidr(index), "--root-dir", &d("agent"),
        "--runtime-bin", &runtime.display().to_string(), "--runtime-root", &d("runtime"),
        "--image-root", &d("images"), "--cni-bin-dir", &d("cni/bin"), "--cni-conf-dir", &d("cni/net.d"),
        "--netns-dir", NETNS_DIR, "--cgroup-parent", &t.cgroup_parent(node),
        "--kubelet-client-token-file", &t.kubelet_client_token_file().display().to_string(),
    ].iter().map(|s| s.to_string()).collect();
    for registry in &opts.insecure_registries {
        agent_args.extend(["--insecure-registry".to_string(), registry.clone()]);
    }
    let proxy_args: Vec<String> = ["--kubeconfig", &kubeconfig, "--cluster-cidr", minion_api::CLUSTER_CIDR, "--hostname-override", node]
        .iter().map(|s| s.to_string()).collect();
    // The lab has no way out, so names outside the cluster zone are refused, not forwarded.
    let dns_args: Vec<String> = ["--kubeconfig", &kubeconfig, "--listen", &format!("{node_ip}:53"), "--advertise-address", &node_ip, "--no-forward"]
        .iter().map(|s| s.to_string()).collect();
    let netd_args = netd_daemon_args(&kubeconfig, node, &dir, opts.cni);
    let log = |name: &str| t.state_dir.join(format!("logs/{node}-{name}.log"));
    Ok(vec![
        process::spawn_in_netns(&format!("{node}/netd"), &ns, &bin_dir.join("minion-netd"), &netd_args, &log("netd"))?,
        process::spawn_in_netns(&format!("{node}/agent"), &ns, &bin_dir.join("minion-agent"), &agent_args, &log("agent"))?,
        process::spawn_in_netns(&format!("{node}/proxy"), &ns, &bin_dir.join("minion-proxy"), &proxy_args, &log("proxy"))?,
        process::spawn_in_netns(&format!("{node}/dnsd"), &ns, &bin_dir.join("minion-dnsd"), &dns_args, &log("dnsd"))?,
    ])
}

/// `minion-netd daemon` arguments for one node. With the reference plugins the daemon
/// neither writes the CNI config nor garbage-collects host-local's allocations.
pub fn netd_daemon_args(kubeconfig: &str, node: &str, node_dir: &Path, cni: CniChoice) -> Vec<String> {
    let mut args: Vec<String> = ["daemon", "--kubeconfig", kubeconfig, "--node-name", node, "--metrics-listen", NETD_METRICS]
        .iter().map(|s| s.to_string()).collect();
    args.extend(["--data-dir".to_string(), node_dir.join("ipam").display().to_string()]);
    match cni {
        CniChoice::Minion => args.extend(["--cni-conf-dir".to_string(), node_dir.join("cni/net.d").display().to_string()]),
        CniChoice::Reference => args.push("--skip-ipam-gc".to_string()),
    }
    args
}

/// Puts the plugin binaries in the node's CNI bin dir and writes its first CNI config
/// (the agent reports Ready only once one exists).
fn install_cni(t: &Topology, opts: &UpOptions, dir: &Path, index: usize) -> Result<(), LabError> {
    let conf_dir = dir.join("cni/net.d");
    let link = |src: PathBuf, name: &str| -> Result<(), LabError> {
        let dst = dir.join("cni/bin").join(name);
        std::os::unix::fs::symlink(&src, &dst).map_err(io_err(&dst))
    };
    match opts.cni {
        CniChoice::Minion => {
            link(opts.bin_dir.join("minion-netd"), "minion-netd")?;
            let (cidr, ipam) = (t.pod_cidr(index), dir.join("ipam").display().to_string());
            run(Command::new(opts.bin_dir.join("minion-netd"))
                .args(["write-config", "--pod-cidr", &cidr, "--conf-dir"]).arg(&conf_dir).args(["--data-dir", &ipam]))?;
        }
        CniChoice::Reference => {
            for bin in ["bridge", "host-local"] {
                link(Path::new(REFERENCE_CNI_DIR).join(bin), bin)?;
            }
            let path = conf_dir.join("10-reference.conflist");
            let text = reference_conflist(&t.pod_cidr(index), &dir.join("ipam"));
            std::fs::write(&path, text).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// The conflist naming the reference `bridge` + `host-local` plugins with the same
/// bridge, gateway, hairpin and data dir as minion-netd's.
pub fn reference_conflist(pod_cidr: &str, ipam_dir: &Path) -> String {
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "minion",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "hairpinMode": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": pod_cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": ipam_dir.display().to_string()
            }
        }]
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_conflist_names_bridge_and_host_local() {
        let text = reference_conflist("10.244.2.0/24", Path::new("/lab/nodes/node-2/ipam"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &v["plugins"][0];
        assert_eq!((p["type"].as_str(), p["bridge"].as_str()), (Some("bridge"), Some("cni0")));
        assert_eq!(p["ipam"]["type"], "host-local");
        assert_eq!(p["ipam"]["ranges"][0][0]["subnet"], "10.244.2.0/24");
        assert_eq!(p["ipMasq"], false);
    }

    #[test]
    fn netd_daemon_writes_config_only_for_its_own_plugin() {
        let dir = Path::new("/lab/nodes/node-1");
        let ours = netd_daemon_args("/k", "node-1", dir, CniChoice::Minion);
        assert_eq!(ours[0], "daemon");
        assert!(ours.windows(2).any(|w| w[0] == "--cni-conf-dir" && w[1] == "/lab/nodes/node-1/cni/net.d"));
        let reference = netd_daemon_args("/k", "node-1", dir, CniChoice::Reference);
        assert!(!reference.iter().any(|a| a == "--cni-conf-dir"));
        assert!(reference.iter().any(|a| a == "--skip-ipam-gc"));
    }
}
