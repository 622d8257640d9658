//! Local image store: the node's container images (what `crictl images` lists).
//!
//! A content store like containerd's: compressed layer and config blobs by digest
//! under `<image-root>/blobs/sha256/`, one unpacked snapshot per layer (by diff id)
//! under `<image-root>/snapshots/<hex>/` with whiteouts already turned into overlay
//! whiteouts, and one record per image name under `<image-root>/images/`. A
//! container's rootfs is overlayfs over its image's snapshots (top layer first) plus
//! the container's own upper dir. Every write is temp + rename, so nothing half
//! written is ever trusted; temporaries live in a per-process session directory
//! that is swept once its process is gone, and a lease keeps what a pull relies on
//! safe from a concurrent `image rm` or image GC.

pub mod archive;
pub mod auth;
pub mod cli;
pub mod gc;
pub mod lease;
pub mod manifest;
pub mod name;
pub mod pull;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use name::{normalize_image_name, ImageRef};
pub use store::ImageStore;

/// Default PATH given to images imported without a config.
pub const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the image store and of pulling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("image {name:?} not found in store {}", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("bad image metadata {}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("import of {} failed: {msg}", path.display())]
    Import { path: PathBuf, msg: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest { what: String, expected: String, actual: String },
    #[error("registry {registry} unreachable while pulling {image}: {msg}")]
    Unreachable { registry: String, image: String, msg: String },
    #[error("pulling {image} from {registry}: {msg}")]
    Registry { registry: String, image: String, msg: String },
    #[error("unpacking layer {digest}: {msg}")]
    Layer { digest: String, msg: String },
    #[error("auth file {}: {msg}", path.display())]
    Auth { path: PathBuf, msg: String },
    #[error("{0}")]
    Unsupported(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// The error chain of an error, joined with ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The runtime part of an image config (the OCI image config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Cmd", default, deserialize_with = "null_default")]
    pub cmd: Vec<String>,
    #[serde(rename = "Entrypoint", default, deserialize_with = "null_default")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Env", default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(rename = "WorkingDir", default, deserialize_with = "null_default")]
    pub working_dir: String,
    #[serde(rename = "User", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub user: String,
}

/// Image configs write `null` for empty lists; treat it as empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One layer of a stored image (bottom first in [`Record::layers`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the blob as stored / transferred (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar (the snapshot key).
    pub diff_id: String,
    /// Media type of the blob.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// How an image came into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Pull,
    Import,
}

/// One image record (`images/<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// Manifest digest (`repoDigest`), when known.
    #[serde(default)]
    pub manifest_digest: Option<String>,
    /// Config blob digest: the image id.
    pub config_digest: String,
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    pub source: Source,
}

/// One stored image, as printed by `image inspect` / `image ls` / `image pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    /// Image id: the config digest.
    pub id: String,
    /// `repo@sha256:…` when the image was pulled.
    #[serde(rename = "repoDigest", default, skip_serializing_if = "Option::is_none")]
    pub repo_digest: Option<String>,
    /// Overlay lowerdir list, top layer first, `:`-separated.
    pub rootfs: String,
    pub config: ImageConfig,
    /// Sum of the layer blob sizes.
    pub size: u64,
    /// Number of layers.
    pub layers: usize,
    pub source: Source,
}
