//! minion-proxy: kube-proxy's iptables mode (Service NAT).
//!
//! Services and Endpoints are watched ([`watch`]), flattened into service ports
//! ([`model`]), rendered into kube-proxy's chain layout — `KUBE-SERVICES` →
//! `KUBE-SVC-<hash>` → `KUBE-SEP-<hash>`, `KUBE-MARK-MASQ`, `KUBE-POSTROUTING` —
//! as pure functions ([`render`], [`names`]), and applied with one
//! `iptables-restore --noflush` per sync ([`sync`], through the [`applier`] seam).

pub mod applier;
pub mod config;
pub mod model;
pub mod names;
pub mod render;
pub mod sync;
pub mod watch;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

pub use applier::{IptablesApplier, RecordingApplier, RulesetApplier};
pub use config::Config;
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
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The kubeconfig path.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// A watch task died before its initial list completed.
    #[error("Service/Endpoints watch ended before the initial list")]
    WatchEnded,
}

/// Builds a client for the API server named in `path`.
pub async fn kube_client(path: &Path) -> Result<Client, ProxyError> {
    let err = |reason: String| ProxyError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(config).map_err(|e| err(e.to_string()))
}

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
    let changed = Arc::new(Notify::new());
    let informers = watch::Informers::start(&client, changed.clone());
    let render_cfg = RenderConfig {
        cluster_cidr: config.cluster_cidr.clone(),
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
        let ok = sync_once(&informers, &syncer, full).await;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {
                sleep(DEBOUNCE).await;
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

/// One sync on a blocking thread; logs and returns whether it succeeded.
async fn sync_once<A: RulesetApplier + 'static>(
    informers: &watch::Informers,
    syncer: &Arc<Mutex<Syncer<A>>>,
    full: bool,
) -> bool {
    let snapshot = informers.snapshot();
    let syncer = syncer.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut s = syncer.lock().unwrap_or_else(|e| e.into_inner());
        s.sync(&snapshot, full)
    })
    .await;
    match result {
        Ok(Ok(stats)) => {
            info!(
                full,
                ports = stats.service_ports,
                written = stats.chains_written,
                skipped = stats.chains_skipped,
                deleted = stats.chains_deleted,
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
