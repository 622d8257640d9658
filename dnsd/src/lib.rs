//! minion-dnsd: the cluster DNS server (the CoreDNS / kube-dns role).
//!
//! It answers `<svc>.<ns>.svc.<cluster-domain>` from an immutable [`Records`]
//! snapshot that a watch on Services and Endpoints rebuilds and swaps atomically
//! (`ArcSwap`), serves UDP and TCP through hickory-server, and registers its own
//! address in the `kube-system/kube-dns` Endpoints so the `kube-dns` Service
//! (10.96.0.10) reaches it.
//!
//! Layout: [`records`] (the zone snapshot), [`build`] (Services/Endpoints → records),
//! [`answer`] (one question → response sections), [`server`] (hickory front end),
//! [`forward`] (out-of-zone upstream), [`watch`] (API watches), [`register`]
//! (kube-dns Endpoints).

pub mod answer;
pub mod build;
pub mod forward;
pub mod records;
pub mod register;
pub mod server;
pub mod watch;

#[cfg(test)]
mod test_fixtures;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

pub use answer::{answer, Answer, Outcome};
pub use build::build_records;
pub use records::{Records, RecordsBuilder, Zone};
pub use register::Registration;
pub use server::{DnsHandler, DnsServer};

/// How often the kube-dns registration is re-checked (it is restored if lost).
const REGISTRATION_INTERVAL: Duration = Duration::from_secs(30);
/// Pause between registration attempts while the API server is unreachable.
const REGISTRATION_RETRY: Duration = Duration::from_secs(2);
/// Longest wait for the removal from kube-dns on shutdown.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `minion-dnsd` needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// kubeconfig naming the API server.
    pub kubeconfig: PathBuf,
    /// UDP and TCP listen address (default `0.0.0.0:53`).
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Address to publish in the `kube-system/kube-dns` Endpoints, if any.
    pub advertise_address: Option<IpAddr>,
    /// Node name to record on that endpoint address, if any.
    pub node_name: Option<String>,
    /// TTL of every answer, in seconds.
    pub ttl: u32,
    /// Resolver for names outside the cluster domain; `None` → REFUSED.
    pub upstream: Option<SocketAddr>,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cluster domain is not a DNS name.
    #[error(transparent)]
    Zone(#[from] records::RecordsError),
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The DNS sockets failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// Builds a client for the API server named in `path`.
pub async fn kube_client(path: &std::path::Path) -> Result<Client, RunError> {
    let err = |reason: String| RunError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// Runs the DNS server until `shutdown` completes: serves from a watched snapshot,
/// keeps the kube-dns registration, and deregisters before returning.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let zone = Zone::new(&config.cluster_domain, config.ttl)?;
    let serial = watch::next_serial(0);
    let records = Arc::new(ArcSwap::from_pointee(Records::empty(zone.clone(), serial)));
    let client = kube_client(&config.kubeconfig).await?;
    let handler = DnsHandler::new(records.clone(), config.upstream);
    let server = DnsServer::bind(config.listen, handler).await?;
    let watch_task = tokio::spawn(watch::watch_records(client.clone(), zone, records));
    let registration = config.advertise_address.map(|address| Registration {
        address,
        port: config.listen.port(),
        node_name: config.node_name.clone(),
    });
    let register_task = registration
        .clone()
        .map(|reg| tokio::spawn(keep_registered(client.clone(), reg)));
    let result = server.serve(shutdown).await;
    watch_task.abort();
    if let Some(task) = register_task {
        task.abort();
    }
    if let Some(reg) = registration {
        deregister_on_shutdown(&client, &reg).await;
    }
    result.map_err(RunError::from)
}

/// Registers in kube-dns, retrying while the API server is unreachable, and
/// re-checks periodically so a lost registration comes back.
async fn keep_registered(client: Client, reg: Registration) {
    loop {
        let pause = match register::register(&client, &reg).await {
            Ok(()) => REGISTRATION_INTERVAL,
            Err(error) => {
                tracing::warn!(%error, "kube-dns registration failed (retrying)");
                REGISTRATION_RETRY
            }
        };
        tokio::time::sleep(pause).await;
    }
}

async fn deregister_on_shutdown(client: &Client, reg: &Registration) {
    match tokio::time::timeout(DEREGISTER_TIMEOUT, register::deregister(client, reg)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "kube-dns deregistration failed"),
        Err(_) => tracing::warn!("kube-dns deregistration timed out"),
    }
}
