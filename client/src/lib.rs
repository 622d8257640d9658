//! What every node daemon that talks to the API server shares (agent, proxy, dnsd,
//! netd): a `kube` client built from a kubeconfig file, the SIGINT/SIGTERM shutdown
//! future handed to each daemon's `run(config, shutdown)`, and log setup.
//!
//! One place, so that when the API server moves to TLS and tokens every daemon
//! follows by changing its kubeconfig, not its code.

use std::path::{Path, PathBuf};

use futures::Stream;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use thiserror::Error;

/// A kubeconfig that could not be read or turned into a client.
#[derive(Debug, Error)]
#[error("kubeconfig {path}: {reason}")]
pub struct KubeconfigError {
    /// The kubeconfig file.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// Builds a client for the API server (and credentials) the kubeconfig at `path` names,
/// using its current context.
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, KubeconfigError> {
    let err = |reason: String| KubeconfigError { path: path.to_path_buf(), reason };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// A watch of every object of kind `K` in all namespaces, restarted with backoff when
/// the API server drops it (what each daemon feeds its reflectors with).
pub fn watch_all<K>(client: &kube::Client) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff()
}

/// Completes on the first SIGINT or SIGTERM: how a daemon is asked to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` or else by `default_filter` (e.g. "info").
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.yaml");
        let Err(e) = from_kubeconfig(&path).await else { panic!("a missing file gave a client") };
        assert_eq!(e.path, path);
        assert!(e.to_string().starts_with(&format!("kubeconfig {}: ", path.display())), "{e}");
    }

    #[tokio::test]
    async fn a_kubeconfig_without_a_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n").unwrap();
        assert!(from_kubeconfig(&path).await.is_err());
    }

    #[tokio::test]
    async fn a_plain_http_kubeconfig_builds_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:6443\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: admin\ncurrent-context: lab\n\
             users:\n- name: admin\n  user: {}\n",
        )
        .unwrap();
        from_kubeconfig(&path).await.unwrap();
    }
}
