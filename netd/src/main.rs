//! minion-netd binary: CNI plugin mode when CNI_COMMAND is set, else a small CLI.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use minion_netd::conflist::{write_conflist, ConflistParams};

/// minion's pod network: a CNI bridge plugin with built-in IPAM.
///
/// PLUGIN MODE: when the environment variable CNI_COMMAND is set (ADD, DEL, CHECK,
/// VERSION, STATUS, GC), minion-netd acts as a CNI plugin (spec 1.0.0; configs with
/// cniVersion 0.4.0, 1.0.0, 1.1.0): it reads CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
/// CNI_PATH and the network config JSON on stdin, works in the current network
/// namespace (bridge, veth, ip_forward) and the pod's (CNI_NETNS), and prints the CNI
/// result or error JSON on stdout. Config fields: name, cniVersion, type, bridge (cni0),
/// isGateway (true), hairpinMode (true), mtu, ipam {subnet, gateway, rangeStart, rangeEnd,
/// dataDir (/var/lib/cni/networks)}. A failure also prints one line on stderr; logs go
/// to stderr only when RUST_LOG is set.
///
/// CLI MODE: the subcommands below.
#[derive(Debug, Parser)]
#[command(name = "minion-netd", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write <conf-dir>/10-minion.conflist (atomically) for this node's pod CIDR.
    WriteConfig {
        /// The node's pod CIDR, e.g. 10.244.1.0/24.
        #[arg(long)]
        pod_cidr: String,
        /// CNI configuration directory, e.g. /etc/cni/net.d.
        #[arg(long)]
        conf_dir: PathBuf,
        /// Bridge device name.
        #[arg(long, default_value = "cni0")]
        bridge: String,
        /// IPAM data directory (allocations under <data-dir>/<name>/).
        #[arg(long, default_value = "/var/lib/cni/networks")]
        data_dir: PathBuf,
        /// Network name.
        #[arg(long, default_value = "minion")]
        name: String,
    },
    /// Run the node network daemon: host-gw routes to every other node's podCIDR via
    /// its InternalIP (marked `proto 109`), this node's CNI config, egress masquerade
    /// (nat chain MINION-NETD-MASQ), start-up IPAM garbage collection, a sweep of stale
    /// pod veths every 60 s, /healthz and /metrics. Works in the network namespace it is started in.
    Daemon(DaemonArgs),
}

#[derive(Debug, clap::Args)]
struct DaemonArgs {
    /// kubeconfig naming the API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// This node's name (its own podCIDR is not routed).
    #[arg(long)]
    node_name: String,
    /// Write the CNI config here once the Node has a podCIDR.
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// IPAM data directory (as in the CNI config).
    #[arg(long, default_value = "/var/lib/cni/networks")]
    data_dir: PathBuf,
    /// Bridge device named in the CNI config.
    #[arg(long, default_value = "cni0")]
    bridge: String,
    /// CNI network name.
    #[arg(long, default_value = "minion")]
    network: String,
    /// Cluster CIDR; pod traffic leaving it is masqueraded.
    #[arg(long, default_value = minion_api::CLUSTER_CIDR)]
    cluster_cidr: ipnetwork::Ipv4Network,
    /// Do not program the egress masquerade rule.
    #[arg(long)]
    no_masquerade: bool,
    /// Serve /healthz and /metrics on this address (e.g. 127.0.0.1:9101).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Do not release allocations of vanished sandboxes at start nor sweep stale pod
    /// veths (use when another plugin, e.g. bridge + host-local, owns the data dir).
    #[arg(long)]
    skip_ipam_gc: bool,
    /// Full reconcile interval in seconds.
    #[arg(long, default_value_t = 30)]
    resync_secs: u64,
}

fn run_daemon(a: DaemonArgs) -> ExitCode {
    let config = minion_netd::daemon::Config {
        kubeconfig: a.kubeconfig,
        node_name: a.node_name,
        cni_conf_dir: a.cni_conf_dir,
        data_dir: a.data_dir,
        bridge: a.bridge,
        network: a.network,
        cluster_cidr: a.cluster_cidr,
        masquerade: (!a.no_masquerade).then(minion_netd::daemon::masq::default_masquerade),
        metrics_listen: a.metrics_listen,
        resync: std::time::Duration::from_secs(a.resync_secs.max(1)),
        ipam_gc: !a.skip_ipam_gc,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minion-netd: error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(minion_netd::daemon::run(config, minion_client::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minion-netd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_mode() -> ExitCode {
    let mut stdin = Vec::new();
    let out = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => minion_netd::run_plugin(
            |k| std::env::var(k).ok(),
            &stdin,
            std::path::Path::new("/proc/sys"),
        ),
        Err(e) => minion_netd::stdin_failure(&e),
    };
    print!("{}", out.stdout);
    if let Some(e) = &out.error {
        eprintln!("minion-netd: error: {e}");
    }
    if out.exit_code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_some() {
        // One short process per pod: a log subscriber only when RUST_LOG asks for one
        // (a failure is the CNI error JSON on stdout plus one stderr line anyway).
        if std::env::var_os("RUST_LOG").is_some() {
            minion_client::init_logging("warn");
        }
        return plugin_mode();
    }
    minion_client::init_logging("info");
    let cli = Cli::parse();
    match cli.command {
        Command::WriteConfig {
            pod_cidr,
            conf_dir,
            bridge,
            data_dir,
            name,
        } => {
            let params = ConflistParams {
                name,
                bridge,
                pod_cidr,
                data_dir,
            };
            match write_conflist(&conf_dir, &params) {
                Ok(path) => {
                    println!("{}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("minion-netd: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Daemon(a) => run_daemon(a),
    }
}
