//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), the current one scaled to `spec.replicas`
//! and older ones scaled down as new pods become ready (a simple rolling update);
//! status (replicas, updated/ready/available, observedGeneration, Available and
//! Progressing conditions) as `kubectl rollout status` reads it.

use serde_json::{json, Map, Value};

use super::list_all;
use super::workloads::{controller_uid, deleting, int, owner_ref, template_hash, uid};
use crate::error::ApiError;
use crate::handlers::create_object;
use crate::objects::{name, namespace, now, set_condition, str_at};
use crate::resources;
use crate::server::AppState;

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// One pass over all Deployments.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let sets = list_all(app, "apps", "replicasets", None).await?;
    for d in list_all(app, "apps", "deployments", None).await?.iter().filter(|d| !deleting(d)) {
        let owned: Vec<&Value> = sets
            .iter()
            .filter(|r| namespace(r) == namespace(d) && controller_uid(r, "Deployment") == Some(uid(d)))
            .map(|r| &**r)
            .collect();
        if let Err(e) = sync(app, d, &owned).await {
            tracing::warn!(deployment = %format!("{}/{}", namespace(d), name(d)), error = %e, "sync failed");
        }
    }
    Ok(())
}

async fn sync(app: &AppState, d: &Value, owned: &[&Value]) -> Result<(), ApiError> {
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let desired = int(d, "/spec/replicas");
    let current = owned.iter().find(|r| str_at(r, &format!("/metadata/labels/{HASH_LABEL}")) == hash);
    let Some(current) = current else {
        let revision = owned.iter().filter_map(|r| str_at(r, &format!("/metadata/annotations/{}", REVISION.replace('/', "~1"))).parse::<i64>().ok()).max().unwrap_or(0) + 1;
        let rs = new_replicaset(d, &template, &hash, desired, revision);
        return create_object(app, rs_res()?, Some(namespace(d)), rs).await.map(|_| ()).or_else(ignore_conflict);
    };
    scale(app, current, desired).await?;
    let mut allowed_old = (desired - int(current, "/status/readyReplicas")).max(0);
    for old in owned.iter().filter(|r| uid(r) != uid(current)) {
        let keep = int(old, "/spec/replicas").min(allowed_old);
        allowed_old -= keep;
        scale(app, old, keep).await?;
    }
    write_status(app, d, current, owned).await
}

fn ignore_conflict(e: ApiError) -> Result<(), ApiError> {
    if e.code == 409 { Ok(()) } else { Err(e) }
}

fn rs_res() -> Result<&'static resources::ResourceInfo, ApiError> {
    resources::find("apps", "replicasets").ok_or_else(|| ApiError::internal("no replicasets resource"))
}

fn new_replicaset(d: &Value, template: &Value, hash: &str, replicas: i64, revision: i64) -> Value {
    let mut template = template.clone();
    let mut labels: Map<String, Value> =
        template.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), json!(hash));
    crate::objects::object_mut(&mut template, "metadata").insert("labels".into(), Value::Object(labels.clone()));
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    crate::objects::object_mut(&mut selector, "matchLabels").insert(HASH_LABEL.into(), json!(hash));
    json!({
        "metadata": {
            "name": format!("{}-{hash}", name(d)), "labels": labels,
            "annotations": {REVISION: revision.to_string()},
            "ownerReferences": [owner_ref(d, "apps/v1", "Deployment")],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    })
}

async fn scale(app: &AppState, rs: &Value, replicas: i64) -> Result<(), ApiError> {
    if int(rs, "/spec/replicas") == replicas {
        return Ok(());
    }
    let key = rs_res()?.key(Some(namespace(rs)), name(rs));
    app.db
        .guaranteed_update(&key, "replicasets", name(rs), |mut r| {
            crate::objects::object_mut(&mut r, "spec").insert("replicas".into(), json!(replicas));
            let generation = int(&r, "/metadata/generation") + 1;
            crate::objects::object_mut(&mut r, "metadata").insert("generation".into(), json!(generation));
            Ok(Some(r))
        })
        .await
        .map(|_| ())
}

/// The Deployment status for its current and old ReplicaSets.
pub fn status_for(d: &Value, current: &Value, owned: &[&Value]) -> Value {
    let desired = int(d, "/spec/replicas");
    let sum = |p: &str| owned.iter().map(|r| int(r, p)).sum::<i64>();
    let (replicas, ready) = (sum("/status/replicas"), sum("/status/readyReplicas"));
    let updated = int(current, "/status/replicas");
    let mut status = json!({
        "observedGeneration": int(d, "/metadata/generation"), "replicas": replicas,
        "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
        "conditions": d.pointer("/status/conditions").cloned().unwrap_or(json!([])),
    });
    if desired > ready {
        status["unavailableReplicas"] = json!(desired - ready);
    }
    let (avail, avail_reason) =
        if ready >= desired { ("True", "MinimumReplicasAvailable") } else { ("False", "MinimumReplicasUnavailable") };
    let done = updated == desired && ready >= desired && replicas == updated;
    let progress_reason = if done { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" };
    let rs_name = name(current);
    let conditions = [
        ("Available", avail, avail_reason, if avail == "True" { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }.to_string()),
        ("Progressing", "True", progress_reason, format!("ReplicaSet \"{rs_name}\" {}.", if done { "has successfully progressed" } else { "is progressing" })),
    ];
    let mut holder = json!({"status": status});
    for (ty, st, reason, message) in conditions {
        let t = now();
        set_condition(&mut holder, json!({"type": ty, "status": st, "reason": reason, "message": message,
            "lastUpdateTime": t, "lastTransitionTime": t}));
    }
    holder["status"].take()
}

async fn write_status(app: &AppState, d: &Value, current: &Value, owned: &[&Value]) -> Result<(), ApiError> {
    let status = status_for(d, current, owned);
    if d.get("status") == Some(&status) {
        return Ok(());
    }
    let Some(res) = resources::find("apps", "deployments") else { return Ok(()) };
    app.db
        .guaranteed_update(&res.key(Some(namespace(d)), name(d)), "deployments", name(d), |mut obj| {
            obj["status"] = status.clone();
            Ok(Some(obj))
        })
        .await
        .map(|_| ())
}
