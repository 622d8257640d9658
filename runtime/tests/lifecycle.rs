//! Privileged end-to-end tests of the minion-runtime binary: a busybox image,
//! real namespaces, overlayfs, pivot_root, cgroups v1 or v2 (and the v2 mount of this
//! hybrid host), logs, exit codes, OOM, netns. Root required (see require_root).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cgroup_files::{read, CgroupFiles};
use common::{require_root, unique};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A state root, image store, busybox image and bundle; cleans up on drop.
struct Fixture {
    tmp: tempfile::TempDir,
    id: String,
    cg_top: String,
    image_rootfs: PathBuf,
    cgroup_root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        Self::with_cgroup_root(Path::new(CGROUP_ROOT))
    }

    fn with_cgroup_root(cgroup_root: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        for l in ["sh", "echo", "cat", "sleep", "httpd", "hostname", "ls", "id", "head"] {
            std::os::unix::fs::symlink("busybox", src.join("bin").join(l)).unwrap();
        }
        let mut f = Fixture {
            id: unique("mrt"),
            cg_top: unique("minion-test"),
            image_rootfs: PathBuf::new(),
            cgroup_root: cgroup_root.to_path_buf(),
            tmp,
        };
        let out = f.rt(&["image", "import", "busybox", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        f.image_rootfs = PathBuf::from(v["rootfs"].as_str().unwrap());
        f
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn log_path(&self) -> PathBuf {
        self.path("logs/ctr.log")
    }

    fn cgroups_path(&self) -> String {
        format!("/{}/pod/ctr", self.cg_top)
    }

    fn rt(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(self.path("state"))
            .arg("--image-root")
            .arg(self.path("images"))
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--log")
            .arg(self.path("runtime.log"))
            .args(args)
            .output()
            .unwrap()
    }

    fn rt_ok(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn rt_err(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes a bundle running `args`; `edit` adjusts the config.
    fn bundle(&self, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.path("bundle");
        fs::create_dir_all(b.join("rootfs")).unwrap();
        let mut cfg = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
            "hostname": "minion-ctr",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "annotations": {
                "io.minion.image.rootfs": self.image_rootfs.to_str().unwrap(),
                "io.minion.log.path": self.log_path().to_str().unwrap()
            },
            "linux": {
                "cgroupsPath": self.cgroups_path(),
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}],
                "maskedPaths": ["/proc/kcore", "/proc/keys"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        edit(&mut cfg);
        fs::write(b.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        b
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.rt_ok(&["state", &self.id])).unwrap()
    }

    fn wait_status(&self, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.state();
            if st["status"] == want {
                return st;
            }
            assert!(Instant::now() < deadline, "status never became {want}: {st}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.cgroup_root).unwrap().flatten() {
            let d = e.path().join(&self.cg_top);
            if d.exists() {
                out.push(d);
            }
        }
        let d = self.cgroup_root.join(&self.cg_top);
        if d.exists() {
            out.push(d);
        }
        out
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the runtime and its monitor said (--log is also the monitor's stderr).
            let log = fs::read_to_string(self.path("runtime.log")).unwrap_or_default();
            eprintln!("--log of {}: {log}", self.id);
        }
        let _ = self.rt(&["delete", "--force", &self.id]);
        for top in self.cgroup_dirs() {
            for sub in ["pod/ctr", "pod", ""] {
                let _ = fs::remove_dir(top.join(sub));
            }
        }
    }
}

fn mountinfo_mentions(p: &Path) -> bool {
    let s = p.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&s)
}

#[test]
fn run_reports_exit_code_and_writes_cri_log() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(&["/bin/sh", "-c", "echo hi; echo oops >&2; exit 3"], |_| {});
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    let log = f.log();
    assert_eq!(out.status.code(), Some(3), "stderr: {}\nCRI log: {log}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains(" stdout F hi\n"), "{log}");
    assert!(log.contains(" stderr F oops\n"), "{log}");
    let first = log.lines().next().unwrap();
    let ts = first.split(' ').next().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{first}");
    assert!(!f.path("state").join(&f.id).exists(), "run must delete the container");
    assert!(f.cgroup_dirs().iter().all(|d| !d.join("pod/ctr").exists()));
}

#[test]
fn lifecycle_create_start_kill_delete() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(&["sleep", "100"], |_| {});
    let pid_file = f.path("pid");
    f.rt_ok(&["create", &f.id, "--bundle", b.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap()]);
    let st = f.state();
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"].as_i64().unwrap().to_string(), fs::read_to_string(&pid_file).unwrap());
    for k in ["ociVersion", "id", "bundle", "created", "annotations"] {
        assert!(st.get(k).is_some(), "state lacks {k}: {st}");
    }
    let cg = CgroupFiles::new(&f.cgroups_path());
    let leaf = cg.dir("memory");
    let procs = fs::read_to_string(cg.procs()).unwrap();
    assert!(procs.contains(&st["pid"].to_string()), "init not in {}: {procs}", leaf.display());
    // The init moved itself into every hierarchy the runtime uses (on v1 a
    // thread move through `tasks`), not only the memory one.
    let own = fs::read_to_string(format!("/proc/{}/cgroup", st["pid"])).unwrap();
    let used = ["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "name=systemd"];
    let mut joined = 0;
    for line in own.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next().unwrap(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        let ours = if cg.is_v2() { ctrls.is_empty() } else { ctrls.split(',').any(|c| used.contains(&c)) };
        if ours {
            assert_eq!(path, f.cgroups_path(), "init not in its cgroup for {ctrls:?}: {own}");
            joined += 1;
        }
    }
    assert!(joined >= if cg.is_v2() { 1 } else { 4 }, "{own}");
    let list: Value = serde_json::from_str(&f.rt_ok(&["list"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    f.rt_ok(&["start", &f.id]);
    let st = f.state();
    assert_eq!(st["status"], "running");
    assert!(st["startedAt"].is_string());
    let err = f.rt_err(&["start", &f.id]);
    assert!(err.starts_with("minion-runtime: error: "), "{err}");
    let err = f.rt_err(&["delete", &f.id]);
    assert!(err.contains("running"), "{err}");

    f.rt_ok(&["kill", &f.id, "KILL"]);
    let st = f.wait_status("stopped");
    assert_eq!(st["exitCode"], 137);
    assert_eq!(st["reason"], "Error");
    assert!(st["finishedAt"].is_string());
    let err = f.rt_err(&["kill", &f.id, "9"]);
    assert!(err.contains("not running"), "{err}");

    f.rt_ok(&["delete", &f.id]);
    assert!(!f.path("state").join(&f.id).exists());
    assert!(!leaf.exists(), "cgroup leaf left behind");
    assert!(!leaf.parent().unwrap().exists(), "empty pod cgroup left behind");
    assert!(!mountinfo_mentions(f.tmp.path()), "mounts left on the host");
    let err = f.rt_err(&["state", &f.id]);
    assert!(err.contains(&format!("container \"{}\" does not exist", f.id)), "{err}");
}

#[test]
fn delete_force_kills_running_container() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(&["sleep", "100"], |_| {});
    f.rt_ok(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    f.rt_ok(&["start", &f.id]);
    let pid = f.state()["pid"].as_i64().unwrap();
    f.rt_ok(&["delete", "--force", &f.id]);
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || {
        std::thread::sleep(Duration::from_millis(200));
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(!f.path("state").join(&f.id).exists());
    assert!(!mountinfo_mentions(f.tmp.path()));
}

#[test]
fn memory_limit_is_applied_and_oom_is_reported() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let script = "x=0123456789abcdef; while :; do x=$x$x; done";
    let b = f.bundle(&["sh", "-c", script], |c| {
        c["linux"]["resources"] = json!({"memory": {"limit": 16 << 20}, "pids": {"limit": 64}, "cpu": {"shares": 256}});
    });
    f.rt_ok(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    let cg = CgroupFiles::new(&f.cgroups_path());
    assert_eq!(read(&cg.memory_limit()), Some((16 << 20).to_string()));
    assert_eq!(read(&cg.pids_max()).as_deref(), Some("64"));
    let (weight, want) = cg.cpu_weight(256);
    assert_eq!(read(&weight), Some(want));
    f.rt_ok(&["start", &f.id]);
    let st = f.wait_status("stopped");
    assert_eq!(st["exitCode"], 137, "{st}");
    assert_eq!(st["reason"], "OOMKilled", "{st}");
}

#[test]
fn hostname_and_pid_one() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(&["sh", "-c", "hostname; echo pid=$$; cat /etc/resolv.conf"], |c| {
        let resolv = c["annotations"]["io.minion.log.path"].as_str().unwrap().replace("logs/ctr.log", "resolv.conf");
        c["mounts"].as_array_mut().unwrap().push(json!(
            {"destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "ro"]}
        ));
    });
    fs::write(f.path("resolv.conf"), "nameserver 10.96.0.10\n").unwrap();
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = f.log();
    assert!(log.contains("stdout F minion-ctr\n"), "{log}");
    assert!(log.contains("stdout F pid=1\n"), "{log}");
    assert!(log.contains("stdout F nameserver 10.96.0.10\n"), "{log}");
    assert!(!nix::unistd::gethostname().unwrap().to_string_lossy().contains("minion-ctr"));
}

/// Removes the netns on drop.
struct NetnsGuard(PathBuf);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new(BIN).arg("netns").arg("del").arg(&self.0).status();
    }
}

#[test]
fn joins_netns_made_by_netns_add() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let ns = NetnsGuard(PathBuf::from("/run/netns").join(unique("minion-test")));
    f.rt_ok(&["netns", "add", ns.0.to_str().unwrap()]);
    let ns_path = ns.0.to_str().unwrap().to_string();
    let b = f.bundle(&["cat", "/proc/net/dev"], |c| {
        c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": ns_path}]);
        c.as_object_mut().unwrap().remove("hostname");
    });
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = f.log();
    let ifaces: Vec<&str> = log.lines().filter_map(|l| l.split(" F ").nth(1)).filter(|l| l.contains(':')).collect();
    assert_eq!(ifaces.len(), 1, "{log}");
    assert!(ifaces[0].trim_start().starts_with("lo:"), "{log}");
    f.rt_ok(&["netns", "del", ns.0.to_str().unwrap()]);
    assert!(!ns.0.exists());
    f.rt_ok(&["netns", "del", ns.0.to_str().unwrap()]);
}

#[test]
fn create_reports_clear_errors() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(&["httpd-missing", "-f"], |_| {});
    let err = f.rt_err(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    assert!(err.contains("exec: \"httpd-missing\": executable file not found"), "{err}");
    assert!(!f.path("state").join(&f.id).exists(), "failed create must clean up");
    assert!(f.cgroup_dirs().iter().all(|d| !d.join("pod/ctr").exists()));

    let b = f.bundle(&["sh"], |c| {
        c["annotations"]["io.minion.image.rootfs"] = json!("/nonexistent/minion/rootfs");
    });
    let err = f.rt_err(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    assert!(err.contains("/nonexistent/minion/rootfs") && err.contains("does not exist"), "{err}");

    let b = f.bundle(&["sh"], |c| {
        c["annotations"].as_object_mut().unwrap().remove("io.minion.image.rootfs");
        c["root"]["path"] = json!("no-such-rootfs");
    });
    let err = f.rt_err(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    assert!(err.contains("no-such-rootfs") && err.contains("does not exist"), "{err}");

    let err = f.rt_err(&["image", "inspect", "nosuchimage"]);
    assert!(err.contains("image \"docker.io/library/nosuchimage:latest\" not found in store"), "{err}");
    let err = f.rt_err(&["state", "nosuch"]);
    assert!(err.trim() == "minion-runtime: error: container \"nosuch\" does not exist", "{err}");
}

#[test]
fn cgroup_v2_unified_mount() {
    if !require_root() {
        return;
    }
    let Some(root) = cgroup2_root() else { return };
    let f = Fixture::with_cgroup_root(root);
    let b = f.bundle(&["sh", "-c", "cat /proc/self/cgroup"], |_| {});
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = f.log();
    assert!(log.contains(&format!("0::{}", f.cgroups_path())), "{log}");
    assert!(!root.join(f.cgroups_path().trim_start_matches('/')).exists());
}

/// `exec` on cgroup v2: the helper joins the container's cgroup through
/// `cgroup.procs` before it forks the process, which sees the cgroup as its own.
#[test]
fn exec_on_cgroup_v2_runs_in_the_container_cgroup() {
    if !require_root() {
        return;
    }
    let Some(root) = cgroup2_root() else { return };
    let f = Fixture::with_cgroup_root(root);
    let b = f.bundle(&["sleep", "100"], |_| {});
    f.rt_ok(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    f.rt_ok(&["start", &f.id]);
    let out = f.rt_ok(&["exec", &f.id, "--", "cat", "/proc/self/cgroup"]);
    assert!(out.contains(&format!("0::{}", f.cgroups_path())), "{out}");
    let procs = fs::read_to_string(root.join(f.cgroups_path().trim_start_matches('/')).join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 1, "only the init is left in the cgroup: {procs}");
    f.rt_ok(&["delete", "--force", &f.id]);
    assert!(!root.join(f.cgroups_path().trim_start_matches('/')).exists());
}

/// The node's cgroup2 hierarchy: the root on a v2 node, `unified` on a hybrid one;
/// None (the caller skips, with this message) on a v1-only node.
fn cgroup2_root() -> Option<&'static Path> {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if minion_runtime::cgroups::detect(Path::new(CGROUP_ROOT)).ok() == Some(minion_runtime::cgroups::Mode::V2) {
        Some(Path::new(CGROUP_ROOT))
    } else if unified.join("cgroup.procs").exists() {
        Some(unified)
    } else {
        eprintln!("skipping: no cgroup2 mount");
        None
    }
}

/// The v2 device allowlist is an eBPF program on the container's cgroup: it also
/// works on the cgroup2 hierarchy of a hybrid host, without the v1 devices files.
#[test]
fn cgroup_v2_device_program_enforces_the_allowlist() {
    if !require_root() {
        return;
    }
    let Some(root) = cgroup2_root() else { return };
    let script = "(: > /dev/kmsg) 2>/dev/null && echo kmsg-open || echo kmsg-denied; echo x > /dev/null && echo devnull";
    for (resources, want) in [
        (json!({}), "kmsg-denied"),
        (json!({"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}]}), "kmsg-open"),
        (json!({"devices": [{"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}]}), "kmsg-denied"),
    ] {
        let f = Fixture::with_cgroup_root(root);
        let b = f.bundle(&["sh", "-c", script], |c| {
            c["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
            c["linux"]["resources"] = resources.clone();
        });
        let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let log = f.log();
        assert!(log.contains(&format!("stdout F {want}\n")) && log.contains("stdout F devnull\n"), "{resources}: {log}");
        assert!(!root.join(f.cgroups_path().trim_start_matches('/')).exists());
    }
}

fn status_field(log: &str, key: &str) -> String {
    log.lines()
        .filter_map(|l| l.split(" F ").nth(1))
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn capabilities_user_and_no_new_privs() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    // A non-root process keeps capabilities across exec only through the
    // ambient set (as with runc).
    let caps = json!(["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
    let b = f.bundle(&["cat", "/proc/self/status"], |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1001]});
        c["process"]["noNewPrivileges"] = json!(true);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps});
    });
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = f.log();
    assert_eq!(status_field(&log, "CapBnd"), "0000000000000420", "{log}");
    assert_eq!(status_field(&log, "CapEff"), "0000000000000420", "{log}");
    assert_eq!(status_field(&log, "CapPrm"), "0000000000000420", "{log}");
    assert_eq!(status_field(&log, "CapAmb"), "0000000000000420", "{log}");
    assert_eq!(status_field(&log, "NoNewPrivs"), "1", "{log}");
    assert!(status_field(&log, "Uid").starts_with("1000"), "{log}");
    assert!(status_field(&log, "Gid").starts_with("1000"), "{log}");
    assert_eq!(status_field(&log, "Groups"), "1001", "{log}");
}

#[test]
fn default_capabilities_without_spec() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let b = f.bundle(&["cat", "/proc/self/status"], |_| {});
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = f.log();
    // containerd/docker's default set.
    assert_eq!(status_field(&log, "CapBnd"), "00000000a80425fb", "{log}");
    assert_eq!(status_field(&log, "CapEff"), "00000000a80425fb", "{log}");
}

#[test]
fn start_reports_exec_failure() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    // Executable per access(2), but its interpreter is missing: exec fails at start.
    let bad = f.image_rootfs.join("bin/bad");
    fs::write(&bad, "#!/nonexistent/interp\n").unwrap();
    fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = f.bundle(&["/bin/bad"], |_| {});
    f.rt_ok(&["create", &f.id, "--bundle", b.to_str().unwrap()]);
    let err = f.rt_err(&["start", &f.id]);
    assert!(err.contains("start failed: exec") && err.contains("/bin/bad"), "{err}");
    let st = f.wait_status("stopped");
    assert_eq!(st["reason"], "Error");
    assert!(st["message"].as_str().unwrap().contains("/bin/bad"), "{st}");
    f.rt_ok(&["delete", &f.id]);
}

#[test]
fn readonly_rootfs_rlimits_and_devices() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let script = "ulimit -n; echo x > /f 2>/dev/null || echo rofs; echo ok > /dev/null && echo devnull; (: > /dev/kmsg) 2>/dev/null || echo nokmsg";
    let b = f.bundle(&["sh", "-c", script], |c| {
        c["root"]["readonly"] = json!(true);
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}]);
        c["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
    });
    let out = f.rt(&["run", &f.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = f.log();
    assert!(log.contains("stdout F 512\n"), "{log}");
    assert!(log.contains("stdout F rofs\n"), "{log}");
    assert!(log.contains("stdout F devnull\n"), "{log}");
    // /dev/kmsg is bind-mounted in but the devices cgroup does not allow it.
    assert!(log.contains("stdout F nokmsg\n"), "{log}");

    // An allow rule in linux.resources.devices opens it.
    let f2 = Fixture::new();
    let b = f2.bundle(&["sh", "-c", "(: > /dev/kmsg) 2>/dev/null && echo kmsg-open || echo kmsg-denied"], |c| {
        c["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
        // runc's `spec` starts with deny-all; the runtime still allows its defaults.
        c["linux"]["resources"] = json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "rwm"}
        ]});
    });
    let out = f2.rt(&["run", &f2.id, "--bundle", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(f2.log().contains("stdout F kmsg-open\n"), "{}", f2.log());
}
