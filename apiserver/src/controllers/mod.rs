//! In-process controllers (what kube-controller-manager and kube-scheduler do:
//! scheduler, endpoints, node lifecycle, ReplicaSets, Deployments, garbage collection):
//! each is level-triggered, woken by store events under the prefixes it cares about
//! and by a periodic resync, and reconciles the whole state each time.

pub mod endpoints;
pub mod endpointslices;
pub mod gc;
pub mod ipallocrepair;
pub mod namespaces;
pub mod nodes;
pub mod owners;
pub mod replicasets;
pub mod scheduler;
pub mod serviceaccounts;
pub mod deployments;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::resources;
use crate::server::AppState;

type Reconcile = fn(Arc<AppState>) -> BoxFuture<'static, Result<(), ApiError>>;

/// Starts every controller; the handles are aborted at shutdown.
pub fn spawn_all(app: Arc<AppState>) -> Vec<JoinHandle<()>> {
    vec![
        scheduler::spawn(app.clone()),
        spawn(app.clone(), "endpoints", &["/registry/pods/", "/registry/services/", "/registry/endpoints/", "/registry/endpointslices/"],
            Duration::from_secs(30), |a| Box::pin(async move { endpoints::reconcile(&a).await })),
        spawn(app.clone(), "node-lifecycle", &["/registry/nodes/"], Duration::from_secs(5), |a| {
            Box::pin(async move { nodes::reconcile(&a).await })
        }),
        spawn(app.clone(), "replicaset", &["/registry/pods/", "/registry/replicasets/"], Duration::from_secs(30), |a| {
            Box::pin(async move { replicasets::reconcile(&a).await })
        }),
        spawn(app.clone(), "deployment", &["/registry/deployments/", "/registry/replicasets/"], Duration::from_secs(30), |a| {
            Box::pin(async move { deployments::reconcile(&a).await })
        }),
        spawn(app.clone(), "serviceaccount", &["/registry/namespaces/", "/registry/serviceaccounts/"], Duration::from_secs(60), |a| {
            Box::pin(async move { serviceaccounts::reconcile(&a).await })
        }),
        spawn(app.clone(), "namespace", &["/registry/namespaces/", "/registry/pods/"], Duration::from_secs(5), |a| {
            Box::pin(async move { namespaces::reconcile(&a).await })
        }),
        spawn(app.clone(), "garbage-collector", &[], Duration::from_secs(60), |a| {
            Box::pin(async move { gc::reconcile(&a).await })
        }),
        spawn(app, "clusterip-repair", &[], Duration::from_secs(60), |a| {
            Box::pin(async move { ipallocrepair::reconcile(&a).await })
        }),
    ]
}

fn spawn(app: Arc<AppState>, name: &'static str, prefixes: &'static [&'static str], period: Duration, f: Reconcile) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sub = match app.db.watch("/registry/", Some(app.db.revision())).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(controller = name, error = %e, "cannot watch the store; controller stopped");
                return;
            }
        };
        let mut stop = app.shutdown.clone();
        let mut ticker = tokio::time::interval(period);
        loop {
            if let Err(e) = f(app.clone()).await {
                tracing::warn!(controller = name, error = %e, "reconcile failed");
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
                woke = wait_relevant(&mut sub.rx, prefixes) => if !woke { return },
            }
            // Coalesce a burst of events into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = sub.rx.try_recv() {}
        }
    })
}

async fn wait_relevant(rx: &mut tokio::sync::broadcast::Receiver<Arc<crate::store::Event>>, prefixes: &[&str]) -> bool {
    loop {
        match rx.recv().await {
            Ok(ev) if prefixes.iter().any(|p| ev.key.starts_with(p)) => return true,
            // No prefixes: woken by deletions (the garbage collector).
            Ok(ev) if prefixes.is_empty() && (ev.kind == crate::store::EventType::Deleted || workloads::deleting(&ev.object)) => return true,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return true,
            Err(RecvError::Closed) => return false,
        }
    }
}

/// Lists every object of a resource (shared, not copied: controllers list often).
pub async fn list_all(app: &AppState, group: &str, plural: &str, ns: Option<&str>) -> Result<Vec<Arc<Value>>, ApiError> {
    let res = resources::find(group, plural).ok_or_else(|| ApiError::internal(format!("no resource {plural}")))?;
    let (items, _) = app.db.list_shared(&res.prefix(ns)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(items)
}

/// The pods of each namespace in `namespaces`, one list per namespace: a controller
/// that cares only about the namespaces holding its own objects (Services,
/// ReplicaSets) never walks the pods of the others on every event.
pub async fn pods_by_namespace(
    app: &AppState,
    namespaces: Vec<String>,
) -> Result<std::collections::HashMap<String, Vec<Arc<Value>>>, ApiError> {
    let mut out = std::collections::HashMap::new();
    for ns in namespaces {
        if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(ns) {
            let pods = list_all(app, "", "pods", Some(slot.key())).await?;
            slot.insert(pods);
        }
    }
    Ok(out)
}
