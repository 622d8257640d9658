//! minion-dnsd: the cluster DNS server (the CoreDNS / kube-dns role).
//!
//! It answers `<svc>.<ns>.svc.<cluster-domain>` from an immutable [`Records`]
//! snapshot that a watch on Namespaces, Services and Endpoints rebuilds and swaps
//! atomically (`ArcSwap`), serves UDP (SO_REUSEPORT worker threads) and TCP with a
//! hand-written wire path over hickory-proto records, forwards other names to
//! upstreams through a bounded cache, and registers its own
//! address in the `kube-system/kube-dns` Endpoints so the `kube-dns` Service
//! (10.96.0.10) reaches it.
//!
//! Layout: [`records`] (the zone snapshot), [`build`] (Namespaces/Services/Endpoints →
//! records), [`index`] (the snapshot pre-encoded for the wire), [`wire`] (one request
//! packet → one response), [`answer`] (the same semantics on hickory types, the
//! reference the wire path is tested against), [`server`] (sockets and TCP), `udp`
//! (the batched UDP workers), [`spin`] (their adaptive busy-polling), [`forward`] + [`cache`] (out-of-zone upstreams),
//! [`watch`] (API watches), [`register`] (kube-dns Endpoints), [`peers`] (dead
//! replicas leave kube-dns),
//! `fuzz` (the mutation fuzzer over the request path; built for tests and with the
//! `fuzz` feature only).

pub mod answer;
pub mod build;
pub mod cache;
pub mod forward;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod index;
pub mod peers;
pub mod records;
pub mod register;
pub mod server;
pub mod spin;
mod udp;
pub mod watch;
pub mod wire;

#[cfg(test)]
mod test_fixtures;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use kube::Client;

pub use answer::{answer, Answer, Outcome};
pub use build::build_records;
pub use forward::Forwarder;
pub use records::{Records, RecordsBuilder, Zone};
pub use register::Registration;
pub use server::{DnsHandler, DnsServer, Handled};

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
    /// Resolvers for names outside the cluster domain; when empty, the nameservers
    /// of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    /// resolv.conf naming the upstreams (the node's `/etc/resolv.conf`); `None` with
    /// no `upstreams` → out-of-zone names are REFUSED.
    pub resolv_conf: Option<PathBuf>,
    /// Most answers kept in the forwarding cache.
    pub cache_entries: usize,
    /// Number of UDP worker threads (sockets bound with SO_REUSEPORT).
    pub udp_workers: usize,
    /// How long a UDP worker busy-polls for the next datagram under dense traffic
    /// before blocking ([`spin`]); zero turns spinning off.
    pub udp_spin: Duration,
    /// How long to keep answering after leaving kube-dns on shutdown (CoreDNS's
    /// `lameduck`), so queries already DNATed here, or sent before the proxies
    /// dropped this endpoint, are still answered.
    pub lameduck: Duration,
}

/// The number of UDP workers when not configured: one per CPU.
pub fn default_udp_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cluster domain is not a DNS name.
    #[error(transparent)]
    Zone(#[from] records::RecordsError),
    /// The kubeconfig could not be read or used.
    #[error(transparent)]
    Kubeconfig(#[from] minion_client::KubeconfigError),
    /// The DNS sockets failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The upstream list could not be read.
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
}

/// The forwarder `config` asks for: explicit upstreams, else resolv.conf's
/// nameservers (minus dnsd's own listen address), else none.
pub fn forwarder(config: &Config) -> Result<Option<Forwarder>, RunError> {
    let mut upstreams = config.upstreams.clone();
    if upstreams.is_empty() {
        if let Some(path) = &config.resolv_conf {
            upstreams = forward::resolv_conf_nameservers(path)?;
        }
    }
    upstreams.retain(|u| *u != config.listen);
    if upstreams.is_empty() {
        tracing::warn!("no upstream nameservers: names outside the cluster domain are refused");
        return Ok(None);
    }
    tracing::info!(?upstreams, "forwarding names outside the cluster domain");
    Ok(Some(Forwarder::new(upstreams, config.cache_entries)))
}

/// Builds a client for the API server named in a kubeconfig file.
pub use minion_client::from_kubeconfig as kube_client;

/// Runs the DNS server until `shutdown` completes: serves from a watched snapshot,
/// keeps the kube-dns registration, and deregisters before returning.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let zone = Zone::new(&config.cluster_domain, config.ttl)?;
    let zone_apex = zone.apex.clone();
    let serial = watch::next_serial(0);
    let records = Arc::new(ArcSwap::from_pointee(Records::empty(zone.clone(), serial)));
    let client = kube_client(&config.kubeconfig).await?;
    let handler = DnsHandler::new(records.clone(), forwarder(&config)?);
    let server = DnsServer::bind(config.listen, config.udp_workers, handler)
        .await?
        .with_udp_spin(config.udp_spin);
    let watch_task = tokio::spawn(watch::watch_records(client.clone(), zone, records.clone()));
    let registration = config.advertise_address.map(|address| Registration {
        address,
        port: config.listen.port(),
        node_name: config.node_name.clone(),
    });
    let register_task = registration
        .clone()
        .map(|reg| tokio::spawn(keep_registered(client.clone(), reg, records.clone())));
    let zone_wire = index::wire_name(&zone_apex).into_vec();
    let prune_task = registration
        .clone()
        .map(|reg| tokio::spawn(peers::prune_dead_peers(client.clone(), reg, zone_wire)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let ended_early = tokio::select! {
        result = &mut serving => Some(result),
        () = shutdown => None,
    };
    for task in [register_task, prune_task].into_iter().flatten() {
        task.abort();
    }
    if let Some(reg) = registration {
        deregister_on_shutdown(&client, &reg).await;
    }
    let result = match ended_early {
        Some(result) => result,
        None => {
            tokio::time::sleep(config.lameduck).await;
            let _ = stop.send(());
            serving.await
        }
    };
    watch_task.abort();
    let served = result.map_err(|e| server::ServerError::Stopped(e.to_string()))?;
    served.map_err(RunError::from)
}

/// Registers in kube-dns once the first sync is done (before it, every in-zone answer
/// would be SERVFAIL: this is dnsd's readiness), retrying while the API server is
/// unreachable, and re-checks periodically so a lost registration comes back.
async fn keep_registered(client: Client, reg: Registration, records: Arc<ArcSwap<Records>>) {
    while !records.load().synced() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
