//! Errors of the lab harness; each names the command, path or namespace it touched.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong while building or removing a lab.
#[derive(Debug, Error)]
pub enum LabError {
    #[error("lab name {0:?} is invalid: use 1-20 characters of [a-z0-9-], starting with a letter")]
    BadName(String),
    #[error("lab {0:?} already exists; remove it first with `minion-lab down {0}`")]
    Exists(String),
    #[error("lab {0:?} does not exist (no state under {1})")]
    NotFound(String, PathBuf),
    #[error("node {node:?} is not part of lab {lab:?} (nodes: {known})")]
    NoSuchNode { lab: String, node: String, known: String },
    #[error("binary {0} not found; build the workspace first (cargo build --workspace)")]
    MissingBinary(PathBuf),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("must run as root: the lab creates network namespaces, cgroups and mounts")]
    NotRoot,
}

/// Wraps an io::Error with the path it concerns.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |source| LabError::Io { path, source }
}
