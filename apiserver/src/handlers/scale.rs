//! The `scale` subresource of Deployments and ReplicaSets (`autoscaling/v1 Scale`),
//! what `kubectl scale` reads and patches.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::update::update_object;
use super::validate::parse_json;
use super::{Req, Target};
use crate::error::{json_response, ApiError};
use crate::objects::object_mut;
use crate::patch::{self, PatchType};
use crate::server::AppState;

/// The Scale view of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let meta: serde_json::Map<String, Value> =
        meta.as_object().into_iter().flatten().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    let selector: Vec<String> = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector.join(",")},
    })
}

/// GET, PUT or PATCH `<workload>/scale`.
pub async fn handle(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let whole = Target { sub: None, ..target.clone() };
    if req.method == Method::GET {
        let obj = app
            .db
            .get(&whole.key())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::not_found(target.res.plural, target.name()))?;
        return Ok(json_response(StatusCode::OK, &scale_of(&obj)));
    }
    let patch_type = match req.method {
        Method::PATCH => {
            let ct = req.content_type();
            Some(PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?)
        }
        _ => None,
    };
    let body = req.body.clone();
    let updated = update_object(app, &whole, None, |old| {
        let scale = match patch_type {
            Some(kind) => patch::apply(kind, &scale_of(old), &body).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => parse_json(&body)?,
        };
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|r| *r >= 0)
            .ok_or_else(|| ApiError::invalid("Scale", whole.name(), "spec.replicas: Invalid value: must be >= 0"))?;
        let mut new = old.clone();
        object_mut(&mut new, "spec").insert("replicas".into(), json!(replicas));
        Ok(new)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated)))
}
