//! Leader election for the in-process controllers, as kube-controller-manager does
//! with `--leader-elect`: the holder of the coordination.k8s.io/v1 Lease
//! `kube-system/minion-controller-manager` runs them. The holder renews it every
//! couple of seconds with a compare-and-swap update; another API server takes it over
//! once `renewTime + leaseDurationSeconds` has passed. With a store only this server
//! writes (SQLite) it always leads and no Lease is written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::resources;
use crate::server::AppState;
use crate::store::object_revision;

/// Namespace of the Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Name of the Lease.
pub const LEASE_NAME: &str = "minion-controller-manager";
/// `spec.leaseDurationSeconds`.
pub const LEASE_DURATION_SECS: i64 = 15;
/// How often the leader renews and candidates retry.
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// A leader that could not renew for this long stops its controllers.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// Decides from the current Lease (None: absent) what `me` does at `now`.
pub fn decide(lease: Option<&Value>, me: &str, now: DateTime<Utc>) -> Decision {
    let Some(lease) = lease else { return Decision::Create };
    let spec = lease.get("spec").cloned().unwrap_or(Value::Null);
    let holder = spec.get("holderIdentity").and_then(Value::as_str).unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec.get("leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(LEASE_DURATION_SECS);
    let renewed = spec
        .get("renewTime")
        .or_else(|| spec.get("acquireTime"))
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    match renewed {
        Some(t) if t + chrono::Duration::seconds(duration) > now => Decision::Follow { holder: holder.to_string() },
        _ => Decision::TakeOver,
    }
}

/// A Kubernetes MicroTime.
fn micro_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The Lease after `decision` by `me` at `now` (None for Follow).
pub fn next_lease(current: Option<&Value>, decision: &Decision, me: &str, now: DateTime<Utc>) -> Option<Value> {
    let stamp = micro_time(now);
    match decision {
        Decision::Follow { .. } => None,
        Decision::Create => Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": me, "leaseDurationSeconds": LEASE_DURATION_SECS,
                     "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
        })),
        Decision::Renew | Decision::TakeOver => {
            let mut lease = current.cloned().unwrap_or_else(|| json!({}));
            let spec = lease.as_object_mut().map(|m| m.entry("spec").or_insert_with(|| json!({})));
            let Some(Value::Object(spec)) = spec else { return None };
            if *decision == Decision::TakeOver {
                let transitions = spec.get("leaseTransitions").and_then(Value::as_i64).unwrap_or(0);
                spec.insert("leaseTransitions".into(), json!(transitions + 1));
                spec.insert("acquireTime".into(), json!(stamp));
            }
            spec.insert("holderIdentity".into(), json!(me));
            spec.insert("leaseDurationSeconds".into(), json!(LEASE_DURATION_SECS));
            spec.insert("renewTime".into(), json!(stamp));
            Some(lease)
        }
    }
}

/// A unique identity for this API server (`<host>_<listen address>_<random>`).
pub fn identity(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}_{listen}_{}", host.trim(), &id[..8])
}

/// Aborts the controllers when leadership ends or the elector itself is aborted.
struct Running(Vec<JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Starts the controllers: at once when this server is the only writer, else behind
/// the Lease. Aborting the returned handles stops everything.
pub fn spawn(app: Arc<AppState>, me: String) -> Vec<JoinHandle<()>> {
    if !app.db.shared() {
        return crate::controllers::spawn_all(app);
    }
    vec![tokio::spawn(elect(app, me))]
}

/// This server's leadership: the running controllers; dropping it while leading (at
/// shutdown, or when the elector is aborted) stops them and gives the Lease up.
struct Leadership {
    app: Arc<AppState>,
    me: String,
    running: Option<Running>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.running.take().is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (app, me) = (self.app.clone(), self.me.clone());
            rt.spawn(async move { release(&app, &me).await });
        }
    }
}

/// The election loop.
async fn elect(app: Arc<AppState>, me: String) {
    let mut leadership = Leadership { app: app.clone(), me: me.clone(), running: None };
    let running = &mut leadership.running;
    let mut last_renew = Instant::now();
    let mut stop = app.shutdown.clone();
    loop {
        match try_lead(&app, &me).await {
            Ok(true) => {
                last_renew = Instant::now();
                if running.is_none() {
                    tracing::info!(identity = %me, lease = LEASE_NAME, "became leader; starting controllers");
                    *running = Some(Running(crate::controllers::spawn_all(app.clone())));
                }
            }
            Ok(false) => {
                if running.take().is_some() {
                    tracing::warn!(identity = %me, "lost the controller lease; stopping controllers");
                }
            }
            Err(e) => {
                tracing::warn!(identity = %me, error = %e, "controller lease renewal failed");
                if running.is_some() && last_renew.elapsed() > RENEW_DEADLINE {
                    tracing::warn!(identity = %me, "could not renew the controller lease in time; stopping controllers");
                    *running = None;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
        }
    }
}

fn lease_key() -> Option<String> {
    resources::find("coordination.k8s.io", "leases").map(|r| r.key(Some(LEASE_NAMESPACE), LEASE_NAME))
}

/// One round: reads the Lease and creates/renews/takes it over; true when we hold it.
async fn try_lead(app: &AppState, me: &str) -> Result<bool, String> {
    let key = lease_key().ok_or("no leases resource")?;
    let current = app.db.get(&key).await.map_err(|e| e.to_string())?;
    let decision = decide(current.as_ref(), me, Utc::now());
    let Some(next) = next_lease(current.as_ref(), &decision, me, Utc::now()) else { return Ok(false) };
    if decision == Decision::Create {
        let res = resources::find("coordination.k8s.io", "leases").ok_or("no leases resource")?;
        return match crate::handlers::create_object(app, res, Some(LEASE_NAMESPACE), next).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e.message),
        };
    }
    let rev = current.as_ref().map(object_revision);
    match app.db.update(&key, next, rev).await {
        Ok(_) => Ok(true),
        Err(crate::store::StoreError::Conflict { .. } | crate::store::StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Gives the Lease up at shutdown so another server takes over at once.
async fn release(app: &AppState, me: &str) {
    let Some(key) = lease_key() else { return };
    let released = app.db.guaranteed_update(&key, "leases", LEASE_NAME, |mut lease| {
        if lease.pointer("/spec/holderIdentity").and_then(Value::as_str) != Some(me) {
            return Ok(None);
        }
        lease["spec"]["holderIdentity"] = json!("");
        Ok(Some(lease))
    });
    if tokio::time::timeout(Duration::from_secs(2), released).await.is_err() {
        tracing::warn!("releasing the controller lease timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn lease(holder: &str, renew: &str) -> Value {
        json!({"spec": {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": 15, "leaseTransitions": 2}})
    }

    #[test]
    fn absent_lease_is_created() {
        assert_eq!(decide(None, "a", Utc::now()), Decision::Create);
        let l = next_lease(None, &Decision::Create, "a", at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(l["spec"]["holderIdentity"], "a");
        assert_eq!(l["spec"]["renewTime"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(l["metadata"]["name"], LEASE_NAME);
    }

    #[test]
    fn holder_renews_others_follow_until_expiry() {
        let l = lease("a", "2026-01-01T00:00:00.000000Z");
        assert_eq!(decide(Some(&l), "a", at("2026-01-01T00:00:05Z")), Decision::Renew);
        assert_eq!(decide(Some(&l), "b", at("2026-01-01T00:00:14Z")), Decision::Follow { holder: "a".into() });
        assert_eq!(decide(Some(&l), "b", at("2026-01-01T00:00:16Z")), Decision::TakeOver);
    }

    #[test]
    fn released_or_garbled_lease_is_taken_over() {
        assert_eq!(decide(Some(&lease("", "2026-01-01T00:00:00Z")), "b", at("2026-01-01T00:00:01Z")), Decision::TakeOver);
        assert_eq!(decide(Some(&lease("a", "not a time")), "b", at("2026-01-01T00:00:01Z")), Decision::TakeOver);
    }

    #[test]
    fn take_over_counts_transitions_and_keeps_metadata() {
        let mut l = lease("a", "2026-01-01T00:00:00Z");
        l["metadata"] = json!({"name": LEASE_NAME, "resourceVersion": "9"});
        let next = next_lease(Some(&l), &Decision::TakeOver, "b", at("2026-01-01T00:01:00Z")).unwrap();
        assert_eq!(next["spec"]["holderIdentity"], "b");
        assert_eq!(next["spec"]["leaseTransitions"], 3);
        assert_eq!(next["metadata"]["resourceVersion"], "9");
        let renewed = next_lease(Some(&next), &Decision::Renew, "b", at("2026-01-01T00:01:02Z")).unwrap();
        assert_eq!(renewed["spec"]["leaseTransitions"], 3);
        assert!(next_lease(Some(&l), &Decision::Follow { holder: "a".into() }, "b", Utc::now()).is_none());
    }
}
