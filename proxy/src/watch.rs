//! kube-proxy's informers: kube-runtime reflectors on Services, Endpoints and — when
//! the API server serves discovery.k8s.io/v1 — EndpointSlices, in all namespaces.
//! A Service with EndpointSlices is proxied from them, the others from their
//! Endpoints. Each change wakes the sync loop through a `Notify`; the loop reads the
//! reflector stores to build a `Snapshot`.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::model::Snapshot;

/// The reflector caches and the tasks feeding them.
#[derive(Debug)]
pub struct Informers {
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    slices: Option<Store<EndpointSlice>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Whether the API server serves EndpointSlices (a 404 on listing them: no).
pub async fn serves_endpoint_slices(client: &Client) -> bool {
    let api = Api::<EndpointSlice>::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(error) => {
            tracing::warn!(%error, "cannot tell whether EndpointSlices are served; using Endpoints");
            false
        }
    }
}

impl Informers {
    /// Starts watching; `changed` is notified after every applied event.
    /// With `slices`, EndpointSlices are watched too.
    pub fn start(client: &Client, changed: Arc<Notify>, slices: bool) -> Self {
        let (services, svc_writer) = reflector::store::<Service>();
        let (endpoints, ep_writer) = reflector::store::<Endpoints>();
        let mut tasks = vec![
            spawn_drain(
                "services",
                reflector::reflector(svc_writer, minion_client::watch_all::<Service>(client)),
                changed.clone(),
            ),
            spawn_drain(
                "endpoints",
                reflector::reflector(ep_writer, minion_client::watch_all::<Endpoints>(client)),
                changed.clone(),
            ),
        ];
        let slices = slices.then(|| {
            let (store, writer) = reflector::store::<EndpointSlice>();
            tasks.push(spawn_drain(
                "endpointslices",
                reflector::reflector(writer, minion_client::watch_all::<EndpointSlice>(client)),
                changed,
            ));
            store
        });
        Self {
            services,
            endpoints,
            slices,
            tasks,
        }
    }

    /// Waits until both initial lists are complete (a sync before would delete the
    /// rules of Services not yet seen). Errors if a watch task ended.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.services.wait_until_ready().await?;
        self.endpoints.wait_until_ready().await?;
        if let Some(slices) = &self.slices {
            slices.wait_until_ready().await?;
        }
        Ok(())
    }

    /// The current contents of both caches.
    pub fn snapshot(&self) -> Snapshot {
        let slices: Vec<EndpointSlice> = self
            .slices
            .iter()
            .flat_map(|s| s.state())
            .map(|s| s.as_ref().clone())
            .collect();
        let mut snap = Snapshot {
            services: self
                .services
                .state()
                .iter()
                .map(|s| s.as_ref().clone())
                .collect(),
            endpoints: self
                .endpoints
                .state()
                .iter()
                .map(|e| e.as_ref().clone())
                .collect(),
        };
        if !slices.is_empty() {
            snap.endpoints = crate::model::merge_endpoints(snap.endpoints, &slices);
        }
        snap
    }
}

impl Drop for Informers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}


fn spawn_drain<K, S>(what: &'static str, stream: S, changed: Arc<Notify>) -> JoinHandle<()>
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                ) => changed.notify_one(),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(error) => tracing::warn!(%error, what, "watch error (retrying)"),
            }
        }
        tracing::warn!(what, "watch ended");
    })
}
