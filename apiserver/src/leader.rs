//! Leader election for the in-process controllers, as kube-controller-manager does
//! with `--leader-elect`: the holder of the coordination.k8s.io/v1 Lease
//! `kube-system/minion-controller-manager` runs them. The holder renews it every
//! couple of seconds with a compare-and-swap update; another API server takes it over
//! once the Lease record has not changed for `leaseDurationSeconds` of its own clock
//! (as client-go does: the holder's renewTime is never compared with this server's
//! wall clock). A leader that cannot renew within the renew deadline stops its
//! controllers at that moment, even while an etcd request is still hanging. With a
//! store only this server writes (SQLite) it always leads and no Lease is written.

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

/// The Lease record as last observed and when (on this server's monotonic clock) it
/// last changed, like client-go's `observedRecord`/`observedTime`.
#[derive(Debug, Clone)]
pub struct Observed {
    /// holderIdentity, renewTime and resourceVersion of the last Lease read.
    record: Option<(String, String, String)>,
    /// When `record` last changed.
    since: Instant,
}

impl Observed {
    /// Nothing observed yet, at `now`.
    pub fn new(now: Instant) -> Self {
        Observed { record: None, since: now }
    }

    /// Records the Lease read at `now`; the clock restarts only when it changed.
    pub fn see(&mut self, lease: Option<&Value>, now: Instant) {
        let record = lease.map(|l| {
            let field = |p: &str| l.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
            (field("/spec/holderIdentity"), field("/spec/renewTime"), field("/metadata/resourceVersion"))
        });
        if record != self.record {
            self.record = record;
            self.since = now;
        }
    }
}

/// Decides from the current Lease (None: absent), already passed to
/// [`Observed::see`], what `me` does at `now`: another holder's Lease expires
/// `leaseDurationSeconds` after this server last saw it change.
pub fn decide(lease: Option<&Value>, me: &str, observed: &Observed, now: Instant) -> Decision {
    let Some(lease) = lease else { return Decision::Create };
    let spec = lease.get("spec").cloned().unwrap_or(Value::Null);
    let holder = spec.get("holderIdentity").and_then(Value::as_str).unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let secs = spec.get("leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(LEASE_DURATION_SECS).max(0);
    if now.saturating_duration_since(observed.since) < Duration::from_secs(secs as u64) {
        Decision::Follow { holder: holder.to_string() }
    } else {
        Decision::TakeOver
    }
}

/// How long the next renewal round of a leader that last renewed at `last_renew`
/// may take at `now` (None: the renew deadline has passed, stop leading).
fn renew_budget(last_renew: Instant, now: Instant) -> Option<Duration> {
    let left = (last_renew + RENEW_DEADLINE).saturating_duration_since(now);
    (!left.is_zero()).then_some(left)
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

/// This server's leadership: the running controllers; dropping it while leading (when
/// the elector is aborted) stops them and gives the Lease up in the background (at
/// shutdown the election loop releases it itself and waits for that).
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
    let mut observed = Observed::new(Instant::now());
    let mut last_renew = Instant::now();
    let mut stop = app.shutdown.clone();
    loop {
        // A leader's round may not outlast its renew deadline (a hanging etcd request
        // would otherwise keep the controllers running after another server took over).
        let budget = if running.is_some() { renew_budget(last_renew, Instant::now()) } else { Some(RENEW_DEADLINE) };
        let round = match budget {
            Some(budget) => tokio::select! {
                _ = stop.changed() => break,
                round = tokio::time::timeout(budget, try_lead(&app, &me, &mut observed)) => {
                    round.unwrap_or_else(|_| Err(format!("no answer within {budget:?}")))
                }
            },
            None => Err("renew deadline passed".to_string()),
        };
        match round {
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
                if running.is_some() && renew_budget(last_renew, Instant::now()).is_none() {
                    tracing::warn!(identity = %me, "could not renew the controller lease in time; stopping controllers");
                    *running = None;
                }
            }
        }
        let pause = match running {
            Some(_) => renew_budget(last_renew, Instant::now()).map_or(Duration::ZERO, |left| left.min(RETRY_PERIOD)),
            None => RETRY_PERIOD,
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    // Shutdown: stop the controllers, then give the Lease up (bounded: `release`
    // gives up after 2 s) before returning. The release runs as its own task so that
    // it still completes if this loop is aborted while waiting for it.
    if running.take().is_some() {
        let releasing = tokio::spawn(async move { release(&app, &me).await });
        if let Err(e) = releasing.await {
            tracing::warn!(error = %e, "releasing the controller lease failed");
        }
    }
}

fn lease_key() -> Option<String> {
    resources::find("coordination.k8s.io", "leases").map(|r| r.key(Some(LEASE_NAMESPACE), LEASE_NAME))
}

/// One round: reads the Lease and creates/renews/takes it over; true when we hold it.
async fn try_lead(app: &AppState, me: &str, observed: &mut Observed) -> Result<bool, String> {
    let key = lease_key().ok_or("no leases resource")?;
    let current = app.db.get(&key).await.map_err(|e| e.to_string())?;
    observed.see(current.as_ref(), Instant::now());
    let decision = decide(current.as_ref(), me, observed, Instant::now());
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

    /// What `me` decides at `t0 + secs`, the Lease having been seen as it is at `t0`.
    fn decide_after(l: &Value, me: &str, t0: Instant, secs: u64) -> Decision {
        let mut seen = Observed::new(t0);
        seen.see(Some(l), t0);
        decide(Some(l), me, &seen, t0 + Duration::from_secs(secs))
    }

    #[test]
    fn absent_lease_is_created() {
        let now = Instant::now();
        assert_eq!(decide(None, "a", &Observed::new(now), now), Decision::Create);
        let l = next_lease(None, &Decision::Create, "a", at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(l["spec"]["holderIdentity"], "a");
        assert_eq!(l["spec"]["renewTime"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(l["metadata"]["name"], LEASE_NAME);
    }

    #[test]
    fn holder_renews_others_follow_until_expiry() {
        let t0 = Instant::now();
        let l = lease("a", "2026-01-01T00:00:00.000000Z");
        assert_eq!(decide_after(&l, "a", t0, 5), Decision::Renew);
        assert_eq!(decide_after(&l, "b", t0, 14), Decision::Follow { holder: "a".into() });
        assert_eq!(decide_after(&l, "b", t0, 16), Decision::TakeOver);
    }

    #[test]
    fn expiry_follows_the_local_clock_not_the_holders_renew_time() {
        let t0 = Instant::now();
        // The holder's clock runs an hour behind (or ahead of) ours: still live while
        // it keeps renewing, whatever its renewTime says.
        let mut seen = Observed::new(t0);
        let mut l = lease("a", "2020-01-01T00:00:00.000000Z");
        l["metadata"] = json!({"resourceVersion": "1"});
        seen.see(Some(&l), t0);
        for (i, secs) in [10u64, 20, 30].into_iter().enumerate() {
            l["spec"]["renewTime"] = json!(format!("2020-01-01T00:00:{secs}.000000Z"));
            l["metadata"]["resourceVersion"] = json!((i + 2).to_string());
            seen.see(Some(&l), t0 + Duration::from_secs(secs));
            assert_eq!(decide(Some(&l), "b", &seen, t0 + Duration::from_secs(secs + 14)), Decision::Follow { holder: "a".into() });
        }
        // A renewTime in the future does not keep a Lease alive that stopped changing.
        l["spec"]["renewTime"] = json!("2099-01-01T00:00:00.000000Z");
        l["metadata"]["resourceVersion"] = json!("9");
        seen.see(Some(&l), t0 + Duration::from_secs(40));
        // Reading the same record again does not restart the clock.
        seen.see(Some(&l), t0 + Duration::from_secs(50));
        assert_eq!(decide(Some(&l), "b", &seen, t0 + Duration::from_secs(54)), Decision::Follow { holder: "a".into() });
        assert_eq!(decide(Some(&l), "b", &seen, t0 + Duration::from_secs(55)), Decision::TakeOver);
    }

    #[test]
    fn released_or_garbled_lease_is_taken_over_or_waited_out() {
        assert_eq!(decide_after(&lease("", "2026-01-01T00:00:00Z"), "b", Instant::now(), 1), Decision::TakeOver);
        let garbled = lease("a", "not a time");
        assert_eq!(decide_after(&garbled, "b", Instant::now(), 1), Decision::Follow { holder: "a".into() });
        assert_eq!(decide_after(&garbled, "b", Instant::now(), 15), Decision::TakeOver);
    }

    #[test]
    fn renew_rounds_are_bounded_by_the_renew_deadline() {
        let t0 = Instant::now();
        assert_eq!(renew_budget(t0, t0), Some(RENEW_DEADLINE));
        assert_eq!(renew_budget(t0, t0 + Duration::from_secs(7)), Some(RENEW_DEADLINE - Duration::from_secs(7)));
        assert_eq!(renew_budget(t0, t0 + RENEW_DEADLINE), None);
        assert_eq!(renew_budget(t0, t0 + Duration::from_secs(60)), None);
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
