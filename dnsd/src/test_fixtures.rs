//! Hand-made Services and Endpoints for unit tests.

use hickory_proto::rr::{LowerName, Name};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use serde_json::json;

use crate::build::build_records;
use crate::records::{Records, Zone};

/// A ClusterIP Service `ns/name` with `ip` and one named TCP port 80 (`http`).
pub fn cluster_ip_service(ns: &str, name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

/// A headless Service `ns/name` (clusterIP None).
pub fn headless_service(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": "None", "ports": [{"name": "db", "port": 5432}]}
    }))
    .unwrap()
}

/// An ExternalName Service `ns/name` → `target`.
pub fn external_name_service(ns: &str, name: &str, target: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ExternalName", "externalName": target}
    }))
    .unwrap()
}

/// Endpoints `ns/name` with `ready` and `not_ready` addresses and port `db` 5432/TCP.
pub fn endpoints(ns: &str, name: &str, ready: &[&str], not_ready: &[&str]) -> Endpoints {
    let addrs = |ips: &[&str]| ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "subsets": [{"addresses": addrs(ready), "notReadyAddresses": addrs(not_ready),
                     "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}]
    }))
    .unwrap()
}

/// The zone `cluster.local` with TTL 5.
pub fn zone() -> Zone {
    Zone::new("cluster.local", 5).unwrap()
}

/// A snapshot with `default/web` (10.96.0.20), headless `db/pg` (two ready, one not
/// ready endpoint) and ExternalName `default/ext` → `example.com`.
pub fn sample_records() -> Records {
    let services = [
        cluster_ip_service("default", "web", "10.96.0.20"),
        headless_service("db", "pg"),
        external_name_service("default", "ext", "example.com"),
    ];
    let eps = [endpoints(
        "db",
        "pg",
        &["10.244.1.5", "10.244.2.7"],
        &["10.244.3.9"],
    )];
    build_records(&zone(), 1, ["default", "db", "empty"], &services, &eps)
}

/// A lower-cased name from text.
pub fn lower(s: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(s).unwrap())
}
