//! Namespace deletion as kube-apiserver and the namespace controller do it
//! (Terminating, content deleted, pods gracefully, the `kubernetes` finalizer and
//! the `finalize` subresource), and `metadata.generation` through HTTP.

mod common;

use common::{eventually, Server};
use serde_json::{json, Value};

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

async fn req(s: &Server, method: &str, path: &str, ct: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (code, body) = s.http(method, path, text.as_deref().map(|t| (ct, t))).await.expect("http");
    let v = if body.trim().is_empty() { Value::Null } else { serde_json::from_str(&body).unwrap_or(Value::String(body)) };
    (code, v)
}

const NODE: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"ns-node"},
  "status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_is_graceful_and_finalized() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    s.http("POST", "/api/v1/nodes", Some((JSON, NODE))).await.unwrap();
    let (c, ns) = req(&s, "POST", "/api/v1/namespaces", JSON, Some(json!({"metadata":{"name":"gone"}}))).await;
    assert_eq!(c, 201, "{ns}");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    let cm = json!({"metadata":{"name":"cfg"},"data":{"a":"1"}});
    assert_eq!(req(&s, "POST", "/api/v1/namespaces/gone/configmaps", JSON, Some(cm)).await.0, 201);
    let pod = json!({"metadata":{"name":"p"},"spec":{"nodeName":"ns-node","containers":[{"name":"c","image":"busybox"}]}});
    assert_eq!(req(&s, "POST", "/api/v1/namespaces/gone/pods", JSON, Some(pod)).await.0, 201);

    let (c, marked) = req(&s, "DELETE", "/api/v1/namespaces/gone", JSON, None).await;
    assert_eq!(c, 200, "{marked}");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    assert_eq!(marked["status"]["phase"], "Terminating");

    let late = json!({"metadata":{"name":"late"}});
    let (c, st) = req(&s, "POST", "/api/v1/namespaces/gone/configmaps", JSON, Some(late)).await;
    assert_eq!(c, 403, "{st}");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace gone because it is being terminated"
    );
    let (c, st) = req(&s, "DELETE", "/api/v1/namespaces/gone", JSON, None).await;
    assert_eq!(c, 409, "{st}");

    // The content goes; the scheduled pod only gets a deletionTimestamp (the agent finishes it).
    eventually("configmap deleted", || async {
        (req(&s, "GET", "/api/v1/namespaces/gone/configmaps/cfg", JSON, None).await.0 == 404).then_some(())
    })
    .await;
    let pod = eventually("pod marked", || async {
        let (c, p) = req(&s, "GET", "/api/v1/namespaces/gone/pods/p", JSON, None).await;
        (c == 200 && p["metadata"]["deletionTimestamp"].is_string()).then_some(p)
    })
    .await;
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    let (c, ns) = req(&s, "GET", "/api/v1/namespaces/gone", JSON, None).await;
    assert_eq!(c, 200);
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]), "the finalizer stays while content remains");

    // The agent confirms the pod is gone; then the namespace is finalized and removed.
    let (c, _) = req(&s, "DELETE", "/api/v1/namespaces/gone/pods/p?gracePeriodSeconds=0", JSON, None).await;
    assert_eq!(c, 200);
    eventually("namespace removed", || async {
        (req(&s, "GET", "/api/v1/namespaces/gone", JSON, None).await.0 == 404).then_some(())
    })
    .await;

    for protected in ["default", "kube-system", "kube-node-lease"] {
        let (c, st) = req(&s, "DELETE", &format!("/api/v1/namespaces/{protected}"), JSON, None).await;
        assert_eq!(c, 403, "{protected}: {st}");
        assert_eq!(st["message"], format!("namespaces \"{protected}\" is forbidden: this namespace may not be deleted"));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_subresource_releases_a_held_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let ns = json!({"metadata":{"name":"held"},"spec":{"finalizers":["kubernetes","example.com/hold"]}});
    assert_eq!(req(&s, "POST", "/api/v1/namespaces", JSON, Some(ns)).await.0, 201);
    // A plain update cannot change spec.finalizers.
    let (c, ns) = req(&s, "PATCH", "/api/v1/namespaces/held", MERGE, Some(json!({"spec":{"finalizers":[]}}))).await;
    assert_eq!(c, 200, "{ns}");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes", "example.com/hold"]));

    assert_eq!(req(&s, "DELETE", "/api/v1/namespaces/held", JSON, None).await.0, 200);
    eventually("kubernetes finalizer dropped", || async {
        let (_, ns) = req(&s, "GET", "/api/v1/namespaces/held", JSON, None).await;
        (ns["spec"]["finalizers"] == json!(["example.com/hold"])).then_some(())
    })
    .await;
    let body = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"held"},"spec":{"finalizers":[]}});
    let (c, done) = req(&s, "PUT", "/api/v1/namespaces/held/finalize", JSON, Some(body)).await;
    assert_eq!(c, 200, "{done}");
    assert_eq!(req(&s, "GET", "/api/v1/namespaces/held", JSON, None).await.0, 404);
    s.stop().await;
}

async fn generation(s: &Server, path: &str) -> Value {
    let (c, v) = req(s, "GET", path, JSON, None).await;
    assert_eq!(c, 200, "{v}");
    v["metadata"]["generation"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_counts_spec_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let d = json!({"metadata":{"name":"web"},"spec":{"replicas":0,"selector":{"matchLabels":{"app":"web"}},
        "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}});
    let dpath = "/apis/apps/v1/namespaces/default/deployments/web";
    let (c, created) = req(&s, "POST", "/apis/apps/v1/namespaces/default/deployments", JSON, Some(d)).await;
    assert_eq!(c, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    req(&s, "PATCH", dpath, MERGE, Some(json!({"metadata":{"labels":{"x":"y"}}}))).await;
    assert_eq!(generation(&s, dpath).await, 1, "metadata changes keep the generation");
    req(&s, "PATCH", dpath, MERGE, Some(json!({"spec":{"replicas":0,"minReadySeconds":3}}))).await;
    assert_eq!(generation(&s, dpath).await, 2);
    req(&s, "PATCH", &format!("{dpath}/status"), MERGE, Some(json!({"status":{"replicas":0}}))).await;
    assert_eq!(generation(&s, dpath).await, 2, "status writes keep the generation");
    eventually("observedGeneration", || async {
        let (_, d) = req(&s, "GET", dpath, JSON, None).await;
        (d["status"]["observedGeneration"] == 2).then_some(())
    })
    .await;

    let svc = json!({"metadata":{"name":"web"},"spec":{"ports":[{"port":80}]}});
    let (c, created) = req(&s, "POST", "/api/v1/namespaces/default/services", JSON, Some(svc)).await;
    assert_eq!(c, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let spath = "/api/v1/namespaces/default/services/web";
    let (c, v) = req(&s, "PATCH", spath, MERGE, Some(json!({"spec":{"ports":[{"port":81}]}}))).await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(generation(&s, spath).await, 2, "{v}");

    let pod = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}});
    let (c, created) = req(&s, "POST", "/api/v1/namespaces/default/pods", JSON, Some(pod)).await;
    assert_eq!(c, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let ppath = "/api/v1/namespaces/default/pods/p";
    let patch = json!({"spec":{"containers":[{"name":"c","image":"busybox:1.36"}]}});
    let (c, v) = req(&s, "PATCH", ppath, "application/strategic-merge-patch+json", Some(patch)).await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(generation(&s, ppath).await, 2);
    req(&s, "PATCH", &format!("{ppath}/status"), MERGE, Some(json!({"status":{"phase":"Pending"}}))).await;
    assert_eq!(generation(&s, ppath).await, 2);

    let cm = json!({"metadata":{"name":"cfg"},"data":{"a":"1"}});
    let (_, created) = req(&s, "POST", "/api/v1/namespaces/default/configmaps", JSON, Some(cm)).await;
    assert!(created["metadata"].get("generation").is_none(), "{created}");
    s.stop().await;
}
