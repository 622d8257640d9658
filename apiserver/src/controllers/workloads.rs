//! Owner references shared by the Deployment and ReplicaSet controllers and the
//! garbage collector.

use serde_json::{json, Value};

use crate::objects::{name, str_at};

/// The uid of the controlling owner (`ownerReferences[controller=true]`) of `kind`.
pub fn controller_uid<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true) && str_at(r, "/kind") == kind)
        .and_then(|r| r.get("uid").and_then(Value::as_str))
}

/// A controller ownerReference to `owner`.
pub fn owner_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name(owner),
           "uid": str_at(owner, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true})
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    str_at(obj, "/metadata/uid")
}

/// True when the object is being deleted.
pub fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// An integer field, 0 when missing.
pub fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// kube's pod-template-hash: FNV-1a of the template, digits mapped to a safe alphabet.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string().bytes().map(|d| ALPHABET[usize::from(d - b'0')] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_safe() {
        let t = json!({"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"x"}]}});
        assert_eq!(template_hash(&t), template_hash(&t.clone()));
        assert!(template_hash(&t).chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let other = json!({"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"y"}]}});
        assert_ne!(template_hash(&t), template_hash(&other));
    }

    #[test]
    fn owners() {
        let owner = json!({"metadata":{"name":"rs","uid":"u1"}});
        let pod = json!({"metadata":{"ownerReferences":[owner_ref(&owner, "apps/v1", "ReplicaSet")]}});
        assert_eq!(controller_uid(&pod, "ReplicaSet"), Some("u1"));
        assert_eq!(controller_uid(&pod, "Deployment"), None);
    }
}
