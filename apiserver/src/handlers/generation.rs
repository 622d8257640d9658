//! `metadata.generation`: kube-apiserver sets it to 1 when an object with a `spec`
//! is created and adds one on every change of the spec (never for metadata or
//! status writes); controllers echo it back as `status.observedGeneration`.

use serde_json::{json, Value};

use crate::objects::object_mut;

/// Whether the kind tracks a generation (it has a spec; a Namespace's spec only
/// holds finalizers, which kube does not count).
fn tracked(obj: &Value) -> bool {
    obj.get("spec").is_some_and(Value::is_object) && obj.get("kind").and_then(Value::as_str) != Some("Namespace")
}

/// On create: generation 1.
pub fn on_create(obj: &mut Value) {
    if tracked(obj) {
        object_mut(obj, "metadata").insert("generation".into(), json!(1));
    }
}

/// On update of `old` to `new`: the old generation, plus one when the spec changed.
pub fn on_update(old: &Value, new: &mut Value) {
    if !tracked(new) && !tracked(old) {
        return;
    }
    let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    let next = if old.get("spec") != new.get("spec") { generation + 1 } else { generation };
    object_mut(new, "metadata").insert("generation".into(), json!(next));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_spec_changes_only() {
        let mut obj = json!({"kind":"Service","metadata":{"name":"a"},"spec":{"ports":[]}});
        on_create(&mut obj);
        assert_eq!(obj["metadata"]["generation"], 1);
        let mut labelled = obj.clone();
        labelled["metadata"]["labels"] = json!({"a":"b"});
        on_update(&obj, &mut labelled);
        assert_eq!(labelled["metadata"]["generation"], 1);
        let mut changed = labelled.clone();
        changed["spec"]["type"] = json!("NodePort");
        on_update(&labelled, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 2);
    }

    #[test]
    fn namespaces_and_specless_kinds_have_none() {
        let mut ns = json!({"kind":"Namespace","metadata":{"name":"a"},"spec":{"finalizers":["kubernetes"]}});
        on_create(&mut ns);
        assert!(ns["metadata"].get("generation").is_none());
        let mut cm = json!({"kind":"ConfigMap","metadata":{"name":"a"},"data":{}});
        on_create(&mut cm);
        assert!(cm["metadata"].get("generation").is_none());
    }
}
