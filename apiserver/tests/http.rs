//! Raw HTTP checks of Status errors, CAS, selectors, watch and discovery.

mod common;

use common::Server;
use serde_json::{json, Value};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

const JSON: &str = "application/json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let (code, body) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, "{not json"))).await.unwrap();
    assert_eq!(code, 400);
    let st = parse(&body);
    assert_eq!((st["kind"].as_str(), st["reason"].as_str(), st["code"].as_i64()), (Some("Status"), Some("BadRequest"), Some(400)));
    let (code, _) = s.http("GET", "/api/v1/widgets", None).await.unwrap();
    assert_eq!(code, 404);
    let (code, body) = s.http("PUT", "/api/v1/namespaces/default/pods", Some((JSON, "{}"))).await.unwrap();
    assert_eq!(code, 405, "{body}");
    let (code, body) = s.http("GET", "/api/v1/namespaces/default/pods/nope", None).await.unwrap();
    assert_eq!(code, 404);
    assert_eq!(parse(&body)["message"], "pods \"nope\" not found");
    let pod = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}).to_string();
    let (code, body) = s.http("POST", "/api/v1/namespaces/missing/pods", Some((JSON, &pod))).await.unwrap();
    assert_eq!(code, 404);
    assert_eq!(parse(&body)["message"], "namespaces \"missing\" not found");
    let svc = json!({"kind":"Service","metadata":{"name":"p"}}).to_string();
    let (code, _) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &svc))).await.unwrap();
    assert_eq!(code, 400);
    let bad = json!({"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"x"}]}}).to_string();
    let (code, body) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &bad))).await.unwrap();
    assert_eq!(code, 422, "{body}");
    assert_eq!(parse(&body)["reason"], "Invalid");
    let (code, _) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &pod))).await.unwrap();
    assert_eq!(code, 201);
    let (code, body) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &pod))).await.unwrap();
    assert_eq!(code, 409);
    assert_eq!(parse(&body)["reason"], "AlreadyExists");
    let (code, _) = s.http("PATCH", "/api/v1/namespaces/default/pods/p", Some(("text/plain", "{}"))).await.unwrap();
    assert_eq!(code, 415);
    let taken = json!({"metadata":{"name":"s"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}}).to_string();
    let (code, _) = s.http("POST", "/api/v1/namespaces/default/services", Some((JSON, &taken))).await.unwrap();
    assert_eq!(code, 422);
    let outside = json!({"metadata":{"name":"s"},"spec":{"clusterIP":"192.168.1.1","ports":[{"port":80}]}}).to_string();
    let (code, _) = s.http("POST", "/api/v1/namespaces/default/services", Some((JSON, &outside))).await.unwrap();
    assert_eq!(code, 422);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_conflicts_and_status_subresource() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let lease = json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"n1"},
        "spec":{"holderIdentity":"n1","leaseDurationSeconds":40}}).to_string();
    let base = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let (code, body) = s.http("POST", base, Some((JSON, &lease))).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let created = parse(&body);
    let rv1 = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut upd = created.clone();
    upd["spec"]["holderIdentity"] = json!("x");
    let (code, body) = s.http("PUT", &format!("{base}/n1"), Some((JSON, &upd.to_string()))).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let rv2 = parse(&body)["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    let (code, body) = s.http("PUT", &format!("{base}/n1"), Some((JSON, &upd.to_string()))).await.unwrap();
    assert_eq!(code, 409);
    assert_eq!(parse(&body)["reason"], "Conflict");
    let patch = r#"{"spec":{"renewTime":"2026-01-01T00:00:00.000000Z"}}"#;
    let (code, body) = s.http("PATCH", &format!("{base}/n1"), Some(("application/merge-patch+json", patch))).await.unwrap();
    assert_eq!(code, 200, "{body}");
    // pods/status changes only the status.
    let pod = json!({"metadata":{"name":"p","labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}).to_string();
    s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &pod))).await.unwrap();
    let patch = r#"{"metadata":{"labels":{"a":"changed"}},"status":{"phase":"Running"}}"#;
    let (code, body) = s
        .http("PATCH", "/api/v1/namespaces/default/pods/p/status", Some(("application/strategic-merge-patch+json", patch)))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let v = parse(&body);
    assert_eq!((v["status"]["phase"].as_str(), v["metadata"]["labels"]["a"].as_str()), (Some("Running"), Some("b")));
    // Binding an unbound pod, then binding again.
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"n9"}}"#;
    let (code, body) = s.http("POST", "/api/v1/namespaces/default/pods/p/binding", Some((JSON, binding))).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, _) = s.http("POST", "/api/v1/namespaces/default/pods/p/binding", Some((JSON, binding))).await.unwrap();
    assert_eq!(code, 409);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_with_selectors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    for (name, app) in [("a", "web"), ("b", "db")] {
        let pod = json!({"metadata":{"name":name,"labels":{"app":app}},"spec":{"containers":[{"name":"c","image":"busybox"}]}});
        let (code, _) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &pod.to_string()))).await.unwrap();
        assert_eq!(code, 201);
    }
    let (_, body) = s.http("GET", "/api/v1/pods?labelSelector=app%3Dweb", None).await.unwrap();
    let list = parse(&body);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let (_, body) = s.http("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Db", None).await.unwrap();
    assert_eq!(parse(&body)["items"][0]["metadata"]["name"], "b");
    // Watch from the list's revision sees only later, matching changes.
    let port = s.port;
    let watch = tokio::spawn(async move {
        common::http(port, "GET", &format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&labelSelector=app%3Dweb&timeoutSeconds=2"), None).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let patch = r#"{"metadata":{"labels":{"x":"1"}}}"#;
    s.http("PATCH", "/api/v1/namespaces/default/pods/a", Some(("application/merge-patch+json", patch))).await.unwrap();
    s.http("PATCH", "/api/v1/namespaces/default/pods/b", Some(("application/merge-patch+json", patch))).await.unwrap();
    let relabel = r#"{"metadata":{"labels":{"app":"other"}}}"#;
    s.http("PATCH", "/api/v1/namespaces/default/pods/a", Some(("application/merge-patch+json", relabel))).await.unwrap();
    let (code, body) = watch.await.unwrap().unwrap();
    assert_eq!(code, 200);
    let types: Vec<String> = body.lines().map(|l| parse(l)["type"].as_str().unwrap().to_string()).collect();
    // (The scheduler may also mark the pod Unschedulable meanwhile: more MODIFIED.)
    assert_eq!(types.last().map(String::as_str), Some("DELETED"), "{body}");
    assert!(types[..types.len() - 1].iter().all(|t| t == "MODIFIED"), "{body}");
    assert!(body.contains("\"x\":\"1\"") && !body.contains("\"name\":\"b\""), "{body}");
    // Watch without resourceVersion starts with ADDED for what exists.
    let (_, body) = s.http("GET", "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1", None).await.unwrap();
    assert_eq!(body.lines().filter(|l| l.contains("\"ADDED\"")).count(), 2, "{body}");
    // Tables.
    let (_, body) = s.http("GET", "/version", None).await.unwrap();
    assert!(parse(&body)["gitVersion"].is_string());
    let (_, body) = s.http("GET", "/api/v1", None).await.unwrap();
    assert!(body.contains("pods/binding") && body.contains("\"po\""));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lifecycle_marks_unknown_taints_and_evicts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    // n-silent: its Lease was last renewed long ago.
    let silent = json!({"metadata":{"name":"n-silent"},"status":{"conditions":[{"type":"Ready","status":"True"}]}});
    s.http("POST", "/api/v1/nodes", Some((JSON, &silent.to_string()))).await.unwrap();
    let lease = json!({"metadata":{"name":"n-silent"},"spec":{"holderIdentity":"n-silent","renewTime":"2020-01-01T00:00:00.000000Z"}});
    s.http("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", Some((JSON, &lease.to_string()))).await.unwrap();
    // n-down: reports NotReady for a long time, with a pod on it.
    let down = json!({"metadata":{"name":"n-down"},"status":{"conditions":[
        {"type":"Ready","status":"False","lastTransitionTime":"2020-01-01T00:00:00Z"}]}});
    s.http("POST", "/api/v1/nodes", Some((JSON, &down.to_string()))).await.unwrap();
    let lease = json!({"metadata":{"name":"n-down"},"spec":{"holderIdentity":"n-down","renewTime":chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    s.http("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", Some((JSON, &lease.to_string()))).await.unwrap();
    let pod = json!({"metadata":{"name":"p"},"spec":{"nodeName":"n-down","containers":[{"name":"c","image":"busybox"}]}});
    let (code, _) = s.http("POST", "/api/v1/namespaces/default/pods", Some((JSON, &pod.to_string()))).await.unwrap();
    assert_eq!(code, 201);
    common::eventually("node lifecycle", || async {
        let (_, silent) = s.http("GET", "/api/v1/nodes/n-silent", None).await.unwrap();
        let (_, down) = s.http("GET", "/api/v1/nodes/n-down", None).await.unwrap();
        let (_, pod) = s.http("GET", "/api/v1/namespaces/default/pods/p", None).await.unwrap();
        let ok = silent.contains("NodeStatusUnknown")
            && silent.contains("node.kubernetes.io/unreachable")
            && down.contains("node.kubernetes.io/not-ready")
            && pod.contains("deletionTimestamp");
        ok.then_some(())
    })
    .await;
    s.stop().await;
}
