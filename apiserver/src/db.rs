//! Async facade over a blocking [`Store`]: every call runs on tokio's blocking pool,
//! and `guaranteed_update` retries read-modify-write on conflicts.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;
use crate::store::{object_revision, Revision, Store, StoreError, Subscription};

/// Shared handle to the store.
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}

impl Db {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Db { store }
    }

    /// See [`Store::get`].
    pub async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let (s, k) = (self.store.clone(), key.to_string());
        if !s.reads_block() {
            return s.get(&k);
        }
        blocking(move || s.get(&k)).await
    }

    /// See [`Store::list`].
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Value>, Revision), StoreError> {
        let (s, k) = (self.store.clone(), prefix.to_string());
        if !s.reads_block() {
            return s.list(&k);
        }
        blocking(move || s.list(&k)).await
    }

    /// See [`Store::list_shared`].
    pub async fn list_shared(&self, prefix: &str) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let (s, k) = (self.store.clone(), prefix.to_string());
        if !s.reads_block() {
            return s.list_shared(&k);
        }
        blocking(move || s.list_shared(&k)).await
    }

    /// See [`Store::list_at`].
    pub async fn list_at(&self, prefix: &str, at: Option<Revision>) -> Result<(Vec<Arc<Value>>, Revision), StoreError> {
        let (s, k) = (self.store.clone(), prefix.to_string());
        if !s.reads_block() {
            return s.list_at(&k, at);
        }
        blocking(move || s.list_at(&k, at)).await
    }

    /// See [`Store::create`].
    pub async fn create(&self, key: &str, object: Value) -> Result<Value, StoreError> {
        let (s, k) = (self.store.clone(), key.to_string());
        blocking(move || s.create(&k, object)).await
    }

    /// See [`Store::update`].
    pub async fn update(&self, key: &str, object: Value, expected: Option<Revision>) -> Result<Value, StoreError> {
        let (s, k) = (self.store.clone(), key.to_string());
        blocking(move || s.update(&k, object, expected)).await
    }

    /// See [`Store::delete`].
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Value, StoreError> {
        let (s, k) = (self.store.clone(), key.to_string());
        blocking(move || s.delete(&k, expected)).await
    }

    /// See [`Store::watch`].
    pub async fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Subscription, StoreError> {
        let (s, k) = (self.store.clone(), prefix.to_string());
        if !s.reads_block() {
            return s.watch(&k, from);
        }
        blocking(move || s.watch(&k, from)).await
    }

    /// See [`Store::shared`].
    pub fn shared(&self) -> bool {
        self.store.shared()
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.store.revision()
    }

    /// Read-modify-write of `key` with `f`, retried on conflicts (up to 16 times).
    /// `f` returns None to leave the object unchanged (no write).
    pub async fn guaranteed_update<F>(&self, key: &str, resource: &str, name: &str, mut f: F) -> Result<Value, ApiError>
    where
        F: FnMut(Value) -> Result<Option<Value>, ApiError>,
    {
        let mut last = None;
        for _ in 0..16 {
            let current = self.get(key).await.map_err(|e| ApiError::internal(e.to_string()))?;
            let Some(current) = current else {
                return Err(ApiError::not_found(resource, name));
            };
            let rev = object_revision(&current);
            let Some(next) = f(current.clone())? else { return Ok(current) };
            if next == current {
                return Ok(current);
            }
            match self.update(key, next, Some(rev)).await {
                Ok(v) => return Ok(v),
                Err(e @ StoreError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(ApiError::from_store(e, resource, name)),
            }
        }
        Err(ApiError::internal(format!("too many conflicts updating {key}: {last:?}")))
    }
}
