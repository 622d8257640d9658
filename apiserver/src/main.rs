//! `minion-apiserver`: parses flags and runs the API server until SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes API server subset (core/v1, apps/v1, coordination.k8s.io/v1,
/// discovery.k8s.io/v1) over plain HTTP.
#[derive(Debug, Parser)]
#[command(name = "minion-apiserver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Directory holding the SQLite datastore (minion.db).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address published in the `default/kubernetes` Endpoints (default: the listen
    /// address's IP, or 127.0.0.1 when that is unspecified).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
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
