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

/// The commands a test drives are on PATH; missing ones skip (naming them and
/// `hint`), unless CI is set (then fail).
pub fn require_commands(commands: &[&str], hint: &str) -> bool {
    let missing: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|t| !std::process::Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().is_ok_and(|o| o.status.success()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing tools {missing:?} (CI is set, refusing to skip)");
    }
    eprintln!("skipping: missing {missing:?} ({hint})");
    false
}
