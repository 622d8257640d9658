//! Kubelet configuration: the flags of `minion-agent`, as one value passed to [`crate::run`].

use std::path::PathBuf;
use std::time::Duration;

/// The kubelet's usual port.
pub const DEFAULT_KUBELET_PORT: u16 = minion_api::KUBELET_PORT;

/// Everything the kubelet needs to know about its node and its peers (runtime, CNI).
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the kubeconfig file used to reach the API server.
    pub kubeconfig: PathBuf,
    /// Name of the Node object this kubelet registers and serves.
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: String,
    /// The node's pod CIDR (spec.podCIDR).
    pub pod_cidr: String,
    /// Port of the kubelet's HTTP server (container logs), on `node_ip`; published as
    /// the Node's `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub kubelet_port: u16,
    /// The kubelet's state directory (`<root-dir>/pods/<uid>/...`).
    pub root_dir: PathBuf,
    /// Path of the runc-compatible `minion-runtime` binary.
    pub runtime_bin: PathBuf,
    /// `--root` passed to the runtime (its state directory).
    pub runtime_root: PathBuf,
    /// `--image-root` passed to the runtime (its image store).
    pub image_root: PathBuf,
    /// Directory holding the CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// Directory holding the CNI network configuration (`*.conflist` / `*.conf`).
    pub cni_conf_dir: PathBuf,
    /// Directory where pod network namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    /// Name of the parent cgroup of all pods (`/<parent>/pod<uid>/<container>`).
    pub cgroup_parent: String,
    /// Root of the cgroup filesystem (v1 controllers below it, or the v2 root).
    pub cgroup_root: PathBuf,
    /// Period of Node status patches and Lease renewals.
    pub heartbeat_interval: Duration,
    /// How often a pod worker polls its containers' state.
    pub sync_interval: Duration,
    /// Upper bound on any pod's termination grace period.
    pub max_grace_period: Duration,
    /// Registries (`host:port`) pulled from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The bearer token the API server presents on the kubelet server (its kubelet
    /// client credential). None: the kubelet API is served without authentication,
    /// as a kubelet with `--anonymous-auth` and `AlwaysAllow` does.
    pub kubelet_client_token: Option<String>,
}

impl Config {
    /// A config with the documented defaults for everything but the required paths.
    pub fn new(node_name: &str, root_dir: PathBuf) -> Config {
        Config {
            kubeconfig: PathBuf::from("/etc/minion/kubeconfig"),
            node_name: node_name.to_string(),
            node_ip: "127.0.0.1".to_string(),
            pod_cidr: String::new(),
            kubelet_port: DEFAULT_KUBELET_PORT,
            kubelet_client_token: None,
            root_dir,
            runtime_bin: PathBuf::from("minion-runtime"),
            runtime_root: PathBuf::from("/run/minion-runtime"),
            image_root: PathBuf::from("/var/lib/minion/images"),
            cni_bin_dir: PathBuf::from("/opt/cni/bin"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            netns_dir: PathBuf::from("/run/netns"),
            cgroup_parent: "minion".to_string(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            heartbeat_interval: Duration::from_secs(10),
            sync_interval: Duration::from_secs(2),
            max_grace_period: Duration::from_secs(30),
            insecure_registries: Vec::new(),
        }
    }

    /// `<root-dir>/pods/<uid>`: everything the kubelet keeps for one pod.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// `<netns-dir>/minion-<uid>`: the pod sandbox's network namespace.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(format!("minion-{uid}"))
    }
}

/// Reads a bearer token file (one token, surrounding whitespace ignored).
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!("token file {} must hold exactly one token", path.display()));
    }
    Ok(token.to_string())
}
