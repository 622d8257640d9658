//! GET and LIST, with label/field selectors and Table output.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use minion_api::selector::Selector;
use serde_json::{json, Value};

use super::{Req, Target};
use crate::error::{json_response, ApiError};
use crate::objects::str_at;
use crate::server::AppState;
use crate::table;

/// The label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub labels: Selector,
    pub fields: Selector,
}

impl Filter {
    /// From `labelSelector` and `fieldSelector` query parameters.
    pub fn from_req(req: &Req) -> Result<Self, ApiError> {
        let labels = Selector::parse_labels(req.param("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = Selector::parse_fields(req.param("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    /// True when `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok());
        self.labels.matches_labels(labels.as_ref()) && self.fields.matches_fields(obj)
    }
}

/// GET one object (or its status).
pub async fn get(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let res = target.res;
    let obj = app
        .db
        .get(&target.key())
        .await
        .map_err(|e| ApiError::from_store(e, res.plural, target.name()))?
        .ok_or_else(|| ApiError::not_found(res.plural, target.name()))?;
    if req.wants_table() {
        let rv = str_at(&obj, "/metadata/resourceVersion").to_string();
        let t = table::render(res, std::slice::from_ref(&obj), &rv, req.param("includeObject").unwrap_or(""));
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// LIST a collection.
pub async fn list(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let res = target.res;
    let filter = Filter::from_req(req)?;
    let (items, rev) = app
        .db
        .list(&res.prefix(target.namespace.as_deref()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let items: Vec<Value> = items.into_iter().filter(|o| filter.matches(o)).collect();
    let rv = rev.to_string();
    if req.wants_table() {
        let t = table::render(res, &items, &rv, req.param("includeObject").unwrap_or(""));
        return Ok(json_response(StatusCode::OK, &t));
    }
    let list = json!({
        "kind": res.list_kind(),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// GET pods/<name>/log: logs live on the node; this server does not proxy them.
pub async fn log(app: &Arc<AppState>, target: &Target) -> Result<Response, ApiError> {
    let found = app.db.get(&target.key()).await.map_err(|e| ApiError::internal(e.to_string()))?;
    if found.is_none() {
        return Err(ApiError::not_found("pods", target.name()));
    }
    Err(ApiError::bad_request(format!(
        "logs of pod {:?} are kept on its node; minion-apiserver does not proxy pods/log",
        target.name()
    )))
}
