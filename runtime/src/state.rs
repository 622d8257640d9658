//! Container state: what `crictl inspect` / runc `state` report. One directory per
//! container under `--root` holds `state.json` (written atomically, by `create`'s
//! monitor only), the monitor's start socket and the overlay upper/work dirs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the state file in a container's directory.
pub const STATE_FILE: &str = "state.json";
/// runc mode: the fifo a created container's init waits on until `start`
/// (removed by `start`, so its presence means `created`).
pub const EXEC_FIFO: &str = "exec.fifo";

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0:?} does not exist")]
    NotExist(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("bad state file {}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
}

/// Lifecycle status, as in the OCI runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// Why a container stopped (the CRI `reason`).
pub const REASON_COMPLETED: &str = "Completed";
/// Non-zero exit or failed start.
pub const REASON_ERROR: &str = "Error";
/// Killed by the kernel OOM killer in the container's memory cgroup.
pub const REASON_OOM: &str = "OOMKilled";

/// The state JSON (runc's fields plus exit information).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub oci_version: String,
    pub id: String,
    /// Host pid of the container's init (0 before it exists).
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Error text when the process could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Pid of the container's monitor (its parent and reaper).
    #[serde(default)]
    pub monitor_pid: i32,
    /// `starttime` (field 22 of /proc/pid/stat) of the init, to detect pid reuse.
    #[serde(default)]
    pub init_start_time: u64,
    /// cgroup directories made for this container (removed by `delete`).
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// `linux.cgroupsPath` used for the container.
    #[serde(default)]
    pub cgroups_path: String,
    /// Created in runc mode: no monitor; the caller (containerd's shim) is the
    /// init's reaper, and the status comes from /proc and the exec fifo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runc_mode: bool,
}

/// Current time in RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Validates a container id (one path component).
pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

impl ContainerState {
    /// Status of a runc-mode container: `creating` while only the provisional
    /// state (saved right after the fork) exists, `created` while its init waits
    /// on the exec fifo (`fifo_exists`), `running` once started, `stopped` once
    /// the init is gone or a zombie (no exit code: the caller reaped it).
    pub fn refreshed_runc(mut self, init_alive: bool, fifo_exists: bool) -> Self {
        self.status = if self.pid == 0 {
            Status::Creating
        } else if !init_alive {
            Status::Stopped
        } else if self.status == Status::Creating {
            Status::Creating
        } else if fifo_exists {
            Status::Created
        } else {
            Status::Running
        };
        self
    }

    /// Status derived from recorded facts and whether the init is alive.
    /// `init_alive` tells whether the init pid still runs with the recorded start
    /// time; a dead init with no recorded exit means the monitor died.
    pub fn refreshed(mut self, init_alive: bool, monitor_alive: bool) -> Self {
        if self.finished_at.is_some() || self.exit_code.is_some() {
            self.status = Status::Stopped;
        } else if self.pid == 0 {
            self.status = Status::Creating;
        } else if !init_alive && !monitor_alive {
            self.status = Status::Stopped;
            self.exit_code = Some(255);
            self.reason = Some(REASON_ERROR.into());
            self.message.get_or_insert_with(|| "container monitor exited without recording the exit".into());
        } else if self.started_at.is_some() {
            self.status = Status::Running;
        } else {
            self.status = Status::Created;
        }
        self
    }
}

/// The runtime's state root (`--root`).
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

impl StateStore {
    /// A store rooted at `root` (created lazily).
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the directory of a new container; fails if it exists.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf, Error> {
        validate_id(id)?;
        fs::create_dir_all(&self.root).map_err(io("create state root", &self.root))?;
        let d = self.dir(id);
        match fs::create_dir(&d) {
            Ok(()) => Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(id.into())),
            Err(e) => Err(io("create state dir", &d)(e)),
        }
    }

    /// Whether the container's directory exists.
    pub fn exists(&self, id: &str) -> bool {
        validate_id(id).is_ok() && self.dir(id).is_dir()
    }

    /// Reads the recorded state (not refreshed).
    pub fn load(&self, id: &str) -> Result<ContainerState, Error> {
        validate_id(id).map_err(|_| Error::NotExist(id.into()))?;
        let p = self.dir(id).join(STATE_FILE);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotExist(id.into())),
            Err(e) => return Err(io("read", &p)(e)),
        };
        serde_json::from_slice(&data).map_err(|source| Error::Json { path: p, source })
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, st: &ContainerState) -> Result<(), Error> {
        let d = self.dir(&st.id);
        let p = d.join(STATE_FILE);
        let tmp = d.join(format!(".{STATE_FILE}.{}", std::process::id()));
        let data = serde_json::to_vec_pretty(st).map_err(|source| Error::Json { path: p.clone(), source })?;
        fs::write(&tmp, data).map_err(io("write", &tmp))?;
        fs::rename(&tmp, &p).map_err(io("rename", &tmp))
    }

    /// Ids of all containers with a directory, sorted.
    pub fn ids(&self) -> Result<Vec<String>, Error> {
        let rd = match fs::read_dir(&self.root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io("read dir", &self.root)(e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes a container's directory.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let d = self.dir(id);
        match fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &d)(e)),
        }
    }
}

/// Reads `starttime` (field 22) of /proc/<pid>/stat under `proc_root`.
pub fn proc_start_time(proc_root: &Path, pid: i32) -> Option<u64> {
    let data = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // comm may contain spaces and parens: fields start after the last ')'.
    let rest = &data[data.rfind(')')? + 1..];
    // rest starts with field 3 (state); starttime is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` runs and is the same process (same start time) as recorded.
pub fn pid_matches(pid: i32, start_time: u64) -> bool {
    pid > 0 && proc_start_time(Path::new("/proc"), pid) == Some(start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ContainerState {
        ContainerState {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            pid: 42,
            status: Status::Created,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-02T03:04:05.000000001Z".into(),
            owner: String::new(),
            annotations: BTreeMap::from([("a".to_string(), "b".to_string())]),
            exit_code: None,
            reason: None,
            message: None,
            started_at: None,
            finished_at: None,
            monitor_pid: 41,
            init_start_time: 7,
            cgroup_paths: vec![],
            cgroups_path: "/minion/c1".into(),
            runc_mode: false,
        }
    }

    #[test]
    fn json_field_names() {
        let mut s = sample();
        s.exit_code = Some(3);
        s.reason = Some(REASON_ERROR.into());
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        for k in ["ociVersion", "id", "pid", "status", "bundle", "created", "annotations", "exitCode", "reason"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["status"], "created");
        assert!(v.get("startedAt").is_none());
        let back: ContainerState = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn refresh_status() {
        assert_eq!(sample().refreshed(true, true).status, Status::Created);
        let mut s = sample();
        s.started_at = Some(now_rfc3339());
        assert_eq!(s.clone().refreshed(true, true).status, Status::Running);
        let dead = s.clone().refreshed(false, false);
        assert_eq!(dead.status, Status::Stopped);
        assert_eq!(dead.exit_code, Some(255));
        s.exit_code = Some(0);
        s.finished_at = Some(now_rfc3339());
        assert_eq!(s.refreshed(false, false).status, Status::Stopped);
    }

    #[test]
    fn refresh_runc_status() {
        let mut s = sample();
        s.runc_mode = true;
        assert_eq!(s.clone().refreshed_runc(true, true).status, Status::Created);
        assert_eq!(s.clone().refreshed_runc(true, false).status, Status::Running);
        let gone = s.clone().refreshed_runc(false, true);
        assert_eq!((gone.status, gone.exit_code), (Status::Stopped, None));
        // The provisional state `create` saves right after the fork.
        let mut p = s.clone();
        p.status = Status::Creating;
        assert_eq!(p.clone().refreshed_runc(true, true).status, Status::Creating);
        assert_eq!(p.refreshed_runc(false, true).status, Status::Stopped);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["runcMode"], true);
        assert!(serde_json::to_value(sample()).unwrap().get("runcMode").is_none());
    }

    #[test]
    fn store_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        assert!(matches!(store.load("c1"), Err(Error::NotExist(_))));
        store.create_dir("c1").unwrap();
        assert!(matches!(store.create_dir("c1"), Err(Error::Exists(_))));
        store.save(&sample()).unwrap();
        assert_eq!(store.load("c1").unwrap(), sample());
        assert_eq!(store.ids().unwrap(), vec!["c1".to_string()]);
        store.remove("c1").unwrap();
        assert!(store.ids().unwrap().is_empty());
        assert!(store.create_dir("../x").is_err());
    }

    #[test]
    fn start_time_of_self() {
        let me = std::process::id() as i32;
        let t = proc_start_time(Path::new("/proc"), me).unwrap();
        assert!(pid_matches(me, t));
        assert!(!pid_matches(me, t + 1));
    }
}
