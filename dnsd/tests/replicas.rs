//! Two minion-dnsd processes behind the kube-dns Service: both register in the
//! `kube-system/kube-dns` Endpoints of a real minion-apiserver (in-process); one is
//! stopped with SIGTERM and deregisters, the other keeps answering; one is killed
//! with SIGKILL and the other removes it from kube-dns.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

/// A dnsd process, killed by pid on drop if still running.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_replica(
    kubeconfig: &std::path::Path,
    ip: &str,
    port: u16,
    log: &std::path::Path,
) -> Replica {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_minion-dnsd"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--listen",
            &addr.to_string(),
            "--advertise-address",
            ip,
            "--no-forward",
            "--udp-workers",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn minion-dnsd");
    Replica { child, addr }
}

async fn registered(api: &Api<Endpoints>) -> Vec<String> {
    let Ok(eps) = api.get("kube-dns").await else {
        return Vec::new();
    };
    let mut ips: Vec<String> = eps
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    ips.sort();
    ips
}

async fn wait_registered(api: &Api<Endpoints>, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = registered(api).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kube-dns Endpoints {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_stops_the_other_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, stop_api) = start_apiserver(dir.path()).await;
    let kubeconfig = write_kubeconfig(dir.path(), api_port);
    let client = minion_dnsd::kube_client(&kubeconfig).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.50.5", "ports": [{"port": 80}]}}))
    .unwrap();
    services.create(&PostParams::default(), &web).await.unwrap();

    // Two loopback addresses, one port: like two pods behind 10.96.0.10:53.
    let port = loop {
        let p = free_port("127.0.0.2");
        if std::net::UdpSocket::bind(("127.0.0.3", p)).is_ok() {
            break p;
        }
    };
    let a = spawn_replica(&kubeconfig, "127.0.0.2", port, &dir.path().join("a.log"));
    let mut b = spawn_replica(&kubeconfig, "127.0.0.3", port, &dir.path().join("b.log"));
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "kube-system");
    wait_registered(&endpoints, &["127.0.0.2", "127.0.0.3"]).await;
    for replica in [&a, &b] {
        let addr = replica.addr;
        wait_until(Duration::from_secs(10), "replica answering", || {
            dig(addr, &["web.default.svc.cluster.local", "A"]).data() == ["10.96.50.5"]
        })
        .await;
    }

    // SIGTERM to b: it deregisters and exits; a keeps answering throughout.
    let status = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..20 {
        let answer = adig(a.addr, &["web.default.svc.cluster.local", "A"]).await;
        assert_eq!(answer.data(), ["10.96.50.5"], "{}", answer.raw);
        if b.child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = tokio::task::block_in_place(|| b.child.wait()).unwrap();
    assert!(
        exit.success(),
        "b exited {exit:?}: {}",
        std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
    );
    wait_registered(&endpoints, &["127.0.0.2"]).await;
    let after = adig(a.addr, &["web.default.svc.cluster.local", "A"]).await;
    assert_eq!(after.data(), ["10.96.50.5"], "{}", after.raw);
    let gone = adig(
        b.addr,
        &["+tries=1", "+time=1", "web.default.svc.cluster.local", "A"],
    )
    .await;
    assert!(
        gone.status.is_empty(),
        "stopped replica still answers: {}",
        gone.raw
    );

    drop(a);
    let _ = stop_api.send(());
}

/// A replica killed with SIGKILL cannot deregister: the survivor's peer probe
/// removes it from kube-dns within a few seconds, and never removes a live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_removed_by_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, stop_api) = start_apiserver(dir.path()).await;
    let kubeconfig = write_kubeconfig(dir.path(), api_port);
    let client = minion_dnsd::kube_client(&kubeconfig).await.unwrap();
    let port = loop {
        let p = free_port("127.0.0.4");
        if std::net::UdpSocket::bind(("127.0.0.5", p)).is_ok() {
            break p;
        }
    };
    let a = spawn_replica(&kubeconfig, "127.0.0.4", port, &dir.path().join("a.log"));
    let mut b = spawn_replica(&kubeconfig, "127.0.0.5", port, &dir.path().join("b.log"));
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "kube-system");
    wait_registered(&endpoints, &["127.0.0.4", "127.0.0.5"]).await;
    // Several probe rounds: live peers stay.
    tokio::time::sleep(
        minion_dnsd::peers::PROBE_INTERVAL * 2 * minion_dnsd::peers::FAILURES_TO_REMOVE,
    )
    .await;
    assert_eq!(registered(&endpoints).await, ["127.0.0.4", "127.0.0.5"]);

    b.child.kill().unwrap();
    let killed = std::time::Instant::now();
    tokio::task::block_in_place(|| b.child.wait()).unwrap();
    wait_registered(&endpoints, &["127.0.0.4"]).await;
    let removed_after = killed.elapsed();
    assert!(
        removed_after < Duration::from_secs(10),
        "the dead replica left kube-dns only after {removed_after:?}"
    );
    let answer = adig(a.addr, &["cluster.local", "SOA"]).await;
    assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
    eprintln!("killed replica removed from kube-dns after {removed_after:?}");
    drop(a);
    let _ = stop_api.send(());
}
