//! More of the kubectl compatibility suite: `edit` through KUBE_EDITOR, `get -w`
//! printing a row for a change, `delete namespace` (Terminating, refused content,
//! gone at the end, protected namespaces) and `describe deployment`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{eventually, have_kubectl, kubectl, kubectl_background, kubectl_ok, Server};

const JSON: &str = "application/json";

const NODE: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node1"},
 "status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;

/// `kubectl` with extra environment (KUBE_EDITOR), bounded.
async fn kubectl_env(server: &Server, cache: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("/usr/bin/kubectl");
    cmd.arg("--server").arg(server.url()).arg("--cache-dir").arg(cache).args(args);
    cmd.env("KUBECONFIG", cache.join("no-kubeconfig")).envs(env.iter().copied()).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("kubectl timed out").expect("run kubectl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_edit_and_describe_deployment() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    kubectl_ok(&server, &cache, &["create", "deployment", "web", "--image=nginx:1.25", "--replicas=2"]).await;

    let editor = tmp.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/replicas: 2/replicas: 3/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = kubectl_env(&server, &cache, &[("KUBE_EDITOR", editor.to_str().unwrap())], &["edit", "deployment/web"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deployment.apps/web edited"), "{stdout}");
    let got = kubectl_ok(&server, &cache, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]).await;
    assert_eq!(got, "3 2");
    // An edit that changes nothing is reported as such.
    let noop = tmp.path().join("noop.sh");
    std::fs::write(&noop, "#!/bin/sh\ntrue\n").unwrap();
    std::fs::set_permissions(&noop, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = kubectl_env(&server, &cache, &[("KUBE_EDITOR", noop.to_str().unwrap())], &["edit", "deployment/web"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("Edit cancelled, no changes made"), "{out:?}");

    let text = eventually("replicaset", || async {
        let d = kubectl_ok(&server, &cache, &["describe", "deployment", "web"]).await;
        d.contains("NewReplicaSet:   web-").then_some(d)
    })
    .await;
    for want in ["Name:                   web", "Namespace:              default", "Selector:               app=web",
        "Replicas:               3 desired", "StrategyType:           RollingUpdate", "Pod Template:", "Image:         nginx:1.25"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_watch_prints_a_row_per_change() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    kubectl_ok(&server, &cache, &["create", "configmap", "cfg", "--from-literal=a=1"]).await;
    let watcher = kubectl_background(&server, &cache, &["get", "configmaps", "-w", "--request-timeout=5s"]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    kubectl_ok(&server, &cache, &["patch", "configmap", "cfg", "-p", r#"{"data":{"b":"2"}}"#]).await;
    let out = tokio::time::timeout(Duration::from_secs(30), watcher).await.expect("watch ended").unwrap();
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("cfg ")).collect();
    assert!(out.starts_with("NAME"), "{out}");
    assert_eq!(rows.len(), 2, "the initial row and one for the change:\n{out}");
    let data: Vec<&str> = rows.iter().map(|r| r.split_whitespace().nth(1).unwrap_or("")).collect();
    assert_eq!(data, ["1", "2"], "DATA column before and after:\n{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_delete_namespace() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    server.http("POST", "/api/v1/nodes", Some((JSON, NODE))).await.unwrap();

    // Unscheduled content goes at once: delete waits until the namespace is gone.
    kubectl_ok(&server, &cache, &["create", "namespace", "quick"]).await;
    kubectl_ok(&server, &cache, &["-n", "quick", "create", "configmap", "c", "--from-literal=a=1"]).await;
    kubectl_ok(&server, &cache, &["-n", "quick", "create", "service", "clusterip", "s", "--tcp=80:80"]).await;
    let out = kubectl_ok(&server, &cache, &["delete", "namespace", "quick", "--timeout=30s"]).await;
    assert_eq!(out.trim(), "namespace \"quick\" deleted");
    let gone = kubectl(&server, &cache, &["get", "namespace", "quick"]).await;
    assert!(!gone.ok && gone.stderr.contains("namespaces \"quick\" not found"), "{gone:?}");

    // A running pod holds the namespace in Terminating until its kubelet finishes.
    kubectl_ok(&server, &cache, &["create", "namespace", "hold"]).await;
    kubectl_ok(&server, &cache, &["-n", "hold", "run", "p", "--image=busybox", "--overrides", r#"{"spec":{"nodeName":"node1"}}"#]).await;
    kubectl_ok(&server, &cache, &["delete", "namespace", "hold", "--wait=false"]).await;
    let ns = kubectl_ok(&server, &cache, &["get", "namespace", "hold", "--no-headers"]).await;
    assert!(ns.contains("Terminating"), "{ns}");
    let refused = kubectl(&server, &cache, &["-n", "hold", "create", "configmap", "late", "--from-literal=a=1"]).await;
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "configmaps \"late\" is forbidden: unable to create new content in namespace hold because it is being terminated"
        ),
        "{refused:?}"
    );
    let pod = eventually("pod terminating", || async {
        let p = kubectl_ok(&server, &cache, &["-n", "hold", "get", "pod", "p", "--no-headers"]).await;
        p.contains("Terminating").then_some(p)
    })
    .await;
    assert!(pod.starts_with("p "), "{pod}");
    // The "kubelet" confirms the pod is gone.
    let (c, _) = server.http("DELETE", "/api/v1/namespaces/hold/pods/p?gracePeriodSeconds=0", None).await.unwrap();
    assert_eq!(c, 200);
    kubectl_ok(&server, &cache, &["wait", "--for=delete", "namespace/hold", "--timeout=30s"]).await;

    let protected = kubectl(&server, &cache, &["delete", "namespace", "default"]).await;
    assert!(
        protected.stderr.contains("Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted"),
        "{protected:?}"
    );
    server.stop().await;
}
