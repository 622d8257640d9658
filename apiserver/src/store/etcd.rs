//! The etcd v3 datastore (what kube-apiserver uses): objects live under
//! `--etcd-prefix` (default `/registry`), resourceVersion is etcd's revision
//! (mod_revision for objects, the header revision for lists), writes are
//! compare-and-swap transactions, and one etcd watch over the whole prefix feeds the
//! in-memory [`History`] that API watches replay from, like kube-apiserver's watch
//! cache, and an object cache the controllers list from (like an informer). API reads
//! go to etcd. Several API servers can share one etcd cluster.
//!
//! The [`Store`] trait is blocking: etcd-client runs on a runtime this store owns, and
//! the blocking methods hand it their request and wait on a plain channel, so they work
//! from any thread (tokio's blocking pool included) without nesting runtimes.

mod keys;
mod outcome;
mod watcher;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use serde_json::Value;
use tokio::sync::mpsc;

pub use keys::KeyMap;
pub use outcome::Write;

use super::{set_revision, Event, EventType, History, Revision, Store, StoreError, Subscription, HISTORY_LIMIT};

/// How long connecting to etcd at start may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of one etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a watch waits for the local history to reach the revision it starts at.
const FRESH_WAIT: Duration = Duration::from_secs(3);
/// Largest etcd response accepted (big lists).
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// A [`Store`] in an etcd v3 cluster.
pub struct EtcdStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: Client,
    keys: KeyMap,
    shared: Arc<Shared>,
    endpoints: String,
    /// True holds the shared etcd watch stopped (see [`EtcdStore::pause_watch`]).
    pause: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("keys", &self.keys).finish()
    }
}

/// What the watcher task shares with the store: the history and how far it got.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever `state.rev` moves.
    advanced: Condvar,
    /// Asks the watcher for an etcd progress notification.
    progress: mpsc::Sender<()>,
}

#[derive(Debug)]
struct State {
    /// Every object as of `rev`, fed by the watch (what controllers read, like an
    /// informer's cache; API reads go to etcd).
    cache: BTreeMap<String, Arc<Value>>,
    history: History,
    /// Every event up to this revision has been pushed into `history`.
    rev: Revision,
    /// The shared watch is stopped by [`EtcdStore::pause_watch`].
    held: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://127.0.0.1:2379`), keeping objects under
    /// `prefix`; fails within a few seconds when etcd cannot be reached.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let joined = endpoints.join(",");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io { path: "etcd client runtime".into(), source })?;
        let handle = runtime.handle().clone();
        let keys = KeyMap::new(prefix);
        let eps = endpoints.to_vec();
        let probe_key = keys.all();
        let connected = run_on(&handle, CONNECT_TIMEOUT, async move {
            let options = ConnectOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT)
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
            let client = Client::connect(eps, Some(options)).await?;
            let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
            let mut all = kv.get(probe_key, Some(GetOptions::new().with_prefix())).await?;
            let rev = header_revision(all.header());
            Ok::<_, etcd_client::Error>((client, rev, all.take_kvs()))
        });
        let (client, rev, kvs) = match connected {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(StoreError::Etcd(format!("cannot reach etcd at {joined}: {e}"))),
            Err(StoreError::Task(_)) => {
                return Err(StoreError::Etcd(format!("cannot reach etcd at {joined}: no answer within {CONNECT_TIMEOUT:?}")))
            }
            Err(e) => return Err(e),
        };
        let mut cache = BTreeMap::new();
        for kv in &kvs {
            if let Some(key) = keys.from_etcd(kv.key()) {
                let value = decode(&key, kv)?;
                cache.insert(key, Arc::new(value));
            }
        }
        let (progress, progress_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State { cache, history: History::new(HISTORY_LIMIT, rev), rev, held: false }),
            advanced: Condvar::new(),
            progress,
        });
        let (pause, pause_rx) = tokio::sync::watch::channel(false);
        handle.spawn(watcher::run(client.clone(), keys.clone(), shared.clone(), progress_rx, pause_rx));
        tracing::info!(endpoints = %joined, prefix = %keys.all(), revision = rev, "connected to etcd");
        Ok(EtcdStore { runtime: Some(runtime), handle, client, keys, shared, endpoints: joined, pause })
    }

    /// Test hook: drops the shared etcd watch (as a lost connection would) and keeps
    /// it stopped until the returned guard is dropped; returns once the watch is down
    /// (bounded: a few seconds). Lets tests make etcd compact events this server never
    /// saw.
    #[doc(hidden)]
    pub fn pause_watch(&self) -> WatchPause<'_> {
        let _ = self.pause.send(true);
        let deadline = std::time::Instant::now() + FRESH_WAIT;
        let mut state = self.shared.lock();
        while !state.held && std::time::Instant::now() < deadline {
            state = self.shared.advanced.wait_timeout(state, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
        WatchPause { store: self }
    }

    /// The key mapping in use.
    pub fn keys(&self) -> &KeyMap {
        &self.keys
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_MESSAGE)
    }

    /// Runs `fut` on the store's runtime and waits for it (bounded).
    fn call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<Result<T, etcd_client::Error>, StoreError> {
        run_on(&self.handle, REQUEST_TIMEOUT, fut)
    }

    /// Runs a transaction; etcd failures become [`StoreError::Etcd`].
    fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let mut kv = self.kv();
        self.call(async move { kv.txn(txn).await })?.map_err(|e| StoreError::Etcd(e.to_string()))
    }

    /// Waits (bounded) until the history holds every event up to `rev`.
    fn wait_fresh(&self, rev: Revision) {
        let deadline = std::time::Instant::now() + FRESH_WAIT;
        let mut state = self.shared.lock();
        while state.rev < rev {
            let _ = self.shared.progress.try_send(());
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::warn!(wanted = rev, have = state.rev, "etcd watch lags; serving the watch anyway");
                return;
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            state = self.shared.advanced.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn range(&self, prefix: &str, at: Option<Revision>) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let ek = self.keys.to_etcd(prefix);
        let mut kv = self.kv();
        let served = self.call(async move {
            let mut opts = GetOptions::new().with_prefix();
            if let Some(at) = at {
                opts = opts.with_revision(at as i64);
            }
            kv.get(ek, Some(opts)).await
        })?;
        match served {
            Ok(mut resp) => {
                let rev = header_revision(resp.header());
                Ok((resp.take_kvs(), at.unwrap_or(rev)))
            }
            // Newer than etcd's revision: serve the current state.
            Err(e) if at.is_some() && outcome::is_future(&e.to_string()) => self.range(prefix, None),
            Err(e) => {
                let oldest = self.shared.lock().history.start();
                Err(outcome::read_error(&e, at, oldest))
            }
        }
    }

    /// Decodes an etcd value into an object carrying its mod_revision.
    fn decode(&self, kv: &KeyValue) -> Result<Value, StoreError> {
        decode(&String::from_utf8_lossy(kv.key()), kv)
    }

    /// Subscribes from `from` through a dedicated etcd watch (the history does not
    /// reach back that far); compacted revisions are Expired.
    fn watch_from_etcd(&self, prefix: &str, from: Revision, current: Revision) -> Result<Subscription, StoreError> {
        // A watch on a compacted revision is first created, then canceled: probe with
        // a read at that revision so the answer is immediate.
        let (ek, mut kv) = (self.keys.to_etcd(prefix), self.kv());
        let probe = self.call(async move {
            kv.get(ek, Some(GetOptions::new().with_prefix().with_count_only().with_revision(from as i64))).await
        })?;
        if let Err(e) = probe {
            return Err(outcome::read_error(&e, Some(from), current));
        }
        let watch = self.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let started = run_on(&self.handle, REQUEST_TIMEOUT, watcher::replay(watch, self.keys.clone(), prefix.to_string(), from));
        match started? {
            Ok(rx) => Ok(Subscription { backlog: Vec::new(), rx, revision: current }),
            Err(watcher::ReplayError::Compacted(oldest)) => Err(StoreError::Expired { requested: from, oldest }),
            Err(watcher::ReplayError::Etcd(e)) => Err(StoreError::Etcd(e)),
        }
    }
}

/// Keeps the shared etcd watch stopped while alive (see [`EtcdStore::pause_watch`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct WatchPause<'a> {
    store: &'a EtcdStore,
}

impl Drop for WatchPause<'_> {
    fn drop(&mut self) {
        let _ = self.store.pause.send(false);
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // May be dropped inside an async context, where a blocking shutdown panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `handle` and waits on a plain channel, at most `limit`.
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    limit: Duration,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        if let Ok(out) = tokio::time::timeout(limit, fut).await {
            let _ = tx.send(out);
        }
    });
    rx.recv().map_err(|_| StoreError::Task(format!("etcd request gave no answer within {limit:?}")))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map(|h| h.revision().max(0) as Revision).unwrap_or(0)
}

/// An object from an etcd value, with `metadata.resourceVersion` = its mod_revision.
fn decode(key: &str, kv: &KeyValue) -> Result<Value, StoreError> {
    let mut value: Value =
        serde_json::from_slice(kv.value()).map_err(|source| StoreError::Json { key: key.to_string(), source })?;
    set_revision(&mut value, kv.mod_revision().max(0) as Revision);
    Ok(value)
}

/// The JSON stored in etcd: the object without its resourceVersion (etcd keeps that).
fn encode(object: &mut Value) -> Vec<u8> {
    let rv = object.get_mut("metadata").and_then(Value::as_object_mut).and_then(|m| m.remove("resourceVersion"));
    let text = serde_json::to_vec(object).unwrap_or_default();
    if let (Some(rv), Some(meta)) = (rv, object.get_mut("metadata").and_then(Value::as_object_mut)) {
        meta.insert("resourceVersion".into(), rv);
    }
    text
}

/// The mod_revision read by a failed transaction's else-branch.
fn current_revision(resp: &TxnResponse) -> Option<Revision> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision().max(0) as Revision),
        _ => None,
    })
}

/// Existence (and, with `expected`, mod_revision) comparisons for a key.
fn guards(ek: &str, expected: Option<Revision>) -> Vec<Compare> {
    let mut compares = vec![Compare::version(ek, CompareOp::Greater, 0)];
    if let Some(expected) = expected {
        compares.push(Compare::mod_revision(ek, CompareOp::Equal, expected as i64));
    }
    compares
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let ek = self.keys.to_etcd(key);
        let mut kv = self.kv();
        let resp = self.call(async move { kv.get(ek, None).await })?.map_err(|e| StoreError::Etcd(e.to_string()))?;
        resp.kvs().first().map(|kv| self.decode(kv)).transpose()
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Value>, Revision), StoreError> {
        let (kvs, rev) = self.range(prefix, None)?;
        Ok((kvs.iter().map(|kv| self.decode(kv)).collect::<Result<_, _>>()?, rev))
    }

    /// Served from the watch-fed cache (a consistent snapshot at the watch's revision,
    /// possibly a moment behind etcd): controllers list often.
    fn list_shared(&self, prefix: &str) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let state = self.shared.lock();
        let items =
            state.cache.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
        Ok((items, state.rev))
    }

    fn list_at(&self, prefix: &str, at: Option<Revision>) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let (kvs, rev) = self.range(prefix, at)?;
        Ok((kvs.iter().map(|kv| self.decode(kv).map(Arc::new)).collect::<Result<_, _>>()?, rev))
    }

    fn create(&self, key: &str, mut object: Value) -> Result<Value, StoreError> {
        let ek = self.keys.to_etcd(key);
        let text = encode(&mut object);
        let txn = Txn::new()
            .when([Compare::create_revision(ek.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(ek.as_str(), text, None)])
            .or_else([TxnOp::get(ek.as_str(), None)]);
        let resp = self.txn(txn)?;
        if !resp.succeeded() {
            return Err(outcome::failed(key, Write::Create, current_revision(&resp)));
        }
        set_revision(&mut object, header_revision(resp.header()));
        Ok(object)
    }

    fn update(&self, key: &str, mut object: Value, expected: Option<Revision>) -> Result<Value, StoreError> {
        let ek = self.keys.to_etcd(key);
        let text = encode(&mut object);
        let txn = Txn::new()
            .when(guards(&ek, expected))
            .and_then([TxnOp::put(ek.as_str(), text, None)])
            .or_else([TxnOp::get(ek.as_str(), None)]);
        let resp = self.txn(txn)?;
        if !resp.succeeded() {
            return Err(outcome::failed(key, Write::Update { expected }, current_revision(&resp)));
        }
        set_revision(&mut object, header_revision(resp.header()));
        Ok(object)
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Value, StoreError> {
        let ek = self.keys.to_etcd(key);
        let txn = Txn::new()
            .when(guards(&ek, expected))
            .and_then([TxnOp::delete(ek.as_str(), Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(ek.as_str(), None)]);
        let resp = self.txn(txn)?;
        if !resp.succeeded() {
            return Err(outcome::failed(key, Write::Delete { expected }, current_revision(&resp)));
        }
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(mut d) => d.take_prev_kvs().into_iter().next(),
            _ => None,
        });
        let Some(prev) = prev else { return Err(StoreError::NotFound { key: key.into() }) };
        let mut object = self.decode(&prev)?;
        set_revision(&mut object, header_revision(resp.header()));
        Ok(object)
    }

    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Subscription, StoreError> {
        match from {
            Some(from) => {
                self.wait_fresh(from);
                let state = self.shared.lock();
                if from < state.history.start() && from < state.rev {
                    let current = state.rev;
                    drop(state);
                    return self.watch_from_etcd(prefix, from, current);
                }
                state.history.subscribe(prefix, from, state.rev)
            }
            None => {
                let (kvs, rev) = self.range(prefix, None)?;
                let mut backlog = Vec::with_capacity(kvs.len());
                for kv in &kvs {
                    let key = self.keys.from_etcd(kv.key()).unwrap_or_default();
                    let object = decode(&key, kv)?;
                    backlog.push(Arc::new(Event::new(kv.mod_revision().max(0) as Revision, EventType::Added, key, object, None)));
                }
                self.wait_fresh(rev);
                let state = self.shared.lock();
                let later = state.history.subscribe(prefix, rev, state.rev)?;
                backlog.extend(later.backlog);
                Ok(Subscription { backlog, rx: later.rx, revision: state.rev.max(rev) })
            }
        }
    }

    fn revision(&self) -> Revision {
        self.shared.lock().rev
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encode_drops_and_restores_resource_version() {
        let mut obj = json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let text = encode(&mut obj);
        let stored: Value = serde_json::from_slice(&text).unwrap();
        assert!(stored.pointer("/metadata/resourceVersion").is_none());
        assert_eq!(obj.pointer("/metadata/resourceVersion"), Some(&json!("7")));
    }

    #[test]
    fn unreachable_etcd_fails_fast() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let started = std::time::Instant::now();
        let err = EtcdStore::connect(&["http://127.0.0.1:1".to_string()], "/registry").unwrap_err();
        assert!(err.to_string().contains("cannot reach etcd at http://127.0.0.1:1"), "{err}");
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(2));
    }
}
