//! The etcd watch behind API watches: one etcd watch over the whole prefix (with
//! prev_kv, so deletions carry the last state) feeds the shared [`History`], and a
//! dedicated etcd watch replays from an older revision when the history does not
//! reach back far enough.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType as EtcdEventType, WatchClient, WatchOptions, WatchResponse};
use tokio::sync::{broadcast, mpsc};

use super::{decode, KeyMap, Shared, MAX_MESSAGE};
use crate::store::{set_revision, Event, EventType, Revision, HISTORY_LIMIT};

/// Pause before re-establishing a broken etcd watch.
const RETRY: Duration = Duration::from_millis(500);

/// Converts one etcd watch event into a store event (None: outside the prefix or
/// undecodable).
pub(super) fn convert(keys: &KeyMap, ev: &etcd_client::Event) -> Option<Event> {
    let kv = ev.kv()?;
    let key = keys.from_etcd(kv.key())?;
    let rev = kv.mod_revision().max(0) as Revision;
    let prev = ev.prev_kv().and_then(|p| decode(&key, p).ok());
    match ev.event_type() {
        EtcdEventType::Put => {
            let object = decode(&key, kv).map_err(|e| tracing::warn!(error = %e, "skipping undecodable etcd value")).ok()?;
            let kind = if kv.version() == 1 { EventType::Added } else { EventType::Modified };
            Some(Event::new(rev, kind, key, object, prev))
        }
        EtcdEventType::Delete => {
            let Some(prev) = prev else {
                tracing::warn!(key = %key, rev, "etcd delete event without its previous value; skipped");
                return None;
            };
            let mut object = prev.clone();
            set_revision(&mut object, rev);
            Some(Event::new(rev, EventType::Deleted, key, object, Some(prev)))
        }
    }
}

/// Keeps one etcd watch on the whole prefix running for the store's lifetime, pushing
/// every event into the history in revision order.
pub(super) async fn run(client: Client, keys: KeyMap, shared: Arc<Shared>, mut progress: mpsc::Receiver<()>) {
    loop {
        let from = shared.lock().rev + 1;
        let opts = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from as i64);
        let mut watch_client = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let mut stream = match watch_client.watch(keys.all(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the etcd watch; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                asked = progress.recv() => {
                    if asked.is_none() {
                        return;
                    }
                    if let Err(e) = stream.request_progress().await {
                        tracing::debug!(error = %e, "etcd progress request failed");
                    }
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if !apply(&keys, &shared, resp) {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch broke; re-watching");
                        break;
                    }
                },
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Applies one watch response; false when the watch was canceled.
fn apply(keys: &KeyMap, shared: &Shared, resp: WatchResponse) -> bool {
    if resp.canceled() {
        if resp.compact_revision() > 0 {
            // Events were compacted before this server saw them: watches from before
            // this point cannot be served from the history any more.
            tracing::error!(compacted = resp.compact_revision(), "etcd compacted past the watch cache; events lost");
            let mut state = shared.lock();
            state.rev = state.rev.max(resp.compact_revision().max(0) as Revision - 1);
        } else {
            tracing::warn!(reason = resp.cancel_reason(), "etcd canceled the watch");
        }
        return false;
    }
    let mut state = shared.lock();
    if resp.events().is_empty() {
        // A progress notification: nothing up to the header revision is pending.
        if !resp.created() {
            if let Some(h) = resp.header() {
                state.rev = state.rev.max(h.revision().max(0) as Revision);
            }
        }
    }
    for ev in resp.events() {
        let rev = ev.kv().map(|kv| kv.mod_revision().max(0) as Revision).unwrap_or(0);
        if rev <= state.rev {
            continue;
        }
        if let Some(event) = convert(keys, ev) {
            match event.kind {
                EventType::Deleted => state.cache.remove(&event.key),
                _ => state.cache.insert(event.key.clone(), Arc::new(event.object.clone())),
            };
            state.history.push(event);
        }
        state.rev = rev;
    }
    drop(state);
    shared.advanced.notify_all();
    true
}

/// Why a replay watch could not start.
#[derive(Debug)]
pub(super) enum ReplayError {
    /// The revision was compacted; the oldest one etcd still has.
    Compacted(Revision),
    Etcd(String),
}

/// Starts an etcd watch under `prefix` after revision `from` feeding a fresh channel;
/// it stops once every receiver is gone.
pub(super) async fn replay(
    mut watch: WatchClient,
    keys: KeyMap,
    prefix: String,
    from: Revision,
) -> Result<broadcast::Receiver<Arc<Event>>, ReplayError> {
    let opts = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from as i64 + 1);
    let mut stream = watch.watch(keys.to_etcd(&prefix), Some(opts)).await.map_err(|e| ReplayError::Etcd(e.to_string()))?;
    let first = stream.message().await.map_err(|e| ReplayError::Etcd(e.to_string()))?;
    let Some(first) = first else { return Err(ReplayError::Etcd("etcd closed the watch".into())) };
    if first.canceled() {
        return Err(match first.compact_revision() {
            c if c > 0 => ReplayError::Compacted(c as Revision),
            _ => ReplayError::Etcd(format!("watch canceled: {}", first.cancel_reason())),
        });
    }
    let (tx, rx) = broadcast::channel(HISTORY_LIMIT);
    forward(&keys, &tx, &first);
    tokio::spawn(async move {
        let mut check = tokio::time::interval(Duration::from_secs(5));
        loop {
            if tx.receiver_count() == 0 {
                return;
            }
            tokio::select! {
                _ = check.tick() => {}
                msg = stream.message() => match msg {
                    Ok(Some(resp)) if !resp.canceled() => forward(&keys, &tx, &resp),
                    _ => return,
                },
            }
        }
    });
    Ok(rx)
}

fn forward(keys: &KeyMap, tx: &broadcast::Sender<Arc<Event>>, resp: &WatchResponse) {
    for ev in resp.events() {
        if let Some(event) = convert(keys, ev) {
            let _ = tx.send(Arc::new(event));
        }
    }
}
