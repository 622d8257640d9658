//! The ownership half of kube-controller-manager's garbage collector: an object
//! whose owners (ownerReferences, by uid) are all gone is deleted (background
//! propagation); an owner deleted in the foreground has its dependents deleted
//! first and loses its `foregroundDeletion` finalizer once none remain; an owner
//! deleted with `orphan` has its dependents' ownerReferences to it removed, then
//! loses its `orphan` finalizer.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::workloads::{deleting, uid};
use crate::error::ApiError;
use crate::handlers::finalize::{complete_if_done, finalizers, Propagation, FOREGROUND, ORPHAN};
use crate::handlers::{delete_object, DeleteOptions};
use crate::objects::{name, namespace, object_mut};
use crate::resources::{ResourceInfo, RESOURCES};
use crate::server::AppState;

type Entry = (&'static ResourceInfo, Arc<Value>);

fn owner_uids(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).collect())
        .unwrap_or_default()
}

fn ns_of<'a>(res: &ResourceInfo, obj: &'a Value) -> Option<&'a str> {
    res.namespaced.then(|| namespace(obj))
}

/// One pass over every object.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let mut all: Vec<Entry> = Vec::new();
    for res in RESOURCES {
        let (items, _) = app.db.list_shared(&res.prefix(None)).await.map_err(|e| ApiError::internal(e.to_string()))?;
        all.extend(items.into_iter().map(|o| (res, o)));
    }
    let by_uid: HashMap<&str, &Entry> = all.iter().map(|e| (uid(&e.1), e)).collect();
    let mut dependents: HashMap<&str, usize> = HashMap::new();
    for (res, obj) in &all {
        let owners = owner_uids(obj);
        if owners.is_empty() {
            continue;
        }
        for o in &owners {
            let orphaning = by_uid.get(o).is_some_and(|e| deleting(&e.1) && finalizers(&e.1).iter().any(|f| f == ORPHAN));
            if !orphaning {
                *dependents.entry(o).or_default() += 1;
            }
        }
        let live: Vec<&&Entry> = owners.iter().filter_map(|u| by_uid.get(u)).collect();
        if live.is_empty() {
            if !deleting(obj) {
                delete(app, res, obj, Propagation::Background).await;
            }
            continue;
        }
        for (_, owner) in live.iter().map(|e| (&e.0, &e.1)) {
            if !deleting(owner) {
                continue;
            }
            let f = finalizers(owner);
            if f.iter().any(|x| x == ORPHAN) {
                orphan(app, res, obj, uid(owner)).await;
            } else if f.iter().any(|x| x == FOREGROUND) && !deleting(obj) {
                delete(app, res, obj, Propagation::Foreground).await;
            }
        }
    }
    for (res, owner) in &all {
        if !deleting(owner) || dependents.contains_key(uid(owner)) {
            continue;
        }
        let f = finalizers(owner);
        if f.iter().any(|x| x == ORPHAN || x == FOREGROUND) {
            drop_finalizers(app, res, owner).await;
        }
    }
    Ok(())
}

async fn delete(app: &AppState, res: &'static ResourceInfo, obj: &Value, propagation: Propagation) {
    let opts = DeleteOptions { propagation: Some(propagation), ..DeleteOptions::default() };
    match delete_object(app, res, ns_of(res, obj), name(obj), &opts).await {
        Ok(_) => tracing::debug!(kind = res.kind, name = name(obj), "garbage collected a dependent"),
        Err(e) if e.code == 404 => {}
        Err(e) => tracing::debug!(kind = res.kind, name = name(obj), error = %e, "dependent delete failed"),
    }
}

async fn orphan(app: &AppState, res: &'static ResourceInfo, obj: &Value, owner_uid: &str) {
    let key = res.key(ns_of(res, obj), name(obj));
    let result = app
        .db
        .guaranteed_update(&key, res.plural, name(obj), |mut o| {
            let meta = object_mut(&mut o, "metadata");
            let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array).cloned() else { return Ok(None) };
            let kept: Vec<Value> = refs.into_iter().filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid)).collect();
            if kept.is_empty() {
                meta.remove("ownerReferences");
            } else {
                meta.insert("ownerReferences".into(), json!(kept));
            }
            Ok(Some(o))
        })
        .await;
    if let Err(e) = result {
        tracing::debug!(key = %key, error = %e, "orphaning failed");
    }
}

async fn drop_finalizers(app: &AppState, res: &'static ResourceInfo, owner: &Value) {
    let key = res.key(ns_of(res, owner), name(owner));
    let result = app
        .db
        .guaranteed_update(&key, res.plural, name(owner), |mut o| {
            let kept: Vec<String> = finalizers(&o).into_iter().filter(|f| f != ORPHAN && f != FOREGROUND).collect();
            object_mut(&mut o, "metadata").insert("finalizers".into(), json!(kept));
            Ok(Some(o))
        })
        .await;
    match result {
        Ok(updated) => {
            if let Err(e) = complete_if_done(app, res, &key, &updated).await {
                tracing::debug!(key = %key, error = %e, "completing the deletion failed");
            }
        }
        Err(e) => tracing::debug!(key = %key, error = %e, "removing the deletion finalizer failed"),
    }
}
