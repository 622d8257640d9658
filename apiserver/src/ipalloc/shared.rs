//! ClusterIP allocation when several API servers share one store (etcd): each
//! allocated address is also recorded as a key `/registry/ranges/serviceips/<ip>`
//! created only if absent (the role of kube-apiserver's allocation bitmap in etcd), so
//! two servers never hand out the same address. The in-memory allocator only proposes
//! candidates: it is reloaded from the recorded keys before each Service create.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::objects::{self, set_cluster_ip, str_at};
use crate::server::AppState;
use crate::store::StoreError;

/// Where allocated ClusterIPs are recorded.
pub const CLAIM_PREFIX: &str = "/registry/ranges/serviceips/";

/// Most candidates tried when other servers keep taking them first.
const MAX_TRIES: usize = 64;

/// The key recording `ip`.
pub fn claim_key(ip: &str) -> String {
    format!("{CLAIM_PREFIX}{ip}")
}

/// Before a Service is defaulted on a shared store: reloads the local allocator from
/// the recorded addresses. Returns whether the Service asks for a specific address.
pub async fn prepare(app: &AppState, kind: &str, obj: &Value) -> Result<bool, ApiError> {
    let explicit = !str_at(obj, "/spec/clusterIP").is_empty();
    if kind != "Service" || !app.db.shared() {
        return Ok(explicit);
    }
    let (claims, _) = app.db.list(CLAIM_PREFIX).await.map_err(|e| ApiError::internal(e.to_string()))?;
    app.ips().set_used(claims.iter().map(objects::name));
    Ok(explicit)
}

/// After the local pick: records it in the store; when another server recorded it
/// first, picks the next free one (or, for a requested address, reports it taken).
pub async fn claim(app: &AppState, svc: &mut Value, allocated: Option<String>, explicit: bool) -> Result<Option<String>, ApiError> {
    let Some(mut ip) = allocated else { return Ok(None) };
    if !app.db.shared() {
        return Ok(Some(ip));
    }
    let name = objects::name(svc).to_string();
    let owner = format!("{}/{name}", objects::namespace(svc));
    for _ in 0..MAX_TRIES {
        let record = json!({"metadata": {"name": ip}, "service": owner, "claimedAt": chrono::Utc::now().to_rfc3339()});
        match app.db.create(&claim_key(&ip), record).await {
            Ok(_) => return Ok(Some(ip)),
            Err(StoreError::AlreadyExists { .. }) if !explicit => {
                // Stays marked in the local allocator; try the next one.
                let next = app.ips().allocate_next().map_err(|e| {
                    ApiError::invalid("Service", &name, &format!("spec.clusterIP: Invalid value: \"\": {e}"))
                })?;
                ip = next.to_string();
                set_cluster_ip(svc, &ip);
            }
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(ApiError::invalid(
                    "Service",
                    &name,
                    &format!("spec.clusterIP: Invalid value: \"{ip}\": provided IP {ip} is already allocated"),
                ))
            }
            Err(e) => {
                app.ips().release(&ip);
                return Err(ApiError::internal(e.to_string()));
            }
        }
    }
    app.ips().release(&ip);
    Err(ApiError::internal(format!("could not allocate a ClusterIP for {owner} after {MAX_TRIES} tries")))
}

/// Drops the record of `ip` (Service deleted or its create failed).
pub async fn release(app: &AppState, ip: &str) {
    if !app.db.shared() || ip.is_empty() || ip == "None" {
        return;
    }
    match app.db.delete(&claim_key(ip), None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => tracing::warn!(ip, error = %e, "cannot release the ClusterIP record"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_keys_live_under_the_registry() {
        assert_eq!(claim_key("10.96.0.11"), "/registry/ranges/serviceips/10.96.0.11");
    }
}
