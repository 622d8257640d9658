//! POST: create with kube-apiserver's create-time behaviour (uid, timestamps,
//! generateName, namespace existence, per-kind defaults, ClusterIP allocation),
//! and the `pods/binding` subresource.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::validate::{check_name, check_object, decode_body, parse_json};
use super::{Req, Target};
use crate::error::{json_response, ApiError};
use crate::objects::{self, default_namespace, default_pod, default_service, object_mut, set_cluster_ip, str_at};
use crate::resources::{self, ResourceInfo};
use crate::server::AppState;

/// POST to a collection.
pub async fn create(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let body = decode_body(target.res, &super::fields::json_body(req)?)?;
    let warnings = super::fields::validate(req, target.res, &body)?;
    let created = create_object(app, target.res, target.namespace.as_deref(), body).await?;
    Ok(super::fields::with_warnings(json_response(StatusCode::CREATED, &created), &warnings))
}

/// Creates an object (used by POST, bootstrap and controllers).
pub async fn create_object(
    app: &AppState,
    res: &'static ResourceInfo,
    namespace: Option<&str>,
    mut obj: Value,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    obj["kind"] = json!(res.kind);
    obj["apiVersion"] = json!(res.api_version());
    let ns = resolve_namespace(res, namespace, &obj)?;
    let meta = object_mut(&mut obj, "metadata");
    match &ns {
        Some(ns) => meta.insert("namespace".into(), json!(ns)),
        None => meta.remove("namespace"),
    };
    let given = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let prefix = meta.get("generateName").and_then(Value::as_str).unwrap_or("").to_string();
    let name = if given.is_empty() && !prefix.is_empty() { generate_name(&prefix) } else { given };
    meta.insert("name".into(), json!(name));
    if let Some(ns) = &ns {
        ensure_namespace(app, ns, res.plural, &name).await?;
    }
    let meta = object_mut(&mut obj, "metadata");
    for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(field);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(objects::now()));
    check_name(res, &name)?;
    check_object(res, &obj)?;
    let causes = super::fieldcheck::field_causes(res, &obj);
    if !causes.is_empty() {
        return Err(ApiError::invalid_causes(res.kind, &name, causes));
    }
    let explicit_ip = crate::ipalloc::shared::prepare(app, res.kind, &obj).await?;
    let allocated = apply_create_defaults(app, res, &mut obj)?;
    super::generation::on_create(&mut obj);
    let allocated = crate::ipalloc::shared::claim(app, &mut obj, allocated, explicit_ip).await?;
    let key = res.key(ns.as_deref(), &name);
    match app.db.create(&key, obj).await {
        Ok(created) => Ok(created),
        Err(e) => {
            if let Some(ip) = allocated {
                app.ips().release(&ip);
                crate::ipalloc::shared::release(app, &ip).await;
            }
            Err(ApiError::from_store(e, res.plural, &name))
        }
    }
}

fn resolve_namespace(res: &ResourceInfo, path_ns: Option<&str>, obj: &Value) -> Result<Option<String>, ApiError> {
    if !res.namespaced {
        return Ok(None);
    }
    let body_ns = str_at(obj, "/metadata/namespace");
    match path_ns {
        Some(p) if !body_ns.is_empty() && body_ns != p => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(p) => Ok(Some(p.to_string())),
        None if !body_ns.is_empty() => Ok(Some(body_ns.to_string())),
        None => Err(ApiError::bad_request("a namespace is required to create a namespaced object")),
    }
}

async fn ensure_namespace(app: &AppState, ns: &str, plural: &str, name: &str) -> Result<(), ApiError> {
    let Some(nsres) = resources::find("", "namespaces") else { return Ok(()) };
    let found = app.db.get(&nsres.key(None, ns)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    match found {
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::forbidden(
            plural,
            name,
            &format!("unable to create new content in namespace {ns} because it is being terminated"),
        )),
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("namespaces", ns)),
    }
}

fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes.iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    format!("{prefix}{suffix}")
}

/// Per-kind defaults; returns the ClusterIP allocated (to release on failure).
fn apply_create_defaults(app: &AppState, res: &ResourceInfo, obj: &mut Value) -> Result<Option<String>, ApiError> {
    match res.kind {
        "Pod" => {
            if let Some(map) = obj.as_object_mut() {
                map.insert("status".into(), json!({}));
            }
            default_pod(obj);
            crate::admission::admit_pod(obj);
            Ok(None)
        }
        "Namespace" => {
            default_namespace(obj);
            Ok(None)
        }
        "Service" => {
            default_service(obj);
            allocate_cluster_ip(app, obj)
        }
        "Deployment" | "ReplicaSet" => {
            objects::default_workload(obj, res.kind);
            object_mut(obj, "metadata").insert("generation".into(), json!(1));
            if let Some(map) = obj.as_object_mut() {
                map.insert("status".into(), json!({}));
            }
            Ok(None)
        }
        "DaemonSet" => {
            crate::admission::default_daemonset(obj);
            object_mut(obj, "metadata").insert("generation".into(), json!(1));
            Ok(None)
        }
        "Secret" => {
            crate::admission::default_secret(obj);
            Ok(None)
        }
        _ => Ok(None),
    }
}

fn allocate_cluster_ip(app: &AppState, svc: &mut Value) -> Result<Option<String>, ApiError> {
    let name = objects::name(svc).to_string();
    if str_at(svc, "/spec/type") == "ExternalName" {
        return Ok(None);
    }
    let requested = str_at(svc, "/spec/clusterIP").to_string();
    if requested == "None" {
        set_cluster_ip(svc, "None");
        return Ok(None);
    }
    let result = if requested.is_empty() { app.ips().allocate_next() } else { app.ips().allocate_ip(&requested) };
    let ip = result.map_err(|e| {
        ApiError::invalid("Service", &name, &format!("spec.clusterIP: Invalid value: \"{requested}\": {e}"))
    })?;
    let ip = ip.to_string();
    set_cluster_ip(svc, &ip);
    Ok(Some(ip))
}

/// POST pods/<name>/binding.
pub async fn binding(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let body = parse_json(&req.body)?;
    let kind = str_at(&body, "/kind");
    if !kind.is_empty() && kind != "Binding" {
        return Err(ApiError::bad_request(format!("expected a Binding, got {kind}")));
    }
    let node = str_at(&body, "/target/name");
    if node.is_empty() {
        return Err(ApiError::invalid("Binding", target.name(), "target.name: Required value"));
    }
    bind_pod(app, target.namespace.as_deref().unwrap_or(""), target.name(), node).await?;
    let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201});
    Ok(json_response(StatusCode::CREATED, &status))
}

/// Sets `spec.nodeName` of an unbound pod (409 when already bound).
pub async fn bind_pod(app: &AppState, ns: &str, name: &str, node: &str) -> Result<Value, ApiError> {
    let Some(pods) = resources::find("", "pods") else { return Err(ApiError::internal("no pods resource")) };
    let key = pods.key(Some(ns), name);
    app.db
        .guaranteed_update(&key, "pods", name, |mut pod| {
            let current = str_at(&pod, "/spec/nodeName");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    "pods/binding",
                    name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict("pods/binding", name, "pod is being deleted"));
            }
            object_mut(&mut pod, "spec").insert("nodeName".into(), json!(node));
            objects::set_condition(
                &mut pod,
                json!({"type":"PodScheduled","status":"True","lastProbeTime":null,
                       "lastTransitionTime": objects::now()}),
            );
            Ok(Some(pod))
        })
        .await
}
