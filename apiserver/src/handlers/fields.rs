//! Unknown fields and `fieldValidation` (Strict / Warn / Ignore): a field is
//! unknown when it does not survive a round trip through the resource's
//! `k8s-openapi` type. Strict refuses the request (400 naming the field), Warn (the
//! default, as in kube-apiserver) answers with a `Warning` header per field.
//! Also decodes YAML request bodies to JSON (malformed → 400).

use axum::http::HeaderValue;
use axum::response::Response;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::Req;
use crate::error::ApiError;
use crate::resources::ResourceInfo;

/// The `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// From the request's query (default Warn).
    pub fn from_req(req: &Req) -> Result<Self, ApiError> {
        match req.param("fieldValidation").unwrap_or("") {
            "" | "Warn" => Ok(Self::Warn),
            "Strict" => Ok(Self::Strict),
            "Ignore" => Ok(Self::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Checks `value` for unknown fields; returns the warnings to send (Warn) or the
/// 400 error (Strict).
pub fn validate(req: &Req, res: &ResourceInfo, value: &Value) -> Result<Vec<String>, ApiError> {
    validate_change(req, res, None, value)
}

/// Like [`validate`], counting only fields that `before` did not already have.
pub fn validate_change(req: &Req, res: &ResourceInfo, before: Option<&Value>, value: &Value) -> Result<Vec<String>, ApiError> {
    let mode = FieldValidation::from_req(req)?;
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let old = before.map(|b| unknown_fields(res, b)).unwrap_or_default();
    let unknown: Vec<String> = unknown_fields(res, value).into_iter().filter(|f| !old.contains(f)).collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            res.kind,
            res.api_version(),
            res.kind,
            texts.join(", ")
        ))),
        _ => Ok(texts),
    }
}

/// Adds one `Warning: 299 - "..."` header per warning.
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Option<Value> {
    serde_json::from_value::<T>(value.clone()).ok().and_then(|t| serde_json::to_value(t).ok())
}

/// Paths (`spec.containers[0].foo`) present in `value` but not in its typed form.
pub fn unknown_fields(res: &ResourceInfo, value: &Value) -> Vec<String> {
    let typed = match res.kind {
        "Pod" => round_trip::<Pod>(value),
        "Node" => round_trip::<Node>(value),
        "Service" => round_trip::<Service>(value),
        "Endpoints" => round_trip::<Endpoints>(value),
        "Namespace" => round_trip::<Namespace>(value),
        "Event" => round_trip::<Event>(value),
        "Lease" => round_trip::<Lease>(value),
        "Deployment" => round_trip::<Deployment>(value),
        "ReplicaSet" => round_trip::<ReplicaSet>(value),
        "DaemonSet" => round_trip::<DaemonSet>(value),
        "ConfigMap" => round_trip::<ConfigMap>(value),
        "Secret" => round_trip::<Secret>(value),
        "ServiceAccount" => round_trip::<ServiceAccount>(value),
        "EndpointSlice" => round_trip::<EndpointSlice>(value),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(typed) = typed {
        diff("", value, &typed, &mut out);
    }
    out
}

fn diff(path: &str, given: &Value, typed: &Value, out: &mut Vec<String>) {
    match (given, typed) {
        (Value::Object(g), Value::Object(t)) => {
            for (k, v) in g {
                if path.is_empty() && (k == "kind" || k == "apiVersion") {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    Some(tv) => diff(&p, v, tv, out),
                    None if v.is_null() => {}
                    None if matches!(v, Value::Object(m) if m.is_empty()) => {}
                    None if matches!(v, Value::Array(a) if a.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(g), Value::Array(t)) => {
            for (i, (gv, tv)) in g.iter().zip(t).enumerate() {
                diff(&format!("{path}[{i}]"), gv, tv, out);
            }
        }
        _ => {}
    }
}

/// The body as JSON bytes: YAML bodies (`application/yaml`) are converted.
pub fn json_body(req: &Req) -> Result<bytes::Bytes, ApiError> {
    let ct = req.content_type();
    if !ct.contains("yaml") {
        return Ok(req.body.clone());
    }
    let value: Value = serde_yaml::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
    serde_json::to_vec(&value).map(bytes::Bytes::from).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields() {
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","creationTimestamp":null,"bogus":1},
            "spec":{"containers":[{"name":"c","image":"x","imagePullPolicy":"Always","colour":"red"}],"volumes":[]}});
        let unknown = unknown_fields(find("", "pods").unwrap(), &pod);
        assert_eq!(unknown, vec!["metadata.bogus".to_string(), "spec.containers[0].colour".to_string()]);
        let ok = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","resources":{}}]}});
        assert!(unknown_fields(find("", "pods").unwrap(), &ok).is_empty());
    }
}
