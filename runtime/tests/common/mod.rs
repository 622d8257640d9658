//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

pub mod bundle;
pub mod cgroup_files;
pub mod oci_fixture;
pub mod runc;

use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique name (pid + counter).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Root is needed; without it skip, unless CI is set (then fail).
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("privileged test needs root (CI is set, refusing to skip)");
    }
    eprintln!("skipping privileged test: not root");
    false
}
