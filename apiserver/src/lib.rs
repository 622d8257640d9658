//! minion-apiserver: a subset of the Kubernetes API server (core/v1, apps/v1 and
//! coordination.k8s.io/v1) over plain HTTP, backed by SQLite, with the scheduler,
//! the endpoints, ReplicaSet, Deployment, node lifecycle and garbage-collection
//! controllers running in-process.

pub mod bootstrap;
pub mod controllers;
pub mod db;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod ipalloc;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod server;
pub mod store;
pub mod table;
pub mod watch;

pub use server::{run, run_with_listener, Config, Error};
