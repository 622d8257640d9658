//! Server assembly: opens the store, bootstraps the default objects, starts the
//! controllers and serves HTTPS (or HTTP with `--insecure`) until `shutdown` resolves.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::db::Db;
use crate::ipalloc::ClusterIpAllocator;
use crate::store::StoreError;

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`0.0.0.0:6443`).
    pub listen: SocketAddr,
    /// Directory holding `minion.db`.
    pub data_dir: PathBuf,
    /// Address published in the `default/kubernetes` Endpoints.
    pub advertise_address: Option<IpAddr>,
    /// TLS, tokens and `--insecure`.
    pub security: crate::Security,
    /// Where objects are stored (`--storage`: SQLite in `data_dir`, or etcd).
    pub storage: crate::StorageConfig,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the datastore in {dir}: {source}")]
    Store { dir: String, source: StoreError },
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
}

/// State shared by every request handler and controller.
#[derive(Debug)]
pub struct AppState {
    pub db: Db,
    /// Allocated Service ClusterIPs.
    pub ips: Mutex<ClusterIpAllocator>,
    /// Becomes true when the server shuts down (ends watches).
    pub shutdown: watch::Receiver<bool>,
    /// Request counters and latencies (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The bearer token presented to kubelets when proxying `pods/log`.
    pub kubelet_token: Option<String>,
}

impl AppState {
    /// Locks the ClusterIP allocator.
    pub fn ips(&self) -> std::sync::MutexGuard<'_, ClusterIpAllocator> {
        self.ips.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    crate::security::check_listen(&config.security, config.listen.ip())?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| Error::Bind { addr: config.listen, source })?;
    run_with_listener(listener, config, shutdown).await
}

/// Serves on an already bound listener (tests bind 127.0.0.1:0).
pub async fn run_with_listener(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (storage, dir) = (config.storage.clone(), config.data_dir.clone());
    let store = tokio::task::spawn_blocking(move || storage.open(&dir))
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?
        .map_err(|source| Error::Store { dir: config.storage.describe(&config.data_dir), source })?;
    let db = Db::new(store);
    let kubelet_token = crate::security::kubelet_client_token(&config.security)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        db,
        ips: Mutex::new(ClusterIpAllocator::service_cidr()),
        shutdown: stop_rx,
        metrics: Default::default(),
        kubelet_token,
    });
    let local = listener.local_addr().map_err(Error::Serve)?;
    let advertise = config.advertise_address.unwrap_or_else(|| advertise_default(local.ip()));
    let security = crate::security::prepare(&config.security, &config.data_dir, local, advertise)?;
    crate::bootstrap::run(&state, advertise, local.port()).await.map_err(|e| Error::Bootstrap(e.to_string()))?;
    let mut controllers = crate::leader::spawn(state.clone(), crate::leader::identity(local));
    tracing::info!(addr = %local, data_dir = %config.data_dir.display(), tls = security.tls.is_some(), "minion-apiserver serving");
    let app = Router::new()
        .fallback(crate::handlers::dispatch)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(security.authenticator.clone(), crate::auth::middleware));
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let served = match security.tls {
        Some(acceptor) => crate::tls::serve(listener, acceptor, app, shutdown).await,
        None => {
            use axum::serve::ListenerExt;
            // TCP_NODELAY as Go (kube-apiserver) sets it: without it Nagle holds a watch
            // event written right after another until the client's delayed ACK (~40 ms).
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
    };
    if state.db.shared() {
        // The elector saw the shutdown: give it a moment to hand the Lease over, so
        // another API server takes the controllers at once instead of in 15 s.
        let electors = futures::future::join_all(controllers.iter_mut());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), electors).await;
    }
    for handle in controllers {
        handle.abort();
    }
    served.map_err(Error::Serve)
}

fn advertise_default(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        ip
    }
}
