//! The `kube` crate (as used by the agent, proxy and dnsd) against the server:
//! create, merge-patch of Lease renewals and node status, replace with a stale
//! resourceVersion (409), and a field-selected watcher.

mod common;

use std::time::Duration;

use common::Server;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn client(server: &Server) -> kube::Client {
    let uri: http::Uri = server.url().parse().expect("uri");
    kube::Client::try_from(kube::Config::new(uri)).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_crate_works() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path()).await;
    let client = client(&server);

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata":{"name":"n1"},
        "spec":{"holderIdentity":"n1","leaseDurationSeconds":40}})).unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.expect("create lease");
    let renew = json!({"spec":{"renewTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    leases.patch("n1", &PatchParams::default(), &Patch::Merge(&renew)).await.expect("renew lease");
    match leases.replace("n1", &PostParams::default(), &created).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("stale replace should conflict, got {other:?}"),
    }

    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata":{"name":"n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    let ready = json!({"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}});
    nodes.patch_status("n1", &PatchParams::default(), &Patch::Merge(&ready)).await.expect("node status");

    // A watcher on spec.nodeName=n1 sees the pod once the scheduler binds it.
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = watcher(pods, watcher::Config::default().fields("spec.nodeName=n1")).applied_objects();
    let mut stream = Box::pin(stream);
    let ns_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata":{"name":"p1"},
        "spec":{"containers":[{"name":"c","image":"busybox"}]}})).unwrap();
    ns_pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let seen = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watcher timed out")
        .expect("stream ended")
        .expect("watch error");
    assert_eq!(seen.metadata.name.as_deref(), Some("p1"));
    assert_eq!(seen.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));

    let status = json!({"status":{"phase":"Running","podIP":"10.244.1.9"}});
    let patched = ns_pods.patch_status("p1", &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status");
    assert_eq!(patched.status.and_then(|s| s.pod_ip).as_deref(), Some("10.244.1.9"));
    server.stop().await;
}
