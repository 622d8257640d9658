//! The REST front: routes `/api/v1/...` and `/apis/<group>/<version>/...` to the
//! verbs (get, list, watch, create, update, patch, delete) and subresources.

pub mod create;
mod delete;
pub mod fieldcheck;
pub mod finalize;
pub mod fields;
mod generation;
pub mod nsfinalize;
pub mod log;
pub mod paging;
mod scale;
pub mod read;
mod update;
pub mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::resources::{self, ResourceInfo};
use crate::server::AppState;

pub use create::create_object;
pub use delete::{delete_object, DeleteOptions};
pub use update::{prepare_update, update_object};

/// A request, decoded.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// True when the client asked for a `meta.k8s.io/v1 Table`.
    pub fn wants_table(&self) -> bool {
        self.headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.split(',').next().is_some_and(|first| first.contains("as=Table")))
    }

    /// The Content-Type header.
    pub fn content_type(&self) -> &str {
        self.headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    /// The storage key of the named object.
    pub fn key(&self) -> String {
        self.res.key(self.namespace.as_deref(), self.name.as_deref().unwrap_or(""))
    }

    /// The object name ("" for collections).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Largest request body accepted (kube-apiserver's 3 MiB); larger gets 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The single entry point (axum fallback).
pub async fn dispatch(
    State(app): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = std::time::Instant::now();
    let path = uri.path().trim_end_matches('/').to_string();
    if path == "/metrics" && method == Method::GET {
        let text = app.metrics.render();
        return ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response();
    }
    let labels = request_labels(&method, &path, &uri);
    let resp = match decode(method, &uri, path, headers, body).await {
        Ok(req) => {
            tracing::debug!(method = %req.method, path = %req.path, "request");
            match route(&app, &req).await {
                Ok(resp) => resp,
                Err(err) => {
                    if err.code >= 500 {
                        tracing::warn!(method = %req.method, path = %req.path, error = %err, "request failed");
                    }
                    err.into_response()
                }
            }
        }
        Err(e) => e.into_response(),
    };
    if let Some(labels) = labels {
        app.metrics.observe(labels, resp.status().as_u16(), started.elapsed());
    }
    resp
}

async fn decode(method: Method, uri: &Uri, path: String, headers: HeaderMap, body: axum::body::Body) -> Result<Req, ApiError> {
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
    let body = protobuf_to_json(&headers, body)?;
    Ok(Req { method, path, query, headers, body })
}

/// Metric labels of a resource request (None for discovery and health paths).
fn request_labels(method: &Method, path: &str, uri: &Uri) -> Option<crate::metrics::RequestLabels> {
    let target = parse_target(path).ok().flatten()?;
    let watch = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match (method, target.name.is_some()) {
        (&Method::GET, false) if watch => "WATCH",
        (&Method::GET, false) => "LIST",
        (m, _) => m.as_str(),
    };
    Some(crate::metrics::RequestLabels {
        verb: verb.to_string(),
        group: target.res.group.to_string(),
        version: target.res.version.to_string(),
        resource: target.res.plural.to_string(),
        subresource: target.sub.unwrap_or_default(),
    })
}

async fn route(app: &Arc<AppState>, req: &Req) -> Result<Response, ApiError> {
    if let Some(resp) = crate::discovery::handle(req)? {
        return Ok(resp);
    }
    let Some(target) = parse_target(&req.path)? else {
        return Err(ApiError::no_route(&req.path));
    };
    let sub = target.sub.as_deref();
    if let Some(s) = sub {
        if !target.res.subresources.contains(&s) {
            return Err(ApiError::no_route(&req.path));
        }
    }
    let method_err = || ApiError::method_not_allowed(req.method.as_str(), &req.path);
    match (&req.method, target.name.is_some(), sub) {
        (&Method::GET, false, None) if is_watch(req) => crate::watch::serve(app, req, &target).await,
        (&Method::GET, false, None) => read::list(app, req, &target).await,
        (&Method::GET, true, Some("log")) => log::serve(app, req, &target).await,
        (&Method::GET | &Method::PUT | &Method::PATCH, true, Some("scale")) => scale::handle(app, req, &target).await,
        (&Method::GET, true, None | Some("status")) => read::get(app, req, &target).await,
        (&Method::POST, false, None) => create::create(app, req, &target).await,
        (&Method::POST, true, Some("binding")) => create::binding(app, req, &target).await,
        (&Method::POST, true, Some("eviction")) => delete::evict(app, req, &target).await,
        (&Method::PUT, true, None | Some("status")) => update::put(app, req, &target).await,
        (&Method::PUT, true, Some("finalize")) => nsfinalize::put(app, req, &target).await,
        (&Method::PATCH, true, None | Some("status")) => update::patch(app, req, &target).await,
        (&Method::DELETE, true, None) => delete::delete(app, req, &target).await,
        _ => Err(method_err()),
    }
}

/// Turns a protobuf body into JSON bytes (other bodies pass through).
fn protobuf_to_json(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !crate::protobuf::is_protobuf(ct) {
        return Ok(body);
    }
    let value = crate::protobuf::to_json(&body).map_err(|e| ApiError::unsupported_media_type(&format!("{ct}: {e}")))?;
    Ok(Bytes::from(value.to_string()))
}

fn is_watch(req: &Req) -> bool {
    matches!(req.param("watch"), Some("true" | "1"))
}

/// Parses `/api/v1/...` or `/apis/<group>/<version>/...` into a [`Target`].
pub fn parse_target(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return Ok(None),
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let namespaced = rest.len() >= 3 && rest[0] == "namespaces" && resources::find(group, rest[2]).is_some();
    let (namespace, plural, name, sub, extra) = if namespaced {
        (Some(rest[1].to_string()), rest[2], owned(rest.get(3)), owned(rest.get(4)), rest.len() > 5)
    } else if let Some(first) = rest.first() {
        (None, *first, owned(rest.get(1)), owned(rest.get(2)), rest.len() > 3)
    } else {
        return Ok(None);
    };
    let Some(res) = resources::find(group, plural) else { return Ok(None) };
    if extra || (res.namespaced && namespace.is_none() && name.is_some()) || (!res.namespaced && namespaced) {
        return Ok(None);
    }
    Ok(Some(Target { res, namespace, name, sub }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("/api/v1/namespaces/default/pods/x/status").unwrap().unwrap();
        assert_eq!((t.res.plural, t.namespace.as_deref(), t.name.as_deref(), t.sub.as_deref()),
                   ("pods", Some("default"), Some("x"), Some("status")));
        let t = parse_target("/api/v1/namespaces/kube-system").unwrap().unwrap();
        assert_eq!((t.res.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let t = parse_target("/api/v1/namespaces/x/status").unwrap().unwrap();
        assert_eq!((t.res.plural, t.sub.as_deref()), ("namespaces", Some("status")));
        let t = parse_target("/api/v1/pods").unwrap().unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_target("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1").unwrap().unwrap();
        assert_eq!(t.res.kind, "Lease");
        assert!(parse_target("/api/v1/pods/x").unwrap().is_none());
        assert!(parse_target("/api/v1/widgets").unwrap().is_none());
        assert!(parse_target("/api/v1/namespaces/d/nodes/n").unwrap().is_none());
    }
}
