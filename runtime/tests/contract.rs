//! Privileged tests of the runc contract (exec, ps, kill --all, run --detach,
//! --log-format json, repeatable delete), of safety as seen from inside a
//! container, of the pids and cpu limits, and a comparison with runc: the same
//! bundle under runc and minion-runtime must look the same from inside.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cgroup_files::{read, CgroupFiles};
use common::{require_root, unique};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");

/// A busybox rootfs bundle (no image store) and a state root; `bin` is the
/// runtime (ours or runc). Deletes the container and its cgroups on drop.
struct Fx {
    tmp: tempfile::TempDir,
    id: String,
    cg_top: String,
    bin: String,
}

impl Fx {
    fn new(bin: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("bundle/rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for l in ["sh", "cat", "sleep", "hostname", "id", "head", "wc", "grep", "sort", "touch", "echo", "readlink", "pwd", "ls", "awk", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).unwrap();
        }
        Fx { tmp, id: unique("mct"), cg_top: unique("minion-ct"), bin: bin.to_string() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("ctr.log")).unwrap_or_default()
    }

    /// The container's stdout lines from the CRI log.
    fn stdout_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(4, ' ');
                let (_, stream, _, msg) = (it.next()?, it.next()?, it.next()?, it.next()?);
                (stream == "stdout").then(|| msg.to_string())
            })
            .collect()
    }

    fn rt(&self, args: &[&str]) -> Output {
        Command::new(&self.bin).arg("--root").arg(self.path("state")).args(args).output().unwrap()
    }

    fn rt_ok(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert!(out.status.success(), "{} {args:?}: {}", self.bin, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn bundle(&self, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.path("bundle");
        let caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"];
        let mut cfg = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": args, "cwd": "/", "env": ["PATH=/bin", "HOME=/root"], "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true},
            "hostname": "cmp-host",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "annotations": {"io.minion.log.path": self.path("ctr.log").to_str().unwrap()},
            "linux": {
                "cgroupsPath": format!("/{}/ctr", self.cg_top),
                "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 64}, "cpu": {"shares": 512}},
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        edit(&mut cfg);
        fs::write(b.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        b
    }

    fn create_start(&self, b: &Path) {
        self.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &self.id]);
        self.rt_ok(&["start", &self.id]);
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.rt_ok(&["state", &self.id])).unwrap()
    }

    fn wait_stopped(&self) -> Value {
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

    /// The container's cgroup files (v1 or v2, as the runtime detects).
    fn cg(&self) -> CgroupFiles {
        CgroupFiles::new(&format!("/{}/ctr", self.cg_top))
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        let _ = self.rt(&["delete", "--force", &self.id]);
        for c in ["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "systemd", "unified"] {
            let top = Path::new("/sys/fs/cgroup").join(c).join(&self.cg_top);
            let _ = fs::remove_dir(top.join("ctr"));
            let _ = fs::remove_dir(&top);
        }
        let top = Path::new("/sys/fs/cgroup").join(&self.cg_top);
        let _ = fs::remove_dir(top.join("ctr"));
        let _ = fs::remove_dir(&top);
    }
}

#[test]
fn exec_ps_kill_all_and_repeatable_delete() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let b = f.bundle(&["sh", "-c", "sleep 100 & sleep 100"], |_| {});
    f.create_start(&b);
    let exec = |args: &[&str]| {
        let mut a = vec!["exec", &f.id, "--"];
        a.extend_from_slice(args);
        f.rt(&a)
    };
    let out = exec(&["hostname"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cmp-host");
    assert_eq!(exec(&["sh", "-c", "exit 7"]).status.code(), Some(7));
    let out = f.rt_ok(&["exec", "--cwd", "/tmp", "-e", "FOO=bar", &f.id, "--", "sh", "-c", "pwd; echo $FOO; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; readlink /proc/self/ns/pid; readlink /proc/1/ns/pid"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], &["/tmp", "bar"], "{out}");
    assert!(lines[2].ends_with("00000000a80425fb"), "{out}");
    assert_eq!(lines[3].split_whitespace().last(), Some("1"), "{out}");
    assert_eq!(lines[4], lines[5], "exec must be in the container's pid namespace: {out}");
    let err = String::from_utf8_lossy(&exec(&["/no/such"]).stderr).into_owned();
    assert!(err.contains("not found"), "{err}");
    let pids: Vec<i32> = serde_json::from_str(&f.rt_ok(&["ps", "--format", "json", &f.id])).unwrap();
    let init = f.state()["pid"].as_i64().unwrap() as i32;
    assert!(pids.contains(&init) && pids.len() >= 2, "{pids:?}");
    f.rt_ok(&["kill", "--all", &f.id, "KILL"]);
    let st = f.wait_stopped();
    assert_eq!(st["exitCode"], 137);
    f.rt_ok(&["delete", &f.id]);
    f.rt_ok(&["delete", "--force", &f.id]);
    assert!(!f.rt(&["delete", &f.id]).status.success());
    assert!(!f.cg().dir("memory").exists());
}

#[test]
fn run_detach_log_format_json_and_half_made_delete() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let b = f.bundle(&["sleep", "100"], |_| {});
    f.rt_ok(&["run", "--detach", "--bundle", b.to_str().unwrap(), &f.id]);
    assert_eq!(f.state()["status"], "running");
    f.rt_ok(&["delete", "--force", &f.id]);
    let out = f.rt(&["--log-format", "json", "state", "nope"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("nope"), "{v}");
    let text = String::from_utf8_lossy(&f.rt(&["state", "nope"]).stderr).into_owned();
    assert!(text.starts_with("minion-runtime: error:") && text.lines().count() == 1, "{text}");
    let err = String::from_utf8_lossy(&f.rt(&["create", "--console-socket", "/x.sock", "--bundle", b.to_str().unwrap(), &f.id]).stderr).into_owned();
    assert!(err.contains("process.terminal is false"), "{err}");
    // A half-made container: a state dir without state (crashed create).
    fs::create_dir_all(f.path("state/half")).unwrap();
    f.rt_ok(&["delete", "--force", "half"]);
    f.rt_ok(&["delete", "--force", "half"]);
    assert!(!f.path("state/half").exists());
}

#[test]
fn safety_seen_from_inside() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let script = "head -c 100 /proc/kcore | wc -c; touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro; \
        grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ls /proc/self/fd | wc -l; \
        ls /dev | sort | tr '\\n' ' '; echo; pwd; cat /proc/keys | wc -c";
    let b = f.bundle(&["sh", "-c", script], |c| c["process"]["cwd"] = json!("/../../tmp"));
    f.create_start(&b);
    let st = f.wait_stopped();
    assert_eq!(st["exitCode"], 0, "{}", f.log());
    let out = f.stdout_lines();
    assert_eq!(out[0], "0", "kcore must be masked: {out:?}");
    assert_eq!(out[1], "sys-ro");
    // CAP_SYS_ADMIN is bit 21 (0x200000): absent from the default set.
    let capeff = u64::from_str_radix(out.iter().find(|l| l.starts_with("CapEff")).unwrap().split_whitespace().last().unwrap(), 16).unwrap();
    assert_eq!(capeff & (1 << 21), 0);
    assert!(out.iter().any(|l| l.starts_with("NoNewPrivs") && l.ends_with('1')), "{out:?}");
    // stdin, stdout, stderr and the fd ls itself opens: no leaked host fds.
    assert_eq!(out[5], "4", "stray fds: {out:?}");
    for n in ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue", "fd", "stdin"] {
        assert!(out[6].split_whitespace().any(|x| x == n), "/dev lacks {n}: {}", out[6]);
    }
    assert_eq!(out[7], "/tmp", "cwd resolved inside the rootfs");
    assert_eq!(out[8], "0", "/proc/keys must be masked");
}

/// CVE-2019-5736: while a container exists its monitor runs the runtime binary,
/// so the kernel refuses to open that binary for writing (ETXTBSY), also through
/// /proc/<pid>/exe of a process that ran it.
#[test]
fn runtime_binary_is_not_writable_while_a_container_runs() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let b = f.bundle(&["sleep", "100"], |_| {});
    f.create_start(&b);
    let monitor = f.state()["monitorPid"].as_i64().unwrap();
    let exe = format!("/proc/{monitor}/exe");
    let err = fs::OpenOptions::new().write(true).open(&exe).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ETXTBSY), "{exe}: {err}");
    let err = fs::OpenOptions::new().write(true).open(BIN).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ETXTBSY), "{BIN}: {err}");
}

/// Without a pid namespace of its own the container's other processes would
/// outlive its init (and the monitor, which keeps the runtime binary busy): the
/// monitor kills them when the init exits.
#[test]
fn leftovers_of_a_shared_pid_namespace_are_killed() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let b = f.bundle(&["sh", "-c", "sleep 100 & echo $!"], |cfg| {
        cfg["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]);
    });
    f.create_start(&b);
    f.wait_stopped();
    let pid: i32 = f.stdout_lines().first().and_then(|l| l.trim().parse().ok()).expect("the sleep's pid");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let gone = stat.is_empty() || stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
    assert!(gone, "pid {pid} survived its container: {stat}");
}

#[test]
fn pids_limit_makes_fork_fail() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo spawned; cat /sys/fs/cgroup/pids/pids.max";
    let b = f.bundle(&["sh", "-c", script], |c| c["linux"]["resources"]["pids"]["limit"] = json!(5));
    f.create_start(&b);
    f.wait_stopped();
    let log = f.log();
    assert!(log.contains("can't fork"), "fork should fail at the pids limit: {log}");
    assert_eq!(read(&f.cg().pids_max()).as_deref(), Some("5"));
}

#[test]
fn cpu_quota_bounds_usage() {
    if !require_root() {
        return;
    }
    let f = Fx::new(BIN);
    let b = f.bundle(&["sh", "-c", "while :; do :; done"], |c| {
        c["linux"]["resources"]["cpu"] = json!({"quota": 20000, "period": 100000});
    });
    f.create_start(&b);
    let cg = f.cg();
    let usage = || cg.cpu_usage_ns().expect("the container's cpu usage");
    std::thread::sleep(Duration::from_millis(200));
    let (u0, t0) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let share = (usage() - u0) as f64 / t0.elapsed().as_nanos() as f64;
    f.rt_ok(&["delete", "--force", &f.id]);
    assert!((0.12..=0.28).contains(&share), "a 20% quota gave {:.0}% of a CPU", share * 100.0);
}

/// What a process sees, with host-specific values normalised.
fn observe(bin: &str) -> Vec<String> {
    let f = Fx::new(bin);
    // stderr joins stdout: runc's capture below gets both.
    let script = "exec 2>&1; id -u; id -g; id -G; hostname; grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; \
        awk '{print $1, $2, $3}' /proc/self/mounts; \
        if [ -e /sys/fs/cgroup/cgroup.controllers ]; then c=/sys/fs/cgroup$(awk -F: '$1==0{print $3}' /proc/self/cgroup); \
        cat $c/memory.max $c/pids.max $c/cpu.weight; \
        else cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.shares; fi; \
        for n in ipc mnt net pid uts cgroup; do echo $n $(readlink /proc/self/ns/$n); done; ls -ln /dev | awk '{print $1, $3, $4, $5, $6, $NF}'; ulimit -n";
    let b = f.bundle(&["sh", "-c", script], |_| {});
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    f.rt_ok(&["start", &f.id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.state()["status"] != "stopped" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lines = if bin == BIN { f.stdout_lines() } else { Vec::new() };
    if bin != BIN {
        lines = String::from_utf8_lossy(&fs::read(f.path("runc.out")).unwrap_or_default()).lines().map(str::to_string).collect();
    }
    let host_ns = |n: &str| fs::metadata(format!("/proc/self/ns/{n}")).map(|m| m.ino()).unwrap_or(0);
    lines
        .into_iter()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            if parts.len() == 2 && ["ipc", "mnt", "net", "pid", "uts", "cgroup"].contains(&parts[0]) {
                let ino: u64 = parts[1].trim_start_matches(|c: char| !c.is_ascii_digit()).trim_end_matches(']').parse().unwrap_or(0);
                return format!("{} {}", parts[0], if ino == host_ns(parts[0]) { "host" } else { "private" });
            }
            l
        })
        .collect()
}

#[test]
fn same_view_as_runc() {
    if !require_root() || Command::new("runc").arg("--version").output().is_err() {
        return;
    }
    let ours = observe(BIN);
    // runc writes the process's stdout to its own stdout: capture it in a file
    // through a wrapper that the Fx runs instead of runc.
    let wrapper = tempfile::tempdir().unwrap();
    let w = wrapper.path().join("runc-capture");
    fs::write(&w, "#!/bin/sh\nfor a; do last=$a; done\ncase \"$3\" in create) exec runc \"$@\" > \"$(dirname \"$2\")/runc.out\" 2>&1;; esac\nexec runc \"$@\"\n").unwrap();
    fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let theirs = observe(w.to_str().unwrap());
    assert!(ours.len() > 20 && theirs.len() > 20, "ours {ours:?} runc {theirs:?}");
    eprintln!("view (ours):\n{}", ours.join("\n"));
    let diff: Vec<String> = ours
        .iter()
        .filter(|l| !theirs.contains(l))
        .map(|l| format!("ours only: {l}"))
        .chain(theirs.iter().filter(|l| !ours.contains(l)).map(|l| format!("runc only: {l}")))
        .collect();
    assert!(diff.is_empty(), "views differ:\n{}", diff.join("\n"));
}
