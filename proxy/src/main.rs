//! `minion-proxy`: kube-proxy's iptables mode for one node.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use minion_proxy::config::{parse_cidr, parse_duration};

/// Programs Service NAT (kube-proxy's iptables layout) in this network namespace from
/// the API server's Services and Endpoints.
#[derive(Debug, Parser)]
#[command(name = "minion-proxy", version)]
struct Args {
    /// kubeconfig naming the API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Pod CIDR of the cluster; ClusterIP traffic from outside it is masqueraded.
    #[arg(long, value_parser = parse_cidr, default_value = minion_api::CLUSTER_CIDR)]
    cluster_cidr: String,
    /// iptables-restore binary.
    #[arg(long, default_value = "iptables-restore")]
    iptables_restore: PathBuf,
    /// iptables binary; `iptables -V` decides the restore strategy (nf_tables or
    /// legacy). Use iptables-legacy/iptables-legacy-restore on legacy nodes.
    #[arg(long, default_value = "iptables")]
    iptables: PathBuf,
    /// Interval of full resyncs (e.g. 30s, 1m).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    sync_period: Duration,
    /// Least time between two syncs; bursts of changes are batched (e.g. 1s).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    min_sync_period: Duration,
    /// Name of this node (endpoints with this nodeName are local, for
    /// externalTrafficPolicy: Local).
    #[arg(long)]
    hostname_override: Option<String>,
    /// Serve /metrics and /healthz on this address (e.g. 127.0.0.1:10249); off when
    /// not given.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() {
    minion_client::init_logging("info");
    let args = Args::parse();
    let config = minion_proxy::Config {
        kubeconfig: args.kubeconfig,
        cluster_cidr: args.cluster_cidr,
        iptables_restore: args.iptables_restore,
        iptables: args.iptables,
        sync_period: args.sync_period,
        min_sync_period: args.min_sync_period,
        hostname: args.hostname_override,
        metrics_listen: args.metrics_listen,
    };
    if let Err(e) = minion_proxy::run(config, minion_client::shutdown_signal()).await {
        eprintln!("minion-proxy: error: {e}");
        std::process::exit(1);
    }
}
