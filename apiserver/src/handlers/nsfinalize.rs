//! The `namespaces/<name>/finalize` subresource: a PUT that only changes
//! `spec.finalizers` (what the namespace controller uses to give up its
//! `kubernetes` finalizer); a Terminating namespace without finalizers left is
//! removed right away.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::validate::parse_json;
use super::{Req, Target};
use crate::error::{json_response, ApiError};
use crate::objects::name;
use crate::server::AppState;
use crate::store::StoreError;

/// The stored namespace `old` with the `spec.finalizers` of `new`.
pub fn prepare(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    let finalizers = new.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
    crate::objects::object_mut(&mut out, "spec").insert("finalizers".into(), finalizers);
    out
}

/// Whether a Terminating namespace has no finalizer of either kind left.
pub fn finished(ns: &Value) -> bool {
    let empty = |p: &str| ns.pointer(p).and_then(Value::as_array).is_none_or(|a| a.is_empty());
    ns.pointer("/metadata/deletionTimestamp").is_some() && empty("/spec/finalizers") && empty("/metadata/finalizers")
}

/// PUT namespaces/<name>/finalize.
pub async fn put(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let body = parse_json(&req.body)?;
    let given = name(&body);
    if !given.is_empty() && given != target.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({})",
            target.name()
        )));
    }
    if let Some(list) = body.pointer("/spec/finalizers") {
        let ok = list.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(ApiError::bad_request("spec.finalizers must be a list of strings"));
        }
    }
    let updated = super::update_object(app, target, None, |_| Ok(body.clone())).await?;
    Ok(json_response(StatusCode::OK, &purge_if_finished(app, &target.key(), updated).await?))
}

/// Removes a finished Terminating namespace; returns what was last stored.
pub async fn purge_if_finished(app: &AppState, key: &str, ns: Value) -> Result<Value, ApiError> {
    if !finished(&ns) {
        return Ok(ns);
    }
    match app.db.delete(key, Some(crate::store::object_revision(&ns))).await {
        Ok(v) => Ok(v),
        // Gone already, or changed meanwhile (the namespace controller retries).
        Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => Ok(ns),
        Err(e) => Err(ApiError::from_store(e, "namespaces", name(&ns))),
    }
}
