//! Storage of API objects (the role etcd plays for kube-apiserver): keys like
//! `/registry/pods/<ns>/<name>`, a global revision that becomes each object's
//! `metadata.resourceVersion`, compare-and-swap writes and a bounded event history
//! that watches replay from.

mod etcd;
mod history;
mod sqlite;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

pub use etcd::{EtcdStore, KeyMap};
pub use history::History;
pub use sqlite::SqliteStore;

/// A store revision (what clients see as resourceVersion).
pub type Revision = u64;

/// How many past events a store keeps for watch replay.
pub const HISTORY_LIMIT: usize = 10_000;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone)]
pub struct Event {
    /// Revision of this change.
    pub rev: Revision,
    pub kind: EventType,
    pub key: String,
    /// The object after the change (for Deleted: the last state, with the new rev).
    pub object: Value,
    /// The object before the change (None for Added).
    pub prev: Option<Value>,
    /// `object` serialized once, shared by every watcher that sends it.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

impl Event {
    /// A new event.
    pub fn new(rev: Revision, kind: EventType, key: String, object: Value, prev: Option<Value>) -> Self {
        Event { rev, kind, key, object, prev, encoded: std::sync::OnceLock::new() }
    }

    /// The object as JSON bytes (serialized on first use).
    pub fn object_json(&self) -> &bytes::Bytes {
        self.encoded.get_or_init(|| bytes::Bytes::from(serde_json::to_vec(&self.object).unwrap_or_default()))
    }
}

/// A watch subscription: events to send first, then the live receiver.
#[derive(Debug)]
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    /// Store revision when the subscription was taken.
    pub revision: Revision,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("conflict on {key}: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("too old resource version {requested} (oldest available {oldest})")]
    Expired { requested: Revision, oldest: Revision },
    #[error("sqlite error on {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("cannot open data dir {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("stored object {key} is not valid JSON: {source}")]
    Json { key: String, source: serde_json::Error },
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("etcd: {0}")]
    Etcd(String),
}

/// The storage interface; methods are blocking (call them off the async runtime).
pub trait Store: Send + Sync + 'static {
    /// The object at `key`.
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError>;
    /// All objects whose key starts with `prefix`, and the current revision.
    fn list(&self, prefix: &str) -> Result<(Vec<Value>, Revision), StoreError>;
    /// Like [`Store::list`], sharing the stored objects instead of copying them.
    fn list_shared(&self, prefix: &str) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let (items, rev) = self.list(prefix)?;
        Ok((items.into_iter().map(Arc::new).collect(), rev))
    }
    /// The objects under `prefix` as they were at revision `at` (None: now), as far
    /// as the kept history allows (older: Expired), and the revision served.
    fn list_at(&self, prefix: &str, at: Option<Revision>) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let (items, rev) = self.list_shared(prefix)?;
        match at {
            Some(at) if at != rev => Err(StoreError::Expired { requested: at, oldest: rev }),
            _ => Ok((items, rev)),
        }
    }
    /// Creates `key`; fails with AlreadyExists. Returns the object with its revision.
    fn create(&self, key: &str, object: Value) -> Result<Value, StoreError>;
    /// Replaces `key`; with `expected`, only when its revision is still that.
    fn update(&self, key: &str, object: Value, expected: Option<Revision>) -> Result<Value, StoreError>;
    /// Deletes `key`; with `expected`, only when its revision is still that.
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Value, StoreError>;
    /// Subscribes to changes under `prefix` after revision `from`; with `from` None,
    /// the backlog is an Added event per existing object.
    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Subscription, StoreError>;
    /// The current revision.
    fn revision(&self) -> Revision;
    /// True when reads wait on IO (then callers run them off the async runtime);
    /// false when they are served from memory.
    fn reads_block(&self) -> bool {
        true
    }
    /// True when other API servers may write the same store (etcd): then in-memory
    /// state such as the ClusterIP allocator is only a hint, and controllers need a
    /// leader.
    fn shared(&self) -> bool {
        false
    }
}

/// The resourceVersion of a stored object.
pub fn object_revision(object: &Value) -> Revision {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sets `metadata.resourceVersion`.
pub fn set_revision(object: &mut Value, rev: Revision) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    } else if let Some(obj) = object.as_object_mut() {
        obj.insert("metadata".into(), serde_json::json!({"resourceVersion": rev.to_string()}));
    }
}
