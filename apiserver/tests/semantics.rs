//! API semantics clients can tell apart: new resources (configmaps, secrets,
//! serviceaccounts, daemonsets, endpointslices, pods/eviction), defaulting,
//! finalizers and cascading deletion, pagination, fieldValidation, 413 and /metrics.

mod common;

use std::time::Duration;

use common::{eventually, http_full, Server};
use serde_json::{json, Value};

const JSON: &str = "application/json";

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn req(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (code, body) = s.http(method, path, text.as_deref().map(|t| (JSON, t))).await.expect("http");
    let v = if body.trim().is_empty() { Value::Null } else { parse(&body) };
    (code, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_resources_and_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let (c, _) = req(&s, "POST", "/api/v1/namespaces", Some(json!({"metadata":{"name":"team"}}))).await;
    assert_eq!(c, 201);
    eventually("default serviceaccount", || async {
        let (c, _) = req(&s, "GET", "/api/v1/namespaces/team/serviceaccounts/default", None).await;
        (c == 200).then_some(())
    })
    .await;
    let (c, cm) = req(&s, "POST", "/api/v1/namespaces/team/configmaps", Some(json!({"metadata":{"name":"cfg"},"data":{"a":"1"}}))).await;
    assert_eq!(c, 201, "{cm}");
    let (c, sec) = req(&s, "POST", "/api/v1/namespaces/team/secrets", Some(json!({"metadata":{"name":"pw"},"stringData":{"p":"hunter2"}}))).await;
    assert_eq!(c, 201, "{sec}");
    assert_eq!(sec["type"], "Opaque");
    assert_eq!(sec["data"]["p"], "aHVudGVyMg==");
    let ds = json!({"metadata":{"name":"agent"},"spec":{"selector":{"matchLabels":{"app":"a"}},
        "template":{"metadata":{"labels":{"app":"a"}},"spec":{"containers":[{"name":"c","image":"busybox:1.36"}]}}}});
    let (c, ds) = req(&s, "POST", "/apis/apps/v1/namespaces/team/daemonsets", Some(ds)).await;
    assert_eq!(c, 201, "{ds}");
    assert_eq!(ds["metadata"]["generation"], 1);
    assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    let pod = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx"}]}});
    let (c, pod) = req(&s, "POST", "/api/v1/namespaces/team/pods", Some(pod)).await;
    assert_eq!(c, 201);
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 300));
    // Tables for the new kinds.
    for path in ["/apis/apps/v1/namespaces/team/daemonsets", "/api/v1/namespaces/team/configmaps", "/api/v1/namespaces/team/secrets"] {
        let (code, body) = common::http(s.port, "GET", path, None).await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("\"items\""));
    }
    // Eviction deletes the (unscheduled) pod.
    let ev = json!({"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p","namespace":"team"}});
    let (c, st) = req(&s, "POST", "/api/v1/namespaces/team/pods/p/eviction", Some(ev)).await;
    assert_eq!(c, 201, "{st}");
    let (c, _) = req(&s, "GET", "/api/v1/namespaces/team/pods/p", None).await;
    assert_eq!(c, 404);
    // EndpointSlices follow Services.
    let svc = json!({"metadata":{"name":"web"},"spec":{"selector":{"app":"web"},"ports":[{"port":80}]}});
    assert_eq!(req(&s, "POST", "/api/v1/namespaces/team/services", Some(svc)).await.0, 201);
    eventually("endpointslice", || async {
        let (_, list) = req(&s, "GET", "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices?labelSelector=kubernetes.io/service-name%3Dweb", None).await;
        (list["items"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    assert_eq!(req(&s, "DELETE", "/api/v1/namespaces/team/services/web", None).await.0, 200);
    eventually("endpointslice removed", || async {
        let (_, list) = req(&s, "GET", "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices", None).await;
        (list["items"].as_array().map_or(1, Vec::len) == 0).then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_cascade() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let cms = "/api/v1/namespaces/default/configmaps";
    // A finalizer holds the deletion until it is removed.
    let (c, _) = req(&s, "POST", cms, Some(json!({"metadata":{"name":"held","finalizers":["example.com/hold"]}}))).await;
    assert_eq!(c, 201);
    let (c, obj) = req(&s, "DELETE", &format!("{cms}/held"), None).await;
    assert_eq!(c, 200);
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(req(&s, "GET", &format!("{cms}/held"), None).await.0, 200);
    let patch = json!({"metadata":{"finalizers":null}}).to_string();
    let (c, _) = s.http("PATCH", &format!("{cms}/held"), Some(("application/merge-patch+json", &patch))).await.unwrap();
    assert_eq!(c, 200);
    assert_eq!(req(&s, "GET", &format!("{cms}/held"), None).await.0, 404);

    // Owner and dependents: background, foreground and orphan.
    for (policy, dependents_survive) in [("Background", false), ("Foreground", false), ("Orphan", true)] {
        let owner_name = format!("owner-{}", policy.to_lowercase());
        let (_, owner) = req(&s, "POST", cms, Some(json!({"metadata":{"name": owner_name}}))).await;
        let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
        for i in 0..2 {
            let dep = json!({"metadata":{"name": format!("{owner_name}-dep{i}"),
                "ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name": owner_name,"uid": uid,"blockOwnerDeletion":true}]}});
            assert_eq!(req(&s, "POST", cms, Some(dep)).await.0, 201);
        }
        let (c, _) = req(&s, "DELETE", &format!("{cms}/{owner_name}"), Some(json!({"propagationPolicy": policy}))).await;
        assert_eq!(c, 200);
        let owner_path = format!("{cms}/{owner_name}");
        eventually(&format!("{policy} owner gone"), || async {
            (req(&s, "GET", &owner_path, None).await.0 == 404).then_some(())
        })
        .await;
        let dep_path = format!("{cms}/{owner_name}-dep0");
        if dependents_survive {
            let (c, dep) = req(&s, "GET", &dep_path, None).await;
            assert_eq!(c, 200, "{policy}: dependent should be orphaned");
            assert!(dep["metadata"]["ownerReferences"].is_null(), "{dep}");
        } else {
            eventually(&format!("{policy} dependents gone"), || async {
                (req(&s, "GET", &dep_path, None).await.0 == 404).then_some(())
            })
            .await;
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_versions_validation_limits_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let mut first_rv = String::new();
    for i in 0..7 {
        let (c, cm) = req(&s, "POST", cms, Some(json!({"metadata":{"name": format!("c{i}")}}))).await;
        assert_eq!(c, 201);
        if i == 2 {
            first_rv = cm["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        }
    }
    // limit/continue: three pages at one revision, even with a write in between.
    let (_, page) = req(&s, "GET", &format!("{cms}?limit=3"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let rv = page["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    assert_eq!(req(&s, "POST", cms, Some(json!({"metadata":{"name":"c99"}}))).await.0, 201);
    let mut names: Vec<String> = page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect();
    let mut token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for _ in 0..5 {
        let (c, page) = req(&s, "GET", &format!("{cms}?limit=3&continue={token}"), None).await;
        assert_eq!(c, 200, "{page}");
        assert_eq!(page["metadata"]["resourceVersion"].as_str().unwrap(), rv);
        names.extend(page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()));
        match page["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    // resourceVersionMatch=Exact lists the past.
    let (c, old) = req(&s, "GET", &format!("{cms}?resourceVersion={first_rv}&resourceVersionMatch=Exact"), None).await;
    assert_eq!(c, 200);
    assert_eq!(old["items"].as_array().unwrap().len(), 3);
    let (c, _) = req(&s, "GET", &format!("{cms}?resourceVersion=999999&resourceVersionMatch=NotOlderThan"), None).await;
    assert_eq!(c, 504);
    let (c, _) = req(&s, "GET", &format!("{cms}?continue=bm90LWEtdG9rZW4"), None).await;
    assert_eq!(c, 400);

    // fieldValidation.
    let bogus = json!({"metadata":{"name":"fv"},"data":{"a":"1"},"colour":"red"}).to_string();
    let (c, _, body) = http_full(s.port, "POST", &format!("{cms}?fieldValidation=Strict"), Some((JSON, &bogus))).await.unwrap();
    assert_eq!(c, 400);
    assert!(body.contains("unknown field \\\"colour\\\""), "{body}");
    let (c, head, _) = http_full(s.port, "POST", &format!("{cms}?fieldValidation=Warn"), Some((JSON, &bogus))).await.unwrap();
    assert_eq!(c, 201);
    assert!(head.to_ascii_lowercase().contains("warning: 299 - \"unknown field \\\"colour\\\"\""), "{head}");
    let (c, _) = s.http("POST", cms, Some(("application/yaml", "metadata:\n  name: y\ndata: [unclosed"))).await.unwrap();
    assert_eq!(c, 400);
    let (c, _) = s.http("POST", cms, Some(("application/yaml", "metadata:\n  name: from-yaml\ndata:\n  k: v\n"))).await.unwrap();
    assert_eq!(c, 201);

    // 413 over 3 MiB.
    let big = json!({"metadata":{"name":"big"},"data":{"x": "a".repeat(3 * 1024 * 1024 + 10)}}).to_string();
    let (c, body) = s.http("POST", cms, Some((JSON, &big))).await.unwrap();
    assert_eq!(c, 413, "{}", &body[..body.len().min(200)]);
    assert_eq!(parse(&body)["reason"], "RequestEntityTooLarge");

    // /metrics counts requests by verb and resource.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (c, text) = s.http("GET", "/metrics", None).await.unwrap();
    assert_eq!(c, 200);
    assert!(text.contains("apiserver_request_total{verb=\"POST\",group=\"\",version=\"v1\",resource=\"configmaps\",subresource=\"\",code=\"201\"}"), "{text}");
    assert!(text.contains("apiserver_request_duration_seconds_bucket{verb=\"LIST\""));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_get_one_cause_per_field() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let pods = "/api/v1/namespaces/default/pods";
    let bad = json!({"metadata":{"name":"p","labels":{"bad key":"v"}},"spec":{"containers":[
        {"name":"c","image":"x","ports":[{"containerPort":0}]},{"name":"c","image":"y"}]}});
    let (c, st) = req(&s, "POST", pods, Some(bad)).await;
    assert_eq!(c, 422, "{st}");
    assert_eq!(st["reason"], "Invalid");
    let causes = st["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes.iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["metadata.labels", "spec.containers[0].ports[0].containerPort", "spec.containers[1].name"]);
    assert!(st["message"].as_str().unwrap().starts_with("Pod \"p\" is invalid: ["));
    // Immutable pod spec: the image may change, the restart policy may not.
    let pod = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox:1"}]}});
    assert_eq!(req(&s, "POST", pods, Some(pod)).await.0, 201);
    let patch = |body: Value| {
        let s = &s;
        async move {
            let text = body.to_string();
            s.http("PATCH", "/api/v1/namespaces/default/pods/p", Some(("application/merge-patch+json", &text))).await.unwrap()
        }
    };
    assert_eq!(patch(json!({"spec":{"containers":[{"name":"c","image":"busybox:2"}]}})).await.0, 200);
    let (c, body) = patch(json!({"spec":{"restartPolicy":"Never"}})).await;
    assert_eq!(c, 422, "{body}");
    assert_eq!(parse(&body)["details"]["causes"][0]["reason"], "FieldValueForbidden");
    // A Deployment's selector is immutable.
    let d = json!({"metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"app":"a"}},
        "template":{"metadata":{"labels":{"app":"a","v":"1"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}});
    assert_eq!(req(&s, "POST", "/apis/apps/v1/namespaces/default/deployments", Some(d)).await.0, 201);
    let text = json!({"spec":{"selector":{"matchLabels":{"app":"a","v":"1"}}}}).to_string();
    let (c, body) = s.http("PATCH", "/apis/apps/v1/namespaces/default/deployments/d", Some(("application/merge-patch+json", &text))).await.unwrap();
    assert_eq!(c, 422, "{body}");
    assert_eq!(parse(&body)["details"]["causes"][0]["field"], "spec.selector");
    s.stop().await;
}
