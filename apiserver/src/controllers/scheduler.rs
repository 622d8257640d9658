//! The scheduler: binds each pending Pod (no `spec.nodeName`, not being deleted) to
//! a Ready, schedulable Node whose labels match its nodeSelector and whose
//! NoSchedule/NoExecute taints it tolerates, choosing the node with the fewest pods.
//! With no fit the Pod stays Pending with `PodScheduled=False reason Unschedulable`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

use super::list_all;
use crate::error::ApiError;
use crate::handlers::create::bind_pod;
use crate::objects::{condition_status, name, namespace, set_condition, str_at};
use crate::resources;
use crate::server::AppState;
use crate::store::{Event, EventType};

/// Between two full passes, the longest the scheduler goes on events alone.
const RESYNC: Duration = Duration::from_secs(10);

/// Runs the scheduler until shutdown. Like kube-scheduler's queue, it looks only at
/// the pods whose events arrived (a create, an update that left a pod pending); a full
/// pass over every pod runs at start, every [`RESYNC`], when a Node changes and when
/// the watch fell behind. With thousands of pods a full pass per pod event would burn
/// the runtime's two workers and hold the store's lock on every write.
pub fn spawn(app: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sub = match app.db.watch("/registry/", Some(app.db.revision())).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(controller = "scheduler", error = %e, "cannot watch the store; controller stopped");
                return;
            }
        };
        let mut stop = app.shutdown.clone();
        let mut ticker = tokio::time::interval(RESYNC);
        let mut work = Work { full: true, pods: BTreeMap::new() };
        loop {
            let result = match std::mem::replace(&mut work, Work { full: false, pods: BTreeMap::new() }) {
                Work { full: true, .. } => reconcile(&app).await,
                Work { pods, .. } => schedule_some(&app, pods.into_values().collect()).await,
            };
            if let Err(e) = result {
                tracing::warn!(controller = "scheduler", error = %e, "reconcile failed");
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => work.full = true,
                got = sub.rx.recv() => match got {
                    Ok(ev) => work.note(&ev),
                    Err(RecvError::Lagged(_)) => work.full = true,
                    Err(RecvError::Closed) => return,
                },
            }
            // Coalesce a burst of events into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
            loop {
                match sub.rx.try_recv() {
                    Ok(ev) => work.note(&ev),
                    Err(TryRecvError::Lagged(_)) => work.full = true,
                    Err(_) => break,
                }
            }
        }
    })
}

/// What the next pass looks at.
#[derive(Debug)]
struct Work {
    /// Every pod (a Node changed, the period passed, events were lost).
    full: bool,
    /// Else only these: the latest state of each pending pod that had an event.
    pods: BTreeMap<String, Value>,
}

impl Work {
    fn note(&mut self, ev: &Event) {
        if ev.key.starts_with("/registry/nodes/") {
            self.full = true;
        } else if ev.key.starts_with("/registry/pods/") {
            if ev.kind != EventType::Deleted && pending(&ev.object) {
                self.pods.insert(ev.key.clone(), ev.object.clone());
            } else {
                self.pods.remove(&ev.key);
            }
        }
    }
}

/// One scheduling pass over all pending pods.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let nodes = list_all(app, "", "nodes", None).await?;
    let pods = list_all(app, "", "pods", None).await?;
    let mut load = Some(count_load(&nodes, &pods));
    schedule(app, pods.iter().map(|p| &**p).filter(|p| pending(p)), &nodes, &mut load).await
}

/// Schedules the given pods (from events); counts the pods per node only when one of
/// them fits a node.
async fn schedule_some(app: &AppState, pods: Vec<Value>) -> Result<(), ApiError> {
    if pods.is_empty() {
        return Ok(());
    }
    let nodes = list_all(app, "", "nodes", None).await?;
    let mut load = None;
    schedule(app, pods.iter(), &nodes, &mut load).await
}

/// Pods per node name.
fn count_load(nodes: &[Arc<Value>], pods: &[Arc<Value>]) -> BTreeMap<String, usize> {
    let mut load: BTreeMap<String, usize> = nodes.iter().map(|n| (name(n).to_string(), 0)).collect();
    for p in pods {
        if let Some(count) = load.get_mut(at2(p, "spec", "nodeName")) {
            *count += 1;
        }
    }
    load
}

/// Binds each pending pod to a node, or marks it Unschedulable.
async fn schedule<'a>(
    app: &AppState,
    pending: impl Iterator<Item = &'a Value>,
    nodes: &[Arc<Value>],
    load: &mut Option<BTreeMap<String, usize>>,
) -> Result<(), ApiError> {
    let unschedulable = unschedulable_condition(nodes.len());
    for (i, pod) in pending.enumerate() {
        // A pass over thousands of pods must not hold a runtime worker for its whole
        // length: watch streams and requests wait on the same two workers.
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
        let fits = nodes.iter().any(|n| feasible(pod, n));
        if !fits {
            if !marked(pod, &unschedulable) {
                mark_unschedulable(app, pod, &unschedulable).await?;
            }
            continue;
        }
        if load.is_none() {
            *load = Some(count_load(nodes, &list_all(app, "", "pods", None).await?));
        }
        let Some(load) = load.as_mut() else { continue };
        let Some(node) = pick_node(pod, nodes, load) else { continue };
        match bind_pod(app, namespace(pod), name(pod), &node).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", namespace(pod), name(pod)), node = %node, "scheduled");
                *load.entry(node).or_default() += 1;
            }
            Err(e) => tracing::debug!(pod = name(pod), error = %e, "bind failed"),
        }
    }
    Ok(())
}

/// Pending pods looked at between two yields to the runtime.
const YIELD_EVERY: usize = 256;

fn pending(pod: &Value) -> bool {
    let scheduler = at2(pod, "spec", "schedulerName");
    at2(pod, "spec", "nodeName").is_empty()
        && pod.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_none()
        && (scheduler.is_empty() || scheduler == "default-scheduler")
}

/// `obj[a][b]` as a string ("" when absent). Plain indexing: every pass reads this for
/// every pod, and `Value::pointer` allocates per path segment.
fn at2<'a>(obj: &'a Value, a: &str, b: &str) -> &'a str {
    obj.get(a).and_then(|v| v.get(b)).and_then(Value::as_str).unwrap_or("")
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

/// The `PodScheduled=False Unschedulable` condition for this pass (built once per
/// pass, not per pod: a pass can see thousands of pending pods).
fn unschedulable_condition(node_count: usize) -> Value {
    let message = if node_count == 0 {
        "no nodes available to schedule pods".to_string()
    } else {
        format!("0/{node_count} nodes are available: no Ready, schedulable node matches the pod.")
    };
    json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": crate::objects::now()})
}

/// True when `pod` already carries `condition` (same status, reason and message).
fn marked(pod: &Value, condition: &Value) -> bool {
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    conditions.and_then(|l| l.iter().find(|c| c["type"] == "PodScheduled")).is_some_and(|c| {
        c["status"] == condition["status"] && c["reason"] == condition["reason"] && c["message"] == condition["message"]
    })
}

async fn mark_unschedulable(app: &AppState, pod: &Value, condition: &Value) -> Result<(), ApiError> {
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

    #[test]
    fn events_queue_pending_pods_and_node_changes_ask_for_a_full_pass() {
        let mut work = Work { full: false, pods: BTreeMap::new() };
        let pod = |node: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node}});
        let ev = |key: &str, kind, object| Event::new(1, kind, key.to_string(), object, None);
        work.note(&ev("/registry/pods/d/p", EventType::Added, pod("")));
        assert_eq!(work.pods.len(), 1);
        assert!(!work.full);
        // Bound meanwhile: nothing left to do for it.
        work.note(&ev("/registry/pods/d/p", EventType::Modified, pod("n1")));
        assert!(work.pods.is_empty());
        work.note(&ev("/registry/pods/d/q", EventType::Added, pod("")));
        work.note(&ev("/registry/pods/d/q", EventType::Deleted, pod("")));
        assert!(work.pods.is_empty());
        work.note(&ev("/registry/configmaps/d/c", EventType::Added, json!({})));
        assert!(!work.full);
        work.note(&ev("/registry/nodes/n1", EventType::Modified, json!({})));
        assert!(work.full);
    }
}
