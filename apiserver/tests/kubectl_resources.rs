//! The real kubectl against the resources added for issue 3: ConfigMaps, Secrets,
//! ServiceAccounts, DaemonSets and EndpointSlices print upstream's columns, and
//! `delete --cascade=orphan|foreground` round-trips.

mod common;

use common::{eventually, have_kubectl, kubectl, kubectl_ok, Server};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: "1", b: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: pw}
stringData: {password: hunter2}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: "busybox:1.36"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_the_new_resources() {
    if !have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data")).await;
    let cache = tmp.path().join("cache");
    let file = tmp.path().join("m.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    kubectl_ok(&s, &cache, &["create", "-f", file.to_str().unwrap()]).await;
    let out = kubectl_ok(&s, &cache, &["get", "configmaps"]).await;
    assert!(out.contains("NAME") && out.contains("DATA") && out.contains("cfg"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("cfg") && l.split_whitespace().nth(1) == Some("2")), "{out}");
    let out = kubectl_ok(&s, &cache, &["get", "secrets"]).await;
    assert!(out.contains("TYPE") && out.lines().any(|l| l.starts_with("pw") && l.contains("Opaque")), "{out}");
    let out = kubectl_ok(&s, &cache, &["get", "ds", "-o", "wide"]).await;
    assert!(out.contains("DESIRED") && out.contains("NODE SELECTOR") && out.contains("busybox:1.36"), "{out}");
    let out = eventually("default serviceaccount", || async {
        let out = kubectl(&s, &cache, &["get", "sa"]).await;
        out.stdout.contains("default").then_some(out.stdout)
    })
    .await;
    assert!(out.contains("SECRETS"), "{out}");
    let out = eventually("endpointslice", || async {
        let out = kubectl(&s, &cache, &["get", "endpointslices"]).await;
        out.stdout.contains("web-").then_some(out.stdout)
    })
    .await;
    assert!(out.contains("ADDRESSTYPE") && out.contains("IPv4"), "{out}");
    kubectl_ok(&s, &cache, &["delete", "ds", "agent", "--cascade=orphan"]).await;
    kubectl_ok(&s, &cache, &["delete", "configmap", "cfg", "--cascade=foreground"]).await;
    let out = kubectl(&s, &cache, &["get", "ds,cm"]).await;
    assert!(!out.stdout.contains("agent") && !out.stdout.contains("cfg"), "{}", out.stdout);
    s.stop().await;
}
