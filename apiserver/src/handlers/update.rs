//! PUT and PATCH (whole object or the `status` subresource), with
//! compare-and-swap on `metadata.resourceVersion` and the fields kube-apiserver
//! keeps from the stored object (uid, creationTimestamp, status or spec, ClusterIP).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::validate::{check_object, check_typed, decode_body};
use super::{Req, Target};
use crate::error::{json_response, ApiError};
use crate::objects::{default_namespace, default_pod, default_service, name, object_mut, str_at};
use crate::patch::{self, PatchType};
use crate::resources::ResourceInfo;
use crate::server::AppState;
use crate::store::{object_revision, Revision, StoreError};

const RETRIES: usize = 16;

/// PUT an object or its status.
pub async fn put(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let mut body = decode_body(target.res, &super::fields::json_body(req)?)?;
    let warnings = super::fields::validate(req, target.res, &body)?;
    let body_name = name(&body).to_string();
    if body_name.is_empty() {
        object_mut(&mut body, "metadata").insert("name".into(), json!(target.name()));
    } else if body_name != target.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            target.name()
        )));
    }
    let expected = requested_revision(&body)?;
    let updated = update_object(app, target, expected, |_| Ok(body.clone())).await?;
    Ok(super::fields::with_warnings(json_response(StatusCode::OK, &updated), &warnings))
}

/// PATCH an object or its status.
pub async fn patch(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let ct = req.content_type();
    let kind = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
    let body = req.body.clone();
    let res = target.res;
    super::fields::FieldValidation::from_req(req)?;
    let mut warnings = Vec::new();
    if kind == PatchType::Apply && target.sub.is_none() && app.db.get(&target.key()).await.ok().flatten().is_none() {
        return apply_create(app, target, &body).await;
    }
    let updated = update_object(app, target, None, |old| {
        let patched = patch::apply(kind, old, &body).map_err(|e| match e {
            patch::PatchError::Decode(m) => ApiError::bad_request(m),
            patch::PatchError::Apply(m) => ApiError::invalid(res.kind, name(old), &m),
        })?;
        if let Some(rv) = requested_revision(&patched)? {
            if rv != object_revision(old) {
                return Err(ApiError::stale(res.plural, name(old)));
            }
        }
        check_typed(res, &patched)?;
        warnings = super::fields::validate_change(req, res, Some(old), &patched)?;
        Ok(patched)
    })
    .await?;
    Ok(super::fields::with_warnings(json_response(StatusCode::OK, &updated), &warnings))
}

/// Server-side apply of an object that does not exist yet: create it.
async fn apply_create(app: &AppState, target: &Target, body: &[u8]) -> Result<Response, ApiError> {
    let value = patch::parse_apply_body(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut obj = decode_body(target.res, value.to_string().as_bytes())?;
    let given = name(&obj).to_string();
    if !given.is_empty() && given != target.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({})",
            target.name()
        )));
    }
    object_mut(&mut obj, "metadata").insert("name".into(), json!(target.name()));
    let created = super::create_object(app, target.res, target.namespace.as_deref(), obj).await?;
    Ok(json_response(StatusCode::CREATED, &created))
}

fn requested_revision(obj: &Value) -> Result<Option<Revision>, ApiError> {
    match str_at(obj, "/metadata/resourceVersion") {
        "" => Ok(None),
        rv => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Read-modify-write of the target: `compute` turns the stored object into the
/// requested one; `expected` (a client's resourceVersion) makes a stale write a 409.
pub async fn update_object<F>(
    app: &AppState,
    target: &Target,
    expected: Option<Revision>,
    mut compute: F,
) -> Result<Value, ApiError>
where
    F: FnMut(&Value) -> Result<Value, ApiError>,
{
    let key = target.key();
    let res = target.res;
    for _ in 0..RETRIES {
        let old = app
            .db
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, res.plural, target.name()))?
            .ok_or_else(|| ApiError::not_found(res.plural, target.name()))?;
        if expected.is_some_and(|rv| rv != object_revision(&old)) {
            return Err(ApiError::stale(res.plural, target.name()));
        }
        let requested = compute(&old)?;
        let new = prepare_update(res, &old, requested, target.sub.as_deref())?;
        match app.db.update(&key, new, Some(object_revision(&old))).await {
            Ok(v) => {
                super::finalize::complete_if_done(app, res, &key, &v).await?;
                return Ok(v);
            }
            Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, res.plural, target.name())),
        }
    }
    Err(ApiError::stale(res.plural, target.name()))
}

/// The object to store for an update of `old` to `new` (for `sub` = status only the
/// status changes; otherwise the status is kept).
pub fn prepare_update(res: &ResourceInfo, old: &Value, mut new: Value, sub: Option<&str>) -> Result<Value, ApiError> {
    let obj_name = name(old).to_string();
    if !name(&new).is_empty() && name(&new) != obj_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({obj_name})",
            name(&new)
        )));
    }
    if sub == Some("status") {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(json!({}));
        return Ok(out);
    }
    if sub == Some("finalize") {
        return Ok(super::nsfinalize::prepare(old, &new));
    }
    new["kind"] = json!(res.kind);
    new["apiVersion"] = json!(res.api_version());
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let meta = object_mut(&mut new, "metadata");
    for field in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    if res.subresources.contains(&"status") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    match res.kind {
        "Pod" => {
            keep_node_name(old, &mut new)?;
            crate::objects::default_pod_spec(&mut new);
            crate::admission::admit_pod(&mut new);
        }
        "Service" => keep_cluster_ip(old, &mut new)?,
        "Namespace" => {
            // Only the `finalize` subresource changes spec.finalizers (as kube).
            new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
            default_namespace(&mut new);
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            if res.kind == "DaemonSet" {
                crate::admission::default_daemonset(&mut new);
            } else {
                crate::objects::default_workload(&mut new, res.kind);
            }
        }
        _ => {}
    }
    super::generation::on_update(old, &mut new);
    check_object(res, &new)?;
    let mut causes = super::fieldcheck::field_causes(res, &new);
    causes.extend(super::fieldcheck::immutable_causes(res, old, &new));
    if !causes.is_empty() {
        return Err(ApiError::invalid_causes(res.kind, &obj_name, causes));
    }
    Ok(new)
}

fn keep_node_name(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let old_node = str_at(old, "/spec/nodeName").to_string();
    let new_node = str_at(new, "/spec/nodeName").to_string();
    if !old_node.is_empty() && new_node.is_empty() {
        object_mut(new, "spec").insert("nodeName".into(), json!(old_node));
    } else if !old_node.is_empty() && new_node != old_node {
        return Err(ApiError::invalid("Pod", name(old), "spec.nodeName: Invalid value: field is immutable"));
    }
    default_pod(new);
    Ok(())
}

fn keep_cluster_ip(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let old_ip = str_at(old, "/spec/clusterIP").to_string();
    let new_ip = str_at(new, "/spec/clusterIP").to_string();
    if new_ip.is_empty() {
        let spec = object_mut(new, "spec");
        spec.insert("clusterIP".into(), json!(old_ip));
        if let Some(ips) = old.pointer("/spec/clusterIPs") {
            spec.insert("clusterIPs".into(), ips.clone());
        }
        for field in ["ipFamilies", "ipFamilyPolicy"] {
            if let (None, Some(v)) = (spec.get(field), old.pointer(&format!("/spec/{field}"))) {
                spec.insert(field.into(), v.clone());
            }
        }
    } else if new_ip != old_ip {
        return Err(ApiError::invalid(
            "Service",
            name(old),
            &format!("spec.clusterIPs[0]: Invalid value: \"{new_ip}\": field is immutable"),
        ));
    }
    default_service(new);
    Ok(())
}
