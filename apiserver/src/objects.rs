//! Helpers over API objects held as JSON: metadata access, timestamps, and the
//! per-kind defaulting kube-apiserver applies on create (Pods, Services, Namespaces).

use serde_json::{json, Map, Value};

/// `metadata.name` (empty when missing).
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// `metadata.namespace` (empty when missing).
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("")
}

/// A string at a JSON pointer, or "".
pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Ensures `obj[key]` is an object and returns it.
pub fn object_mut<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("just made an object");
    let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// Sets `key` in a map when it is missing or null.
pub fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_string(), value);
        }
    }
}

/// Current time as kube formats metav1.Time (RFC 3339, seconds, `Z`).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Current time with microseconds (metav1.MicroTime, used by Leases).
pub fn now_micro() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses a metav1.Time / MicroTime.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// The status of a condition of `type_` in `status.conditions`.
pub fn condition_status<'a>(obj: &'a Value, type_: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("status")?
        .as_str()
}

/// Sets (or replaces) a condition in `status.conditions`; returns true when changed.
pub fn set_condition(obj: &mut Value, condition: Value) -> bool {
    let type_ = condition.get("type").cloned();
    let status = object_mut(obj, "status");
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("just made an array");
    let same = |c: &Value, k: &str| c.get(k) == condition.get(k);
    match list.iter_mut().find(|c| c.get("type") == type_.as_ref()) {
        Some(existing) if same(existing, "status") && same(existing, "reason") && same(existing, "message") => false,
        Some(existing) => {
            *existing = condition;
            true
        }
        None => {
            list.push(condition);
            true
        }
    }
}

/// Applies Pod defaults: phase Pending, qosClass, restartPolicy, dnsPolicy,
/// terminationGracePeriodSeconds, schedulerName and per-container defaults.
pub fn default_pod(pod: &mut Value) {
    default_pod_spec(pod);
    let qos = qos_class(pod.get("spec").unwrap_or(&Value::Null));
    let status = object_mut(pod, "status");
    default_field(status, "phase", json!("Pending"));
    default_field(status, "qosClass", json!(qos));
}

/// Defaults of a pod spec (`holder.spec`), shared by Pods and pod templates.
pub fn default_pod_spec(holder: &mut Value) {
    let spec = object_mut(holder, "spec");
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "enableServiceLinks", json!(true));
    default_field(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    default_field(spec, "priority", json!(0));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            containers.iter_mut().for_each(default_container);
        }
    }
}

/// Deployment / ReplicaSet defaults (replicas, strategy, template).
pub fn default_workload(obj: &mut Value, kind: &str) {
    let spec = object_mut(obj, "spec");
    default_field(spec, "replicas", json!(1));
    if kind == "Deployment" {
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(st) = strategy.as_object_mut() {
            default_field(st, "type", json!("RollingUpdate"));
            if st.get("type") == Some(&json!("RollingUpdate")) {
                default_field(st, "rollingUpdate", json!({"maxSurge": "25%", "maxUnavailable": "25%"}));
            }
        }
    }
    let template = spec.entry("template").or_insert_with(|| json!({}));
    default_pod_spec(template);
}

fn default_container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(map) = c.as_object_mut() else { return };
    let last = image.rsplit('/').next().unwrap_or(&image);
    let latest = !last.contains(':') || last.ends_with(":latest");
    let policy = if latest && !image.contains('@') { "Always" } else { "IfNotPresent" };
    default_field(map, "imagePullPolicy", json!(policy));
    default_field(map, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(map, "terminationMessagePolicy", json!("File"));
    default_field(map, "resources", json!({}));
    if let Some(ports) = map.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(p, "protocol", json!("TCP"));
        }
    }
}

/// The Pod QoS class (Guaranteed, Burstable, BestEffort) from container resources.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Applies Service defaults (type, protocol, targetPort, sessionAffinity, families).
pub fn default_service(svc: &mut Value) {
    let spec = object_mut(svc, "spec");
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                default_field(p, "targetPort", port);
            }
        }
    }
    let status = object_mut(svc, "status");
    default_field(status, "loadBalancer", json!({}));
}

/// Sets clusterIP/clusterIPs and the IP family fields of a Service.
pub fn set_cluster_ip(svc: &mut Value, ip: &str) {
    let spec = object_mut(svc, "spec");
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    if ip != "None" {
        default_field(spec, "ipFamilies", json!(["IPv4"]));
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
}

/// Namespace defaults: `spec.finalizers` and `status.phase: Active`.
pub fn default_namespace(ns: &mut Value) {
    let name = name(ns).to_string();
    if let Some(meta) = ns.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    let spec = object_mut(ns, "spec");
    default_field(spec, "finalizers", json!([crate::controllers::namespaces::FINALIZER]));
    let status = object_mut(ns, "status");
    default_field(status, "phase", json!("Active"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}});
        default_pod(&mut pod);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["terminationMessagePath"], "/dev/termination-log");
    }

    #[test]
    fn qos() {
        let g = json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers":[{"resources":{"requests":{"cpu":"1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn service_defaults() {
        let mut svc = json!({"spec":{"ports":[{"port":80}]}});
        default_service(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
    }
}
