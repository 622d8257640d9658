//! ClusterIP repair (kube-apiserver's `repair` loop for the service IP allocator): on
//! a shared store each allocated ClusterIP is a record `/registry/ranges/serviceips/<ip>`
//! (see [`crate::ipalloc::shared`]). A server that dies between recording an address
//! and creating its Service, or a failed release, leaves a record no Service holds, and
//! that address would never be handed out again. This controller deletes such records
//! once they are older than [`GRACE`], so a create still in flight keeps its claim.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::error::ApiError;
use crate::ipalloc::shared::CLAIM_PREFIX;
use crate::objects::name;
use crate::server::AppState;
use crate::store::{object_revision, StoreError};

/// How old an unowned record must be before it is deleted.
pub const GRACE: Duration = Duration::seconds(60);

/// The ClusterIPs (`spec.clusterIP` and `spec.clusterIPs`) of `services`.
pub fn held_ips(services: &[Value]) -> HashSet<String> {
    let mut ips = HashSet::new();
    for svc in services {
        let spec = &svc["spec"];
        ips.extend(spec["clusterIP"].as_str().map(str::to_string));
        ips.extend(spec["clusterIPs"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string));
    }
    ips
}

/// Whether `claim` holds an address no Service has, for longer than [`GRACE`]. A record
/// without `claimedAt` (written before it existed) counts as old.
pub fn is_stale(claim: &Value, held: &HashSet<String>, now: DateTime<Utc>) -> bool {
    if held.contains(name(claim)) {
        return false;
    }
    match claim["claimedAt"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(at) => now - at.with_timezone(&Utc) > GRACE,
        None => true,
    }
}

/// One pass: deletes stale records (quorum reads; a record changed since it was read
/// is left for the next pass).
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    if !app.db.shared() {
        return Ok(());
    }
    let internal = |e: StoreError| ApiError::internal(e.to_string());
    let (claims, _) = app.db.list(CLAIM_PREFIX).await.map_err(internal)?;
    if claims.is_empty() {
        return Ok(());
    }
    // Services are read after the claims: a claim whose Service committed in between
    // is seen as held.
    let (services, _) = app.db.list("/registry/services/").await.map_err(internal)?;
    let held = held_ips(&services);
    let now = Utc::now();
    for claim in claims.iter().filter(|c| is_stale(c, &held, now)) {
        let ip = name(claim);
        let key = format!("{CLAIM_PREFIX}{ip}");
        match app.db.delete(&key, Some(object_revision(claim))).await {
            Ok(_) => {
                tracing::info!(ip, "released a ClusterIP no Service holds");
                app.ips().release(ip);
            }
            Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_old_unowned_records_are_stale() {
        let held = held_ips(&[json!({"spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"]}})]);
        let now = Utc::now();
        let old = (now - Duration::seconds(120)).to_rfc3339();
        let fresh = (now - Duration::seconds(5)).to_rfc3339();
        let claim = |ip: &str, at: Option<&str>| match at {
            Some(at) => json!({"metadata": {"name": ip}, "claimedAt": at}),
            None => json!({"metadata": {"name": ip}}),
        };
        assert!(!is_stale(&claim("10.96.0.20", Some(&old)), &held, now), "held by a Service");
        assert!(is_stale(&claim("10.96.0.21", Some(&old)), &held, now), "orphaned long ago");
        assert!(!is_stale(&claim("10.96.0.22", Some(&fresh)), &held, now), "a create may be in flight");
        assert!(is_stale(&claim("10.96.0.23", None), &held, now), "a record from before claimedAt");
    }
}
