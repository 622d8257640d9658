//! Server-side printing: `meta.k8s.io/v1 Table` answers (what `kubectl get` prints),
//! with the columns kube-apiserver computes for each kind.

use serde_json::{json, Value};

mod cells;
mod more;

use more::{configmap_cells, daemonset_cells, endpointslice_cells, secret_cells, serviceaccount_cells};
use cells::{endpoints_summary, event_cells, node_cells, pod_cells, service_cells, workload_cells};

use crate::objects::{parse_time, str_at};
use crate::resources::ResourceInfo;

/// One column definition: name, type, priority (1 = only with `-o wide`).
type Column = (&'static str, &'static str, u8);

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => &[
            ("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0),
            ("Restarts", "string", 0), ("Age", "string", 0), ("IP", "string", 1),
            ("Node", "string", 1), ("Nominated Node", "string", 1), ("Readiness Gates", "string", 1),
        ],
        "Node" => &[
            ("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0),
            ("Age", "string", 0), ("Version", "string", 0), ("Internal-IP", "string", 1),
            ("External-IP", "string", 1), ("OS-Image", "string", 1), ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Service" => &[
            ("Name", "string", 0), ("Type", "string", 0), ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0), ("Port(s)", "string", 0), ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Endpoints" => &[("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)],
        "Namespace" => &[("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        "Lease" => &[("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)],
        "Deployment" => &[
            ("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
            ("Available", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
            ("Images", "string", 1), ("Selector", "string", 1),
        ],
        "ReplicaSet" => &[
            ("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
            ("Ready", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
            ("Images", "string", 1), ("Selector", "string", 1),
        ],
        "DaemonSet" => &[
            ("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
            ("Ready", "integer", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0),
            ("Node Selector", "string", 0), ("Age", "string", 0), ("Containers", "string", 1),
            ("Images", "string", 1), ("Selector", "string", 1),
        ],
        "ConfigMap" => &[("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        "Secret" => &[("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        "ServiceAccount" => &[("Name", "string", 0), ("Secrets", "integer", 0), ("Age", "string", 0)],
        "EndpointSlice" => &[
            ("Name", "string", 0), ("AddressType", "string", 0), ("Ports", "string", 0),
            ("Endpoints", "string", 0), ("Age", "string", 0),
        ],
        "Event" => &[
            ("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
            ("Object", "string", 0), ("Message", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn column_definitions(kind: &str) -> Value {
    let defs: Vec<Value> = columns(kind)
        .iter()
        .map(|(name, ty, priority)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
        })
        .collect();
    Value::Array(defs)
}

/// A Table of `objects` (`include_object`: "Object" for full objects, else metadata).
pub fn render(res: &ResourceInfo, objects: &[Value], resource_version: &str, include_object: &str) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(res.kind, o, now), "object": row_object(o, include_object)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": column_definitions(res.kind),
        "rows": rows,
    })
}

fn row_object(obj: &Value, include: &str) -> Value {
    match include {
        "Object" => obj.clone(),
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

fn cells(kind: &str, o: &Value, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let name = json!(str_at(o, "/metadata/name"));
    let age = json!(age(o, now));
    match kind {
        "Pod" => pod_cells(o, name, age, now),
        "Node" => node_cells(o, name, age),
        "Service" => service_cells(o, name, age),
        "Endpoints" => vec![name, json!(endpoints_summary(o)), age],
        "Namespace" => vec![name, json!(str_at(o, "/status/phase")), age],
        "Lease" => vec![name, json!(str_at(o, "/spec/holderIdentity")), age],
        "Event" => event_cells(o, now),
        "Deployment" | "ReplicaSet" => workload_cells(kind, o, name, age),
        "DaemonSet" => daemonset_cells(o, name, age),
        "ConfigMap" => configmap_cells(o, name, age),
        "Secret" => secret_cells(o, name, age),
        "ServiceAccount" => serviceaccount_cells(o, name, age),
        "EndpointSlice" => endpointslice_cells(o, name, age),
        _ => vec![name, age],
    }
}

fn age(o: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    match parse_time(str_at(o, "/metadata/creationTimestamp")) {
        Some(t) => human_duration((now - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// kubectl's short duration (`5s`, `3m2s`, `2d`), from apimachinery's HumanDuration.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        return if s % 60 == 0 { format!("{minutes}m") } else { format!("{minutes}m{}s", s % 60) };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = s / 3600;
    if hours < 8 {
        return if minutes % 60 == 0 { format!("{hours}h") } else { format!("{hours}h{}m", minutes % 60) };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return if hours % 24 == 0 { format!("{}d", hours / 24) } else { format!("{}d{}h", hours / 24, hours % 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let years = hours / 24 / 365;
    let days = (hours / 24) % 365;
    if hours < 24 * 365 * 8 && days != 0 {
        return format!("{years}y{days}d");
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(182), "3m2s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(2 * 86400 + 3600), "2d1h");
    }

    #[test]
    fn pod_rows() {
        let pod = json!({"metadata":{"name":"web","creationTimestamp":"2020-01-01T00:00:00Z"},
            "spec":{"nodeName":"n1","containers":[{"name":"a"},{"name":"b"}]},
            "status":{"phase":"Running","podIP":"10.244.1.5","containerStatuses":[
                {"name":"a","ready":true,"restartCount":1,"state":{"running":{}}},
                {"name":"b","ready":false,"restartCount":2,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}});
        let t = render(find("", "pods").unwrap(), &[pod], "7", "");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[5], "10.244.1.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn terminating_and_pending() {
        let pod = json!({"metadata":{"name":"p","deletionTimestamp":"2020-01-01T00:00:00Z"},
            "spec":{"containers":[{"name":"a"}]},"status":{"phase":"Running"}});
        let t = render(find("", "pods").unwrap(), &[pod], "1", "");
        assert_eq!(t["rows"][0]["cells"][2], "Terminating");
    }

    #[test]
    fn node_service_endpoint_rows() {
        let node = json!({"metadata":{"name":"n1"},"spec":{"unschedulable":true},
            "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.33.0"},
            "addresses":[{"type":"InternalIP","address":"172.18.0.11"}]}});
        let t = render(find("", "nodes").unwrap(), &[node], "1", "");
        assert_eq!(t["rows"][0]["cells"][1], "Ready,SchedulingDisabled");
        assert_eq!(t["rows"][0]["cells"][2], "<none>");
        assert_eq!(t["rows"][0]["cells"][5], "172.18.0.11");
        let svc = json!({"metadata":{"name":"s"},"spec":{"type":"ClusterIP","clusterIP":"10.96.0.20",
            "ports":[{"port":80,"protocol":"TCP"},{"port":53,"protocol":"UDP"}],"selector":{"app":"web"}}});
        let t = render(find("", "services").unwrap(), &[svc], "1", "");
        assert_eq!(t["rows"][0]["cells"][4], "80/TCP,53/UDP");
        assert_eq!(t["rows"][0]["cells"][3], "<none>");
        assert_eq!(t["rows"][0]["cells"][6], "app=web");
        let ep = json!({"metadata":{"name":"s"},"subsets":[{"addresses":[{"ip":"10.244.1.2"}],"ports":[{"port":80}]}]});
        let t = render(find("", "endpoints").unwrap(), &[ep], "1", "");
        assert_eq!(t["rows"][0]["cells"][1], "10.244.1.2:80");
    }
}
