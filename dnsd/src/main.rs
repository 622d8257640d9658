//! `minion-dnsd`: cluster DNS for minion (the CoreDNS role). Parses flags and runs
//! [`minion_dnsd::run`] until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Log filter without RUST_LOG.
const DEFAULT_LOG_FILTER: &str = "info";

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
    /// TTL of answers (and the SOA's negative TTL), in seconds.
    #[arg(long, default_value_t = minion_dnsd::records::DEFAULT_TTL)]
    ttl: u32,
    /// Seconds to keep answering after leaving kube-dns on SIGTERM (like CoreDNS's lameduck).
    #[arg(long, default_value_t = 3)]
    lameduck: u64,
    /// Resolver (IP:PORT) for names outside the cluster domain (repeatable); overrides --resolv-conf.
    #[arg(long)]
    upstream: Vec<SocketAddr>,
    /// resolv.conf whose nameservers get names outside the cluster domain.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Refuse names outside the cluster domain instead of forwarding them.
    #[arg(long)]
    no_forward: bool,
    /// Most answers kept in the forwarding cache.
    #[arg(long, default_value_t = minion_dnsd::forward::DEFAULT_CACHE_ENTRIES)]
    cache_entries: usize,
    /// UDP worker threads, each on its own SO_REUSEPORT socket (default: one per CPU).
    #[arg(long)]
    udp_workers: Option<usize>,
    /// Microseconds a UDP worker busy-polls for the next query under dense traffic
    /// (above ~1 query per budget) before sleeping; at most one worker spins. 0: never.
    #[arg(long, default_value_t = minion_dnsd::spin::DEFAULT_UDP_SPIN_US)]
    udp_spin_us: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    minion_client::init_logging(DEFAULT_LOG_FILTER);
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
        upstreams: if cli.no_forward {
            Vec::new()
        } else {
            cli.upstream
        },
        resolv_conf: (!cli.no_forward).then_some(cli.resolv_conf),
        cache_entries: cli.cache_entries,
        udp_workers: cli
            .udp_workers
            .unwrap_or_else(minion_dnsd::default_udp_workers),
        udp_spin: std::time::Duration::from_micros(cli.udp_spin_us),
        lameduck: std::time::Duration::from_secs(cli.lameduck),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(minion_dnsd::run(config, minion_client::shutdown_signal()))?;
    Ok(())
}

