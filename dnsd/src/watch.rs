//! Feeding the zone from the API server: kube-runtime reflectors on Namespaces,
//! Services and Endpoints (list + watch); after every change the whole [`Records`]
//! snapshot is rebuilt and swapped in atomically, as CoreDNS's kubernetes plugin does
//! from its informer caches. Until all three lists are complete the placeholder
//! snapshot stays in place (SERVFAIL for in-zone names).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;

use crate::build::build_records;
use crate::records::{Records, Zone};

/// Which watch an event came from and whether it changed the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Namespaces { list_done: bool },
    Services { list_done: bool },
    Endpoints { list_done: bool },
    Nothing,
}

/// Watches Namespaces, and Services and Endpoints in all namespaces, and keeps
/// `records` current. Returns only when the watch streams end (they retry with
/// backoff on errors).
pub async fn watch_records(client: Client, zone: Zone, records: Arc<ArcSwap<Records>>) {
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let ns_events = changes(
        reflector::reflector(ns_writer, minion_client::watch_all::<Namespace>(&client)),
        |d| Change::Namespaces { list_done: d },
    );
    let (services, svc_writer) = reflector::store::<Service>();
    let (endpoints, ep_writer) = reflector::store::<Endpoints>();
    let svc_events = changes(
        reflector::reflector(svc_writer, minion_client::watch_all::<Service>(&client)),
        |d| Change::Services { list_done: d },
    );
    let ep_events = changes(
        reflector::reflector(ep_writer, minion_client::watch_all::<Endpoints>(&client)),
        |d| Change::Endpoints { list_done: d },
    );
    let mut events =
        futures::stream::select_all([ns_events.boxed(), svc_events.boxed(), ep_events.boxed()]);
    let mut listed = (false, false, false);
    let mut serial = records.load().soa_serial();
    while let Some(change) = events.next().await {
        match change {
            Change::Services { list_done } => listed.0 |= list_done,
            Change::Endpoints { list_done } => listed.1 |= list_done,
            Change::Namespaces { list_done } => listed.2 |= list_done,
            Change::Nothing => continue,
        }
        // Until every list is complete a rebuild would drop names that exist.
        if listed.0 && listed.1 && listed.2 {
            serial = next_serial(serial);
            let snapshot = rebuild(&zone, serial, &namespaces, &services, &endpoints);
            tracing::debug!(names = snapshot.len(), serial, "cluster DNS zone rebuilt");
            records.store(Arc::new(snapshot));
        }
    }
    tracing::warn!("Service/Endpoints watches ended");
}


/// Maps reflector events to [`Change`]s, logging watch errors.
fn changes<K, S>(
    stream: S,
    tag: impl Fn(bool) -> Change + Send + 'static,
) -> impl Stream<Item = Change> + Send
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
    K: Send,
{
    stream.map(move |event| match event {
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => tag(false),
        Ok(watcher::Event::InitDone) => tag(true),
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Change::Nothing,
        Err(error) => {
            tracing::warn!(%error, "watch error (retrying)");
            Change::Nothing
        }
    })
}

fn rebuild(
    zone: &Zone,
    serial: u32,
    namespaces: &Store<Namespace>,
    services: &Store<Service>,
    endpoints: &Store<Endpoints>,
) -> Records {
    let namespaces = namespaces.state();
    let services = services.state();
    let endpoints = endpoints.state();
    build_records(
        zone,
        serial,
        namespaces.iter().filter_map(|n| n.metadata.name.as_deref()),
        services.iter().map(|s| s.as_ref()),
        endpoints.iter().map(|e| e.as_ref()),
    )
}

/// The SOA serial for the next snapshot: the current Unix time, always increasing.
pub fn next_serial(previous: u32) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0);
    now.max(previous.wrapping_add(1))
}
