//! The SQLite datastore (like k3s's kine default): one file, WAL journal,
//! `synchronous=FULL`, a write-through in-memory cache for reads, and group commit.
//!
//! Writers hand their operation to one committer thread and wait. The committer takes
//! every operation queued so far, checks each against the committed state plus the
//! earlier operations of the same batch (compare-and-swap on resourceVersion), writes
//! them all in one transaction and commits it (one fsync for the whole batch). Only
//! then does it publish the batch to the read cache and the watch history and answer
//! the writers: nothing is visible or acknowledged before it is durable. A second
//! thread checkpoints the WAL off the writer's path (see `checkpoint`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

mod checkpoint;
mod commit;

use checkpoint::WalLimits;
use commit::Committer;

use super::{object_revision, Event, EventType, History, Revision, Store, StoreError, Subscription, HISTORY_LIMIT};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

/// A [`Store`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    state: Arc<Mutex<State>>,
    queue: Arc<Queue>,
    committer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

/// The committed state: what reads and watches see.
#[derive(Debug)]
struct State {
    cache: BTreeMap<String, Arc<Value>>,
    history: History,
    rev: Revision,
}

/// Operations waiting for the committer.
#[derive(Debug, Default)]
struct Queue {
    pending: Mutex<Pending>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    ops: Vec<Op>,
    closed: bool,
}

#[derive(Debug)]
enum Action {
    Create(Value),
    Update(Value, Option<Revision>),
    Delete(Option<Revision>),
}

#[derive(Debug)]
struct Op {
    key: String,
    action: Action,
    reply: SyncSender<Result<Value, StoreError>>,
    /// When the writer queued it (the batch reports how long it waited).
    queued: Instant,
}

/// One accepted operation of a batch, with its new revision.
struct Accepted {
    key: String,
    kind: EventType,
    object: Value,
    text: Option<String>,
    prev: Option<Value>,
    rev: Revision,
    reply: SyncSender<Result<Value, StoreError>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl SqliteStore {
    /// Opens (or creates) `<data_dir>/minion.db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, WalLimits::default())
    }

    fn open_with(data_dir: &Path, limits: WalLimits) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::Io { path: data_dir.display().to_string(), source })?;
        let path = data_dir.join("minion.db");
        let display = path.display().to_string();
        let conn = Connection::open(&path).map_err(|source| sql(&display, source))?;
        Self::init(conn, display, Some((&path, limits)))
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| sql(":memory:", source))?;
        Self::init(conn, ":memory:".into(), None)
    }

    /// Sets up `conn` and starts the committer and, for a file, the checkpointer.
    fn init(conn: Connection, path: String, file: Option<(&Path, WalLimits)>) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| sql(&path, e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql(&path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| sql(&path, e))?;
        let gate = Arc::new(Mutex::new(()));
        let checkpointer = match file {
            Some((file, limits)) => {
                conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(|e| sql(&path, e))?;
                conn.pragma_update(None, "journal_size_limit", limits.size_limit_bytes as i64).map_err(|e| sql(&path, e))?;
                Some(checkpoint::spawn(file, &path, limits, gate.clone())?)
            }
            None => None,
        };
        let (wal_pages, checkpointer) = match checkpointer {
            Some(h) => (Some(h.pages), Some(h.thread)),
            None => (None, None),
        };
        let rev: Revision = conn
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(|e| sql(&path, e))?
            .unwrap_or(0) as Revision;
        let cache = load_all(&conn, &path)?;
        let history = History::new(HISTORY_LIMIT, rev);
        let state = Arc::new(Mutex::new(State { cache, history, rev }));
        let queue = Arc::new(Queue::default());
        let committer = {
            let (state, queue) = (state.clone(), queue.clone());
            std::thread::Builder::new()
                .name("sqlite-commit".into())
                .spawn(move || Committer::new(conn, path, state, queue, wal_pages, gate).run())
                .map_err(|source| StoreError::Io { path: "sqlite committer thread".into(), source })?
        };
        Ok(SqliteStore { state, queue, committer: Some(committer), checkpointer })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Queues one write and waits until it is committed (or refused).
    fn submit(&self, key: &str, action: Action) -> Result<Value, StoreError> {
        let (reply, rx) = sync_channel(1);
        {
            let mut pending = self.queue.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.closed {
                return Err(StoreError::Task("the store is closed".into()));
            }
            pending.ops.push(Op { key: key.to_string(), action, reply, queued: Instant::now() });
        }
        self.queue.ready.notify_one();
        rx.recv().map_err(|_| StoreError::Task("the committer stopped".into()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.queue.pending.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.queue.ready.notify_all();
        if let Some(handle) = self.committer.take() {
            let _ = handle.join();
        }
        // The committer has dropped its sender: the checkpointer is leaving its loop.
        if let Some(handle) = self.checkpointer.take() {
            let _ = handle.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sql(path: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: path.to_string(), source }
}

fn load_all(conn: &Connection, path: &str) -> Result<BTreeMap<String, Arc<Value>>, StoreError> {
    let mut stmt = conn.prepare("SELECT key, value FROM objects").map_err(|e| sql(path, e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| sql(path, e))?;
    let mut cache = BTreeMap::new();
    for row in rows {
        let (key, text) = row.map_err(|e| sql(path, e))?;
        let value = serde_json::from_str(&text).map_err(|source| StoreError::Json { key: key.clone(), source })?;
        cache.insert(key, Arc::new(value));
    }
    Ok(cache)
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        Ok(self.lock().cache.get(key).map(|v| (**v).clone()))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Value>, Revision), StoreError> {
        let (items, rev) = self.list_shared(prefix)?;
        Ok((items.iter().map(|v| (**v).clone()).collect(), rev))
    }

    fn list_shared(&self, prefix: &str) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let state = self.lock();
        let items = state
            .cache
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((items, state.rev))
    }

    fn list_at(&self, prefix: &str, at: Option<Revision>) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let state = self.lock();
        let in_range = |k: &String| k.starts_with(prefix);
        let Some(at) = at.filter(|at| *at < state.rev) else {
            let items = state.cache.range(prefix.to_string()..).take_while(|(k, _)| in_range(k)).map(|(_, v)| v.clone()).collect();
            return Ok((items, state.rev));
        };
        if at < state.history.start() {
            return Err(StoreError::Expired { requested: at, oldest: state.history.start() });
        }
        let mut snapshot: BTreeMap<String, Arc<Value>> =
            state.cache.range(prefix.to_string()..).take_while(|(k, _)| in_range(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        for ev in state.history.after(at).rev().filter(|e| in_range(&e.key)) {
            match (&ev.kind, &ev.prev) {
                (EventType::Added, _) | (_, None) => snapshot.remove(&ev.key),
                (_, Some(prev)) => snapshot.insert(ev.key.clone(), Arc::new(prev.clone())),
            };
        }
        Ok((snapshot.into_values().collect(), at))
    }

    fn create(&self, key: &str, object: Value) -> Result<Value, StoreError> {
        self.submit(key, Action::Create(object))
    }

    fn update(&self, key: &str, object: Value, expected: Option<Revision>) -> Result<Value, StoreError> {
        self.submit(key, Action::Update(object, expected))
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Value, StoreError> {
        self.submit(key, Action::Delete(expected))
    }

    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Subscription, StoreError> {
        let state = self.lock();
        match from {
            Some(from) => state.history.subscribe(prefix, from, state.rev),
            None => {
                let backlog = state
                    .cache
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| {
                        Arc::new(Event::new(object_revision(v), EventType::Added, k.clone(), (**v).clone(), None))
                    })
                    .collect();
                Ok(Subscription { backlog, rx: state.history.receiver(), revision: state.rev })
            }
        }
    }

    fn revision(&self) -> Revision {
        self.lock().rev
    }

    fn reads_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn revisions_increase_on_every_write() {
        let s = SqliteStore::in_memory().unwrap();
        let a = s.create("/registry/pods/d/a", obj("a")).unwrap();
        assert_eq!(object_revision(&a), 1);
        let b = s.update("/registry/pods/d/a", a.clone(), Some(1)).unwrap();
        assert_eq!(object_revision(&b), 2);
        let c = s.delete("/registry/pods/d/a", None).unwrap();
        assert_eq!(object_revision(&c), 3);
        assert_eq!(s.revision(), 3);
        assert!(s.get("/registry/pods/d/a").unwrap().is_none());
    }

    #[test]
    fn compare_and_swap() {
        let s = SqliteStore::in_memory().unwrap();
        s.create("/k/a", obj("a")).unwrap();
        s.update("/k/a", obj("a"), Some(1)).unwrap();
        let err = s.update("/k/a", obj("a"), Some(1)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { expected: 1, actual: 2, .. }));
        assert!(matches!(s.create("/k/a", obj("a")), Err(StoreError::AlreadyExists { .. })));
        assert!(matches!(s.delete("/k/b", None), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn list_by_prefix() {
        let s = SqliteStore::in_memory().unwrap();
        s.create("/registry/pods/a/x", obj("x")).unwrap();
        s.create("/registry/pods/b/y", obj("y")).unwrap();
        s.create("/registry/podsx/a/z", obj("z")).unwrap();
        assert_eq!(s.list("/registry/pods/").unwrap().0.len(), 2);
        assert_eq!(s.list("/registry/pods/a/").unwrap().0.len(), 1);
    }

    #[test]
    fn watch_replays_history_and_expires() {
        let s = SqliteStore::in_memory().unwrap();
        s.create("/k/a", obj("a")).unwrap();
        s.create("/k/b", obj("b")).unwrap();
        let sub = s.watch("/k/", Some(1)).unwrap();
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].key, "/k/b");
        let all = s.watch("/k/", None).unwrap();
        assert_eq!(all.backlog.len(), 2);
        let mut h = History::new(2, 0);
        for rev in 1..=5 {
            h.push(Event::new(rev, EventType::Added, "/k".into(), json!({}), None));
        }
        assert!(matches!(h.subscribe("/", 1, 5), Err(StoreError::Expired { .. })));
        assert_eq!(h.subscribe("/", 3, 5).unwrap().backlog.len(), 2);
    }

    #[test]
    fn wal_stays_bounded_under_a_write_stream_and_the_checkpointer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let limits = WalLimits { passive_pages: 64, restart_frames: 512, size_limit_bytes: 512 * 4096 };
        let store = Arc::new(SqliteStore::open_with(dir.path(), limits).unwrap());
        let wal = dir.path().join("minion.db-wal");
        let body = "x".repeat(4000);
        // 16 writers x 200 objects of 4 KB: over 13 MB of rows, so a log that nobody
        // checkpoints (wal_autocheckpoint is off on the writer) would pass 13 MB.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (wal, done) = (wal.clone(), done.clone());
            std::thread::spawn(move || {
                let mut largest = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                largest
            })
        };
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let (store, body) = (store.clone(), body.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        store.create(&format!("/k/{w}/{i}"), json!({"metadata": {"name": "x"}, "data": body})).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let largest = watcher.join().unwrap();
        assert!(largest > 0, "the log was never seen");
        assert!(largest < 6 << 20, "the log reached {largest} bytes");
        let db_size = std::fs::metadata(dir.path().join("minion.db")).unwrap().len();
        assert!(db_size > 8 << 20, "checkpoints copied only {db_size} bytes into the database file");
        // Shutdown stops the committer and then the checkpointer: dropping returns.
        let store = Arc::try_unwrap(store).expect("writers are done");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(store);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the store's threads stop on drop");
        let reopened = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(reopened.revision(), 3200);
        assert_eq!(reopened.list("/k/").unwrap().0.len(), 3200);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            s.create("/k/a", obj("a")).unwrap();
            s.delete("/k/a", None).unwrap();
            s.create("/k/b", obj("b")).unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.revision(), 3);
        assert!(s.get("/k/b").unwrap().is_some());
        let c = s.create("/k/c", obj("c")).unwrap();
        assert_eq!(object_revision(&c), 4);
        // History before the restart is gone: an old rv expires.
        assert!(matches!(s.watch("/k/", Some(1)), Err(StoreError::Expired { .. })));
    }
}
