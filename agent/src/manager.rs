//! The pod manager (the kubelet's config source + `HandlePodAdditions/Removals`):
//! watches the pods bound to this node, hands every update to that pod's worker (one
//! task per uid), and on start cleans up what the runtime and the pod dirs hold for
//! pods that no longer exist.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::podworker::{Deps, PodWorker};
use crate::termination;

struct Worker {
    updates: watch::Sender<Option<Pod>>,
    handle: JoinHandle<()>,
}

/// Routes pod updates to per-uid workers.
pub struct PodManager {
    deps: Deps,
    workers: HashMap<String, Worker>,
    finished: HashSet<String>,
    relist: Option<HashSet<String>>,
    cleaned_up: bool,
}

impl std::fmt::Debug for PodManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodManager").field("workers", &self.workers.len()).finish()
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl PodManager {
    /// A manager with no workers yet.
    pub fn new(deps: Deps) -> PodManager {
        PodManager { deps, workers: HashMap::new(), finished: HashSet::new(), relist: None, cleaned_up: false }
    }

    /// Watches `spec.nodeName=<node>` pods until `shutdown` resolves; workers are then
    /// stopped without touching their containers.
    pub async fn run(mut self, client: Client, shutdown: impl std::future::Future<Output = ()>) {
        let api: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.deps.config.node_name));
        let stream = watcher::watcher(api, cfg).default_backoff();
        futures::pin_mut!(stream);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = stream.next() => match event {
                    Some(Ok(event)) => self.handle(event).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed"),
                    None => break,
                },
            }
        }
        self.stop().await;
    }

    /// Applies one watch event.
    pub async fn handle(&mut self, event: Event<Pod>) {
        self.reap();
        match event {
            Event::Init => self.relist = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(uid_of(&pod));
                }
                self.dispatch(pod);
            }
            Event::InitDone => {
                let seen = self.relist.take().unwrap_or_default();
                let gone: Vec<String> = self.workers.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                for uid in gone {
                    self.remove(&uid);
                }
                if !self.cleaned_up {
                    self.cleaned_up = true;
                    self.cleanup_orphans(&seen).await;
                }
            }
            Event::Apply(pod) => self.dispatch(pod),
            Event::Delete(pod) => self.remove(&uid_of(&pod)),
        }
    }

    fn reap(&mut self) {
        let done: Vec<String> = self.workers.iter().filter(|(_, w)| w.handle.is_finished()).map(|(u, _)| u.clone()).collect();
        for uid in done {
            self.workers.remove(&uid);
            self.finished.insert(uid);
        }
    }

    fn dispatch(&mut self, pod: Pod) {
        let uid = uid_of(&pod);
        if uid.is_empty() || self.finished.contains(&uid) {
            return;
        }
        if let Some(w) = self.workers.get(&uid) {
            w.updates.send_replace(Some(pod));
            return;
        }
        tracing::info!(%uid, pod = ?pod.metadata.name, "starting pod worker");
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let worker = PodWorker::new(self.deps.clone(), pod);
        let handle = tokio::spawn(worker.run(rx));
        self.workers.insert(uid, Worker { updates: tx, handle });
    }

    fn remove(&mut self, uid: &str) {
        if let Some(w) = self.workers.get(uid) {
            w.updates.send_replace(None);
        }
    }

    /// Tears down runtime containers, netns and pod dirs of pods not in `live`.
    async fn cleanup_orphans(&mut self, live: &HashSet<String>) {
        let orphans = self.find_orphans(live).await;
        for uid in orphans {
            tracing::info!(%uid, "cleaning up leftovers of a pod that no longer exists");
            let d = self.deps.clone();
            self.finished.insert(uid.clone());
            tokio::spawn(async move {
                let grace = d.config.max_grace_period.min(std::time::Duration::from_secs(2));
                let pod = termination::PodRef { uid: &uid, namespace: "", name: "" };
                termination::cleanup_pod(d.runtime.as_ref(), d.cni.as_ref(), &d.config, pod, Vec::new(), grace).await;
            });
        }
    }

    async fn find_orphans(&self, live: &HashSet<String>) -> BTreeSet<String> {
        let mut uids = BTreeSet::new();
        match self.deps.runtime.list_containers().await {
            Ok(ids) => {
                for id in ids {
                    match self.deps.runtime.container_status(&id).await.ok().and_then(|s| s.annotations) {
                        Some(a) if a.contains_key("io.kubernetes.pod.uid") => {
                            uids.insert(a["io.kubernetes.pod.uid"].clone());
                        }
                        _ => tracing::debug!(container = %id, "not a kubelet container, ignored"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "runtime list failed; skipping container cleanup"),
        }
        let cfg = &self.deps.config;
        for entry in std::fs::read_dir(cfg.root_dir.join("pods")).into_iter().flatten().flatten() {
            uids.insert(entry.file_name().to_string_lossy().into_owned());
        }
        // The netns dir may be shared with other nodes' agents (a lab on one host), so a
        // netns alone never makes an orphan: only our runtime containers and pod dirs do.
        uids.retain(|u| !live.contains(u));
        uids
    }

    async fn stop(self) {
        // Dropping the senders ends each worker after its current step.
        let handles: Vec<JoinHandle<()>> = self.workers.into_values().map(|w| w.handle).collect();
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let wait = futures::future::join_all(handles);
        if tokio::time::timeout(std::time::Duration::from_secs(5), wait).await.is_err() {
            tracing::warn!("some pod workers did not stop within 5s; aborting them");
            aborts.iter().for_each(|a| a.abort());
        }
    }
}
