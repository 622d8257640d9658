//! The SQLite datastore (like k3s's kine default): one file, WAL journal,
//! `synchronous=FULL`, a write-through in-memory cache for reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{
    object_revision, set_revision, Event, EventType, History, Revision, Store, StoreError,
    Subscription, HISTORY_LIMIT,
};

/// A [`Store`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    path: String,
    cache: BTreeMap<String, Value>,
    history: History,
    rev: Revision,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl SqliteStore {
    /// Opens (or creates) `<data_dir>/minion.db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::Io { path: data_dir.display().to_string(), source })?;
        let path = data_dir.join("minion.db");
        let display = path.display().to_string();
        let conn = Connection::open(&path).map_err(|source| sql(&display, source))?;
        Self::init(conn, display)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| sql(":memory:", source))?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| sql(&path, e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql(&path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| sql(&path, e))?;
        let rev: Revision = conn
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(|e| sql(&path, e))?
            .unwrap_or(0) as Revision;
        let cache = load_all(&conn, &path)?;
        let history = History::new(HISTORY_LIMIT, rev);
        Ok(SqliteStore { inner: Mutex::new(Inner { conn, path, cache, history, rev }) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn sql(path: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: path.to_string(), source }
}

fn load_all(conn: &Connection, path: &str) -> Result<BTreeMap<String, Value>, StoreError> {
    let mut stmt = conn.prepare("SELECT key, value FROM objects").map_err(|e| sql(path, e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| sql(path, e))?;
    let mut cache = BTreeMap::new();
    for row in rows {
        let (key, text) = row.map_err(|e| sql(path, e))?;
        let value = serde_json::from_str(&text).map_err(|source| StoreError::Json { key: key.clone(), source })?;
        cache.insert(key, value);
    }
    Ok(cache)
}

impl Inner {
    /// Writes (Some) or deletes (None) `key` at revision `rev`, in one transaction.
    fn persist(&mut self, key: &str, value: Option<&Value>, rev: Revision) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql(&path, e))?;
        match value {
            Some(v) => {
                let text = v.to_string();
                tx.execute(
                    "INSERT INTO objects (key, value, rev) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
                    params![key, text, rev as i64],
                )
                .map_err(|e| sql(&path, e))?;
            }
            None => {
                tx.execute("DELETE FROM objects WHERE key = ?1", params![key]).map_err(|e| sql(&path, e))?;
            }
        }
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('revision', ?1)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![rev as i64],
        )
        .map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))
    }

    fn check(&self, key: &str, expected: Option<Revision>) -> Result<&Value, StoreError> {
        let current = self.cache.get(key).ok_or_else(|| StoreError::NotFound { key: key.into() })?;
        if let Some(expected) = expected {
            let actual = object_revision(current);
            if actual != expected {
                return Err(StoreError::Conflict { key: key.into(), expected, actual });
            }
        }
        Ok(current)
    }

    fn write(&mut self, key: &str, mut object: Value, kind: EventType) -> Result<Value, StoreError> {
        let rev = self.rev + 1;
        set_revision(&mut object, rev);
        let stored = if kind == EventType::Deleted { None } else { Some(&object) };
        self.persist(key, stored, rev)?;
        self.rev = rev;
        let prev = match kind {
            EventType::Deleted => self.cache.remove(key),
            _ => self.cache.insert(key.to_string(), object.clone()),
        };
        self.history.push(Event { rev, kind, key: key.to_string(), object: object.clone(), prev });
        Ok(object)
    }
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        Ok(self.lock().cache.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Value>, Revision), StoreError> {
        let inner = self.lock();
        let items = inner
            .cache
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((items, inner.rev))
    }

    fn create(&self, key: &str, object: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        if inner.cache.contains_key(key) {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        inner.write(key, object, EventType::Added)
    }

    fn update(&self, key: &str, object: Value, expected: Option<Revision>) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        inner.check(key, expected)?;
        inner.write(key, object, EventType::Modified)
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let current = inner.check(key, expected)?.clone();
        inner.write(key, current, EventType::Deleted)
    }

    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Subscription, StoreError> {
        let inner = self.lock();
        match from {
            Some(from) => inner.history.subscribe(prefix, from, inner.rev),
            None => {
                let backlog = inner
                    .cache
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| {
                        Arc::new(Event {
                            rev: object_revision(v),
                            kind: EventType::Added,
                            key: k.clone(),
                            object: v.clone(),
                            prev: None,
                        })
                    })
                    .collect();
                Ok(Subscription { backlog, rx: inner.history.receiver(), revision: inner.rev })
            }
        }
    }

    fn revision(&self) -> Revision {
        self.lock().rev
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
            h.push(Event { rev, kind: EventType::Added, key: "/k".into(), object: json!({}), prev: None });
        }
        assert!(matches!(h.subscribe("/", 1, 5), Err(StoreError::Expired { .. })));
        assert_eq!(h.subscribe("/", 3, 5).unwrap().backlog.len(), 2);
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
