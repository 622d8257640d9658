//! Deployments with the real kubectl: create (protobuf body), apply, scale, a
//! rollout completed by a fake kubelet, and cascading delete.

mod common;

use common::{eventually, have_kubectl, kubectl_ok, Server};
use serde_json::Value;

/// Plays the kubelet: marks every live pod Running+Ready, finishes deletions.
async fn fake_kubelet(server: &Server) {
    let (_, body) = server.http("GET", "/api/v1/namespaces/default/pods", None).await.unwrap();
    let list: Value = serde_json::from_str(&body).unwrap();
    for (i, pod) in list["items"].as_array().unwrap().iter().enumerate() {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        if pod["metadata"].get("deletionTimestamp").is_some() {
            server.http("DELETE", &path, Some(("application/json", r#"{"gracePeriodSeconds":0}"#))).await.unwrap();
        } else if pod["status"]["phase"] != "Running" {
            let status = format!(
                r#"{{"status":{{"phase":"Running","podIP":"10.244.1.{}","conditions":[{{"type":"Ready","status":"True"}}]}}}}"#,
                i + 2
            );
            server.http("PATCH", &format!("{path}/status"), Some(("application/merge-patch+json", &status))).await.unwrap();
        }
    }
}

const NODE: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node1"},
 "status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_rollout_scale_delete() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    server.http("POST", "/api/v1/nodes", Some(("application/json", NODE))).await.unwrap();

    kubectl_ok(&server, &cache, &["create", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "--port=80"]).await;
    let pods = eventually("2 pods", || async {
        let out = kubectl_ok(&server, &cache, &["get", "pods", "-l", "app=web", "-o", "name"]).await;
        (out.lines().count() == 2).then_some(out)
    })
    .await;
    assert!(pods.contains("pod/web-"), "{pods}");
    fake_kubelet(&server).await;
    kubectl_ok(&server, &cache, &["rollout", "status", "deployment/web", "--timeout=20s"]).await;
    let deploy = kubectl_ok(&server, &cache, &["get", "deploy", "web"]).await;
    assert!(deploy.contains("2/2"), "{deploy}");

    // A new template makes a new ReplicaSet; the old one drains as new pods get ready.
    kubectl_ok(&server, &cache, &["set", "image", "deployment/web", "nginx=nginx:1.26"]).await;
    let waiter = {
        let (url, cache) = (server.url(), cache.clone());
        tokio::spawn(async move {
            tokio::process::Command::new("/usr/bin/kubectl")
                .args(["--server", &url, "--cache-dir"])
                .arg(&cache)
                .args(["rollout", "status", "deployment/web", "--timeout=30s"])
                .kill_on_drop(true)
                .output()
                .await
                .expect("rollout status")
        })
    };
    for _ in 0..40 {
        fake_kubelet(&server).await;
        if waiter.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let out = waiter.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rs = kubectl_ok(&server, &cache, &["get", "rs"]).await;
    assert_eq!(rs.lines().count(), 3, "{rs}");

    kubectl_ok(&server, &cache, &["scale", "deployment/web", "--replicas=1"]).await;
    eventually("scaled down", || async {
        fake_kubelet(&server).await;
        let out = kubectl_ok(&server, &cache, &["get", "pods", "-o", "name"]).await;
        (out.lines().count() == 1).then_some(())
    })
    .await;

    kubectl_ok(&server, &cache, &["delete", "deployment", "web"]).await;
    eventually("cascading delete", || async {
        fake_kubelet(&server).await;
        let rs = kubectl_ok(&server, &cache, &["get", "rs", "-o", "name"]).await;
        let pods = kubectl_ok(&server, &cache, &["get", "pods", "-o", "name"]).await;
        (rs.is_empty() && pods.is_empty()).then_some(())
    })
    .await;
    server.stop().await;
}
