//! runc compatibility edges, mostly in runc mode with the test process as
//! containerd's shim: real-time signals (both modes), SIGTERM on a created
//! init, `run -d` with a poststart hook, a failed `--pid-file`, a `create`
//! killed half-way, plain `delete` of a created container, cgroup parents that
//! belong to the caller, failed post hooks in the JSON log, `exec --pid-file`
//! without `--detach`, and the flags and commands runc has and minion-runtime
//! refuses.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bundle::{Bx, BIN};
use common::cgroup_files::CgroupFiles;
use common::require_root;
use common::runc::{become_subreaper, cgroup_leaves, create, create_sleeper, live_process_in_cgroup, ok, reap, runc, state, wait_child};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shell that reports real-time signal 37 and exits 9 on 64.
const RT_SCRIPT: &str = "trap 'echo got37' 37; trap 'exit 9' 64; echo ready; while :; do sleep 0.05; done";

#[test]
fn real_time_signals_by_number_and_name_in_runc_mode() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let b = f.bundle(&["sh", "-c", RT_SCRIPT], |_| {});
    let (_c, out, _) = create(&f, &b);
    let pid = state(&f)["pid"].as_i64().unwrap() as i32;
    ok(runc(&f).args(["start", &f.id]));
    wait_for("ready", || fs::read_to_string(&out).unwrap_or_default().contains("ready"));
    ok(runc(&f).args(["kill", &f.id, "37"]));
    wait_for("got37", || fs::read_to_string(&out).unwrap_or_default().contains("got37"));
    ok(runc(&f).args(["kill", &f.id, "SIGRTMAX"]));
    assert_eq!(reap(pid), WaitStatus::Exited(Pid::from_raw(pid), 9));
    ok(runc(&f).args(["delete", &f.id]));
}

#[test]
fn real_time_signals_by_number_and_name_in_monitor_mode() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let b = f.bundle(&["sh", "-c", RT_SCRIPT], |_| {});
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    f.rt_ok(&["start", &f.id]);
    wait_for("ready", || f.output().contains("ready"));
    f.rt_ok(&["kill", &f.id, "RTMIN+3"]);
    wait_for("got37", || f.output().contains("got37"));
    f.rt_ok(&["kill", &f.id, "64"]);
    assert_eq!(f.wait_stopped()["exitCode"], 9);
    let e = f.rt(&["kill", &f.id, "65"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("invalid signal \"65\""), "{e:?}");
    f.rt_ok(&["delete", &f.id]);
}

#[test]
fn created_init_ends_on_sigterm() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let (_b, _c) = create_sleeper(&f);
    let st = state(&f);
    let pid = st["pid"].as_i64().unwrap() as i32;
    let t = Instant::now();
    ok(runc(&f).args(["kill", &f.id, "TERM"]));
    assert_eq!(reap(pid), WaitStatus::Exited(Pid::from_raw(pid), 128 + libc::SIGTERM));
    assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM took {:?}", t.elapsed());
    assert_eq!(state(&f)["status"], "stopped");
    ok(runc(&f).args(["delete", &f.id]));
    for leaf in cgroup_leaves(&st) {
        assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
    }
}

/// `run -d` returns to its own pid namespace after forking the init, so the
/// poststart hook runs (with threads) and sees the container running.
#[test]
fn run_detached_with_a_poststart_hook() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let seen = f.path("poststart.json");
    let b = f.bundle(&["sleep", "100"], |cfg| {
        let script = format!("cat > {}", seen.display());
        cfg["hooks"] = json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]});
    });
    let err = f.path("run.err");
    let mut c = runc(&f)
        .args(["run", "-d", "--bundle", b.to_str().unwrap(), &f.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let st = wait_child(&mut c);
    assert!(st.success(), "run -d ({st}): {}", fs::read_to_string(&err).unwrap_or_default());
    let now = state(&f);
    let pid = now["pid"].as_i64().unwrap() as i32;
    assert_eq!(now["status"], "running");
    let hook: Value = serde_json::from_str(&fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(hook["status"], "running", "{hook}");
    assert!(hook["startedAt"].is_string(), "{hook}");
    assert_eq!(hook["pid"], pid);
    ok(runc(&f).args(["delete", "--force", &f.id]));
    reap(pid);
}

/// The container's leaf cgroup directories (`/<cg_top>/ctr`).
fn leaf_dirs(f: &Bx) -> Vec<PathBuf> {
    let cg = CgroupFiles::new(&format!("/{}/ctr", f.cg_top));
    ["memory", "pids", "cpu"].iter().map(|c| cg.dir(c)).collect()
}

fn assert_nothing_left(f: &Bx) {
    assert!(!f.path("state").join(&f.id).exists(), "state of {} left behind", f.id);
    for d in leaf_dirs(f) {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    assert_eq!(live_process_in_cgroup(&f.cg_top), None, "a live process is left in the container's cgroup");
}

#[test]
fn failed_pid_file_leaves_no_container() {
    if !require_root() {
        return;
    }
    become_subreaper();
    for runc_mode in [true, false] {
        let f = Bx::new();
        let b = f.bundle(&["sleep", "100"], |_| {});
        let args = ["create", "--bundle", b.to_str().unwrap(), "--pid-file", "/nonexistent/x", &f.id];
        let (out, err) = (f.path("out"), f.path("err"));
        let mut cmd = if runc_mode { runc(&f) } else { f.cmd() };
        let mut c = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        assert!(!wait_child(&mut c).success(), "create with an unwritable pid file succeeded (runc mode {runc_mode})");
        let e = fs::read_to_string(&err).unwrap();
        assert!(e.contains("write pid file /nonexistent/x"), "{e}");
        assert_eq!(e.matches("No such file or directory").count(), 1, "the cause must be printed once: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert_nothing_left(&f);
    }
}

/// `create` SIGKILLed after the fork, before the state is complete (a
/// createRuntime hook kills it): the provisional state lets `delete --force`
/// remove the cgroup, and the init ends by itself.
#[test]
fn create_killed_half_way_is_cleaned_by_delete_force() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let b = f.bundle(&["sleep", "100"], |cfg| {
        cfg["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}]});
    });
    let mut c = runc(&f)
        .args(["create", "--bundle", b.to_str().unwrap(), &f.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let st = wait_child(&mut c);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL), "{st}");
    let saved: Value = serde_json::from_str(&fs::read_to_string(f.path("state").join(&f.id).join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["status"], "creating");
    let pid = saved["pid"].as_i64().unwrap() as i32;
    // The init saw its go pipe close and exited (it is ours to reap now).
    assert!(matches!(reap(pid), WaitStatus::Exited(_, 1)));
    assert_eq!(state(&f)["status"], "stopped");
    ok(runc(&f).args(["delete", "--force", &f.id]));
    assert_nothing_left(&f);
}

#[test]
fn plain_delete_of_a_created_container() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let (_b, _c) = create_sleeper(&f);
    let pid = state(&f)["pid"].as_i64().unwrap() as i32;
    ok(runc(&f).args(["delete", &f.id]));
    assert!(matches!(reap(pid), WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)));
    assert_nothing_left(&f);
}

/// Removes test-made cgroup directories (deepest first) on drop.
struct CgDirs(Vec<PathBuf>);

impl Drop for CgDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Creates, then deletes a runc-mode container at `cgroups_path`.
fn create_delete_at(f: &Bx, cgroups_path: &str) {
    let b = f.bundle(&["sleep", "100"], |cfg| cfg["linux"]["cgroupsPath"] = json!(cgroups_path));
    let (_c, _, _) = create(f, &b);
    let pid = state(f)["pid"].as_i64().unwrap() as i32;
    ok(runc(f).args(["delete", "--force", &f.id]));
    reap(pid);
}

#[test]
fn delete_keeps_the_callers_parent_cgroups() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let top = f.cg_top.clone();
    let dir = |p: &str| CgroupFiles::new(&format!("/{top}/{p}")).dir("memory");
    // What kubelet/containerd made: a pod cgroup with another child, and one without.
    let guard = CgDirs(vec![dir(""), dir("pod"), dir("pod/other"), dir("empty")]);
    for d in &guard.0 {
        fs::create_dir_all(d).unwrap();
    }
    create_delete_at(&f, &format!("/{top}/pod/ctr"));
    assert!(!dir("pod/ctr").exists(), "the container's cgroup is left");
    assert!(dir("pod/other").exists() && dir("pod").exists(), "delete removed the caller's cgroups");
    create_delete_at(&f, &format!("/{top}/empty/ctr"));
    assert!(!dir("empty/ctr").exists(), "the container's cgroup is left");
    assert!(dir("empty").exists(), "delete removed the caller's empty parent cgroup");
    // The other controllers' parents (v1) were made by create and stay too.
    let cpu_parent = CgroupFiles::new(&format!("/{top}/empty/ctr")).dir("cpu");
    let cpu_parent = cpu_parent.parent().unwrap();
    assert!(cpu_parent.exists(), "{} removed", cpu_parent.display());
    let more = CgDirs(
        ["cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "systemd", "unified", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc"]
            .iter()
            .flat_map(|c| ["", "pod", "empty"].map(|p| Path::new("/sys/fs/cgroup").join(c).join(&top).join(p)))
            .collect(),
    );
    drop((more, guard));
}

#[test]
fn systemd_cgroup_debug_and_unsupported_commands() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    // A systemd slice:prefix:name cgroupsPath is refused by name.
    let b = f.bundle(&["sleep", "100"], |cfg| cfg["linux"]["cgroupsPath"] = json!("system.slice:minion:abc"));
    let out = runc(&f).args(["--systemd-cgroup", "create", "--bundle", b.to_str().unwrap(), &f.id]).stdin(Stdio::null()).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("--systemd-cgroup") && e.contains("not supported"), "{e}");
    assert!(!f.path("state").join(&f.id).exists());
    // An absolute cgroupfs path goes ahead with the flag (and --debug).
    let b = f.bundle(&["sleep", "100"], |_| {});
    let mut c = runc(&f)
        .args(["--systemd-cgroup", "--debug", "create", "--bundle", b.to_str().unwrap(), &f.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c).success());
    let pid = state(&f)["pid"].as_i64().unwrap() as i32;
    ok(runc(&f).args(["delete", "--force", &f.id]));
    reap(pid);
    for cmd in ["update", "pause", "resume", "events", "checkpoint"] {
        let out = Command::new(BIN).args([cmd, "--resources", "-", "x"]).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} succeeded");
        assert_eq!(e.trim(), format!("minion-runtime: error: command \"{cmd}\" is not supported by minion-runtime"));
    }
}

/// vm.memfd_noexec=2 (set in a pid namespace of the test's own: the sysctl is
/// per pid namespace) forbids the sealed copy: the error says so.
#[test]
fn memfd_noexec_is_named() {
    if !require_root() {
        return;
    }
    if !Path::new("/proc/sys/vm/memfd_noexec").exists() {
        eprintln!("skipping: no vm.memfd_noexec (kernel before 6.3)");
        return;
    }
    let f = Bx::new();
    let script = format!("echo 2 > /proc/sys/vm/memfd_noexec && exec {BIN} --runc-mode --root {} create --bundle /nonexistent x", f.path("state").display());
    let out = Command::new("unshare").args(["--pid", "--fork", "sh", "-c", &script]).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("vm.memfd_noexec"), "{e}");
}

/// Failed poststart and poststop hooks do not fail `start`/`delete`; with
/// `--log-format json` they reach `--log` as JSON error objects.
#[test]
fn failed_post_hooks_reach_the_json_log() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let broken = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name}-broke >&2; exit 3")]});
    let b = f.bundle(&["sleep", "100"], |cfg| cfg["hooks"] = json!({"poststart": [broken("poststart")], "poststop": [broken("poststop")]}));
    let (_c, _, _) = create(&f, &b);
    let pid = state(&f)["pid"].as_i64().unwrap() as i32;
    ok(runc(&f).args(["start", &f.id]));
    ok(runc(&f).args(["delete", "--force", &f.id]));
    reap(pid);
    let log = fs::read_to_string(f.path("log.json")).unwrap_or_default();
    let entries: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("--log line {l:?}: {e}"))).collect();
    for kind in ["poststart", "poststop"] {
        let want = format!("{kind} hook /bin/sh: exit status 3: {kind}-broke");
        assert!(
            entries.iter().any(|e| e["level"] == "error" && e["msg"].as_str().is_some_and(|m| m.contains(&want))),
            "no {kind} failure in --log: {log}"
        );
    }
}

/// Without `--detach`, `exec --pid-file` writes the file once the process
/// exec'd, while it runs, not after it exited.
#[test]
fn exec_pid_file_exists_while_the_process_runs() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let b = f.bundle(&["sleep", "100"], |_| {});
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    f.rt_ok(&["start", &f.id]);
    let pid_file = f.path("exec.pid");
    let mut c = f
        .cmd()
        .args(["exec", "--pid-file", pid_file.to_str().unwrap(), &f.id, "--", "sh", "-c", "while [ ! -e /etc/go ]; do sleep 0.05; done; exit 4"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the exec pid file", || fs::read_to_string(&pid_file).is_ok_and(|p| !p.is_empty()));
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "exec'd pid {pid} does not run");
    assert_eq!(c.try_wait().unwrap(), None, "exec returned before its process exited");
    fs::write(b.join("rootfs/etc/go"), "").unwrap();
    assert_eq!(wait_child(&mut c).code(), Some(4));
    f.rt_ok(&["delete", "--force", &f.id]);
}
