//! Table cells of DaemonSets, ConfigMaps, Secrets, ServiceAccounts and EndpointSlices.

use serde_json::{json, Value};

use crate::objects::str_at;

fn int(o: &Value, p: &str) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn count(o: &Value, p: &str) -> usize {
    match o.pointer(p) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn label_map(o: &Value, p: &str) -> String {
    let pairs: Vec<String> = o
        .pointer(p)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE (+ wide).
pub(super) fn daemonset_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let containers = o.pointer("/spec/template/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    vec![
        name,
        json!(int(o, "/status/desiredNumberScheduled")),
        json!(int(o, "/status/currentNumberScheduled")),
        json!(int(o, "/status/numberReady")),
        json!(int(o, "/status/updatedNumberScheduled")),
        json!(int(o, "/status/numberAvailable")),
        json!(label_map(o, "/spec/template/spec/nodeSelector")),
        age,
        json!(names.join(",")),
        json!(images.join(",")),
        json!(label_map(o, "/spec/selector/matchLabels")),
    ]
}

/// NAME DATA AGE.
pub(super) fn configmap_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    vec![name, json!(count(o, "/data") + count(o, "/binaryData")), age]
}

/// NAME TYPE DATA AGE.
pub(super) fn secret_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    vec![name, json!(str_at(o, "/type")), json!(count(o, "/data")), age]
}

/// NAME SECRETS AGE.
pub(super) fn serviceaccount_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    vec![name, json!(count(o, "/secrets")), age]
}

/// NAME ADDRESSTYPE PORTS ENDPOINTS AGE.
pub(super) fn endpointslice_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let ports: Vec<String> = o
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("port").and_then(Value::as_i64)).map(|p| p.to_string()).collect())
        .unwrap_or_default();
    let ports = if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") };
    let addrs: Vec<&str> = o
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| e.get("addresses").and_then(Value::as_array).into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let shown = if addrs.is_empty() {
        "<unset>".to_string()
    } else if addrs.len() > 3 {
        format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
    } else {
        addrs.join(",")
    };
    vec![name, json!(str_at(o, "/addressType")), json!(ports), json!(shown), age]
}
