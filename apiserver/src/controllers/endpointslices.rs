//! EndpointSlices (discovery.k8s.io/v1), kept beside Endpoints by the endpoints
//! controller as kube-controller-manager's endpointslice controller does: per
//! Service with a selector, one slice per port set, labelled
//! `kubernetes.io/service-name` and owned by the Service.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::list_all;
use crate::error::ApiError;
use crate::handlers::create_object;
use crate::objects::{name, namespace, str_at};
use crate::resources;
use crate::server::AppState;

/// Label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`] (the upstream controller's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Writes the slices of `svc` from its Endpoints subsets; returns the slice names.
pub async fn sync(app: &AppState, svc: &Value, subsets: &[Value], existing: &[Value]) -> Result<Vec<String>, ApiError> {
    let desired = slices_for(svc, subsets);
    let mut names = Vec::new();
    for slice in desired {
        let slice_name = name(&slice).to_string();
        let current = existing.iter().find(|s| namespace(s) == namespace(svc) && name(s) == slice_name);
        write(app, namespace(svc), current, slice).await?;
        names.push(slice_name);
    }
    Ok(names)
}

/// Deletes managed slices that no longer belong to a live Service's desired set.
pub async fn prune(app: &AppState, keep: &HashSet<(String, String)>) -> Result<(), ApiError> {
    let Some(res) = resources::find("discovery.k8s.io", "endpointslices") else { return Ok(()) };
    for slice in list_all(app, "discovery.k8s.io", "endpointslices", None).await? {
        let managed = slice.pointer("/metadata/labels").and_then(|l| l.get(MANAGED_BY_LABEL)) == Some(&json!(MANAGED_BY));
        let id = (namespace(&slice).to_string(), name(&slice).to_string());
        if managed && !keep.contains(&id) {
            let _ = app.db.delete(&res.key(Some(&id.0), &id.1), None).await;
        }
    }
    Ok(())
}

fn base_name(svc: &Value) -> String {
    let uid: String = str_at(svc, "/metadata/uid").chars().filter(char::is_ascii_alphanumeric).take(5).collect();
    format!("{}-{}", name(svc), if uid.is_empty() { "slice".to_string() } else { uid })
}

/// The desired slices of `svc` (one per subset; one empty slice when none).
pub fn slices_for(svc: &Value, subsets: &[Value]) -> Vec<Value> {
    let base = base_name(svc);
    let meta = |i: usize| {
        let slice_name = if i == 0 { base.clone() } else { format!("{base}-{i}") };
        json!({"name": slice_name, "namespace": namespace(svc),
               "labels": {SERVICE_NAME_LABEL: name(svc), MANAGED_BY_LABEL: MANAGED_BY},
               "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name(svc),
                   "uid": str_at(svc, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}]})
    };
    if subsets.is_empty() {
        return vec![json!({"metadata": meta(0), "addressType": "IPv4", "endpoints": [], "ports": null})];
    }
    subsets
        .iter()
        .enumerate()
        .map(|(i, subset)| {
            let mut endpoints = Vec::new();
            for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                for a in subset.get(field).and_then(Value::as_array).into_iter().flatten() {
                    let mut e = json!({"addresses": [str_at(a, "/ip")],
                        "conditions": {"ready": ready, "serving": ready, "terminating": false}});
                    if let Some(n) = a.get("nodeName") {
                        e["nodeName"] = n.clone();
                    }
                    if let Some(t) = a.get("targetRef") {
                        e["targetRef"] = t.clone();
                    }
                    endpoints.push(e);
                }
            }
            let ports = subset.get("ports").cloned().unwrap_or(Value::Null);
            json!({"metadata": meta(i), "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
        })
        .collect()
}

async fn write(app: &AppState, ns: &str, current: Option<&Value>, desired: Value) -> Result<(), ApiError> {
    let Some(res) = resources::find("discovery.k8s.io", "endpointslices") else { return Ok(()) };
    let Some(current) = current else {
        return create_object(app, res, Some(ns), desired)
            .await
            .map(|_| ())
            .or_else(|e| if e.code == 409 { Ok(()) } else { Err(e) });
    };
    let same = ["endpoints", "ports", "addressType"].iter().all(|f| current.get(*f) == desired.get(*f));
    if same {
        return Ok(());
    }
    let slice_name = name(&desired).to_string();
    app.db
        .guaranteed_update(&res.key(Some(ns), &slice_name), "endpointslices", &slice_name, |mut s| {
            let Some(map) = s.as_object_mut() else { return Ok(None) };
            for f in ["endpoints", "ports", "addressType"] {
                map.insert(f.into(), desired.get(f).cloned().unwrap_or(Value::Null));
            }
            Ok(Some(s))
        })
        .await
        .map(|_| ())
}

/// Slices grouped by (namespace, service name) label.
pub fn by_service(slices: &[std::sync::Arc<Value>]) -> BTreeMap<(String, String), Vec<Value>> {
    let mut map: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for s in slices {
        let svc = s.pointer("/metadata/labels").and_then(|l| l.get(SERVICE_NAME_LABEL)).and_then(Value::as_str);
        if let Some(svc) = svc {
            map.entry((namespace(s).to_string(), svc.to_string())).or_default().push((**s).clone());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_from_subsets() {
        let svc = json!({"metadata":{"name":"web","namespace":"d","uid":"abc-def-1"}});
        let subsets = vec![json!({"addresses":[{"ip":"10.244.1.2","nodeName":"n1"}],
            "notReadyAddresses":[{"ip":"10.244.1.3"}],"ports":[{"port":80,"protocol":"TCP"}]})];
        let s = slices_for(&svc, &subsets);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["metadata"]["name"], "web-abcde");
        assert_eq!(s[0]["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(s[0]["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(s[0]["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(s[0]["endpoints"][0]["nodeName"], "n1");
        assert_eq!(slices_for(&svc, &[])[0]["endpoints"], json!([]));
    }
}
