//! `minion-netd daemon`: the node network daemon, like kindnet. It watches Nodes and
//! keeps a host-gw route to every other node's podCIDR via its InternalIP
//! ([`routes`]), writes this node's CNI config once its Node has a podCIDR, programs
//! the egress masquerade rule for this node's pod subnet ([`masq`]), releases IP
//! allocations of vanished sandboxes at start ([`gc`]), removes pod veths a CNI DEL
//! left behind when their netns was never deleted ([`veth_sweep`]) and serves
//! `/healthz` and `/metrics` ([`metrics`]).

pub mod gc;
pub mod masq;
pub mod metrics;
pub mod nodes;
pub mod route_netlink;
pub mod routes;
pub mod veth_sweep;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use kube::runtime::reflector::Store;
use kube::Client;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::Notify;

use crate::conflist::{ensure_conflist, ConflistParams};
use masq::Masquerade;
use metrics::Metrics;
use routes::{desired_routes, reconcile, NodeRoute, RouteOps};

/// How the daemon is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// kubeconfig naming the API server.
    pub kubeconfig: PathBuf,
    /// This node's name.
    pub node_name: String,
    /// Where to write the CNI config (None: do not write it).
    pub cni_conf_dir: Option<PathBuf>,
    /// IPAM data directory (allocations under `<data_dir>/<network>/`).
    pub data_dir: PathBuf,
    /// Bridge device named in the CNI config.
    pub bridge: String,
    /// CNI network name.
    pub network: String,
    /// The cluster CIDR (traffic leaving it is masqueraded).
    pub cluster_cidr: Ipv4Network,
    /// iptables binaries for masquerade (None: no masquerade rules).
    pub masquerade: Option<Masquerade>,
    /// `/healthz` + `/metrics` listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Interval of full reconciles even without events.
    pub resync: Duration,
    /// Garbage-collect allocations of vanished sandboxes at start and sweep stale pod
    /// veths periodically (off when another plugin owns the data dir and the veths).
    pub ipam_gc: bool,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The kubeconfig could not be read or used.
    #[error(transparent)]
    Kubeconfig(#[from] minion_client::KubeconfigError),
    /// The metrics address could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Netlink could not be opened.
    #[error(transparent)]
    Routes(#[from] routes::RouteError),
    /// The node watch ended before its first list.
    #[error("node watch ended before the initial list")]
    WatchEnded,
}

/// Runs the daemon in the current network namespace until `shutdown` completes.
/// Routes and rules stay in place on exit (a restart finds and keeps them).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let client = minion_client::from_kubeconfig(&config.kubeconfig).await?;
    let ops = route_netlink::NetlinkRoutes::connect()?;
    let metrics = Arc::new(Metrics::default());
    match ops.link_names().await {
        _ if !config.ipam_gc => {}
        Ok(links) => start_gc(&config, &metrics, |veth| links.iter().any(|l| l == veth)),
        Err(error) => tracing::warn!(%error, "IPAM garbage collection skipped"),
    }
    let sweep = config.ipam_gc.then(|| start_sweep(&config, &metrics)).flatten();
    let result = run_with(client, ops, config, metrics, shutdown).await;
    if let Some(s) = sweep {
        s.abort();
    }
    result
}

/// Starts the periodic stale-veth sweep (after the start-up GC, so its first pass
/// sees the allocations that GC kept).
fn start_sweep(config: &Config, metrics: &Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
    let ops = match crate::netlink::NetlinkOps::connect(std::path::Path::new("/proc/sys")) {
        Ok(ops) => ops,
        Err(error) => {
            tracing::warn!(%error, "stale veth sweep disabled");
            return None;
        }
    };
    Some(tokio::spawn(veth_sweep::run_periodic(
        ops,
        config.data_dir.join(&config.network),
        config.bridge.clone(),
        metrics.clone(),
        veth_sweep::SWEEP_INTERVAL,
    )))
}

/// Like [`run`] with a given client, route seam and metrics (tests pass fakes).
pub async fn run_with<O: RouteOps>(
    client: Client,
    mut ops: O,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    tracing::info!(node = %config.node_name, "minion-netd daemon starting");
    let server = match config.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Listen { addr, source })?;
            Some(tokio::spawn(metrics::serve(l, metrics.clone())))
        }
        None => None,
    };
    let changed = Arc::new(Notify::new());
    let (store, watch_task) = nodes::start(&client, changed.clone(), metrics.clone());
    let result = event_loop(&mut ops, &config, &metrics, &store, &changed, shutdown).await;
    watch_task.abort();
    if let Some(s) = server {
        s.abort();
    }
    tracing::info!("minion-netd daemon stopped");
    result
}

/// Allocations younger than this are never garbage-collected (an ADD may be running).
const GC_MIN_AGE: Duration = Duration::from_secs(60);

fn start_gc(config: &Config, metrics: &Metrics, link_exists: impl Fn(&str) -> bool) {
    let dir = config.data_dir.join(&config.network);
    match gc::release_dead_sandboxes(&dir, GC_MIN_AGE, link_exists) {
        Ok(released) => {
            metrics.ipam_gc_released.fetch_add(released.len() as u64, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "IPAM garbage collection failed"),
    }
}

async fn event_loop<O: RouteOps>(
    ops: &mut O,
    config: &Config,
    metrics: &Metrics,
    store: &Store<Node>,
    changed: &Notify,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        ready = store.wait_until_ready() => ready.map_err(|_| DaemonError::WatchEnded)?,
    }
    let mut local = LocalState::default();
    loop {
        let nodes: Vec<NodeRoute> = store.state().iter().map(|n| nodes::node_route(n)).collect();
        let ok = sync(ops, config, metrics, &nodes, &mut local).await;
        let retry = if ok { config.resync } else { Duration::from_secs(2) };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = changed.notified() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// What this node already applied for itself (so it is redone only on change).
#[derive(Debug, Default)]
struct LocalState {
    masqueraded: Option<Ipv4Network>,
}

/// One level-triggered pass: routes, then this node's CNI config and masquerade.
async fn sync<O: RouteOps>(
    ops: &mut O,
    config: &Config,
    metrics: &Metrics,
    nodes: &[NodeRoute],
    local: &mut LocalState,
) -> bool {
    metrics.reconciles.fetch_add(1, Ordering::Relaxed);
    let mut ok = match reconcile(ops, &desired_routes(nodes, &config.node_name)).await {
        Ok(s) => {
            metrics.routes_added.fetch_add(s.added, Ordering::Relaxed);
            metrics.routes_deleted.fetch_add(s.deleted, Ordering::Relaxed);
            metrics.routes_installed.store(s.installed, Ordering::Relaxed);
            true
        }
        Err(error) => {
            tracing::warn!(%error, "route reconcile failed (retrying)");
            false
        }
    };
    if let Some(cidr) = nodes.iter().find(|n| n.name == config.node_name).and_then(|n| n.pod_cidr) {
        ok &= apply_local(config, metrics, cidr, local);
    }
    if !ok {
        metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    }
    metrics.ready.fetch_or(ok, Ordering::Relaxed);
    ok
}

fn apply_local(config: &Config, metrics: &Metrics, cidr: Ipv4Network, local: &mut LocalState) -> bool {
    let mut ok = true;
    if let Some(dir) = &config.cni_conf_dir {
        let params = ConflistParams {
            name: config.network.clone(),
            bridge: config.bridge.clone(),
            pod_cidr: cidr.to_string(),
            data_dir: config.data_dir.clone(),
        };
        match ensure_conflist(dir, &params) {
            Ok(true) => {
                metrics.cni_config_writes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%cidr, dir = %dir.display(), "wrote CNI config");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "writing the CNI config failed");
                ok = false;
            }
        }
    }
    if let (Some(m), false) = (&config.masquerade, local.masqueraded == Some(cidr)) {
        match m.apply(cidr, config.cluster_cidr) {
            Ok(()) => {
                local.masqueraded = Some(cidr);
                tracing::info!(%cidr, chain = masq::MASQ_CHAIN, "egress masquerade in place");
            }
            Err(error) => {
                tracing::warn!(%error, "masquerade rules failed");
                ok = false;
            }
        }
    }
    ok
}
