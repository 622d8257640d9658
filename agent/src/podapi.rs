//! What a pod worker writes to the API server (status, final delete, events), behind
//! [`PodApi`] so the worker's orchestration can run against a recording fake.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Client;
use serde_json::Value;

/// A failed pod API write.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} pod {namespace}/{name}: {source}")]
pub struct PodApiError {
    /// patch status / delete.
    pub action: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// kube error.
    pub source: kube::Error,
}

/// The pod writes the kubelet makes.
#[async_trait]
pub trait PodApi: Send + Sync {
    /// Merge-patch `pods/<name>/status` with `status`.
    async fn patch_status(&self, namespace: &str, name: &str, status: &Value) -> Result<(), PodApiError>;
    /// DELETE the pod with gracePeriodSeconds=0 and a uid precondition (404 is success).
    async fn finalize_delete(&self, namespace: &str, name: &str, uid: &str) -> Result<(), PodApiError>;
    /// Record an Event about the pod (best effort, never fails the caller).
    async fn event(&self, pod: &Pod, warning: bool, reason: &str, message: &str);
    /// GET a Secret (the pod's imagePullSecrets); `Err` carries the API's answer.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, String> {
        Err(format!("secret {namespace}/{name}: not available"))
    }
}

/// [`PodApi`] over a kube client.
#[derive(Clone)]
pub struct KubePodApi {
    client: Client,
    node_name: String,
}

impl std::fmt::Debug for KubePodApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePodApi").field("node_name", &self.node_name).finish()
    }
}

impl KubePodApi {
    /// Writes through `client`, signing events as the kubelet of `node_name`.
    pub fn new(client: Client, node_name: String) -> KubePodApi {
        KubePodApi { client, node_name }
    }
}

/// The core/v1 Event the kubelet records about a pod.
pub fn build_event(pod: &Pod, node: &str, warning: bool, reason: &str, message: &str, now: Timestamp) -> Event {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(ns),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.into()) }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

#[async_trait]
impl PodApi for KubePodApi {
    async fn patch_status(&self, namespace: &str, name: &str, status: &Value) -> Result<(), PodApiError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop).map_err(|source| {
            PodApiError { action: "patch status of", namespace: namespace.into(), name: name.into(), source }
        })
    }

    async fn finalize_delete(&self, namespace: &str, name: &str, uid: &str) -> Result<(), PodApiError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.into()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(PodApiError { action: "delete", namespace: namespace.into(), name: name.into(), source }),
        }
    }

    async fn event(&self, pod: &Pod, warning: bool, reason: &str, message: &str) {
        let event = build_event(pod, &self.node_name, warning, reason, message, Timestamp::now());
        let ns = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, reason, "failed to record event");
        }
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get(name).await.map_err(|e| format!("secret {namespace}/{name}: {e}"))
    }
}
