//! The API resources this server serves (the REST mapping kubectl discovers):
//! plural name, kind, group/version, scope, short names, verbs and storage keys.

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    /// API group ("" for core).
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources served under `<plural>/<sub>`.
    pub subresources: &'static [&'static str],
    /// DNS-1123 label names (else subdomain).
    pub label_names: bool,
}

/// Verbs of a top-level resource.
pub const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
    label_names: bool,
) -> ResourceInfo {
    ResourceInfo { plural, singular, kind, group: "", version: "v1", namespaced, short_names, subresources, label_names }
}

/// Every served resource.
pub const RESOURCES: &[ResourceInfo] = &[
    core("namespaces", "namespace", "Namespace", false, &["ns"], &["status", "finalize"], true),
    core("nodes", "node", "Node", false, &["no"], &["status"], false),
    core("pods", "pod", "Pod", true, &["po"], &["status", "binding", "log", "eviction"], false),
    core("services", "service", "Service", true, &["svc"], &["status"], true),
    core("endpoints", "endpoints", "Endpoints", true, &["ep"], &[], false),
    core("events", "event", "Event", true, &["ev"], &[], false),
    core("configmaps", "configmap", "ConfigMap", true, &["cm"], &[], false),
    core("secrets", "secret", "Secret", true, &[], &[], false),
    core("serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], &[], false),
    ResourceInfo {
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["deploy"],
        subresources: &["status", "scale"],
        label_names: false,
    },
    ResourceInfo {
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["rs"],
        subresources: &["status", "scale"],
        label_names: false,
    },
    ResourceInfo {
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["ds"],
        subresources: &["status"],
        label_names: false,
    },
    ResourceInfo {
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        label_names: false,
    },
    ResourceInfo {
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        group: "coordination.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        label_names: false,
    },
];

/// The named API groups served (besides core "").
pub const GROUPS: &[&str] = &["apps", "coordination.k8s.io", "discovery.k8s.io"];

/// Looks a resource up by group and plural.
pub fn find(group: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.plural == plural)
}

/// Looks a resource up by kind.
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

impl ResourceInfo {
    /// `v1` or `coordination.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{ns}/{name}", self.plural),
            _ => format!("/registry/{}/{name}", self.plural),
        }
    }

    /// Storage prefix of a namespace's objects, or of all of them.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{ns}/", self.plural),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    /// The list kind (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}
