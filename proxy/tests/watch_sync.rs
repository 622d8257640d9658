//! The watch → debounce → sync path against an in-process minion-apiserver, with the
//! recording fake applier (no root, no kernel).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use minion_proxy::{Config, RecordingApplier};
use serde_json::json;

async fn start_apiserver(dir: &std::path::Path) -> (u16, tokio::sync::oneshot::Sender<()>) {
    minion_apiserver::testing::start_local(dir).await.expect("start the API server")
}

fn write_kubeconfig(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    minion_apiserver::testing::write_kubeconfig(dir, port).expect("write a kubeconfig")
}

/// Polls (bounded) until the last applied ruleset satisfies `pred`.
async fn wait_applied(fake: &RecordingApplier, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(last) = fake.applied().pop() {
            if pred(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out waiting for {what}; last input:\n{}",
        fake.applied().pop().unwrap_or_default()
    );
}

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut out))
        .await
        .expect("metrics answer in time")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_endpoints_changes_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (port, stop_api) = start_apiserver(dir.path()).await;
    let config = Config {
        kubeconfig: write_kubeconfig(dir.path(), port),
        cluster_cidr: "10.244.0.0/16".into(),
        iptables_restore: "/nonexistent/iptables-restore".into(),
        iptables: "/nonexistent/iptables".into(),
        sync_period: Duration::from_secs(30),
        min_sync_period: Duration::from_millis(0),
        metrics_listen: Some(free_addr()),
        hostname: Some("node-1".into()),
    };
    let client = minion_proxy::kube_client(&config.kubeconfig)
        .await
        .expect("client");
    let fake = RecordingApplier::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn({
        let (client, fake, config) = (client.clone(), fake.clone(), config.clone());
        async move {
            minion_proxy::run_with(client, fake, &config, async {
                let _ = stop_rx.await;
            })
            .await
        }
    });

    // The bootstrap `default/kubernetes` Service is proxied once the lists are in.
    wait_applied(&fake, "kubernetes service", |s| {
        s.contains("-j KUBE-SVC-NPX46M4PTMTKRN6Y")
    })
    .await;

    let addr = config.metrics_listen.unwrap();
    // The sync is recorded in the metrics just after its apply: poll briefly.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http_get(addr, "/metrics").await;
        if !metrics.contains("_duration_seconds_count 0\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        !metrics.contains("_duration_seconds_count 0\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("kubeproxy_sync_proxy_rules_iptables_total 0\n"));
    let healthz = http_get(addr, "/healthz").await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    let input = wait_applied(&fake, "REJECT for web", |s| {
        s.contains("default/web:http has no endpoints")
    })
    .await;
    assert!(input.contains("-j REJECT"));

    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.244.0.2"}], "ports": [{"name": "http", "port": 8080}]}]
    }))
    .unwrap();
    endpoints
        .create(&PostParams::default(), &eps)
        .await
        .expect("create endpoints");
    let input = wait_applied(&fake, "web endpoint", |s| {
        s.contains("default/web:http -> 10.244.0.2:8080")
    })
    .await;
    assert!(
        !input.contains(":KUBE-SVC-NPX46M4PTMTKRN6Y"),
        "unchanged kubernetes chains are not rewritten"
    );

    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    let web = minion_proxy::names::service_chain(
        &minion_proxy::names::ServicePortName {
            namespace: "default".into(),
            name: "web".into(),
            port: "http".into(),
        },
        minion_proxy::names::Protocol::Tcp,
    );
    wait_applied(&fake, "web chains deleted", |s| {
        s.contains(&format!("-X {web}\n"))
    })
    .await;

    let _ = stop_tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(5), proxy)
        .await
        .expect("proxy stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let _ = stop_api.send(());
}
