//! `minion-apiserver`: parses flags and runs the API server until SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes API server subset (core/v1, apps/v1, coordination.k8s.io/v1,
/// discovery.k8s.io/v1) over HTTPS with bearer tokens.
#[derive(Debug, Parser)]
#[command(name = "minion-apiserver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Directory holding the SQLite datastore (minion.db) and other state files.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address published in the `default/kubernetes` Endpoints (default: the listen
    /// address's IP, or 127.0.0.1 when that is unspecified).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// PEM serving certificate (chain). Without it and --tls-private-key-file, a CA and
    /// a serving certificate are generated under <data-dir>/pki on first start.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Bearer tokens, one per line: token,user,uid,"group1,group2". Without it,
    /// <data-dir>/tokens.csv is generated with a random admin token.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// File holding the bearer token presented to kubelets (pods/log).
    #[arg(long)]
    kubelet_client_token_file: Option<PathBuf>,
    /// Serve plain HTTP and let requests without credentials in (loopback --listen only).
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_private_key_file"])]
    insecure: bool,
    /// Datastore: `sqlite` (<data-dir>/minion.db) or `etcd` (--etcd-endpoints; several
    /// API servers may share one etcd cluster).
    #[arg(long, value_enum, default_value = "sqlite")]
    storage: StorageKind,
    /// etcd client URLs, comma-separated (with --storage etcd).
    #[arg(long, value_delimiter = ',', required_if_eq("storage", "etcd"))]
    etcd_endpoints: Vec<String>,
    /// Key prefix of the objects in etcd.
    #[arg(long, default_value = minion_apiserver::storage::DEFAULT_ETCD_PREFIX)]
    etcd_prefix: String,
}

/// `--storage` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StorageKind {
    Sqlite,
    Etcd,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = minion_apiserver::Config {
        listen: args.listen,
        data_dir: args.data_dir,
        advertise_address: args.advertise_address,
        security: minion_apiserver::Security {
            insecure: args.insecure,
            tls_cert_file: args.tls_cert_file,
            tls_private_key_file: args.tls_private_key_file,
            token_auth_file: args.token_auth_file,
            kubelet_client_token_file: args.kubelet_client_token_file,
        },
        storage: match args.storage {
            StorageKind::Sqlite => minion_apiserver::StorageConfig::Sqlite,
            StorageKind::Etcd => {
                minion_apiserver::StorageConfig::Etcd { endpoints: args.etcd_endpoints, prefix: args.etcd_prefix }
            }
        },
    };
    if let Err(err) = minion_apiserver::run(config, shutdown_signal()).await {
        eprintln!("minion-apiserver: error: {err}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
