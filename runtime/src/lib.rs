//! minion-runtime: the node's OCI runtime (what runc + containerd-shim are to a
//! Kubernetes node). It creates containers from OCI bundles, leaves one monitor
//! process per container (parent, reaper, log writer), manages cgroups v1 and v2,
//! makes pod-sandbox network namespaces and keeps a local image store. Invoked as
//! `…runc` (or with `--runc-mode`) it is a monitor-less runc for containerd's shim.

pub mod bundle;
pub mod cgroups;
pub mod cli;
pub mod exec;
pub mod hooks;
pub mod image;
pub mod init;
pub mod monitor;
pub mod netns;
pub mod runc_mode;
pub mod sealed_exe;
pub mod seccomp;
pub mod signal;
pub mod state;
pub mod sys;

pub use image::{normalize_image_name, ImageStore};
