//! cgroups for containers (the kubelet's "cgroupfs" driver): one cgroup per
//! container at `linux.cgroupsPath`, under every v1 controller in use or under the
//! v2 unified root, with the pod's requests/limits from `linux.resources`.
//! A limit that cannot be applied is an error, never skipped.
//!
//! `remove` deletes the container's leaf and then every parent that became empty,
//! except the first path element (e.g. for `/minion/pod<uid>/<ctr>` it removes
//! `<ctr>` and, if empty, `pod<uid>`, never `minion`). In runc mode `delete`
//! asks for the leaf only: there the kubelet and containerd own the parents.

mod detect;
pub mod devices_bpf;
mod v1;
mod v2;

use std::fs;
use std::path::{Path, PathBuf};

pub use detect::{detect, Mode};
pub use v2::shares_to_weight;

/// Errors of cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("cannot detect cgroup mode of {}: {source}", path.display())]
    Detect { path: PathBuf, source: nix::Error },
    #[error("cgroup root {} is neither cgroup2 nor a tmpfs of v1 controllers", path.display())]
    UnknownMode { path: PathBuf },
    #[error("cgroup controller {controller} needed for {what} is not available under {}", root.display())]
    MissingController { controller: String, what: String, root: PathBuf },
    #[error("write {value:?} to {}: {source}", path.display())]
    Write { path: PathBuf, value: String, source: std::io::Error },
    #[error("invalid device rule {rule:?}: {reason}")]
    InvalidDeviceRule { rule: String, reason: String },
    #[error("device program ({op}) for cgroup {}: {detail}", path.display())]
    DeviceProgram { op: &'static str, path: PathBuf, detail: String },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Writes `value` to a cgroup file, naming the file and the value on failure.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|source| Error::Write { path: path.to_path_buf(), value: value.into(), source })
}

/// Moves the calling process into every leaf. The caller must be
/// single-threaded: a freshly forked child (the container's init, `exec`'s
/// helper).
///
/// On cgroup v1 this writes "0" to each leaf's `tasks`, which moves the
/// calling thread, and so the whole process. A `cgroup.procs` write moves a
/// thread group: the kernel then takes its global threadgroup lock, and that
/// writer first waits out an RCU grace period. Measured on this CI host: 8-12
/// ms for the first `cgroup.procs` write of a container, 10-95 us for a
/// `tasks` write. cgroup v2 has no `tasks` and moves a thread to another
/// domain only with its process, so there it is `cgroup.procs`.
pub fn enter_self(leaves: &[PathBuf]) -> Result<(), Error> {
    for leaf in leaves {
        let tasks = leaf.join("tasks");
        let file = if tasks.exists() { tasks } else { leaf.join("cgroup.procs") };
        write_file(&file, "0")?;
    }
    Ok(())
}

/// The resource limits minion applies (a subset of `linux.resources`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes; negative means unlimited.
    pub memory_limit: Option<i64>,
    /// Memory+swap bytes (OCI semantics); negative means unlimited.
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Max tasks; zero or negative means unlimited.
    pub pids_limit: Option<i64>,
    /// `linux.resources.devices` as (allow, "c 1:3 rwm") rules, applied in order
    /// before the default list (v1: devices.allow/deny files; v2: an eBPF program).
    pub devices: Vec<(bool, String)>,
}

fn device_rule(d: &oci_spec::runtime::LinuxDeviceCgroup) -> (bool, String) {
    let typ = d.typ().map(|t| t.as_str().to_string()).unwrap_or_else(|| "a".into());
    let num = |n: Option<i64>| n.filter(|v| *v >= 0).map(|v| v.to_string()).unwrap_or_else(|| "*".into());
    let rule = if typ == "a" {
        "a".to_string()
    } else {
        format!("{typ} {}:{} {}", num(d.major()), num(d.minor()), d.access().clone().unwrap_or_else(|| "rwm".into()))
    };
    (d.allow(), rule)
}

impl From<&oci_spec::runtime::LinuxResources> for Resources {
    fn from(r: &oci_spec::runtime::LinuxResources) -> Self {
        let mut out = Resources::default();
        if let Some(m) = r.memory() {
            out.memory_limit = m.limit();
            out.memory_swap = m.swap();
        }
        if let Some(c) = r.cpu() {
            out.cpu_shares = c.shares();
            out.cpu_quota = c.quota();
            out.cpu_period = c.period();
            out.cpuset_cpus = c.cpus().clone();
            out.cpuset_mems = c.mems().clone();
        }
        if let Some(p) = r.pids() {
            out.pids_limit = Some(p.limit());
        }
        out.devices = r.devices().clone().unwrap_or_default().iter().map(device_rule).collect();
        out
    }
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: Mode,
    root: PathBuf,
    /// Path components of `linux.cgroupsPath`.
    parts: Vec<String>,
}

impl Cgroup {
    /// A cgroup at `cgroups_path` (like `/minion/pod<uid>/<ctr>`) under `root`.
    pub fn new(root: &Path, mode: Mode, cgroups_path: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidPath { path: cgroups_path.into(), reason: reason.into() };
        if cgroups_path.contains(':') && !cgroups_path.starts_with('/') {
            return Err(bad("systemd-style paths are not supported (cgroupfs driver only)"));
        }
        let parts: Vec<String> =
            cgroups_path.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect();
        if parts.is_empty() {
            return Err(bad("empty"));
        }
        if parts.iter().any(|p| p == "." || p == "..") {
            return Err(bad("must not contain . or .."));
        }
        Ok(Self { mode, root: root.to_path_buf(), parts })
    }

    /// The hierarchy mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn rel(&self) -> PathBuf {
        self.parts.iter().collect()
    }

    /// Creates the cgroup directories; returns the leaf directories.
    pub fn create(&self, res: &Resources) -> Result<Vec<PathBuf>, Error> {
        match self.mode {
            Mode::V1 => v1::create(&self.root, &self.parts, res),
            Mode::V2 => v2::create(&self.root, &self.parts, res),
        }
    }

    /// Writes the limits into the leaf directories.
    pub fn apply(&self, res: &Resources) -> Result<(), Error> {
        match self.mode {
            Mode::V1 => v1::apply(&self.root, &self.rel(), res),
            Mode::V2 => v2::apply(&self.root.join(self.rel()), res),
        }
    }

    /// The memory cgroup's OOM-kill counter (v1 `memory.oom_control` `oom_kill`,
    /// v2 `memory.events` `oom_kill`); 0 when unknown.
    pub fn oom_kill_count(&self) -> u64 {
        let file = match self.mode {
            Mode::V1 => self.root.join("memory").join(self.rel()).join("memory.oom_control"),
            Mode::V2 => self.root.join(self.rel()).join("memory.events"),
        };
        read_keyed(&file, "oom_kill").unwrap_or(0)
    }

    /// Removes the leaf directories and then empty parents below the first path
    /// element. Missing directories are fine.
    pub fn remove_paths(leaves: &[PathBuf], levels: usize) -> Result<(), Error> {
        for leaf in leaves {
            rmdir_retry(leaf)?;
            let mut p = leaf.parent();
            for _ in 1..levels.saturating_sub(1) {
                let Some(dir) = p else { break };
                if fs::remove_dir(dir).is_err() {
                    break;
                }
                p = dir.parent();
            }
        }
        Ok(())
    }

    /// Number of path elements of `linux.cgroupsPath`.
    pub fn levels(&self) -> usize {
        self.parts.len()
    }
}

/// Reads `key N` from a flat-keyed cgroup file.
pub fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let data = fs::read_to_string(path).ok()?;
    data.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

/// rmdir with a short bounded retry (the kernel frees a cgroup lazily after its
/// last task exits).
fn rmdir_retry(dir: &Path) -> Result<(), Error> {
    let mut last = None;
    // Backs off from 1 ms to 50 ms, about 2 s in all.
    for i in 0..60u64 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis((1 << i.min(5)).min(50)));
    }
    match last {
        Some(e) => Err(io("remove cgroup", dir)(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
