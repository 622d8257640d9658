//! Cluster-wide defaults. They follow kind's defaults so that what a learner reads
//! about a kind cluster holds on a minion cluster too.

/// The DNS zone of the cluster: Services are `<svc>.<ns>.svc.cluster.local`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Pod addresses: one /24 of this range per node.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// ClusterIPs are allocated from this range.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The ClusterIP of the `kubernetes` Service (first address of the service CIDR).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The ClusterIP of the `kube-dns` Service; every pod's resolv.conf names it.
pub const KUBE_DNS_IP: &str = "10.96.0.10";
/// The API server's port.
pub const API_PORT: u16 = 6443;

/// The kubelet's port (its HTTP API: container logs), published by each Node as
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub const KUBELET_PORT: u16 = 10250;
/// Namespaces that exist from the start.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-node-lease"];
/// Namespace holding node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Lease duration the agent asks for, in seconds (kubelet's default).
pub const NODE_LEASE_DURATION_SECONDS: i32 = 40;
/// Label every node carries with its own name.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Label kube-dns's Service and pods carry.
pub const LABEL_K8S_APP: &str = "k8s-app";

/// The `search` line of a pod's resolv.conf for a pod in `namespace`.
pub fn dns_search_path(namespace: &str) -> String {
    format!("{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}")
}

/// A pod's /etc/resolv.conf for the ClusterFirst DNS policy, as the kubelet writes it.
pub fn pod_resolv_conf(namespace: &str) -> String {
    format!(
        "search {}\nnameserver {KUBE_DNS_IP}\noptions ndots:5\n",
        dns_search_path(namespace)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_matches_kubelet() {
        assert_eq!(
            pod_resolv_conf("default"),
            "search default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
