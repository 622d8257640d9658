//! Discovery: `/version`, `/api`, `/apis`, the APIResourceLists kubectl builds its
//! REST mapping from, the health endpoints, and the OpenAPI documents.

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{json_response, ApiError};
use crate::handlers::Req;
use crate::resources::{ResourceInfo, GROUPS, RESOURCES, VERBS};

/// The Kubernetes version this server reports.
pub const GIT_VERSION: &str = "v1.33.0-minion";

/// Answers a non-resource path, or None when `req` is for a resource.
pub fn handle(req: &Req) -> Result<Option<Response>, ApiError> {
    let body = match req.path.as_str() {
        "/healthz" | "/readyz" | "/livez" | "/healthz/ping" => Some(Err("ok")),
        "" | "/" => Some(Ok(json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/openapi/v2", "/openapi/v3", "/version"]}))),
        "/version" => Some(Ok(version())),
        "/api" => Some(Ok(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}))),
        "/apis" => Some(Ok(group_list())),
        "/api/v1" => Some(Ok(resource_list(""))),
        p if group_path(p).is_some() => group_path(p),
        p if p == "/openapi/v2" || p.starts_with("/openapi/") => {
            Some(crate::openapi::document(p).map(Ok).ok_or_else(|| ApiError::no_route(p))?)
        }
        _ => None,
    };
    let Some(body) = body else { return Ok(None) };
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(ApiError::method_not_allowed(req.method.as_str(), &req.path));
    }
    Ok(Some(match body {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
    }))
}

/// `/apis/<group>` and `/apis/<group>/v1`.
fn group_path(path: &str) -> Option<Result<Value, &'static str>> {
    let rest = path.strip_prefix("/apis/")?;
    let (name, version) = rest.split_once('/').map_or((rest, None), |(g, v)| (g, Some(v)));
    let name = GROUPS.iter().find(|g| **g == name)?;
    match version {
        None => Some(Ok(group(name))),
        Some("v1") => Some(Ok(resource_list(name))),
        Some(_) => None,
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv], "preferredVersion": gv})
}

fn group_list() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|name| {
            let mut g = group(name);
            if let Some(m) = g.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn entry(r: &ResourceInfo) -> Value {
    let mut e = json!({
        "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
        "verbs": VERBS, "shortNames": r.short_names, "storageVersionHash": "",
    });
    if matches!(r.plural, "pods" | "services" | "deployments" | "replicasets") {
        e["categories"] = json!(["all"]);
    }
    e
}

fn sub_entry(r: &ResourceInfo, sub: &str) -> Value {
    let (kind, verbs): (&str, &[&str]) = match sub {
        "binding" => ("Binding", &["create"]),
        "eviction" => ("Eviction", &["create"]),
        "log" => ("Pod", &["get"]),
        "scale" => ("Scale", &["get", "patch", "update"]),
        "finalize" => (r.kind, &["update"]),
        _ => (r.kind, &["get", "patch", "update"]),
    };
    json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
           "kind": kind, "verbs": verbs})
}

/// The APIResourceList of a group ("" = core/v1).
pub fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        resources.push(entry(r));
        resources.extend(r.subresources.iter().map(|s| sub_entry(r, s)));
    }
    let gv = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}
