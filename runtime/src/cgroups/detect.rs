//! Hierarchy detection with statfs: cgroup2 magic → unified v2; tmpfs → v1/hybrid.

use std::path::Path;

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};

use super::Error;

/// Which cgroup hierarchy the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Legacy or hybrid: one mount per controller under the root (a tmpfs).
    V1,
    /// Unified: the root is a cgroup2 mount.
    V2,
}

/// Detects the mode of the cgroup root (usually /sys/fs/cgroup).
pub fn detect(root: &Path) -> Result<Mode, Error> {
    let st = statfs(root).map_err(|source| Error::Detect { path: root.to_path_buf(), source })?;
    if st.filesystem_type() == CGROUP2_SUPER_MAGIC {
        Ok(Mode::V2)
    } else if st.filesystem_type() == TMPFS_MAGIC {
        Ok(Mode::V1)
    } else {
        Err(Error::UnknownMode { path: root.to_path_buf() })
    }
}
