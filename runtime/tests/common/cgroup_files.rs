//! Where a test reads a container's cgroup files: the v1 per-controller
//! hierarchies or the v2 unified tree, by the runtime's own detection.

use std::fs;
use std::path::{Path, PathBuf};

use minion_runtime::cgroups::{self, Mode};

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup mode of this host, as the runtime detects it.
pub fn mode() -> Mode {
    cgroups::detect(Path::new(ROOT)).expect("detect the cgroup mode of /sys/fs/cgroup")
}

/// A container's cgroup at `cgroups_path` (absolute, like `/top/ctr`).
pub struct CgroupFiles {
    mode: Mode,
    rel: PathBuf,
}

impl CgroupFiles {
    pub fn new(cgroups_path: &str) -> Self {
        Self { mode: mode(), rel: PathBuf::from(cgroups_path.trim_start_matches('/')) }
    }

    pub fn is_v2(&self) -> bool {
        self.mode == Mode::V2
    }

    /// The leaf directory holding `controller`'s files (v2: the one leaf).
    pub fn dir(&self, controller: &str) -> PathBuf {
        match self.mode {
            Mode::V1 => Path::new(ROOT).join(controller).join(&self.rel),
            Mode::V2 => Path::new(ROOT).join(&self.rel),
        }
    }

    /// The file listing the member processes (v1: in the memory hierarchy).
    pub fn procs(&self) -> PathBuf {
        self.dir("memory").join("cgroup.procs")
    }

    /// The memory limit file: `memory.limit_in_bytes` or `memory.max`.
    pub fn memory_limit(&self) -> PathBuf {
        match self.mode {
            Mode::V1 => self.dir("memory").join("memory.limit_in_bytes"),
            Mode::V2 => self.dir("memory").join("memory.max"),
        }
    }

    /// `pids.max` (same name in both modes).
    pub fn pids_max(&self) -> PathBuf {
        self.dir("pids").join("pids.max")
    }

    /// The cpu weight file and the value cpu `shares` turns into there.
    pub fn cpu_weight(&self, shares: u64) -> (PathBuf, String) {
        match self.mode {
            Mode::V1 => (self.dir("cpu").join("cpu.shares"), shares.to_string()),
            Mode::V2 => (self.dir("cpu").join("cpu.weight"), cgroups::shares_to_weight(shares).to_string()),
        }
    }

    /// CPU time used, in nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat` usage_usec).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match self.mode {
            Mode::V1 => fs::read_to_string(self.dir("cpuacct").join("cpuacct.usage")).ok()?.trim().parse().ok(),
            Mode::V2 => cgroups::read_keyed(&self.dir("cpu").join("cpu.stat"), "usage_usec").map(|u| u * 1000),
        }
    }
}

/// Reads a cgroup file, trimmed; None when it is missing.
pub fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}
