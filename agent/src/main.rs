//! `minion-agent`: the kubelet of a minion node.

use std::path::PathBuf;

use clap::Parser;

/// The kubelet of a minion node: registers the node and runs the pods bound to it.
#[derive(Debug, Parser)]
#[command(name = "minion-agent", version)]
struct Args {
    /// Kubeconfig file used to reach the API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Name of this node.
    #[arg(long)]
    node_name: String,
    /// The node's InternalIP.
    #[arg(long)]
    node_ip: String,
    /// The node's pod CIDR (spec.podCIDR).
    #[arg(long)]
    pod_cidr: String,
    /// Port of the kubelet HTTP server (container logs, /healthz) on --node-ip.
    #[arg(long, default_value_t = minion_agent::config::DEFAULT_KUBELET_PORT)]
    kubelet_port: u16,
    /// Kubelet state directory (pods/<uid>/...).
    #[arg(long)]
    root_dir: PathBuf,
    /// Path of the minion-runtime binary.
    #[arg(long)]
    runtime_bin: PathBuf,
    /// State directory of the runtime (--root).
    #[arg(long)]
    runtime_root: PathBuf,
    /// Image store of the runtime (--image-root).
    #[arg(long)]
    image_root: PathBuf,
    /// Directory of CNI plugin binaries.
    #[arg(long)]
    cni_bin_dir: PathBuf,
    /// Directory of CNI network configs.
    #[arg(long)]
    cni_conf_dir: PathBuf,
    /// Where pod network namespaces are bind-mounted.
    #[arg(long, default_value = "/run/netns")]
    netns_dir: PathBuf,
    /// Parent cgroup of all pods.
    #[arg(long, default_value = "minion")]
    cgroup_parent: String,
    /// Root of the cgroup filesystem.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Upper bound (seconds) on pod termination grace periods.
    #[arg(long, default_value_t = 30)]
    max_grace_period: u64,
    /// Registry HOST:PORT pulled from over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registry: Vec<String>,
    /// File holding the bearer token the API server must present on the kubelet server
    /// (container logs). Without it that API is served without authentication.
    #[arg(long)]
    kubelet_client_token_file: Option<PathBuf>,
}

impl Args {
    fn into_config(self) -> Result<minion_agent::Config, String> {
        let mut c = minion_agent::Config::new(&self.node_name, self.root_dir);
        c.kubeconfig = self.kubeconfig;
        c.node_ip = self.node_ip;
        c.pod_cidr = self.pod_cidr;
        c.kubelet_port = self.kubelet_port;
        c.runtime_bin = self.runtime_bin;
        c.runtime_root = self.runtime_root;
        c.image_root = self.image_root;
        c.cni_bin_dir = self.cni_bin_dir;
        c.cni_conf_dir = self.cni_conf_dir;
        c.netns_dir = self.netns_dir;
        c.cgroup_parent = self.cgroup_parent;
        c.cgroup_root = self.cgroup_root;
        c.max_grace_period = std::time::Duration::from_secs(self.max_grace_period);
        c.insecure_registries = self.insecure_registry;
        if let Some(path) = &self.kubelet_client_token_file {
            c.kubelet_client_token = Some(minion_agent::config::read_token_file(path)?);
        }
        Ok(c)
    }
}

#[tokio::main]
async fn main() {
    minion_client::init_logging("info");
    let config = match Args::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("minion-agent: error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = minion_agent::run(config, minion_client::shutdown_signal()).await {
        eprintln!("minion-agent: error: {e}");
        std::process::exit(1);
    }
}
