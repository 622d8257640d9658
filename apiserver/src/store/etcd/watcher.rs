//! The etcd watch behind API watches: one etcd watch over the whole prefix (with
//! prev_kv, so deletions carry the last state) feeds the shared [`History`], and a
//! dedicated etcd watch replays from an older revision when the history does not
//! reach back far enough.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use etcd_client::{Client, EventType as EtcdEventType, GetOptions, WatchClient, WatchOptions, WatchResponse};
use tokio::sync::{broadcast, mpsc, watch};

use super::{decode, header_revision, KeyMap, Shared, State, MAX_MESSAGE};
use crate::store::{set_revision, Event, EventType, History, Revision, HISTORY_LIMIT};

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

/// What the shared watch does after one etcd response.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep reading the stream.
    Continue,
    /// The watch ended: start it again from the last revision seen.
    Rewatch,
    /// Events were compacted before this server saw them: re-list, then watch.
    Relist,
}

/// Keeps one etcd watch on the whole prefix running for the store's lifetime, pushing
/// every event into the history in revision order. When etcd compacted events this
/// server never saw, it re-lists like a reflector (see [`relist`]). While `pause`
/// holds true (a test hook) the watch is dropped, as a broken connection would be.
pub(super) async fn run(
    client: Client,
    keys: KeyMap,
    shared: Arc<Shared>,
    mut progress: mpsc::Receiver<()>,
    mut pause: watch::Receiver<bool>,
) {
    let mut must_relist = false;
    loop {
        let resumed = pause.wait_for(|paused| !*paused).await.is_ok();
        if !resumed {
            return;
        }
        set_held(&shared, false);
        if must_relist {
            if let Err(e) = relist(&client, &keys, &shared).await {
                tracing::warn!(error = %e, "cannot re-list etcd after compaction; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            must_relist = false;
        }
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
        let next = loop {
            tokio::select! {
                asked = progress.recv() => {
                    if asked.is_none() {
                        return;
                    }
                    if let Err(e) = stream.request_progress().await {
                        tracing::debug!(error = %e, "etcd progress request failed");
                    }
                }
                paused = async { pause.wait_for(|paused| *paused).await.is_ok() } => {
                    if !paused {
                        return;
                    }
                    drop(stream);
                    set_held(&shared, true);
                    break None;
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => match apply(&keys, &shared, resp) {
                        Next::Continue => {}
                        other => break Some(other),
                    },
                    Ok(None) => break Some(Next::Rewatch),
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch broke; re-watching");
                        break Some(Next::Rewatch);
                    }
                },
            }
        };
        match next {
            None => {}
            Some(Next::Relist) => must_relist = true,
            Some(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// Records whether the watch is held by the test hook, and wakes whoever waits on it.
fn set_held(shared: &Shared, held: bool) {
    let mut state = shared.lock();
    if state.held != held {
        state.held = held;
        drop(state);
        shared.advanced.notify_all();
    }
}

/// Re-lists the whole prefix at etcd's current revision and starts over from it, as a
/// reflector does after a 410 and as kube-apiserver's watch cache does: the cache is
/// rebuilt, the history restarts at the list revision (older resourceVersions get 410
/// Expired) and the live subscriptions end (their broadcast sender is dropped), so
/// their clients re-list and re-watch.
async fn relist(client: &Client, keys: &KeyMap, shared: &Shared) -> Result<(), etcd_client::Error> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let mut resp = kv.get(keys.all(), Some(GetOptions::new().with_prefix())).await?;
    let rev = header_revision(resp.header());
    let mut cache = BTreeMap::new();
    for kv in resp.take_kvs() {
        let Some(key) = keys.from_etcd(kv.key()) else { continue };
        match decode(&key, &kv) {
            Ok(value) => {
                cache.insert(key, Arc::new(value));
            }
            Err(e) => tracing::warn!(error = %e, "skipping undecodable etcd value"),
        }
    }
    let mut state = shared.lock();
    tracing::warn!(from = state.rev, to = rev, objects = cache.len(), "etcd watch cache re-listed after compaction");
    state.cache = cache;
    state.history = History::new(HISTORY_LIMIT, rev);
    state.rev = rev;
    drop(state);
    shared.advanced.notify_all();
    Ok(())
}

/// Applies one watch response.
fn apply(keys: &KeyMap, shared: &Shared, resp: WatchResponse) -> Next {
    if resp.canceled() {
        if resp.compact_revision() > 0 {
            tracing::error!(compacted = resp.compact_revision(), "etcd compacted past the watch cache; re-listing");
            return Next::Relist;
        }
        tracing::warn!(reason = resp.cancel_reason(), "etcd canceled the watch");
        return Next::Rewatch;
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
    let events = resp.events().iter().map(|ev| {
        let rev = ev.kv().map(|kv| kv.mod_revision().max(0) as Revision).unwrap_or(0);
        (rev, convert(keys, ev))
    });
    apply_events(&mut state, events);
    drop(state);
    shared.advanced.notify_all();
    Next::Continue
}

/// Applies the events of one watch response (revision order) to the cache and the
/// history. The events of one etcd transaction share a revision and always arrive in
/// the same response, so only events at or below the revision reached before this
/// response are skipped (already applied), never the later ones of a transaction.
fn apply_events(state: &mut State, events: impl IntoIterator<Item = (Revision, Option<Event>)>) {
    let floor = state.rev;
    for (rev, event) in events {
        if rev <= floor {
            continue;
        }
        if let Some(event) = event {
            match event.kind {
                EventType::Deleted => state.cache.remove(&event.key),
                _ => state.cache.insert(event.key.clone(), Arc::new(event.object.clone())),
            };
            state.history.push(event);
        }
        state.rev = state.rev.max(rev);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(rev: Revision, name: &str) -> (Revision, Option<Event>) {
        let key = format!("/registry/configmaps/d/{name}");
        (rev, Some(Event::new(rev, EventType::Added, key, json!({"metadata": {"name": name}}), None)))
    }

    fn state(rev: Revision) -> State {
        State { cache: BTreeMap::new(), history: History::new(HISTORY_LIMIT, rev), rev, held: false }
    }

    #[test]
    fn every_event_of_a_multi_key_transaction_is_applied() {
        let mut st = state(4);
        // One transaction writing three keys: all at revision 5, in one response.
        apply_events(&mut st, [put(5, "a"), put(5, "b"), put(5, "c")]);
        assert_eq!(st.rev, 5);
        assert_eq!(st.cache.len(), 3, "{:?}", st.cache.keys().collect::<Vec<_>>());
        assert_eq!(st.history.subscribe("/", 4, 5).unwrap().backlog.len(), 3);
        // The next response carries another transaction; replayed old ones are skipped.
        apply_events(&mut st, [put(5, "a"), put(6, "d"), put(6, "e")]);
        assert_eq!(st.rev, 6);
        assert_eq!(st.cache.len(), 5);
        assert_eq!(st.history.subscribe("/", 4, 6).unwrap().backlog.len(), 5);
    }

    #[test]
    fn events_already_applied_are_skipped() {
        let mut st = state(7);
        apply_events(&mut st, [put(6, "old"), put(7, "seen")]);
        assert_eq!(st.rev, 7);
        assert!(st.cache.is_empty());
    }
}
