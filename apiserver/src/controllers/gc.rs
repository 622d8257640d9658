//! Garbage collection, as kube-controller-manager's PodGC and the events TTL do:
//! Pods bound to a Node that no longer exists are deleted (after a 40s quarantine),
//! Events older than one hour are removed, and ownerReferences are enforced
//! (see [`super::owners`]).

use std::collections::HashSet;

use serde_json::Value;

use super::list_all;
use crate::error::ApiError;
use crate::objects::{name, namespace, parse_time, str_at};
use crate::resources;
use crate::server::AppState;

/// How long an Event is kept (kube-apiserver's default `--event-ttl`).
pub const EVENT_TTL_SECONDS: i64 = 3600;
/// How old an orphaned Pod must be before it is deleted.
pub const ORPHAN_QUARANTINE_SECONDS: i64 = 40;

/// One collection pass.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let now = chrono::Utc::now();
    let nodes: HashSet<String> = list_all(app, "", "nodes", None).await?.iter().map(|n| name(n).to_string()).collect();
    let pods = list_all(app, "", "pods", None).await?;
    let age = |o: &Value, path: &str| parse_time(str_at(o, path)).map(|t| (now - t).num_seconds());
    for pod in &pods {
        let node = str_at(pod, "/spec/nodeName");
        let old = age(pod, "/metadata/creationTimestamp").is_some_and(|a| a > ORPHAN_QUARANTINE_SECONDS);
        if !node.is_empty() && !nodes.contains(node) && old {
            tracing::info!(pod = %format!("{}/{}", namespace(pod), name(pod)), node, "deleting pod bound to a missing node");
            remove(app, "pods", pod).await;
        }
    }
    super::owners::reconcile(app).await?;
    for event in list_all(app, "", "events", None).await? {
        let last = ["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]
            .iter()
            .find_map(|p| age(&event, p));
        if last.is_some_and(|a| a > EVENT_TTL_SECONDS) {
            remove(app, "events", &event).await;
        }
    }
    Ok(())
}

async fn remove(app: &AppState, plural: &str, obj: &Value) {
    remove_in(app, "", plural, obj).await;
}

async fn remove_in(app: &AppState, group: &str, plural: &str, obj: &Value) {
    let Some(res) = resources::find(group, plural) else { return };
    let key = res.key(Some(namespace(obj)), name(obj));
    if let Err(e) = app.db.delete(&key, None).await {
        tracing::debug!(key = %key, error = %e, "garbage collection delete failed");
    }
}
