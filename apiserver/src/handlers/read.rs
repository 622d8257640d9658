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
use crate::store::StoreError;
use axum::response::IntoResponse;
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
        if self.labels.is_empty() && self.fields.is_empty() {
            return true;
        }
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

/// LIST a collection (paginated with `limit`/`continue`, served at a revision).
pub async fn list(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let res = target.res;
    let filter = Filter::from_req(req)?;
    let plan = super::paging::plan(req)?;
    let paged = plan.start.is_some();
    let (items, rev) = match app.db.list_at(&res.prefix(target.namespace.as_deref()), plan.at).await {
        Ok(found) => found,
        Err(StoreError::Expired { .. }) if paged => return Err(super::paging::expired_token()),
        Err(StoreError::Expired { requested, oldest }) => {
            return Err(ApiError::expired(format!("too old resource version: {requested} ({oldest})")))
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    if plan.not_older_than.is_some_and(|min| min > rev) {
        return Err(ApiError::timeout(format!("Too large resource version: {}, current: {rev}", plan.not_older_than.unwrap_or(0))));
    }
    let key_of = |o: &Value| res.key(Some(str_at(o, "/metadata/namespace")), str_at(o, "/metadata/name"));
    let mut selected: Vec<Arc<Value>> = Vec::new();
    let mut next = None;
    for item in items {
        if plan.start.as_deref().is_some_and(|start| key_of(&item).as_str() < start) || !filter.matches(&item) {
            continue;
        }
        if plan.limit > 0 && selected.len() == plan.limit {
            next = Some(key_of(&item));
            break;
        }
        selected.push(item);
    }
    let rv = rev.to_string();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(next) = &next {
        meta["continue"] = json!(super::paging::encode_token(rev, next));
    }
    if req.wants_table() {
        let owned: Vec<Value> = selected.iter().map(|v| (**v).clone()).collect();
        let mut t = table::render(res, &owned, &rv, req.param("includeObject").unwrap_or(""));
        t["metadata"] = meta;
        return Ok(json_response(StatusCode::OK, &t));
    }
    Ok(list_response(&res.list_kind(), &res.api_version(), &meta, &selected))
}

/// Serializes a list without copying its items.
fn list_response(kind: &str, api_version: &str, meta: &Value, items: &[Arc<Value>]) -> Response {
    let mut out = Vec::with_capacity(256 + items.len() * 1024);
    out.extend_from_slice(format!("{{\"kind\":{},\"apiVersion\":{},\"metadata\":{meta},\"items\":[", json!(kind), json!(api_version)).as_bytes());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if serde_json::to_writer(&mut out, &**item).is_err() {
            return ApiError::internal("cannot encode list").into_response();
        }
    }
    out.extend_from_slice(b"]}");
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}
