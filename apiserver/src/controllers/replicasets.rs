//! The ReplicaSet controller: keeps `spec.replicas` Pods, created from the template
//! with an ownerReference to the ReplicaSet, deleting the extras (unscheduled, then
//! not ready, then newest first), and reports replicas/readyReplicas in the status.

use serde_json::{json, Value};

use super::list_all;
use super::workloads::{controller_uid, deleting, int, owner_ref, uid};
use crate::error::ApiError;
use crate::handlers::{create_object, delete_object, DeleteOptions};
use crate::objects::{condition_status, name, namespace, str_at};
use crate::resources;
use crate::server::AppState;

/// One pass over all ReplicaSets.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let sets = list_all(app, "apps", "replicasets", None).await?;
    let live: Vec<&Value> = sets.iter().filter(|r| !deleting(r)).map(|r| &**r).collect();
    let pods = super::pods_by_namespace(app, live.iter().map(|r| namespace(r).to_string()).collect()).await?;
    for rs in live {
        let mut owned: Vec<&Value> = pods
            .get(namespace(rs))
            .into_iter()
            .flatten()
            .filter(|p| controller_uid(p, "ReplicaSet") == Some(uid(rs)))
            .filter(|p| !deleting(p) && !matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed"))
            .map(|p| &**p)
            .collect();
        let want = usize::try_from(int(rs, "/spec/replicas")).unwrap_or(0);
        if owned.len() < want {
            for _ in owned.len()..want {
                if let Err(e) = create_object(app, pods_res()?, Some(namespace(rs)), pod_for(rs)).await {
                    tracing::warn!(replicaset = name(rs), error = %e, "cannot create pod");
                }
            }
        } else if owned.len() > want {
            owned.sort_by_key(|p| deletion_rank(p));
            for pod in &owned[..owned.len() - want] {
                let _ = delete_object(app, pods_res()?, Some(namespace(pod)), name(pod), &DeleteOptions::default()).await;
            }
        }
        write_status(app, rs, &owned).await?;
    }
    Ok(())
}

fn pods_res() -> Result<&'static resources::ResourceInfo, ApiError> {
    resources::find("", "pods").ok_or_else(|| ApiError::internal("no pods resource"))
}

/// Sort key: the pods to delete first come first.
fn deletion_rank(pod: &Value) -> (bool, bool, std::cmp::Reverse<String>) {
    let scheduled = !str_at(pod, "/spec/nodeName").is_empty();
    let ready = condition_status(pod, "Ready") == Some("True");
    (scheduled, ready, std::cmp::Reverse(str_at(pod, "/metadata/creationTimestamp").to_string()))
}

/// A new Pod from the ReplicaSet's template.
pub fn pod_for(rs: &Value) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(map) = meta.as_object_mut() {
        map.remove("name");
        map.insert("generateName".into(), json!(format!("{}-", name(rs))));
        map.insert("ownerReferences".into(), json!([owner_ref(rs, "apps/v1", "ReplicaSet")]));
    }
    json!({"metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

async fn write_status(app: &AppState, rs: &Value, owned: &[&Value]) -> Result<(), ApiError> {
    let ready = owned.iter().filter(|p| condition_status(p, "Ready") == Some("True")).count();
    let status = json!({
        "replicas": owned.len(), "fullyLabeledReplicas": owned.len(), "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": int(rs, "/metadata/generation"),
    });
    if rs.get("status") == Some(&status) {
        return Ok(());
    }
    let Some(res) = resources::find("apps", "replicasets") else { return Ok(()) };
    let key = res.key(Some(namespace(rs)), name(rs));
    let result = app
        .db
        .guaranteed_update(&key, "replicasets", name(rs), |mut r| {
            r["status"] = status.clone();
            Ok(Some(r))
        })
        .await;
    match result {
        Err(e) if e.code != 404 => Err(e),
        _ => Ok(()),
    }
}
