//! The endpoints controller: for every Service with a selector, Endpoints of the
//! same name listing the selected Pods that have an IP (Ready → `addresses`, else
//! `notReadyAddresses`), ports resolved from `targetPort` (a number or a container
//! port name). Endpoints of deleted Services that this controller wrote are removed.
//! The matching EndpointSlices are kept alongside (see [`super::endpointslices`]).

use std::collections::{BTreeMap, HashMap};

use minion_api::selector::Selector;
use serde_json::{json, Map, Value};

use super::list_all;
use crate::error::ApiError;
use crate::handlers::create_object;
use crate::objects::{condition_status, name, namespace, str_at};
use crate::resources;
use crate::server::AppState;

/// Annotation marking Endpoints written by this controller (as kube's does).
pub const TRIGGER_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// One pass over all Services.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let services = list_all(app, "", "services", None).await?;
    let selecting: Vec<String> = services.iter().filter(|s| selector_of(s).is_some()).map(|s| namespace(s).to_string()).collect();
    let pods = super::pods_by_namespace(app, selecting).await?;
    let endpoints = list_all(app, "", "endpoints", None).await?;
    let existing: HashMap<(String, String), &Value> =
        endpoints.iter().map(|e| ((namespace(e).to_string(), name(e).to_string()), &**e)).collect();
    let svc_names: HashMap<(String, String), ()> =
        services.iter().map(|s| ((namespace(s).to_string(), name(s).to_string()), ())).collect();
    let slices = super::endpointslices::by_service(&list_all(app, "discovery.k8s.io", "endpointslices", None).await?);
    let mut keep_slices = std::collections::HashSet::new();
    for svc in &services {
        let Some(selector) = selector_of(svc) else { continue };
        let ns = namespace(svc);
        let ns_pods: Vec<&Value> =
            pods.get(ns).into_iter().flatten().filter(|p| selector.matches_labels(labels(p).as_ref())).map(|p| &**p).collect();
        let subsets = subsets_for(svc, &ns_pods);
        let id = (ns.to_string(), name(svc).to_string());
        let current = existing.get(&id).copied();
        let own_slices = slices.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        match super::endpointslices::sync(app, svc, &subsets, own_slices).await {
            Ok(names) => keep_slices.extend(names.into_iter().map(|n| (ns.to_string(), n))),
            Err(e) => {
                // Keep what exists rather than prune it on a transient failure.
                keep_slices.extend(own_slices.iter().map(|s| (ns.to_string(), name(s).to_string())));
                tracing::warn!(service = %format!("{ns}/{}", name(svc)), error = %e, "endpointslice update failed");
            }
        }
        if let Err(e) = write(app, svc, current, subsets).await {
            tracing::warn!(service = %format!("{ns}/{}", name(svc)), error = %e, "endpoints update failed");
        }
    }
    super::endpointslices::prune(app, &keep_slices).await?;
    for ep in &endpoints {
        let id = (namespace(ep).to_string(), name(ep).to_string());
        let managed = ep.pointer(&format!("/metadata/annotations/{}", TRIGGER_ANNOTATION.replace('/', "~1"))).is_some();
        if managed && !svc_names.contains_key(&id) {
            let Some(res) = resources::find("", "endpoints") else { continue };
            let _ = app.db.delete(&res.key(Some(&id.0), &id.1), None).await;
        }
    }
    Ok(())
}

fn labels(obj: &Value) -> Option<BTreeMap<String, String>> {
    obj.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok())
}

fn selector_of(svc: &Value) -> Option<Selector> {
    let map: BTreeMap<String, String> = svc.pointer("/spec/selector").and_then(|s| serde_json::from_value(s.clone()).ok())?;
    if map.is_empty() {
        return None;
    }
    Some(Selector::from_map(&map))
}

/// The subsets for `svc` over the selected pods, grouped by resolved ports.
pub fn subsets_for(svc: &Value, pods: &[&Value]) -> Vec<Value> {
    let svc_ports = svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut groups: BTreeMap<String, (Value, Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for pod in pods {
        let ip = str_at(pod, "/status/podIP");
        if ip.is_empty() || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        if matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed") {
            continue;
        }
        let Some(ports) = resolve_ports(&svc_ports, pod) else { continue };
        let mut addr = Map::new();
        addr.insert("ip".into(), json!(ip));
        let node = str_at(pod, "/spec/nodeName");
        if !node.is_empty() {
            addr.insert("nodeName".into(), json!(node));
        }
        addr.insert("targetRef".into(), json!({"kind": "Pod", "name": name(pod), "namespace": namespace(pod),
            "uid": str_at(pod, "/metadata/uid")}));
        let entry = groups.entry(ports.to_string()).or_insert_with(|| (ports.clone(), vec![], vec![]));
        if condition_status(pod, "Ready") == Some("True") {
            entry.1.push(Value::Object(addr));
        } else {
            entry.2.push(Value::Object(addr));
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            let by_ip = |a: &Value, b: &Value| str_at(a, "/ip").cmp(str_at(b, "/ip"));
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            let mut subset = Map::new();
            if !ready.is_empty() {
                subset.insert("addresses".into(), Value::Array(ready));
            }
            if !not_ready.is_empty() {
                subset.insert("notReadyAddresses".into(), Value::Array(not_ready));
            }
            subset.insert("ports".into(), ports);
            Value::Object(subset)
        })
        .collect()
}

/// Endpoint ports for one pod; None when a named targetPort is not in the pod.
fn resolve_ports(svc_ports: &[Value], pod: &Value) -> Option<Value> {
    let mut out = Vec::new();
    for sp in svc_ports {
        let protocol = sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        let port = match sp.get("targetPort").or_else(|| sp.get("port")) {
            Some(Value::Number(n)) => n.as_i64()?,
            Some(Value::String(s)) => s.parse().ok().or_else(|| container_port(pod, s))?,
            _ => return None,
        };
        let mut p = Map::new();
        if let Some(n) = sp.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            p.insert("name".into(), json!(n));
        }
        p.insert("port".into(), json!(port));
        p.insert("protocol".into(), json!(protocol));
        out.push(Value::Object(p));
    }
    Some(Value::Array(out))
}

fn container_port(pod: &Value, port_name: &str) -> Option<i64> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default())
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port_name))?
        .get("containerPort")?
        .as_i64()
}

async fn write(app: &AppState, svc: &Value, current: Option<&Value>, subsets: Vec<Value>) -> Result<(), ApiError> {
    let Some(res) = resources::find("", "endpoints") else { return Ok(()) };
    let (ns, svc_name) = (namespace(svc), name(svc));
    let desired = if subsets.is_empty() { None } else { Some(Value::Array(subsets)) };
    let labels = svc.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    let Some(current) = current else {
        let mut obj = json!({"metadata": {"name": svc_name, "labels": labels,
            "annotations": {TRIGGER_ANNOTATION: crate::objects::now()}}});
        if let Some(d) = desired {
            obj["subsets"] = d;
        }
        return create_object(app, res, Some(ns), obj).await.map(|_| ()).or_else(|e| if e.code == 409 { Ok(()) } else { Err(e) });
    };
    if current.get("subsets") == desired.as_ref() {
        return Ok(());
    }
    app.db
        .guaranteed_update(&res.key(Some(ns), svc_name), "endpoints", svc_name, |mut ep| {
            let Some(map) = ep.as_object_mut() else { return Ok(None) };
            match &desired {
                Some(d) => map.insert("subsets".into(), d.clone()),
                None => map.remove("subsets"),
            };
            let meta = crate::objects::object_mut(&mut ep, "metadata");
            let ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.insert(TRIGGER_ANNOTATION.into(), json!(crate::objects::now()));
            }
            Ok(Some(ep))
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: &str, ip: &str, ready: &str) -> Value {
        json!({"metadata":{"name":n,"namespace":"default","uid":"u-".to_string()+n,"labels":{"app":"web"}},
               "spec":{"nodeName":"n1","containers":[{"name":"c","ports":[{"name":"http","containerPort":8080}]}]},
               "status":{"podIP":ip,"phase":"Running","conditions":[{"type":"Ready","status":ready}]}})
    }

    #[test]
    fn ready_and_not_ready_with_named_port() {
        let svc = json!({"spec":{"selector":{"app":"web"},"ports":[{"name":"web","port":80,"targetPort":"http","protocol":"TCP"}]}});
        let (a, b, c) = (pod("a", "10.244.1.3", "True"), pod("b", "10.244.1.2", "False"), pod("c", "", "True"));
        let subsets = subsets_for(&svc, &[&a, &b, &c]);
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        assert_eq!(s["addresses"][0]["ip"], "10.244.1.3");
        assert_eq!(s["addresses"][0]["targetRef"]["kind"], "Pod");
        assert_eq!(s["addresses"][0]["nodeName"], "n1");
        assert_eq!(s["notReadyAddresses"][0]["ip"], "10.244.1.2");
        assert_eq!(s["ports"], json!([{"name":"web","port":8080,"protocol":"TCP"}]));
    }

    #[test]
    fn numeric_target_port_and_empty() {
        let svc = json!({"spec":{"selector":{"app":"web"},"ports":[{"port":80,"targetPort":9376}]}});
        let a = pod("a", "10.244.1.3", "True");
        assert_eq!(subsets_for(&svc, &[&a])[0]["ports"][0]["port"], 9376);
        assert!(subsets_for(&svc, &[]).is_empty());
    }
}
