//! runc mode helpers: the test process plays containerd's shim (a child
//! subreaper owning the container's stdio and reaping its processes).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;

use super::bundle::{Bx, BIN};

/// Like containerd's shim: orphans of the runtime (the init, exec'd processes)
/// are re-parented to this test process.
pub fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// The runtime invoked as `minion-runc` (runc mode by name).
pub fn runc(f: &Bx) -> Command {
    let link = f.path("minion-runc");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let mut c = Command::new(link);
    c.arg("--root").arg(f.path("state")).arg("--log").arg(f.path("log.json")).arg("--log-format").arg("json");
    c
}

pub fn ok(c: &mut Command) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn state(f: &Bx) -> Value {
    serde_json::from_str(&ok(runc(f).args(["state", &f.id]))).unwrap()
}

/// Waits (bounded) for a child of this process (direct or re-parented).
pub fn reap(pid: i32) -> WaitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {}
            s => return s,
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_child(c: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "runtime command did not return");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn ppid(pid: i32) -> i32 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap().trim().parse().unwrap()
}

pub fn cgroup_leaves(st: &Value) -> Vec<PathBuf> {
    st["cgroupPaths"].as_array().unwrap().iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect()
}

/// `create` with files as the container's stdout/stderr and a pipe as its stdin.
pub fn create(f: &Bx, b: &Path) -> (Child, PathBuf, PathBuf) {
    let (out, err) = (f.path("stdout"), f.path("stderr"));
    let mut c = runc(f)
        .args(["create", "--bundle", b.to_str().unwrap(), "--pid-file", f.path("init.pid").to_str().unwrap(), &f.id])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let st = wait_child(&mut c);
    assert!(st.success(), "create: {}", fs::read_to_string(&err).unwrap_or_default());
    (c, out, err)
}

/// A created, not started, container running `sleep 100`: its bundle and the
/// `create` child (it holds the pipe that is the init's stdin).
pub fn create_sleeper(f: &Bx) -> (PathBuf, Child) {
    let b = f.bundle(&["sleep", "100"], |_| {});
    let (c, _, _) = create(f, &b);
    (b, c)
}

/// The session id of `pid` (field 6 of /proc/<pid>/stat, in our pid namespace).
pub fn session_of(pid: i32) -> i32 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Whether a live (not zombie) process is in a cgroup whose path contains `name`.
pub fn live_process_in_cgroup(name: &str) -> Option<i32> {
    let rd = fs::read_dir("/proc").ok()?;
    rd.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).find(|pid| {
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')));
        !zombie && fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(name))
    })
}
