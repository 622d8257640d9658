//! The Node watch: a kube-runtime reflector on Nodes; each change wakes the daemon's
//! reconcile loop, which reads the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::routes::NodeRoute;

/// What the routes need from a Node: name, podCIDR (IPv4) and first InternalIP (IPv4).
pub fn node_route(node: &Node) -> NodeRoute {
    let spec = node.spec.as_ref();
    let pod_cidr = spec
        .and_then(|s| s.pod_cidr.clone())
        .or_else(|| spec.and_then(|s| s.pod_cidrs.as_ref()?.first().cloned()))
        .and_then(|c| c.parse().ok());
    let internal_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok());
    NodeRoute {
        name: node.metadata.name.clone().unwrap_or_default(),
        pod_cidr,
        internal_ip,
    }
}

/// Starts the reflector; returns its store and the task feeding it.
pub fn start(client: &Client, changed: Arc<Notify>, metrics: Arc<Metrics>) -> (Store<Node>, JoinHandle<()>) {
    let (store, writer) = reflector::store::<Node>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    metrics.node_events.fetch_add(1, Ordering::Relaxed);
                    changed.notify_one();
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "node watch error (retrying)"),
            }
        }
        tracing::warn!("node watch ended");
    });
    (store, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_cidr_and_internal_ip() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-2"},
            "spec": {"podCIDR": "10.244.2.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "node-2"},
                {"type": "InternalIP", "address": "172.18.0.12"}
            ]}
        }))
        .unwrap();
        let r = node_route(&node);
        assert_eq!(r.name, "node-2");
        assert_eq!(r.pod_cidr, Some("10.244.2.0/24".parse().unwrap()));
        assert_eq!(r.internal_ip, Some("172.18.0.12".parse().unwrap()));
        let bare: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(node_route(&bare), NodeRoute { name: "x".into(), pod_cidr: None, internal_ip: None });
    }
}
