//! The namespace controller (kube-controller-manager's namespace lifecycle): for a
//! Terminating namespace it deletes every namespaced object in it (pods gracefully,
//! through the normal delete path so the agent stops them), and once nothing is left
//! it gives up the `kubernetes` finalizer through the `finalize` subresource's logic;
//! the namespace is removed when no finalizer remains.

use std::sync::Arc;

use serde_json::{json, Value};

use super::list_all;
use crate::error::ApiError;
use crate::handlers::nsfinalize::{finished, purge_if_finished};
use crate::handlers::{delete_object, DeleteOptions};
use crate::objects::name;
use crate::resources::{self, RESOURCES};
use crate::server::AppState;

/// The finalizer in `spec.finalizers` that this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// One pass over every Terminating namespace.
pub async fn reconcile(app: &Arc<AppState>) -> Result<(), ApiError> {
    for ns in list_all(app, "", "namespaces", None).await? {
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        if let Err(e) = drain(app, &ns).await {
            tracing::warn!(namespace = name(&ns), error = %e, "deleting the namespace content failed");
        }
    }
    Ok(())
}

async fn drain(app: &AppState, ns: &Value) -> Result<(), ApiError> {
    let ns_name = name(ns);
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        for item in list_all(app, res.group, res.plural, Some(ns_name)).await? {
            if item.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            match delete_object(app, res, Some(ns_name), name(&item), &DeleteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if !is_empty(app, ns_name).await? {
        return Ok(());
    }
    finalize(app, ns).await
}

/// Whether the namespace holds no object any more, read from the store itself (a
/// quorum read on etcd), not from the watch-fed cache the pass above used: that cache
/// may lag behind a create that just landed, and the finalizer must not go while an
/// object is left.
async fn is_empty(app: &AppState, ns: &str) -> Result<bool, ApiError> {
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let (items, _) = app.db.list(&res.prefix(Some(ns))).await.map_err(|e| ApiError::internal(e.to_string()))?;
        if !items.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Drops the `kubernetes` finalizer, then removes the namespace if nothing else holds it.
async fn finalize(app: &AppState, ns: &Value) -> Result<(), ApiError> {
    let nsres = resources::find("", "namespaces").ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    let ns_name = name(ns).to_string();
    let key = nsres.key(None, &ns_name);
    let updated = app
        .db
        .guaranteed_update(&key, "namespaces", &ns_name, |mut obj| {
            let list = obj.pointer("/spec/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
            if !list.iter().any(|f| f == FINALIZER) {
                return Ok(None);
            }
            let kept: Vec<Value> = list.into_iter().filter(|f| f != FINALIZER).collect();
            crate::objects::object_mut(&mut obj, "spec").insert("finalizers".into(), json!(kept));
            Ok(Some(obj))
        })
        .await;
    match updated {
        Ok(obj) if finished(&obj) => {
            purge_if_finished(app, &key, obj).await?;
            tracing::info!(namespace = %ns_name, "namespace deleted");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
