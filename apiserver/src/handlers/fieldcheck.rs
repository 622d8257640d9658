//! Field validation with one cause per invalid field, as kube-apiserver's
//! validators report them: label keys and values, container names (DNS-1123,
//! unique), port ranges, resource quantities, and the immutable fields of an update
//! (a Pod's spec except images, tolerations and activeDeadlineSeconds; the
//! selector of a Deployment, ReplicaSet or DaemonSet).

use std::collections::HashSet;

use serde_json::Value;

use crate::error::Cause;
use crate::resources::ResourceInfo;

const LABEL_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const POD_IMMUTABLE: &str = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The causes for every invalid field of `obj`.
pub fn field_causes(res: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    labels(obj, "metadata.labels", obj.pointer("/metadata/labels"), &mut out);
    match res.kind {
        "Pod" => pod_spec(obj.get("spec"), "spec", &mut out),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            labels(obj, "spec.template.metadata.labels", obj.pointer("/spec/template/metadata/labels"), &mut out);
            pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut out);
        }
        "Service" => service_ports(obj, &mut out),
        _ => {}
    }
    out
}

/// The causes for changed immutable fields between `old` and `new`.
pub fn immutable_causes(res: &ResourceInfo, old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    match res.kind {
        "Pod" => {
            // Compare with the old spec defaulted as a new one is (older objects may lack defaults).
            let mut old = old.clone();
            crate::objects::default_pod_spec(&mut old);
            crate::admission::admit_pod(&mut old);
            if mutable_pod_spec_removed(&old) != mutable_pod_spec_removed(new) {
                out.push(Cause::from_detail(&format!("spec: {POD_IMMUTABLE}")));
            }
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
            if n.is_some() && o != n {
                let shown = n.map(Value::to_string).unwrap_or_default();
                out.push(Cause::from_detail(&format!("spec.selector: Invalid value: {shown}: field is immutable")));
            }
        }
        _ => {}
    }
    out
}

fn mutable_pod_spec_removed(pod: &Value) -> Value {
    let mut spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(map) = spec.as_object_mut() {
        for f in ["activeDeadlineSeconds", "tolerations", "nodeName", "schedulingGates", "terminationGracePeriodSeconds"] {
            map.remove(f);
        }
        for list in ["containers", "initContainers"] {
            for c in map.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(c) = c.as_object_mut() {
                    c.remove("image");
                }
            }
        }
    }
    spec
}

fn labels(_obj: &Value, field: &str, map: Option<&Value>, out: &mut Vec<Cause>) {
    let Some(map) = map.and_then(Value::as_object) else { return };
    for (k, v) in map {
        if let Err(why) = label_key(k) {
            out.push(Cause::from_detail(&format!("{field}: Invalid value: \"{k}\": {why}")));
        }
        let value = v.as_str().unwrap_or("");
        if value.len() > 63 {
            out.push(Cause::from_detail(&format!("{field}: Invalid value: \"{value}\": must be no more than 63 characters")));
        } else if !value.is_empty() && !label_name_ok(value) {
            out.push(Cause::from_detail(&format!("{field}: Invalid value: \"{value}\": {LABEL_VALUE_MSG}")));
        }
    }
}

fn label_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A qualified name: `[prefix/]name`, prefix a DNS-1123 subdomain, name ≤ 63.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        minion_api::names::validate_dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !label_name_ok(name) {
        return Err(LABEL_NAME_MSG.into());
    }
    Ok(())
}

fn pod_spec(spec: Option<&Value>, field: &str, out: &mut Vec<Cause>) {
    let Some(spec) = spec else { return };
    let mut seen = HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let path = format!("{field}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if !name.is_empty() {
                if let Err(e) = minion_api::names::validate_dns1123_label(name) {
                    out.push(Cause::from_detail(&format!("{path}.name: Invalid value: \"{name}\": {e}")));
                }
                if !seen.insert(name.to_string()) {
                    out.push(Cause::from_detail(&format!("{path}.name: Duplicate value: \"{name}\"")));
                }
            }
            for (j, p) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                port_range(p.get("containerPort"), &format!("{path}.ports[{j}].containerPort"), false, out);
                port_range(p.get("hostPort"), &format!("{path}.ports[{j}].hostPort"), true, out);
            }
            for kind in ["limits", "requests"] {
                let quantities = c.pointer(&format!("/resources/{kind}")).and_then(Value::as_object);
                for (res, q) in quantities.into_iter().flatten() {
                    let text = match q {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if !quantity_ok(&text) {
                        out.push(Cause::from_detail(&format!(
                            "{path}.resources.{kind}[{res}]: Invalid value: \"{text}\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                        )));
                    }
                }
            }
        }
    }
}

fn port_range(v: Option<&Value>, field: &str, zero_ok: bool, out: &mut Vec<Cause>) {
    let Some(n) = v.and_then(Value::as_i64) else { return };
    if (zero_ok && n == 0) || (1..=65535).contains(&n) {
        return;
    }
    out.push(Cause::from_detail(&format!("{field}: Invalid value: {n}: must be between 1 and 65535, inclusive")));
}

fn service_ports(svc: &Value, out: &mut Vec<Cause>) {
    for (i, p) in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
        port_range(p.get("port"), &format!("spec.ports[{i}].port"), false, out);
        if p.get("targetPort").is_some_and(Value::is_number) {
            port_range(p.get("targetPort"), &format!("spec.ports[{i}].targetPort"), false, out);
        }
        port_range(p.get("nodePort"), &format!("spec.ports[{i}].nodePort"), true, out);
    }
}

/// A Kubernetes resource.Quantity: a decimal number and an optional suffix
/// (binary Ki..Ei, decimal n u m k M G T P E, or an exponent e/E±N).
pub fn quantity_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: [&str; 16] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"];
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    let Some(exp) = suffix.strip_prefix(['e', 'E']) else { return false };
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn quantities() {
        for ok in ["100m", "1", "0.5", "128Mi", "1Gi", "2e3", "1E-2", "+5k"] {
            assert!(quantity_ok(ok), "{ok}");
        }
        for bad in ["", "abc", "1.2.3", "10MB", "1e", "m"] {
            assert!(!quantity_ok(bad), "{bad}");
        }
    }

    #[test]
    fn one_cause_per_field() {
        let pod = json!({"metadata":{"labels":{"ok":"v","bad key":"x","k":"-bad"}},
            "spec":{"containers":[
                {"name":"c","image":"x","ports":[{"containerPort":70000}],"resources":{"limits":{"memory":"lots"}}},
                {"name":"c","image":"y"}]}});
        let causes = field_causes(find("", "pods").unwrap(), &pod);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.labels", "metadata.labels", "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].resources.limits[memory]", "spec.containers[1].name"]);
        assert_eq!(causes[4].reason, "FieldValueDuplicate");
        assert!(label_key("example.com/app").is_ok());
        assert!(label_key(&"a".repeat(64)).is_err());
    }

    #[test]
    fn immutable_fields() {
        let pods = find("", "pods").unwrap();
        let old = json!({"spec":{"containers":[{"name":"c","image":"a"}],"restartPolicy":"Always"}});
        let mut image = json!({"spec":{"containers":[{"name":"c","image":"b"}],"restartPolicy":"Always"}});
        crate::objects::default_pod_spec(&mut image);
        crate::admission::admit_pod(&mut image);
        assert!(immutable_causes(pods, &old, &image).is_empty());
        let policy = json!({"spec":{"containers":[{"name":"c","image":"a"}],"restartPolicy":"Never"}});
        assert_eq!(immutable_causes(pods, &old, &policy)[0].reason, "FieldValueForbidden");
        let deploy = find("apps", "deployments").unwrap();
        let d1 = json!({"spec":{"selector":{"matchLabels":{"a":"1"}}}});
        let d2 = json!({"spec":{"selector":{"matchLabels":{"a":"2"}}}});
        assert_eq!(immutable_causes(deploy, &d1, &d2)[0].field, "spec.selector");
    }
}
