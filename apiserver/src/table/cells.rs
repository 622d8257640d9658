//! The cells of each kind's Table row (kubectl's printers, computed server-side).

use serde_json::{json, Value};

use super::human_duration;
use crate::objects::{condition_status, parse_time, str_at};

pub(super) fn pod_cells(o: &Value, name: Value, age: Value, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let statuses = o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let (status, ready, restarts, last_restart) = pod_status(o, &statuses);
    let restarts = match last_restart.and_then(|t| parse_time(&t)) {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration((now - t).num_seconds())),
        _ => restarts.to_string(),
    };
    let none = |s: &str| if s.is_empty() { "<none>".to_string() } else { s.to_string() };
    let gates = o.pointer("/spec/readinessGates").and_then(Value::as_array).map_or(0, Vec::len);
    let gates = if gates == 0 { "<none>".to_string() } else { format!("0/{gates}") };
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        age,
        json!(none(str_at(o, "/status/podIP"))),
        json!(none(str_at(o, "/spec/nodeName"))),
        json!(none(str_at(o, "/status/nominatedNodeName"))),
        json!(gates),
    ]
}

/// The STATUS column of a pod (kubectl's printPod logic, init containers simplified).
fn pod_status(o: &Value, statuses: &[Value]) -> (String, usize, i64, Option<String>) {
    let mut reason = str_at(o, "/status/phase").to_string();
    if !str_at(o, "/status/reason").is_empty() {
        reason = str_at(o, "/status/reason").to_string();
    }
    let inits = o.pointer("/status/initContainerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        let terminated_ok = c.pointer("/state/terminated/exitCode").and_then(Value::as_i64) == Some(0);
        if terminated_ok {
            continue;
        }
        let waiting = str_at(c, "/state/waiting/reason");
        reason = if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", inits.len())
        };
        initializing = true;
        break;
    }
    let (mut ready, mut restarts, mut has_running, mut last) = (0, 0, false, None);
    for c in statuses.iter().rev() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str) {
            if last.as_deref().is_none_or(|l: &str| l < t) {
                last = Some(t.to_string());
            }
        }
        if initializing {
            continue;
        }
        let waiting = str_at(c, "/state/waiting/reason");
        let terminated = c.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if let Some(t) = terminated {
            reason = match (str_at(t, "/reason"), t.get("signal").and_then(Value::as_i64)) {
                (r, _) if !r.is_empty() => r.to_string(),
                (_, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                _ => format!("ExitCode:{}", t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)),
            };
        } else if c.get("ready").and_then(Value::as_bool) == Some(true) && c.pointer("/state/running").is_some() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = if condition_status(o, "Ready") == Some("True") { "Running".into() } else { "NotReady".into() };
    }
    if o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = if str_at(o, "/status/reason") == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    (reason, ready, restarts, last)
}

pub(super) fn node_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let mut status = match condition_status(o, "Ready") {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).map(String::from).collect())
        .unwrap_or_default();
    roles.sort();
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
    let address = |ty: &str| {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some(ty)))
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |f: &str| {
        let v = str_at(o, &format!("/status/nodeInfo/{f}"));
        if v.is_empty() { "<unknown>".to_string() } else { v.to_string() }
    };
    vec![
        name, json!(status), json!(roles), age, json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")), json!(address("ExternalIP")), json!(info("osImage")),
        json!(info("kernelVersion")), json!(info("containerRuntimeVersion")),
    ]
}

pub(super) fn service_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let ty = str_at(o, "/spec/type");
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let ports = if ports.is_empty() { "<none>".to_string() } else { ports.join(",") };
    let external: Vec<String> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    let external = match (ty, external.is_empty()) {
        ("ExternalName", _) => str_at(o, "/spec/externalName").to_string(),
        ("LoadBalancer", true) => "<pending>".to_string(),
        (_, true) => "<none>".to_string(),
        (_, false) => external.join(","),
    };
    let selector: Vec<String> = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    let selector = if selector.is_empty() { "<none>".to_string() } else { selector.join(",") };
    let cluster_ip = str_at(o, "/spec/clusterIP");
    let cluster_ip = if cluster_ip.is_empty() { "<none>" } else { cluster_ip };
    vec![name, json!(ty), json!(cluster_ip), json!(external), json!(ports), age, json!(selector)]
}

pub(super) fn workload_cells(kind: &str, o: &Value, name: Value, age: Value) -> Vec<Value> {
    let int = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let containers = o.pointer("/spec/template/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    let selector: Vec<String> = o
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    let wide = [json!(names.join(",")), json!(images.join(",")), json!(selector.join(","))];
    let mut cells = if kind == "Deployment" {
        let ready = format!("{}/{}", int("/status/readyReplicas"), int("/spec/replicas"));
        vec![name, json!(ready), json!(int("/status/updatedReplicas")), json!(int("/status/availableReplicas")), age]
    } else {
        vec![name, json!(int("/spec/replicas")), json!(int("/status/replicas")), json!(int("/status/readyReplicas")), age]
    };
    cells.extend(wide);
    cells
}

pub(super) fn event_cells(o: &Value, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let last = ["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]
        .iter()
        .find_map(|p| parse_time(str_at(o, p)))
        .map_or("<unknown>".to_string(), |t| human_duration((now - t).num_seconds()));
    let object = format!(
        "{}/{}",
        str_at(o, "/involvedObject/kind").to_lowercase(),
        str_at(o, "/involvedObject/name")
    );
    vec![
        json!(last), json!(str_at(o, "/type")), json!(str_at(o, "/reason")), json!(object),
        json!(str_at(o, "/message")),
    ]
}

pub(super) fn endpoints_summary(o: &Value) -> String {
    let mut list = Vec::new();
    for subset in o.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|x| x.get("port").and_then(Value::as_i64)).collect())
            .unwrap_or_default();
        for addr in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
            let ip = str_at(addr, "/ip");
            if ports.is_empty() {
                list.push(ip.to_string());
            }
            list.extend(ports.iter().map(|p| format!("{ip}:{p}")));
        }
    }
    match list.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", list[..3].join(","), n - 3),
        _ => list.join(","),
    }
}
