//! Drives the in-process API server with the real kubectl: apply (create, then a
//! strategic-merge PATCH), get -o wide, describe node, status writes, graceful
//! delete completed by a "kubelet" delete, watch, and a restart on the same data dir.

mod common;

use std::path::Path;

use common::{eventually, have_kubectl, kubectl, kubectl_background, kubectl_ok, Server};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

const NODE: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node1","labels":{"kubernetes.io/hostname":"node1"}},
 "spec":{"podCIDR":"10.244.1.0/24"},
 "status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ok"}],
 "addresses":[{"type":"InternalIP","address":"172.18.0.11"},{"type":"Hostname","address":"node1"}],
 "capacity":{"cpu":"2","memory":"4Gi","pods":"110"},"allocatable":{"cpu":"2","memory":"4Gi","pods":"110"},
 "nodeInfo":{"kubeletVersion":"v1.33.0","osImage":"Debian","kernelVersion":"6.1","containerRuntimeVersion":"minion://0.1",
   "architecture":"amd64","operatingSystem":"linux","machineID":"m","systemUUID":"s","bootID":"b","kubeProxyVersion":""}}}"#;

const RUNNING: &str = r#"{"status":{"phase":"Running","podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"}],
 "conditions":[{"type":"Ready","status":"True"}],
 "containerStatuses":[{"name":"c","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{}}}]}}"#;

const PERSIST: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: persist}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: persist}\nspec:\n  ports: [{port: 5432}]\n";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_apply_get_describe_delete() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    let m1 = write(tmp.path(), "m1.yaml", MANIFEST);
    let m2 = write(tmp.path(), "m2.yaml", &MANIFEST.replace("image: busybox", "image: busybox:1.36"));

    let out = kubectl_ok(&server, &cache, &["apply", "-f", &m1]).await;
    assert!(out.contains("pod/web created") && out.contains("service/web created"), "{out}");
    let out = kubectl_ok(&server, &cache, &["apply", "-f", &m2]).await;
    assert!(out.contains("pod/web configured"), "{out}");
    let image = kubectl_ok(&server, &cache, &["get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}"]).await;
    assert_eq!(image, "busybox:1.36");

    let svc = kubectl_ok(&server, &cache, &["get", "svc"]).await;
    assert!(svc.contains("CLUSTER-IP") && svc.contains("web") && svc.contains("10.96.0.11") && svc.contains("80/TCP"), "{svc}");
    assert!(svc.contains("kubernetes") && svc.contains("10.96.0.1 "), "{svc}");

    let node = write(tmp.path(), "node.json", NODE);
    kubectl_ok(&server, &cache, &["create", "-f", &node]).await;
    let wide = eventually("pod scheduled", || async {
        let out = kubectl_ok(&server, &cache, &["get", "pods", "-o", "wide"]).await;
        out.contains("node1").then_some(out)
    })
    .await;
    assert!(wide.contains("NOMINATED NODE") && wide.contains("Pending"), "{wide}");

    let describe = kubectl_ok(&server, &cache, &["describe", "node", "node1"]).await;
    assert!(describe.contains("Non-terminated Pods:") && describe.contains("172.18.0.11"), "{describe}");
    let nodes = kubectl_ok(&server, &cache, &["get", "nodes"]).await;
    assert!(nodes.contains("Ready") && nodes.contains("v1.33.0"), "{nodes}");

    // The kubelet reports the pod running; the endpoints controller follows.
    kubectl_ok(&server, &cache, &["patch", "pod", "web", "--subresource=status", "--type=merge", "-p", RUNNING]).await;
    let pods = kubectl_ok(&server, &cache, &["get", "pods", "-o", "wide"]).await;
    assert!(pods.contains("1/1") && pods.contains("Running") && pods.contains("10.244.1.5"), "{pods}");
    eventually("endpoints", || async {
        let out = kubectl_ok(&server, &cache, &["get", "endpoints", "web"]).await;
        out.contains("10.244.1.5:8080").then_some(())
    })
    .await;

    // A normal delete waits (via watch) until the kubelet finishes the deletion.
    let waiter = {
        let (url, cache) = (server.url(), cache.clone());
        tokio::spawn(async move {
            let out = tokio::process::Command::new("/usr/bin/kubectl")
                .args(["--server", &url, "--cache-dir"])
                .arg(&cache)
                .args(["delete", "pod", "web", "--timeout=30s"])
                .kill_on_drop(true)
                .output()
                .await
                .expect("kubectl delete");
            (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
        })
    };
    eventually("pod terminating", || async {
        let out = kubectl_ok(&server, &cache, &["get", "pods"]).await;
        out.contains("Terminating").then_some(())
    })
    .await;
    kubectl_ok(&server, &cache, &["delete", "pod", "web", "--grace-period=0", "--force"]).await;
    let (ok, out) = waiter.await.unwrap();
    assert!(ok && out.contains("deleted"), "{out}");
    let gone = kubectl(&server, &cache, &["get", "pod", "web"]).await;
    assert!(!gone.ok && gone.stderr.contains("pods \"web\" not found"), "{}", gone.stderr);
    eventually("endpoints emptied", || async {
        let out = kubectl_ok(&server, &cache, &["get", "endpoints", "web"]).await;
        out.contains("<none>").then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_watch_prints_table_rows() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    let watcher = kubectl_background(&server, &cache, &["get", "pods", "-w", "--request-timeout=4s"]);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    kubectl_ok(&server, &cache, &["run", "w1", "--image=busybox", "--restart=Never"]).await;
    let out = watcher.await.unwrap();
    assert!(out.contains("NAME") && out.contains("w1") && out.contains("Pending"), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_survives_restart() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cache = tmp.path().join("cache");
    let server = Server::start(&data).await;
    let objs = write(tmp.path(), "persist.yaml", PERSIST);
    kubectl_ok(&server, &cache, &["create", "-f", &objs]).await;
    // Typed clients (kubectl create namespace/service) send protobuf bodies.
    kubectl_ok(&server, &cache, &["create", "namespace", "proto"]).await;
    kubectl_ok(&server, &cache, &["create", "service", "clusterip", "pg", "--tcp=5432:5432", "-n", "proto"]).await;
    let ports = kubectl_ok(&server, &cache, &["get", "svc", "pg", "-n", "proto", "-o", "jsonpath={.spec.ports[0].port}"]).await;
    assert_eq!(ports, "5432");
    let rv1: u64 = kubectl_ok(&server, &cache, &["get", "ns", "persist", "-o", "jsonpath={.metadata.resourceVersion}"])
        .await
        .parse()
        .unwrap();
    let ip = kubectl_ok(&server, &cache, &["get", "svc", "db", "-n", "persist", "-o", "jsonpath={.spec.clusterIP}"]).await;
    server.stop().await;

    let server = Server::start(&data).await;
    let ns = kubectl_ok(&server, &cache, &["get", "ns"]).await;
    assert!(ns.contains("persist"), "{ns}");
    let second = write(tmp.path(), "second.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: second}\n");
    kubectl_ok(&server, &cache, &["apply", "-f", &second]).await;
    let rv2: u64 = kubectl_ok(&server, &cache, &["get", "ns", "second", "-o", "jsonpath={.metadata.resourceVersion}"])
        .await
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "{rv2} <= {rv1}");
    // The ClusterIP stays allocated across the restart.
    let db2 = PERSIST.split("---").nth(1).unwrap().replace("name: db", "name: db2");
    let db2 = write(tmp.path(), "db2.yaml", &db2);
    kubectl_ok(&server, &cache, &["create", "-f", &db2]).await;
    let ip2 = kubectl_ok(&server, &cache, &["get", "svc", "db2", "-n", "persist", "-o", "jsonpath={.spec.clusterIP}"]).await;
    assert_ne!(ip, ip2);
    // History from before the restart is gone: a watch from rv 1 expires (410).
    let (code, body) = server.http("GET", "/api/v1/namespaces?watch=true&resourceVersion=1&timeoutSeconds=1", None).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"ERROR\"") && body.contains("410") && body.contains("Expired"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_server_side_apply_label_and_errors() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    let m1 = write(tmp.path(), "m1.yaml", MANIFEST);
    let m2 = write(tmp.path(), "m2.yaml", &MANIFEST.replace("image: busybox", "image: busybox:1.36"));
    let out = kubectl_ok(&server, &cache, &["apply", "--server-side", "-f", &m1]).await;
    assert!(out.contains("pod/web serverside-applied"), "{out}");
    kubectl_ok(&server, &cache, &["apply", "--server-side", "-f", &m2]).await;
    let image = kubectl_ok(&server, &cache, &["get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}"]).await;
    assert_eq!(image, "busybox:1.36");
    kubectl_ok(&server, &cache, &["label", "pod", "web", "tier=fe"]).await;
    let labels = kubectl_ok(&server, &cache, &["get", "pod", "web", "--show-labels"]).await;
    assert!(labels.contains("app=web,tier=fe"), "{labels}");
    let missing = kubectl(&server, &cache, &["get", "pod", "nope"]).await;
    assert!(!missing.ok && missing.stderr.contains("pods \"nope\" not found"), "{}", missing.stderr);
    let bad_ns = kubectl(&server, &cache, &["run", "x", "--image=busybox", "-n", "nowhere"]).await;
    assert!(!bad_ns.ok && bad_ns.stderr.contains("namespaces \"nowhere\" not found"), "{}", bad_ns.stderr);
    server.stop().await;
}
