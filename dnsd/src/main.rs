//! `minion-dnsd`: cluster DNS for minion (the CoreDNS role). Parses flags and runs
//! [`minion_dnsd::run`] until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Log filter without RUST_LOG: hickory logs every query at info, keep that at warn.
const DEFAULT_LOG_FILTER: &str = "info,hickory_server=warn";

/// Cluster DNS server: answers <svc>.<ns>.svc.<cluster-domain> from the API server's
/// Services and Endpoints, and registers itself behind the kube-dns Service.
#[derive(Debug, Parser)]
#[command(name = "minion-dnsd", version)]
struct Cli {
    /// kubeconfig naming the API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Address to serve DNS on (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// The cluster domain (zone) to answer for.
    #[arg(long, default_value = minion_api::CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Address to add to the kube-system/kube-dns Endpoints (removed on shutdown).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Node name to record on the kube-dns endpoint address.
    #[arg(long)]
    node_name: Option<String>,
    /// TTL of answers, in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// Resolver (IP:PORT) for names outside the cluster domain; without it they are REFUSED.
    #[arg(long)]
    upstream: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("minion-dnsd: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = minion_dnsd::Config {
        kubeconfig: cli.kubeconfig,
        listen: cli.listen,
        cluster_domain: cli.cluster_domain,
        advertise_address: cli.advertise_address,
        node_name: cli.node_name,
        ttl: cli.ttl,
        upstream: cli.upstream,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(minion_dnsd::run(config, shutdown_signal()))?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops dnsd");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
