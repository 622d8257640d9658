//! minion-agent: the kubelet of a minion node. It registers the Node, keeps its status
//! and Lease fresh, and runs the pods bound to it: a network namespace + CNI per pod
//! (the sandbox), containers through the `minion-runtime` CLI, status back to the API.

pub mod bundle;
pub mod cni;
pub mod config;
pub mod containers;
pub mod cri;
pub mod images;
pub mod lease;
pub mod logs;
pub mod manager;
pub mod node;
pub mod podapi;
pub mod podworker;
pub mod quantity;
pub mod sandbox;
pub mod server;
pub mod status;
pub mod termination;

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

pub use config::Config;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error(transparent)]
    Kubeconfig(#[from] minion_client::KubeconfigError),
    /// The root dir could not be created.
    #[error("failed to create root dir {path}: {source}")]
    RootDir {
        /// Directory.
        path: std::path::PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// The kubelet server's address could not be bound.
    #[error("failed to listen on {addr} (kubelet server): {source}")]
    Listen {
        /// The address (`--node-ip`:`--kubelet-port`).
        addr: String,
        /// IO error.
        source: std::io::Error,
    },
    /// Registering the node failed.
    #[error(transparent)]
    Node(#[from] node::NodeError),
}

/// Runs the kubelet until `shutdown` resolves. Containers keep running afterwards and
/// are adopted by the next start; the Node is not deleted.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    std::fs::create_dir_all(config.root_dir.join("pods"))
        .map_err(|source| Error::RootDir { path: config.root_dir.clone(), source })?;
    let client = minion_client::from_kubeconfig(&config.kubeconfig).await?;
    let listener = bind_kubelet_server(&config).await?;
    let config = Arc::new(config);
    let facts = node::gather_facts(&config.root_dir);
    let nodes: Api<Node> = Api::all(client.clone());
    let node_uid = register_until_ok(&nodes, &config, &facts).await?;
    tracing::info!(node = %config.node_name, uid = %node_uid, "node registered");

    let heartbeat = tokio::spawn(heartbeat(client.clone(), config.clone(), facts, node_uid));
    let deps = podworker::Deps {
        config: config.clone(),
        runtime: Arc::new(cri::RuntimeCli::new(
            config.runtime_bin.clone(),
            config.runtime_root.clone(),
            config.image_root.clone(),
        )
        .with_cgroup_root(config.cgroup_root.clone())
        .with_insecure_registries(config.insecure_registries.clone())),
        cni: Arc::new(cni::ProcessExec),
        api: Arc::new(podapi::KubePodApi::new(client.clone(), config.node_name.clone())),
        registries: Default::default(),
    };
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut kubelet_server = tokio::spawn(server::serve(
        listener,
        server::KubeletServer {
            config: config.clone(),
            pods: Arc::new(server::ApiPods(client.clone())),
            runtime: deps.runtime.clone(),
            follows: Arc::new(tokio::sync::Semaphore::new(server::MAX_FOLLOWS)),
        },
        async move {
            let _ = server_stopped.await;
        },
    ));
    let image_gc = tokio::spawn(images::gc_loop(client.clone(), config.clone(), deps.runtime.clone()));
    manager::PodManager::new(deps).run(client, shutdown).await;
    image_gc.abort();
    // Open log streams get a moment to end cleanly, then the server is dropped.
    let _ = stop_server.send(());
    if tokio::time::timeout(std::time::Duration::from_secs(2), &mut kubelet_server).await.is_err() {
        kubelet_server.abort();
    }
    heartbeat.abort();
    tracing::info!("agent stopped");
    Ok(())
}

/// Binds `--node-ip`:`--kubelet-port` for the kubelet server.
async fn bind_kubelet_server(config: &Config) -> Result<tokio::net::TcpListener, Error> {
    let addr = match config.node_ip.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, config.kubelet_port).to_string(),
        Err(_) => format!("{}:{}", config.node_ip, config.kubelet_port),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| Error::Listen { addr: addr.clone(), source })?;
    tracing::info!(%addr, "kubelet server listening");
    Ok(listener)
}

async fn register_until_ok(nodes: &Api<Node>, config: &Config, facts: &node::NodeFacts) -> Result<String, Error> {
    let mut attempt = 0;
    loop {
        match node::register(nodes, config, facts).await {
            Ok(uid) => return Ok(uid),
            Err(e) if attempt < 30 => {
                tracing::warn!(error = %e, "node registration failed, retrying");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Node status patch + Lease renewal every heartbeat interval.
async fn heartbeat(client: kube::Client, config: Arc<Config>, facts: node::NodeFacts, mut node_uid: String) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, minion_api::NODE_LEASE_NAMESPACE);
    let mut clock = node::ConditionClock::default();
    let mut ticker = tokio::time::interval(config.heartbeat_interval);
    loop {
        ticker.tick().await;
        let readiness = node::readiness(&config);
        let conditions = node::conditions(&mut clock, Timestamp::now(), &readiness);
        let status = node::build_status(&config, &facts, conditions);
        match node::patch_status(&nodes, &config, &status).await {
            Err(node::NodeError::Api { source: kube::Error::Api(e), .. }) if e.code == 404 => {
                tracing::warn!("node object is gone, registering again");
                match node::register(&nodes, &config, &facts).await {
                    Ok(uid) => {
                        node_uid = uid;
                        if let Err(e) = node::patch_status(&nodes, &config, &status).await {
                            tracing::warn!(error = %e, "node status update failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "node re-registration failed"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "node status update failed"),
            Ok(()) => {}
        }
        if let Err(e) = lease::renew(&leases, &config.node_name, &node_uid).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
    }
}
