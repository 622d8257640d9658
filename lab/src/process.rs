//! The lab's daemons: started inside a node's network namespace with `nsenter --net`
//! (which, unlike `ip netns exec`, keeps the host's mount namespace, so the pod
//! namespaces and cgroups the agent makes are visible to `ip netns` and to `down`),
//! recorded by pid and start time, and stopped by pid only.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::net::{wait_for, NETNS_DIR};
use crate::LabError;

/// A daemon the lab started: enough to find it again and to know it is still ours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Daemon {
    pub name: String,
    pub netns: String,
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat at start; a reused pid has another.
    pub start_time: u64,
    pub log: PathBuf,
    /// The program and its arguments, so `restart` can start it again.
    #[serde(default)]
    pub bin: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
}

/// Starts `bin args...` in `netns`, logging to `log`, in its own process group so a
/// Ctrl-C on `minion-lab` does not reach it.
pub fn spawn_in_netns(name: &str, netns: &str, bin: &Path, args: &[String], log: &Path) -> Result<Daemon, LabError> {
    use std::os::unix::process::CommandExt;
    let out = OpenOptions::new().create(true).append(true).open(log).map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    let child = Command::new("nsenter")
        .arg(format!("--net={NETNS_DIR}/{netns}"))
        .arg("--")
        .arg(bin)
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::Command { command: format!("nsenter ... {}", bin.display()), detail: e.to_string() })?;
    let pid = child.id() as i32;
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Daemon {
        name: name.to_string(),
        netns: netns.to_string(),
        pid,
        start_time,
        log: log.to_path_buf(),
        bin: bin.to_path_buf(),
        args: args.to_vec(),
    })
}

/// The start time of a process in clock ticks since boot, or None if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Daemon {
    /// True while the recorded process still runs (and is not a zombie).
    pub fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else { return false };
        let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
        state != Some('Z') && start_time(self.pid) == Some(self.start_time)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Only ever signals the recorded pid.
    pub fn stop(&self, grace: Duration) {
        if !self.alive() {
            return;
        }
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGTERM);
        if wait_for(&self.name, grace.as_secs().max(1), || !self.alive()).is_err() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = wait_for(&self.name, 5, || !self.alive());
        }
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The daemons file of a lab.
pub fn load(path: &Path) -> Vec<Daemon> {
    File::open(path).ok().and_then(|f| serde_json::from_reader(f).ok()).unwrap_or_default()
}

/// Writes the daemons file (atomically, so `down` never reads half a file).
pub fn save(path: &Path, daemons: &[Daemon]) -> Result<(), LabError> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(daemons).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
