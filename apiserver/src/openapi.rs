//! OpenAPI v3 documents, just enough for kubectl: an index of group-versions and,
//! per group-version, paths whose PATCH operations carry the resource's
//! `x-kubernetes-group-version-kind` and list the `fieldValidation` query parameter.
//! kubectl then validates on the server (`?fieldValidation=Strict`, accepted and not
//! enforced here) and, finding no strategic-merge request body in the PATCH
//! operation, computes apply patches from its built-in Go types.
//! `/openapi/v2` is not served (404): kubectl only falls back to it.

use serde_json::{json, Map, Value};

use crate::discovery::GIT_VERSION;
use crate::resources::{ResourceInfo, GROUPS, RESOURCES};

const HASH: &str = "minion-apiserver-1";

/// The document at `path`, if served.
pub fn document(path: &str) -> Option<Value> {
    match path {
        "/openapi/v3" => Some(index()),
        "/openapi/v3/api/v1" => Some(group_doc("")),
        p => {
            let group = p.strip_prefix("/openapi/v3/apis/")?.strip_suffix("/v1")?;
            GROUPS.contains(&group).then(|| group_doc(group))
        }
    }
}

fn index() -> Value {
    let entry = |p: &str| json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")});
    let mut paths = Map::new();
    paths.insert("api/v1".into(), entry("api/v1"));
    for g in GROUPS {
        let p = format!("apis/{g}/v1");
        paths.insert(p.clone(), entry(&p));
    }
    json!({ "paths": paths })
}

fn schema_name(r: &ResourceInfo) -> String {
    match r.group {
        "" => format!("io.k8s.api.core.v1.{}", r.kind),
        g => format!("io.k8s.api.{}.v1.{}", g.split('.').next().unwrap_or(g), r.kind),
    }
}

fn gvk(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "kind": r.kind, "version": r.version})
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn item_path(r: &ResourceInfo) -> String {
    let base = if r.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", r.group, r.version) };
    if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    }
}

fn operation(r: &ResourceInfo, action: &str, params: &[&str]) -> Value {
    let schema = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": params.iter().map(|p| query_param(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    })
}

fn group_doc(group: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let mut item = Map::new();
        item.insert("get".into(), operation(r, "get", &["pretty"]));
        item.insert("put".into(), operation(r, "put", &["dryRun", "fieldManager", "fieldValidation"]));
        item.insert("patch".into(), operation(r, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]));
        item.insert("delete".into(), operation(r, "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]));
        paths.insert(item_path(r), Value::Object(item));
        schemas.insert(
            schema_name(r),
            json!({"type": "object", "description": format!("{} (schema not published by minion-apiserver)", r.kind),
                   "x-kubernetes-group-version-kind": [gvk(r)]}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
