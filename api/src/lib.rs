//! Shared vocabulary of minion: the constants every component agrees on, Kubernetes
//! name validation, and label/field selectors over `k8s-openapi` types.
//!
//! This crate does no IO: no files, no sockets, no async. Everything here can be
//! unit-tested without root.

pub mod constants;
pub mod names;
pub mod selector;

pub use constants::*;
