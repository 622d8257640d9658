//! minion-proxy: kube-proxy's iptables mode (Service NAT).
//!
//! Services, Endpoints and EndpointSlices are watched ([`watch`]), flattened into
//! service ports ([`model`]), rendered into kube-proxy's chain layout —
//! `KUBE-SERVICES` → `KUBE-SVC-<hash>` → `KUBE-SEP-<hash>`, `KUBE-NODEPORTS` →
//! `KUBE-EXT-<hash>` (→ `KUBE-SVL-<hash>`), `KUBE-MARK-MASQ`, `KUBE-POSTROUTING`,
//! filter REJECTs — as pure functions ([`render`], [`names`]), and applied with
//! `iptables-restore --noflush` ([`sync`], through the [`applier`] seam): one
//! restore per sync, on nft split into bounded transactions for big syncs
//! ([`backend`]). Stale
//! UDP conntrack entries are deleted ([`conntrack`]); `/metrics` and `/healthz` are
//! served on request ([`metrics`]).

pub mod applier;
pub mod backend;
pub mod config;
pub mod conntrack;
pub mod metrics;
pub mod model;
pub mod names;
pub mod render;
pub mod sync;
pub mod tracker;
pub mod watch;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

pub use applier::{IptablesApplier, RecordingApplier, RulesetApplier};
pub use config::Config;
pub use metrics::Metrics;
pub use model::Snapshot;
pub use render::{render, RenderConfig};
pub use sync::{SyncStats, Syncer};

/// Pause after a change before syncing, so bursts of events make one sync.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Pause before retrying a failed sync.
const RETRY: Duration = Duration::from_secs(2);

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The kubeconfig could not be read or used.
    #[error(transparent)]
    Kubeconfig(#[from] minion_client::KubeconfigError),
    /// A watch task died before its initial list completed.
    #[error("Service/Endpoints watch ended before the initial list")]
    WatchEnded,
    /// The metrics server could not start.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// Builds a client for the API server named in a kubeconfig file.
pub use minion_client::from_kubeconfig as kube_client;

/// Runs the proxy in the current network namespace until `shutdown` completes.
/// Rules stay in place on exit, as with kube-proxy.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
    let client = kube_client(&config.kubeconfig).await?;
    let applier = IptablesApplier::new(config.iptables_restore.clone(), config.iptables.clone());
    run_with(client, applier, &config, shutdown).await
}

/// Like [`run`] with a given client and applier (tests pass a fake applier).
pub async fn run_with<A: RulesetApplier + 'static>(
    client: Client,
    applier: A,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    info!(node = ?config.hostname, cluster_cidr = %config.cluster_cidr, "minion-proxy starting (iptables mode)");
    let metrics = Metrics::new(config.sync_period);
    let _server = match config.metrics_listen {
        Some(addr) => {
            let serve = metrics::serve(addr, metrics.clone()).await?;
            info!(%addr, "serving /metrics and /healthz");
            Some(AbortOnDrop(tokio::spawn(serve)))
        }
        None => None,
    };
    let changed = Arc::new(Notify::new());
    let slices = watch::serves_endpoint_slices(&client).await;
    info!(endpoint_slices = slices, "watching Services and endpoints");
    let informers = watch::Informers::start(&client, changed.clone(), slices);
    let render_cfg = RenderConfig {
        cluster_cidr: config.cluster_cidr.clone(),
        node_name: config.hostname.clone(),
    };
    let syncer = Arc::new(Mutex::new(Syncer::new(applier, render_cfg)));
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        ready = informers.wait_until_ready() => ready.map_err(|_| ProxyError::WatchEnded)?,
    }
    let mut full = true;
    let mut next_full = Instant::now() + config.sync_period;
    loop {
        let started = Instant::now();
        let mut ok = sync_once(&informers, &syncer, &metrics, full).await;
        if !ok && !full {
            // A failed partial sync falls back to a full one at once.
            ok = sync_once(&informers, &syncer, &metrics, true).await;
        }
        // Bursts of changes are batched: at most one sync per min_sync_period.
        let earliest = started + config.min_sync_period;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {
                sleep(DEBOUNCE).await;
                sleep_until(earliest).await;
                // Events during the pause are covered by this sync: drop their wake-up.
                let _ = tokio::time::timeout(Duration::ZERO, changed.notified()).await;
                full = !ok;
            }
            _ = sleep_until(next_full) => {
                full = true;
                next_full = Instant::now() + config.sync_period;
            }
            _ = sleep(RETRY), if !ok => full = true,
        }
    }
    info!("minion-proxy stopped");
    Ok(())
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One sync on a blocking thread; logs and returns whether it succeeded.
async fn sync_once<A: RulesetApplier + 'static>(
    informers: &watch::Informers,
    syncer: &Arc<Mutex<Syncer<A>>>,
    metrics: &Metrics,
    full: bool,
) -> bool {
    let snapshot = informers.snapshot();
    let syncer = syncer.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let mut s = syncer.lock().unwrap_or_else(|e| e.into_inner());
        s.sync(&snapshot, full)
    })
    .await;
    let rules = match &result {
        Ok(Ok(stats)) => Some(stats.rules),
        _ => None,
    };
    metrics.observe(started.elapsed(), rules);
    match result {
        Ok(Ok(stats)) => {
            info!(
                full,
                ports = stats.service_ports,
                written = stats.chains_written,
                skipped = stats.chains_skipped,
                deleted = stats.chains_deleted,
                commits = stats.commits,
                rules = stats.rules,
                "synced iptables rules"
            );
            true
        }
        Ok(Err(error)) => {
            warn!(%error, "sync failed (retrying)");
            false
        }
        Err(error) => {
            warn!(%error, "sync task failed (retrying)");
            false
        }
    }
}
