//! The node Lease (`kube-node-lease/<node>`): the kubelet's cheap heartbeat, renewed
//! every 10s with a 40s duration, owned by the Node so it goes when the Node goes.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// A failed Lease API call.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or failed.
    #[error("failed to {action} lease kube-node-lease/{node}: {source}")]
    Api {
        /// create / renew.
        action: &'static str,
        /// Node name.
        node: String,
        /// kube error.
        source: kube::Error,
    },
}

/// The Lease object for `node` (owned by the Node with `node_uid`) renewed at `now`.
pub fn build_lease(node: &str, node_uid: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(minion_api::NODE_LEASE_NAMESPACE.to_string()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: node_uid.to_string(),
                ..Default::default()
            }])
            .filter(|_| !node_uid.is_empty()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(minion_api::NODE_LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Creates the Lease or renews it (merge patch of spec.renewTime / holder / duration).
pub async fn renew(api: &Api<Lease>, node: &str, node_uid: &str) -> Result<(), LeaseError> {
    let lease = build_lease(node, node_uid, Timestamp::now());
    let err = |action, source| LeaseError::Api { action, node: node.to_string(), source };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({ "spec": lease.spec });
            api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop).map_err(|e| err("renew", e))
        }
        Err(e) => Err(err("create", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_owned_by_node_with_micro_time() {
        let now: Timestamp = "2026-01-01T00:00:00.123456789Z".parse().unwrap();
        let v = serde_json::to_value(build_lease("node1", "uid-1", now)).unwrap();
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["spec"]["holderIdentity"], "node1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T00:00:00.123456Z");
    }
}
