//! Pod termination (the kubelet's `killPod` + pod cleanup): SIGTERM, wait up to the
//! grace period, SIGKILL, delete the containers, tear down the sandbox, and, for a
//! gracefully deleted pod, finalize the deletion in the API (grace 0, uid precondition).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cni::CniExec;
use crate::config::Config;
use crate::cri::{RuntimeService, RuntimeStatus};
use crate::podworker::{container_id, PodWorker};
use crate::sandbox;

/// How often state is polled while waiting for containers to stop.
const STOP_POLL: Duration = Duration::from_millis(200);

async fn running(runtime: &dyn RuntimeService, id: &str) -> bool {
    match runtime.container_status(id).await {
        Ok(s) => matches!(s.status, RuntimeStatus::Running | RuntimeStatus::Created | RuntimeStatus::Creating),
        Err(_) => false,
    }
}

/// SIGTERM every container, wait up to `grace`, SIGKILL what still runs, delete all.
pub async fn stop_containers(runtime: &dyn RuntimeService, ids: &[String], grace: Duration) {
    for id in ids {
        if running(runtime, id).await {
            if let Err(e) = runtime.stop_container(id, "SIGTERM").await {
                tracing::debug!(container = %id, error = %e, "SIGTERM failed");
            }
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut alive = false;
        for id in ids {
            alive |= running(runtime, id).await;
        }
        if !alive || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
    for id in ids {
        if running(runtime, id).await {
            tracing::info!(container = %id, "grace period over, sending SIGKILL");
            if let Err(e) = runtime.stop_container(id, "SIGKILL").await {
                tracing::debug!(container = %id, error = %e, "SIGKILL failed");
            }
        }
        if let Err(e) = runtime.remove_container(id).await {
            if !e.is_not_found() {
                tracing::warn!(container = %id, error = %e, "delete failed");
            }
        }
    }
}

/// The runtime containers that belong to pod `uid` (`<uid>-<name>`).
pub async fn runtime_containers_of(runtime: &dyn RuntimeService, uid: &str) -> Vec<String> {
    let prefix = format!("{uid}-");
    match runtime.list_containers().await {
        Ok(ids) => ids.into_iter().filter(|id| id.starts_with(&prefix)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "runtime list failed");
            Vec::new()
        }
    }
}

/// Which pod a cleanup is for (namespace/name may be empty for orphans).
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    /// Pod uid.
    pub uid: &'a str,
    /// Namespace (for CNI_ARGS).
    pub namespace: &'a str,
    /// Name (for CNI_ARGS).
    pub name: &'a str,
}

/// Tears down everything left of pod `uid` (containers, network, netns, cgroups, dirs).
pub async fn cleanup_pod(
    runtime: &dyn RuntimeService,
    cni: &dyn CniExec,
    config: &Config,
    pod: PodRef<'_>,
    extra_ids: Vec<String>,
    grace: Duration,
) {
    let PodRef { uid, namespace, name } = pod;
    let mut ids: BTreeSet<String> = extra_ids.into_iter().collect();
    ids.extend(runtime_containers_of(runtime, uid).await);
    let ids: Vec<String> = ids.into_iter().collect();
    stop_containers(runtime, &ids, grace).await;
    if let Err(e) = sandbox::teardown(runtime, cni, config, uid, namespace, name).await {
        tracing::warn!(error = %e, "sandbox teardown incomplete");
    }
}

impl PodWorker {
    /// Kills and removes everything of this pod; with `finalize`, deletes it in the API.
    pub(crate) async fn terminate(self, finalize: bool) {
        let grace = self.grace_period();
        tracing::info!(grace_secs = grace.as_secs(), finalize, "terminating pod");
        let ids: Vec<String> = self
            .pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| container_id(&self.uid, &c.name)).collect())
            .unwrap_or_default();
        if finalize {
            for c in self.pod.spec.iter().flat_map(|s| s.containers.iter()) {
                self.deps.api.event(&self.pod, false, "Killing", &format!("Stopping container {}", c.name)).await;
            }
        }
        let d = self.deps.clone();
        let (ns, name) = (self.namespace(), self.name());
        let pod = PodRef { uid: &self.uid, namespace: &ns, name: &name };
        cleanup_pod(d.runtime.as_ref(), d.cni.as_ref(), &d.config, pod, ids, grace).await;
        if finalize {
            match d.api.finalize_delete(&ns, &name, &self.uid).await {
                Ok(()) => tracing::info!("pod deletion finalized"),
                Err(e) => tracing::warn!(error = %e, "failed to finalize pod deletion"),
            }
        }
    }
}
