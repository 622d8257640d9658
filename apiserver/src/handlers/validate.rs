//! Decoding and validation of request bodies: JSON, kind/apiVersion, the typed
//! shape (through `k8s-openapi`), names (DNS-1123) and a few required fields.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::objects::{name, str_at};
use crate::resources::ResourceInfo;

/// Parses a body as a JSON object.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    Ok(value)
}

/// Parses and checks a body for `res`: kind, apiVersion and typed shape; fills in
/// kind and apiVersion.
pub fn decode_body(res: &ResourceInfo, body: &[u8]) -> Result<Value, ApiError> {
    let mut value = parse_json(body)?;
    check_kind(res, &value)?;
    check_typed(res, &value)?;
    value["kind"] = json!(res.kind);
    value["apiVersion"] = json!(res.api_version());
    if !value.get("metadata").is_some_and(Value::is_object) {
        value["metadata"] = json!({});
    }
    Ok(value)
}

fn check_kind(res: &ResourceInfo, value: &Value) -> Result<(), ApiError> {
    let kind = str_at(value, "/kind");
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) does not match the resource ({}, kind {})",
            res.plural, res.kind
        )));
    }
    let api_version = str_at(value, "/apiVersion");
    if !api_version.is_empty() && api_version != res.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<(), ApiError> {
    serde_json::from_value::<T>(value.clone())
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))
}

/// Checks the body deserializes into the `k8s-openapi` type of `res`.
pub fn check_typed(res: &ResourceInfo, value: &Value) -> Result<(), ApiError> {
    match res.kind {
        "Pod" => typed::<Pod>(value),
        "Node" => typed::<Node>(value),
        "Service" => typed::<Service>(value),
        "Endpoints" => typed::<Endpoints>(value),
        "Namespace" => typed::<Namespace>(value),
        "Event" => typed::<Event>(value),
        "Lease" => typed::<Lease>(value),
        "Deployment" => typed::<Deployment>(value),
        "ReplicaSet" => typed::<ReplicaSet>(value),
        "DaemonSet" => typed::<DaemonSet>(value),
        "ConfigMap" => typed::<ConfigMap>(value),
        "Secret" => typed::<Secret>(value),
        "ServiceAccount" => typed::<ServiceAccount>(value),
        "EndpointSlice" => typed::<EndpointSlice>(value),
        _ => Ok(()),
    }
}

/// A Deployment/ReplicaSet needs a selector matching its template's labels and a
/// valid pod template.
fn check_workload(kind: &str, n: &str, obj: &Value) -> Result<(), ApiError> {
    let selector = obj.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    let parsed: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> =
        serde_json::from_value(selector).ok();
    let Some(selector) = parsed.filter(|s| s.match_labels.is_some() || s.match_expressions.is_some()) else {
        return Err(ApiError::invalid(kind, n, "spec.selector: Required value"));
    };
    let selector = minion_api::selector::Selector::from_label_selector(&selector)
        .map_err(|e| ApiError::invalid(kind, n, &format!("spec.selector: Invalid value: {e}")))?;
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    if selector.is_empty() || !selector.matches_labels(labels.as_ref()) {
        return Err(ApiError::invalid(
            kind,
            n,
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
        ));
    }
    let containers = obj.pointer("/spec/template/spec/containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty() || c.iter().any(|c| str_at(c, "/name").is_empty() || str_at(c, "/image").is_empty())) {
        return Err(ApiError::invalid(kind, n, "spec.template.spec.containers: Required value"));
    }
    Ok(())
}

/// Validates `metadata.name` (label or subdomain rules) → 422.
pub fn check_name(res: &ResourceInfo, obj_name: &str) -> Result<(), ApiError> {
    if obj_name.is_empty() {
        return Err(ApiError::invalid(
            res.kind,
            "",
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    let result = if res.label_names {
        minion_api::names::validate_dns1123_label(obj_name)
    } else {
        minion_api::names::validate_dns1123_subdomain(obj_name)
    };
    result.map_err(|e| {
        ApiError::invalid(res.kind, obj_name, &format!("metadata.name: Invalid value: \"{obj_name}\": {e}"))
    })
}

/// Kind-specific required fields → 422.
pub fn check_object(res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let n = name(obj);
    match res.kind {
        "Pod" => {
            let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
            if containers.is_none_or(Vec::is_empty) {
                return Err(ApiError::invalid("Pod", n, "spec.containers: Required value"));
            }
            for (i, c) in containers.into_iter().flatten().enumerate() {
                if str_at(c, "/name").is_empty() {
                    return Err(ApiError::invalid("Pod", n, &format!("spec.containers[{i}].name: Required value")));
                }
                if str_at(c, "/image").is_empty() {
                    return Err(ApiError::invalid("Pod", n, &format!("spec.containers[{i}].image: Required value")));
                }
            }
            Ok(())
        }
        "Service" => {
            let ty = str_at(obj, "/spec/type");
            let headless = str_at(obj, "/spec/clusterIP") == "None";
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
            if ty != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
                return Err(ApiError::invalid("Service", n, "spec.ports: Required value"));
            }
            Ok(())
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => check_workload(res.kind, n, obj),
        _ => Ok(()),
    }
}
