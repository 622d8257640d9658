//! Node lifecycle (kube-controller-manager's node lifecycle controller, simplified):
//! - a Node whose heartbeat Lease (`kube-node-lease/<node>`) has not been renewed for
//!   40s gets its Ready condition set to Unknown (reason NodeStatusUnknown);
//! - a Node that is not Ready carries the taints `node.kubernetes.io/unreachable`
//!   (Ready Unknown) or `node.kubernetes.io/not-ready` (Ready False), NoSchedule and
//!   NoExecute, removed again when it is Ready;
//! - after 300s not Ready its Pods are evicted (gracefully deleted), so that their
//!   ReplicaSets replace them on other nodes.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::list_all;
use crate::error::ApiError;
use crate::handlers::{delete_object, DeleteOptions};
use crate::objects::{condition_status, name, namespace, object_mut, parse_time, set_condition, str_at};
use crate::resources;
use crate::server::AppState;

/// How long a Lease may go unrenewed.
pub const GRACE_SECONDS: i64 = minion_api::NODE_LEASE_DURATION_SECONDS as i64;
/// How long a Node may be not Ready before its Pods are evicted.
pub const EVICTION_SECONDS: i64 = 300;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// One pass over all Nodes.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let nodes = list_all(app, "", "nodes", None).await?;
    let leases = list_all(app, "coordination.k8s.io", "leases", Some(minion_api::NODE_LEASE_NAMESPACE)).await?;
    let renewed: HashMap<&str, &str> = leases.iter().map(|l| (name(l), str_at(l, "/spec/renewTime"))).collect();
    let now = chrono::Utc::now();
    let mut pods = None;
    for node in &nodes {
        let last = renewed
            .get(name(node))
            .and_then(|t| parse_time(t))
            .or_else(|| parse_time(str_at(node, "/metadata/creationTimestamp")));
        let stale = last.is_some_and(|t| (now - t).num_seconds() > GRACE_SECONDS);
        let ready = condition_status(node, "Ready");
        let mut desired = (**node).clone();
        if stale && ready != Some("Unknown") {
            set_condition(&mut desired, unknown_ready());
        }
        let now_ready = condition_status(&desired, "Ready").map(String::from);
        set_taints(&mut desired, now_ready.as_deref());
        if desired != **node {
            write_node(app, node, &desired).await?;
        }
        if not_ready_for(&desired, now) > EVICTION_SECONDS {
            if pods.is_none() {
                pods = Some(list_all(app, "", "pods", None).await?);
            }
            evict(app, name(node), pods.as_deref().unwrap_or_default()).await;
        }
    }
    Ok(())
}

/// The Ready condition the controller writes for a silent node.
pub fn unknown_ready() -> Value {
    let now = crate::objects::now();
    json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
           "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": now, "lastTransitionTime": now})
}

/// Adds or removes the not-ready/unreachable taints for the Ready status.
pub fn set_taints(node: &mut Value, ready: Option<&str>) {
    let key = match ready {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut taints: Vec<Value> = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let before = taints.clone();
    taints.retain(|t| {
        let k = str_at(t, "/key");
        (k != UNREACHABLE && k != NOT_READY) || Some(k) == key
    });
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| str_at(t, "/key") == key && str_at(t, "/effect") == effect) {
                let mut taint = json!({"key": key, "effect": effect});
                if effect == "NoExecute" {
                    taint["timeAdded"] = json!(crate::objects::now());
                }
                taints.push(taint);
            }
        }
    }
    if taints == before {
        return;
    }
    let spec = object_mut(node, "spec");
    if taints.is_empty() {
        spec.remove("taints");
    } else {
        spec.insert("taints".into(), Value::Array(taints));
    }
}

/// Seconds since the Ready condition left True (0 when Ready).
fn not_ready_for(node: &Value, now: chrono::DateTime<chrono::Utc>) -> i64 {
    let Some(cond) = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| str_at(c, "/type") == "Ready"))
    else {
        return 0;
    };
    if str_at(cond, "/status") == "True" {
        return 0;
    }
    parse_time(str_at(cond, "/lastTransitionTime")).map_or(0, |t| (now - t).num_seconds())
}

async fn write_node(app: &AppState, node: &Value, desired: &Value) -> Result<(), ApiError> {
    let Some(res) = resources::find("", "nodes") else { return Ok(()) };
    let taints = desired.pointer("/spec/taints").cloned();
    tracing::info!(node = name(node), ready = ?condition_status(desired, "Ready"), "node lifecycle update");
    let result = app
        .db
        .guaranteed_update(&res.key(None, name(node)), "nodes", name(node), |mut n| {
            if condition_status(desired, "Ready") == Some("Unknown") && condition_status(&n, "Ready") != Some("Unknown") {
                set_condition(&mut n, unknown_ready());
            }
            let spec = object_mut(&mut n, "spec");
            match &taints {
                Some(t) => spec.insert("taints".into(), t.clone()),
                None => spec.remove("taints"),
            };
            Ok(Some(n))
        })
        .await;
    match result {
        Err(e) if e.code != 404 => Err(e),
        _ => Ok(()),
    }
}

async fn evict(app: &AppState, node: &str, pods: &[std::sync::Arc<Value>]) {
    let Some(res) = resources::find("", "pods") else { return };
    for pod in pods.iter().filter(|p| str_at(p, "/spec/nodeName") == node) {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        tracing::info!(pod = %format!("{}/{}", namespace(pod), name(pod)), node, "evicting pod from a node that is not ready");
        let _ = delete_object(app, res, Some(namespace(pod)), name(pod), &DeleteOptions::default()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_follow_ready() {
        let mut node = json!({"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}});
        set_taints(&mut node, Some("Unknown"));
        let keys: Vec<_> = node["spec"]["taints"].as_array().unwrap().iter().map(|t| t["key"].clone()).collect();
        assert_eq!(keys, vec![json!("x"), json!(UNREACHABLE), json!(UNREACHABLE)]);
        set_taints(&mut node, Some("False"));
        assert!(node.to_string().contains(NOT_READY) && !node.to_string().contains(UNREACHABLE));
        set_taints(&mut node, Some("True"));
        assert_eq!(node["spec"]["taints"], json!([{"key":"x","effect":"NoSchedule"}]));
    }

    #[test]
    fn not_ready_duration() {
        let now = chrono::Utc::now();
        let t = (now - chrono::Duration::seconds(400)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let node = json!({"status":{"conditions":[{"type":"Ready","status":"Unknown","lastTransitionTime":t}]}});
        assert!(not_ready_for(&node, now) >= 399);
        let ready = json!({"status":{"conditions":[{"type":"Ready","status":"True","lastTransitionTime":t}]}});
        assert_eq!(not_ready_for(&ready, now), 0);
    }
}
