//! The pod worker (the kubelet's `podWorkers` + `syncPod`): one task per pod uid that
//! level-triggers on every pod update and every few seconds, computing what should run
//! and converging: sandbox, containers (with restart backoff), status; and, once the
//! pod is being deleted or gone, terminating and finalizing it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;

use crate::cni::CniExec;
use crate::config::Config;
use crate::containers::ContainerRecord;
use crate::cri::RuntimeService;
use crate::podapi::PodApi;
use crate::sandbox::{self, Sandbox};
use crate::status::{self, PodView};

/// The collaborators of every pod worker.
#[derive(Clone)]
pub struct Deps {
    /// Kubelet config.
    pub config: Arc<Config>,
    /// Container runtime.
    pub runtime: Arc<dyn RuntimeService>,
    /// CNI plugin executor.
    pub cni: Arc<dyn CniExec>,
    /// API writes.
    pub api: Arc<dyn PodApi>,
    /// Registries recently found unreachable (shared by all workers).
    pub registries: Arc<crate::images::RegistryHealth>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").field("config", &self.config).finish()
    }
}

/// The runtime id of a pod's container.
pub fn container_id(uid: &str, name: &str) -> String {
    format!("{uid}-{name}")
}

/// One pod's worker state.
pub struct PodWorker {
    pub(crate) deps: Deps,
    pub(crate) uid: String,
    pub(crate) pod: Pod,
    pub(crate) sandbox: Option<Sandbox>,
    pub(crate) sandbox_error: Option<String>,
    pub(crate) containers: BTreeMap<String, ContainerRecord>,
    start_time: Timestamp,
    last_status: Option<Value>,
}

impl PodWorker {
    /// A worker for `pod` (not yet synced).
    pub fn new(deps: Deps, pod: Pod) -> PodWorker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        PodWorker {
            deps,
            uid,
            pod,
            sandbox: None,
            sandbox_error: None,
            containers: BTreeMap::new(),
            start_time,
            last_status: None,
        }
    }

    pub(crate) fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())
    }

    pub(crate) fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    /// Runs until the pod is gone (`None` sent: torn down), deleted (torn down and
    /// finalized), or the sender is dropped (agent shutdown: containers keep running).
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Pod>>) {
        let span = tracing::info_span!("pod", uid = %self.uid, pod = %format!("{}/{}", self.namespace(), self.name()));
        async move {
            loop {
                let latest = updates.borrow_and_update().clone();
                match latest {
                    None => return self.terminate(false).await,
                    Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                        self.pod = pod;
                        return self.terminate(true).await;
                    }
                    Some(pod) => {
                        self.pod = pod;
                        self.sync().await;
                    }
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(self.deps.config.sync_interval) => {}
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One level-triggered pass: sandbox, containers, status.
    pub async fn sync(&mut self) {
        if self.sandbox.is_none() {
            self.ensure_sandbox().await;
        }
        if self.sandbox.is_some() && self.sync_init_containers().await {
            let specs = self.pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
            for c in &specs {
                self.sync_container(c, false).await;
            }
        }
        self.write_status().await;
    }

    async fn ensure_sandbox(&mut self) {
        if let Some(sb) = sandbox::load(&self.deps.config, &self.pod) {
            tracing::info!(ip = %sb.pod_ip, "adopted existing pod sandbox");
            self.sandbox = Some(sb);
            return;
        }
        let d = self.deps.clone();
        match sandbox::setup(d.runtime.as_ref(), d.cni.as_ref(), &d.config, &self.pod).await {
            Ok(sb) => {
                tracing::info!(ip = %sb.pod_ip, netns = ?sb.netns, "pod sandbox ready");
                self.sandbox = Some(sb);
                self.sandbox_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, "pod sandbox setup failed");
                if self.sandbox_error.as_ref() != Some(&msg) {
                    d.api.event(&self.pod, true, "FailedCreatePodSandBox", &format!("Failed to create pod sandbox: {msg}")).await;
                }
                self.sandbox_error = Some(msg);
            }
        }
    }

    /// Runs init containers one at a time, in order; true once all completed.
    async fn sync_init_containers(&mut self) -> bool {
        let inits = self.pod.spec.as_ref().and_then(|s| s.init_containers.clone()).unwrap_or_default();
        for c in &inits {
            self.sync_container(c, true).await;
            let done = self.containers.get(&c.name).and_then(|r| r.state.as_ref()).is_some_and(|s| {
                s.status == crate::cri::RuntimeStatus::Stopped && s.exit_code == Some(0)
            });
            if !done {
                return false;
            }
        }
        true
    }

    fn views(&self, specs: &[k8s_openapi::api::core::v1::Container]) -> Vec<status::ContainerView> {
        specs
            .iter()
            .map(|c| {
                let mut v = self.containers.get(&c.name).map(|r| r.view(c)).unwrap_or_else(|| ContainerRecord::default().view(c));
                if v.waiting.is_none() && v.state.is_none() {
                    if let Some(e) = &self.sandbox_error {
                        v.waiting = Some(("ContainerCreating".into(), e.clone()));
                    }
                }
                v
            })
            .collect()
    }

    fn view(&self) -> PodView<'_> {
        let spec = self.pod.spec.as_ref();
        let containers = self.views(spec.map(|s| s.containers.as_slice()).unwrap_or_default());
        let init_containers = self.views(spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default());
        PodView {
            pod: &self.pod,
            pod_ip: self.sandbox.as_ref().map(|s| s.pod_ip.clone()),
            host_ip: self.deps.config.node_ip.clone(),
            start_time: self.start_time,
            containers,
            init_containers,
            now: Timestamp::now(),
        }
    }

    async fn write_status(&mut self) {
        let computed = status::compute(&self.view());
        let value = match serde_json::to_value(&computed) {
            Ok(v) => v,
            Err(e) => return tracing::error!(error = %e, "failed to serialize pod status"),
        };
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        match self.deps.api.patch_status(&self.namespace(), &self.name(), &value).await {
            Ok(()) => {
                tracing::debug!(phase = ?computed.phase, "pod status written");
                self.pod.status = Some(computed);
                self.last_status = Some(value);
            }
            Err(e) => tracing::warn!(error = %e, "failed to write pod status"),
        }
    }

    /// Bounded grace period for this pod's deletion.
    pub(crate) fn grace_period(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        Duration::from_secs(secs).min(self.deps.config.max_grace_period)
    }
}

#[cfg(test)]
#[path = "podworker_tests.rs"]
mod tests;
