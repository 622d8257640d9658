//! minion-apiserver: a subset of the Kubernetes API server (core/v1, apps/v1,
//! coordination.k8s.io/v1 and discovery.k8s.io/v1) over HTTPS with bearer tokens (or
//! plain HTTP on loopback with `--insecure`), backed by SQLite
//! (group commit: every acknowledged write is fsync'd), with the scheduler, the
//! endpoints/endpointslice, ReplicaSet, Deployment, ServiceAccount, node lifecycle and
//! garbage-collection controllers running in-process.

pub mod admission;
pub mod auth;
pub mod bootstrap;
pub mod controllers;
pub mod db;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod ipalloc;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod security;
pub mod server;
pub mod storage;
pub mod store;
pub mod table;
pub mod testing;
pub mod tls;
pub mod watch;

pub use security::Security;
pub use server::{run, run_with_listener, Config, Error};
pub use storage::StorageConfig;
