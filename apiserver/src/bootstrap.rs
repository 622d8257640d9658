//! Start-up: rebuild the ClusterIP allocator from the stored Services, then create
//! (idempotently) the system namespaces, the `default/kubernetes` Service and its
//! Endpoints, and the selector-less `kube-system/kube-dns` Service.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::handlers::create_object;
use crate::objects::str_at;
use crate::resources::{self, ResourceInfo};
use crate::server::AppState;

fn res(plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", plural).ok_or_else(|| ApiError::internal(format!("no resource {plural}")))
}

/// Runs the bootstrap; safe to repeat on every start.
pub async fn run(app: &AppState, advertise: IpAddr, port: u16) -> Result<(), ApiError> {
    let services = res("services")?;
    let (existing, _) = app.db.list(&services.prefix(None)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    for svc in &existing {
        app.ips().mark(str_at(svc, "/spec/clusterIP"));
    }
    for ns in minion_api::SYSTEM_NAMESPACES {
        ensure(app, res("namespaces")?, None, json!({"metadata": {"name": ns}})).await?;
    }
    ensure(app, services, Some("default"), kubernetes_service()).await?;
    ensure(app, services, Some("kube-system"), kube_dns_service()).await?;
    sync_kubernetes_endpoints(app, advertise, port).await
}

async fn ensure(app: &AppState, res: &'static ResourceInfo, ns: Option<&str>, obj: Value) -> Result<(), ApiError> {
    let name = str_at(&obj, "/metadata/name").to_string();
    let found = app.db.get(&res.key(ns, &name)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    if found.is_some() {
        return Ok(());
    }
    match create_object(app, res, ns, obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        // Another API server on the same etcd may be creating it right now (it took the
        // ClusterIP first): fine once the object shows up.
        Err(e) if app.db.shared() => {
            let key = res.key(ns, &name);
            for _ in 0..50 {
                if app.db.get(&key).await.map_err(|e| ApiError::internal(e.to_string()))?.is_some() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn kubernetes_service() -> Value {
    json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": minion_api::KUBERNETES_SERVICE_IP,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": minion_api::API_PORT}],
            "sessionAffinity": "None",
            "type": "ClusterIP",
        }
    })
}

fn kube_dns_service() -> Value {
    json!({
        "metadata": {"name": "kube-dns", "labels": {
            "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "clusterIP": minion_api::KUBE_DNS_IP,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
            "type": "ClusterIP",
        }
    })
}

/// Writes `default/kubernetes` Endpoints = this API server's address.
async fn sync_kubernetes_endpoints(app: &AppState, advertise: IpAddr, port: u16) -> Result<(), ApiError> {
    let endpoints = res("endpoints")?;
    let subsets = json!([{
        "addresses": [{"ip": advertise.to_string()}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }]);
    let key = endpoints.key(Some("default"), "kubernetes");
    let found = app.db.get(&key).await.map_err(|e| ApiError::internal(e.to_string()))?;
    if found.is_none() {
        let obj = json!({"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                         "subsets": subsets});
        return ensure(app, endpoints, Some("default"), obj).await;
    }
    app.db
        .guaranteed_update(&key, "endpoints", "kubernetes", |mut ep| {
            ep["subsets"] = subsets.clone();
            Ok(Some(ep))
        })
        .await
        .map(|_| ())
}
