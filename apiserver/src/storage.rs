//! Which datastore the API server keeps objects in (`--storage`): one SQLite file in
//! the data dir (the default, a single API server) or an etcd v3 cluster that several
//! API servers can share, as kube-apiserver does.

use std::path::Path;
use std::sync::Arc;

use crate::store::{EtcdStore, SqliteStore, Store, StoreError};

/// The etcd prefix kube-apiserver uses.
pub const DEFAULT_ETCD_PREFIX: &str = "/registry";

/// Where objects are stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageConfig {
    /// `<data_dir>/minion.db`.
    #[default]
    Sqlite,
    /// An etcd v3 cluster.
    Etcd {
        /// Client URLs (`http://127.0.0.1:2379`).
        endpoints: Vec<String>,
        /// Key prefix (`/registry`).
        prefix: String,
    },
}

impl StorageConfig {
    /// etcd at `endpoints` under the default prefix.
    pub fn etcd(endpoints: Vec<String>) -> Self {
        StorageConfig::Etcd { endpoints, prefix: DEFAULT_ETCD_PREFIX.into() }
    }

    /// Opens the store (blocking: call it off the async runtime).
    pub fn open(&self, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            StorageConfig::Sqlite => Ok(Arc::new(SqliteStore::open(data_dir)?)),
            StorageConfig::Etcd { endpoints, prefix } => Ok(Arc::new(EtcdStore::connect(endpoints, prefix)?)),
        }
    }

    /// A short description for logs and errors.
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            StorageConfig::Sqlite => data_dir.display().to_string(),
            StorageConfig::Etcd { endpoints, prefix } => format!("etcd {} (prefix {prefix})", endpoints.join(",")),
        }
    }
}
