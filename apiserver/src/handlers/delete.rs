//! DELETE: immediate for most kinds; graceful for scheduled Pods (set
//! `deletionTimestamp` and let the kubelet finish with `gracePeriodSeconds=0`);
//! a Namespace takes its objects with it; a Service gives back its ClusterIP.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::finalize::{finalizers, mark_deleting, Propagation};
use super::validate::parse_json;
use super::{Req, Target};
use crate::error::{json_response, ApiError};
use crate::objects::{self, object_mut, str_at};
use crate::resources::{self, ResourceInfo};
use crate::server::AppState;
use crate::store::object_revision;

/// Namespaces that can never be deleted.
const PROTECTED_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Options of a delete (query parameters or a DeleteOptions body).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `propagationPolicy` (None: the kind's default, Background).
    pub propagation: Option<super::finalize::Propagation>,
}

fn options(req: &Req) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let body = parse_json(&req.body)?;
        opts.grace_period = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.uid = body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
        opts.resource_version =
            body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from);
        opts.propagation = Propagation::parse(
            body.get("propagationPolicy").and_then(Value::as_str),
            body.get("orphanDependents").and_then(Value::as_bool),
        )?;
    }
    if let Some(p) = Propagation::parse(req.param("propagationPolicy"), req.param("orphanDependents").map(|v| v == "true"))? {
        opts.propagation = Some(p);
    }
    if let Some(g) = req.param("gracePeriodSeconds") {
        let g = g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?;
        opts.grace_period = Some(g);
    }
    Ok(opts)
}

/// DELETE one object.
pub async fn delete(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let opts = options(req)?;
    let deleted = delete_object(app, target.res, target.namespace.as_deref(), target.name(), &opts).await?;
    Ok(json_response(StatusCode::OK, &deleted))
}

/// POST pods/<name>/eviction: an Eviction is a graceful delete (no
/// PodDisruptionBudgets exist here, so it is always allowed); answers 201 Success.
pub async fn evict(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let body = parse_json(&req.body)?;
    let kind = str_at(&body, "/kind");
    if !kind.is_empty() && kind != "Eviction" {
        return Err(ApiError::bad_request(format!("expected an Eviction, got {kind}")));
    }
    let named = str_at(&body, "/metadata/name");
    if !named.is_empty() && named != target.name() {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let d = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let opts = DeleteOptions {
        grace_period: d.get("gracePeriodSeconds").and_then(Value::as_i64),
        uid: d.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
        resource_version: d.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from),
        propagation: Propagation::parse(
            d.get("propagationPolicy").and_then(Value::as_str),
            d.get("orphanDependents").and_then(Value::as_bool),
        )?,
    };
    delete_object(app, target.res, target.namespace.as_deref(), target.name(), &opts).await?;
    let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201});
    Ok(json_response(StatusCode::CREATED, &status))
}

/// Deletes (or starts the graceful deletion of) one object; returns it.
pub async fn delete_object(
    app: &AppState,
    res: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let key = res.key(ns, name);
    let old = app
        .db
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, res.plural, name))?
        .ok_or_else(|| ApiError::not_found(res.plural, name))?;
    check_preconditions(res, name, &old, opts)?;
    let add = opts.propagation.and_then(Propagation::finalizer);
    if res.kind != "Namespace" && (add.is_some() || !finalizers(&old).is_empty()) {
        let grace = match res.kind {
            "Pod" if !str_at(&old, "/spec/nodeName").is_empty() => {
                let default = old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
                opts.grace_period.unwrap_or(default).max(0)
            }
            _ => 0,
        };
        let marked = mark_deleting(app, res, &key, name, add, grace).await?;
        super::finalize::complete_if_done(app, res, &key, &marked).await?;
        return Ok(marked);
    }
    match res.kind {
        "Pod" => delete_pod(app, &key, name, &old, opts.grace_period).await,
        "Namespace" => delete_namespace(app, &key, name).await,
        _ => remove(app, res, &key, name).await,
    }
}

fn check_preconditions(res: &ResourceInfo, name: &str, old: &Value, opts: &DeleteOptions) -> Result<(), ApiError> {
    if let Some(uid) = &opts.uid {
        if uid != str_at(old, "/metadata/uid") {
            return Err(ApiError::conflict(res.plural, name, "Precondition failed: UID in precondition does not match the UID in record"));
        }
    }
    if let Some(rv) = &opts.resource_version {
        if rv != &object_revision(old).to_string() {
            return Err(ApiError::stale(res.plural, name));
        }
    }
    Ok(())
}

/// Removes the key now (and releases a Service's ClusterIP).
async fn remove(app: &AppState, res: &ResourceInfo, key: &str, name: &str) -> Result<Value, ApiError> {
    let deleted = app.db.delete(key, None).await.map_err(|e| ApiError::from_store(e, res.plural, name))?;
    if res.kind == "Service" {
        let ip = str_at(&deleted, "/spec/clusterIP");
        if !ip.is_empty() && ip != "None" {
            app.ips().release(ip);
            crate::ipalloc::shared::release(app, ip).await;
        }
    }
    Ok(deleted)
}

async fn delete_pod(app: &AppState, key: &str, name: &str, old: &Value, grace: Option<i64>) -> Result<Value, ApiError> {
    let Some(pods) = resources::find("", "pods") else { return Err(ApiError::internal("no pods resource")) };
    let default_grace = old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
    let grace = grace.unwrap_or(default_grace).max(0);
    if grace == 0 || str_at(old, "/spec/nodeName").is_empty() {
        return remove(app, pods, key, name).await;
    }
    app.db
        .guaranteed_update(key, "pods", name, |mut pod| {
            let current = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
            if current.is_some_and(|c| c <= grace) {
                return Ok(None);
            }
            let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
            let meta = object_mut(&mut pod, "metadata");
            meta.insert("deletionTimestamp".into(), json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            Ok(Some(pod))
        })
        .await
}

async fn delete_namespace(app: &AppState, key: &str, name: &str) -> Result<Value, ApiError> {
    if PROTECTED_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden("namespaces", name, "this namespace may not be deleted"));
    }
    // Mark it Terminating (no new content is admitted); the namespace controller
    // deletes its content, then drops the `kubernetes` finalizer, then the namespace.
    let marked = app
        .db
        .guaranteed_update(key, "namespaces", name, |mut ns| {
            if ns.pointer("/metadata/deletionTimestamp").is_some() {
                if super::nsfinalize::finished(&ns) {
                    return Ok(None);
                }
                return Err(ApiError::conflict("namespaces", name, "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system."));
            }
            object_mut(&mut ns, "metadata").insert("deletionTimestamp".into(), json!(objects::now()));
            object_mut(&mut ns, "status").insert("phase".into(), json!("Terminating"));
            Ok(Some(ns))
        })
        .await?;
    super::nsfinalize::purge_if_finished(app, key, marked).await
}
