//! Create-time defaulting that kube-apiserver does in admission plugins and
//! per-kind defaulters beyond the basic field defaults in [`crate::objects`]:
//! the ServiceAccount admission (`spec.serviceAccountName: default`), the
//! DefaultTolerationSeconds admission (not-ready / unreachable NoExecute for 300 s),
//! DaemonSet and Secret defaults.

use serde_json::{json, Value};

use crate::objects::{default_field, default_pod_spec, object_mut};

/// How long a pod tolerates a NotReady or Unreachable node by default.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

const NO_EXECUTE_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// ServiceAccount and DefaultTolerationSeconds admission for a new Pod.
pub fn admit_pod(pod: &mut Value) {
    let spec = object_mut(pod, "spec");
    let sa = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in NO_EXECUTE_TAINTS {
        let covered = list.iter().any(|t| {
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || (k.is_empty() && op == "Exists")) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

/// DaemonSet defaults (update strategy, history limit, template).
pub fn default_daemonset(ds: &mut Value) {
    let spec = object_mut(ds, "spec");
    default_field(spec, "revisionHistoryLimit", json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if let Some(st) = strategy.as_object_mut() {
        default_field(st, "type", json!("RollingUpdate"));
        if st.get("type") == Some(&json!("RollingUpdate")) {
            default_field(st, "rollingUpdate", json!({"maxUnavailable": 1, "maxSurge": 0}));
        }
    }
    let template = spec.entry("template").or_insert_with(|| json!({}));
    default_pod_spec(template);
    let status = object_mut(ds, "status");
    for field in ["currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"] {
        default_field(status, field, json!(0));
    }
}

/// Secret defaults: type Opaque, and `stringData` folded into base64 `data`.
pub fn default_secret(secret: &mut Value) {
    let Some(map) = secret.as_object_mut() else { return };
    default_field(map, "type", json!("Opaque"));
    let Some(Value::Object(strings)) = map.remove("stringData") else { return };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in strings {
            data.insert(k, json!(base64(v.as_str().unwrap_or("").as_bytes())));
        }
    }
}

/// Standard base64 with padding (Secret `data`).
pub fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_gets_service_account_and_tolerations() {
        let mut pod = json!({"spec":{"containers":[{"name":"c","image":"x"}],
            "tolerations":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":10}]}});
        admit_pod(&mut pod);
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 10);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
    }

    #[test]
    fn secrets_and_base64() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let mut s = json!({"stringData":{"user":"admin"}});
        default_secret(&mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn daemonset_defaults() {
        let mut ds = json!({"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox"}]}}}});
        default_daemonset(&mut ds);
        assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(ds["status"]["numberReady"], 0);
    }
}
