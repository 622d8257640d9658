//! A busybox bundle (rootfs directory, no image store) and a private state root
//! for the seccomp, terminal and hook tests; deletes the container and its
//! cgroups on drop.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::unique;

pub const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");

pub struct Bx {
    pub tmp: tempfile::TempDir,
    pub id: String,
    pub cg_top: String,
}

impl Bx {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("bundle/rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for l in ["sh", "cat", "sleep", "echo", "mkdir", "ls", "true", "tty", "id", "wc", "grep", "stty"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).unwrap();
        }
        Bx { tmp, id: unique("msc"), cg_top: unique("minion-sc") }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// The container's stdout and stderr messages from the CRI log.
    pub fn output(&self) -> String {
        let log = fs::read_to_string(self.path("ctr.log")).unwrap_or_default();
        log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).collect::<Vec<_>>().join("\n")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(self.path("state"));
        c
    }

    pub fn rt(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn rt_ok(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the bundle's config.json running `args`; `edit` adjusts it.
    pub fn bundle(&self, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.path("bundle");
        let mut cfg = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": args, "cwd": "/", "env": ["PATH=/bin", "HOME=/root"], "user": {"uid": 0, "gid": 0},
                "noNewPrivileges": true},
            "hostname": "sc-host",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
            ],
            "annotations": {"io.minion.log.path": self.path("ctr.log").to_str().unwrap()},
            "linux": {
                "cgroupsPath": format!("/{}/ctr", self.cg_top),
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]
            }
        });
        edit(&mut cfg);
        fs::write(b.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        b
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&self.rt_ok(&["state", &self.id])).unwrap()
    }

    pub fn wait_stopped(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.state();
            if st["status"] == "stopped" {
                return st;
            }
            assert!(Instant::now() < deadline, "never stopped: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `run` (create, start, wait, delete): the exit code and the log text.
    pub fn run(&self, b: &Path) -> (i32, String) {
        let out = self.rt(&["run", "--bundle", b.to_str().unwrap(), &self.id]);
        let code = out.status.code().unwrap_or(-1);
        (code, format!("{}{}", self.output(), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Bx {
    fn drop(&mut self) {
        let _ = self.rt(&["delete", "--force", &self.id]);
        for c in ["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "systemd", "unified", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc"] {
            let top = Path::new("/sys/fs/cgroup").join(c).join(&self.cg_top);
            let _ = fs::remove_dir(top.join("ctr"));
            let _ = fs::remove_dir(&top);
        }
    }
}
