//! The scheduler: binds each pending Pod (no `spec.nodeName`, not being deleted) to
//! a Ready, schedulable Node whose labels match its nodeSelector and whose
//! NoSchedule/NoExecute taints it tolerates, choosing the node with the fewest pods.
//! With no fit the Pod stays Pending with `PodScheduled=False reason Unschedulable`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::list_all;
use crate::error::ApiError;
use crate::handlers::create::bind_pod;
use crate::objects::{condition_status, name, namespace, set_condition, str_at};
use crate::resources;
use crate::server::AppState;

/// One scheduling pass over all pending pods.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let nodes = list_all(app, "", "nodes", None).await?;
    let pods = list_all(app, "", "pods", None).await?;
    let mut load: BTreeMap<String, usize> = nodes.iter().map(|n| (name(n).to_string(), 0)).collect();
    for p in &pods {
        if let Some(count) = load.get_mut(str_at(p, "/spec/nodeName")) {
            *count += 1;
        }
    }
    for pod in pods.iter().filter(|p| pending(p)) {
        match pick_node(pod, &nodes, &load) {
            Some(node) => match bind_pod(app, namespace(pod), name(pod), &node).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{}/{}", namespace(pod), name(pod)), node = %node, "scheduled");
                    *load.entry(node).or_default() += 1;
                }
                Err(e) => tracing::debug!(pod = name(pod), error = %e, "bind failed"),
            },
            None => mark_unschedulable(app, pod, nodes.len()).await?,
        }
    }
    Ok(())
}

fn pending(pod: &Value) -> bool {
    let scheduler = str_at(pod, "/spec/schedulerName");
    str_at(pod, "/spec/nodeName").is_empty()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && (scheduler.is_empty() || scheduler == "default-scheduler")
}

/// The least loaded feasible node for `pod`.
pub fn pick_node(pod: &Value, nodes: &[std::sync::Arc<Value>], load: &BTreeMap<String, usize>) -> Option<String> {
    nodes
        .iter()
        .filter(|n| feasible(pod, n))
        .map(|n| name(n).to_string())
        .min_by_key(|n| (load.get(n).copied().unwrap_or(0), n.clone()))
}

fn feasible(pod: &Value, node: &Value) -> bool {
    if condition_status(node, "Ready") != Some("True") {
        return false;
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    let selector_ok = pod.pointer("/spec/nodeSelector").and_then(Value::as_object).is_none_or(|sel| {
        sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    selector_ok && tolerates_taints(pod, node)
}

fn tolerates_taints(pod: &Value, node: &Value) -> bool {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    taints
        .iter()
        .filter(|t| matches!(str_at(t, "/effect"), "NoSchedule" | "NoExecute"))
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn tolerates(tol: &Value, taint: &Value) -> bool {
    let effect_ok = str_at(tol, "/effect").is_empty() || str_at(tol, "/effect") == str_at(taint, "/effect");
    let key = str_at(tol, "/key");
    let key_ok = key.is_empty() || key == str_at(taint, "/key");
    let value_ok = match str_at(tol, "/operator") {
        "Exists" => true,
        _ => !key.is_empty() && str_at(tol, "/value") == str_at(taint, "/value"),
    };
    effect_ok && key_ok && value_ok
}

async fn mark_unschedulable(app: &AppState, pod: &Value, node_count: usize) -> Result<(), ApiError> {
    let message = if node_count == 0 {
        "no nodes available to schedule pods".to_string()
    } else {
        format!("0/{node_count} nodes are available: no Ready, schedulable node matches the pod.")
    };
    let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": crate::objects::now()});
    // Already marked: no write, and no copy of the pod (this runs for every pending
    // pod on every pass, which with thousands of pods starves the runtime's workers).
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    let marked = conditions.and_then(|l| l.iter().find(|c| c["type"] == "PodScheduled")).is_some_and(|c| {
        c["status"] == condition["status"] && c["reason"] == condition["reason"] && c["message"] == condition["message"]
    });
    if marked {
        return Ok(());
    }
    let Some(pods) = resources::find("", "pods") else { return Ok(()) };
    let key = pods.key(Some(namespace(pod)), name(pod));
    let result = app
        .db
        .guaranteed_update(&key, "pods", name(pod), |mut p| {
            if !str_at(&p, "/spec/nodeName").is_empty() {
                return Ok(None);
            }
            Ok(set_condition(&mut p, condition.clone()).then_some(p))
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, labels: Value) -> Value {
        json!({"metadata":{"name":name,"labels":labels},"status":{"conditions":[{"type":"Ready","status":ready}]}})
    }

    #[test]
    fn picks_ready_least_loaded_matching_node() {
        let nodes: Vec<std::sync::Arc<Value>> = vec![
            node("a", "True", json!({"disk":"ssd"})).into(),
            node("b", "True", json!({})).into(),
            node("c", "False", json!({})).into(),
        ];
        let mut load = BTreeMap::new();
        load.insert("a".to_string(), 3);
        let pod = json!({"spec":{}});
        assert_eq!(pick_node(&pod, &nodes, &load).as_deref(), Some("b"));
        let pod = json!({"spec":{"nodeSelector":{"disk":"ssd"}}});
        assert_eq!(pick_node(&pod, &nodes, &load).as_deref(), Some("a"));
        let pod = json!({"spec":{"nodeSelector":{"disk":"hdd"}}});
        assert_eq!(pick_node(&pod, &nodes, &load), None);
    }

    #[test]
    fn unschedulable_and_taints() {
        let mut n = node("a", "True", json!({}));
        n["spec"] = json!({"unschedulable": true});
        assert_eq!(pick_node(&json!({}), &[n.into()], &BTreeMap::new()), None);
        let mut n = node("a", "True", json!({}));
        n["spec"] = json!({"taints":[{"key":"k","value":"v","effect":"NoSchedule"}]});
        assert_eq!(pick_node(&json!({}), &[n.clone().into()], &BTreeMap::new()), None);
        let pod = json!({"spec":{"tolerations":[{"key":"k","operator":"Exists"}]}});
        assert_eq!(pick_node(&pod, &[n.into()], &BTreeMap::new()).as_deref(), Some("a"));
    }
}
