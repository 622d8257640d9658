//! Kubernetes strategic merge patch: a JSON merge patch in which lists of objects
//! merge by a key (containers by `name`, container ports by `containerPort`, Service
//! ports by `port`, volumeMounts by `mountPath`, conditions by `type`, ...), with the
//! directives `$patch` (replace/delete/merge), `$setElementOrder/<field>`,
//! `$retainKeys` and `$deleteFromPrimitiveList/<field>`.
//!
//! The merge keys are chosen by field name (the same names kube's Go structs tag
//! with `patchMergeKey`), not by a schema lookup.

use serde_json::{Map, Value};

/// Merges `patch` into `original`.
pub fn merge(original: &Value, patch: &Value) -> Result<Value, String> {
    let Some(patch) = patch.as_object() else { return Err("patch must be a JSON object".into()) };
    match merge_map(original.as_object(), patch)? {
        Some(v) => Ok(v),
        None => Err("a $patch: delete directive cannot delete the whole object".into()),
    }
}

/// How a list field merges.
#[derive(Debug, PartialEq, Eq)]
enum ListStrategy {
    ByKey(&'static str),
    Primitive,
    Replace,
}

fn has_key(items: &[&Value], key: &str) -> bool {
    items.iter().any(|v| v.get(key).is_some())
}

fn strategy(field: &str, items: &[&Value]) -> ListStrategy {
    use ListStrategy::*;
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env"
        | "imagePullSecrets" | "resourceClaims" => ByKey("name"),
        "ports" if has_key(items, "containerPort") => ByKey("containerPort"),
        "ports" if has_key(items, "port") => ByKey("port"),
        "volumeMounts" => ByKey("mountPath"),
        "volumeDevices" => ByKey("devicePath"),
        "conditions" => ByKey("type"),
        "addresses" if has_key(items, "type") => ByKey("type"),
        "ownerReferences" => ByKey("uid"),
        "hostAliases" | "podIPs" | "hostIPs" => ByKey("ip"),
        "topologySpreadConstraints" => ByKey("topologyKey"),
        "finalizers" => Primitive,
        _ => Replace,
    }
}

fn merge_map(original: Option<&Map<String, Value>>, patch: &Map<String, Value>) -> Result<Option<Value>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut clean = patch.clone();
            clean.remove("$patch");
            return merge_map(None, &clean);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    let mut out = original.cloned().unwrap_or_default();
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field, value));
        } else if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            delete_from_list(&mut out, field, value);
        } else if key.starts_with('$') {
            return Err(format!("unknown directive {key}"));
        } else {
            merge_field(&mut out, key, value)?;
        }
    }
    for (field, order) in orders {
        if let (Some(Value::Array(items)), Some(order)) = (out.get_mut(field), order.as_array()) {
            reorder(field, items, order);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(Some(Value::Object(out)))
}

fn merge_field(out: &mut Map<String, Value>, key: &str, value: &Value) -> Result<(), String> {
    match value {
        Value::Null => {
            out.remove(key);
        }
        Value::Object(p) => match merge_map(out.get(key).and_then(Value::as_object), p)? {
            Some(v) => {
                out.insert(key.to_string(), v);
            }
            None => {
                out.remove(key);
            }
        },
        Value::Array(p) => {
            let merged = merge_list(key, out.get(key).and_then(Value::as_array), p)?;
            out.insert(key.to_string(), Value::Array(merged));
        }
        other => {
            out.insert(key.to_string(), other.clone());
        }
    }
    Ok(())
}

/// Removes directives from a new element (merging it into nothing).
fn clean(item: &Value) -> Result<Option<Value>, String> {
    match item {
        Value::Object(m) => merge_map(None, m),
        other => Ok(Some(other.clone())),
    }
}

fn merge_list(field: &str, original: Option<&Vec<Value>>, patch: &[Value]) -> Result<Vec<Value>, String> {
    let replace_marker = |v: &Value| v.get("$patch").and_then(Value::as_str) == Some("replace");
    if patch.iter().any(replace_marker) {
        let mut out = Vec::new();
        for item in patch.iter().filter(|v| !replace_marker(v)) {
            out.extend(clean(item)?);
        }
        return Ok(out);
    }
    let samples: Vec<&Value> = original.into_iter().flatten().chain(patch.iter()).collect();
    match strategy(field, &samples) {
        ListStrategy::Replace => {
            let mut out = Vec::new();
            for item in patch {
                out.extend(clean(item)?);
            }
            Ok(out)
        }
        ListStrategy::Primitive => {
            let mut out = original.cloned().unwrap_or_default();
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::ByKey(key) => merge_by_key(key, original, patch),
    }
}

fn merge_by_key(key: &str, original: Option<&Vec<Value>>, patch: &[Value]) -> Result<Vec<Value>, String> {
    let mut out = original.cloned().unwrap_or_default();
    for item in patch {
        let Some(map) = item.as_object() else {
            out.push(item.clone());
            continue;
        };
        let id = map.get(key);
        let pos = id.and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
        let merged = merge_map(pos.and_then(|p| out[p].as_object()), map)?;
        match (pos, merged) {
            (Some(p), Some(v)) => out[p] = v,
            (Some(p), None) => {
                out.remove(p);
            }
            (None, Some(v)) => out.push(v),
            (None, None) => {}
        }
    }
    Ok(out)
}

fn delete_from_list(out: &mut Map<String, Value>, field: &str, values: &Value) {
    let (Some(Value::Array(items)), Some(remove)) = (out.get_mut(field), values.as_array()) else { return };
    items.retain(|v| !remove.contains(v));
}

/// Orders `items` as `order` says; items not named keep their relative order after.
fn reorder(field: &str, items: &mut Vec<Value>, order: &[Value]) {
    let samples: Vec<&Value> = items.iter().chain(order.iter()).collect();
    let strat = strategy(field, &samples);
    let position = |item: &Value| -> usize {
        let found = match strat {
            ListStrategy::ByKey(key) => order.iter().position(|o| o.get(key).is_some() && o.get(key) == item.get(key)),
            _ => order.iter().position(|o| o == item),
        };
        found.unwrap_or(usize::MAX)
    };
    let mut indexed: Vec<(usize, usize, Value)> =
        items.drain(..).enumerate().map(|(i, v)| (position(&v), i, v)).collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    items.extend(indexed.into_iter().map(|(_, _, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata":{"name":"p","labels":{"app":"a"},"finalizers":["x"]},
               "spec":{"containers":[
                 {"name":"a","image":"busybox","ports":[{"containerPort":80,"protocol":"TCP"}],
                  "env":[{"name":"X","value":"1"}]},
                 {"name":"b","image":"nginx"}]},
               "status":{"conditions":[{"type":"Ready","status":"False"},{"type":"PodScheduled","status":"True"}]}})
    }

    #[test]
    fn containers_merge_by_name() {
        let patch = json!({"spec":{"containers":[{"name":"b","image":"nginx:2"}]}});
        let out = merge(&pod(), &patch).unwrap();
        let cs = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "busybox");
        assert_eq!(cs[1]["image"], "nginx:2");
    }

    #[test]
    fn set_element_order_and_new_items() {
        let patch = json!({"spec":{
            "$setElementOrder/containers":[{"name":"c"},{"name":"b"},{"name":"a"}],
            "containers":[{"name":"c","image":"x","ports":[{"containerPort":1,"$patch":"merge"}]}]}});
        let out = merge(&pod(), &patch).unwrap();
        let names: Vec<_> = out["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect();
        assert_eq!(names, vec![json!("c"), json!("b"), json!("a")]);
        assert_eq!(out["spec"]["containers"][0]["ports"], json!([{"containerPort":1}]));
        assert!(out.to_string().find("$setElementOrder").is_none());
    }

    #[test]
    fn delete_directive_and_null() {
        let patch = json!({"metadata":{"labels":{"app":null}},
            "spec":{"containers":[{"name":"a","$patch":"delete"}]}});
        let out = merge(&pod(), &patch).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["metadata"]["labels"], json!({}));
    }

    #[test]
    fn nested_ports_env_and_conditions() {
        let patch = json!({"spec":{"containers":[{"name":"a",
            "ports":[{"containerPort":8080}],"env":[{"name":"X","value":"2"},{"name":"Y","value":"3"}]}]},
            "status":{"conditions":[{"type":"Ready","status":"True"}]}});
        let out = merge(&pod(), &patch).unwrap();
        assert_eq!(out["spec"]["containers"][0]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["containers"][0]["env"], json!([{"name":"X","value":"2"},{"name":"Y","value":"3"}]));
        assert_eq!(out["status"]["conditions"][0]["status"], "True");
        assert_eq!(out["status"]["conditions"][1]["type"], "PodScheduled");
    }

    #[test]
    fn service_ports_by_port_and_replace() {
        let svc = json!({"spec":{"ports":[{"name":"http","port":80},{"name":"https","port":443}]}});
        let out = merge(&svc, &json!({"spec":{"ports":[{"port":80,"targetPort":8080}]}})).unwrap();
        assert_eq!(out["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
        let out = merge(&svc, &json!({"spec":{"ports":[{"port":1},{"$patch":"replace"}]}})).unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"port":1}]));
    }

    #[test]
    fn primitive_lists_and_retain_keys() {
        let out = merge(&pod(), &json!({"metadata":{"finalizers":["y"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let out = merge(&pod(), &json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["x"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let obj = json!({"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}});
        let out = merge(&obj, &json!({"strategy":{"$retainKeys":["type"],"type":"Recreate"}})).unwrap();
        assert_eq!(out, json!({"strategy":{"type":"Recreate"}}));
        // Other lists are replaced.
        let out = merge(&json!({"args":["a","b"]}), &json!({"args":["c"]})).unwrap();
        assert_eq!(out["args"], json!(["c"]));
    }

    #[test]
    fn bad_directive_is_an_error() {
        assert!(merge(&pod(), &json!({"$patch":"bogus"})).is_err());
        assert!(merge(&pod(), &json!({"$patch":"delete"})).is_err());
    }
}
