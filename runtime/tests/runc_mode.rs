//! runc mode (what containerd's runc shim needs), without containerd: the test
//! process plays the shim, a child subreaper that owns the container's stdio and
//! reaps its init and exec'd processes. Also CVE-2019-5736 in this mode: every
//! runtime process that enters a container runs from a sealed memfd copy.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bundle::{Bx, BIN};
use common::require_root;
use common::runc::{become_subreaper, cgroup_leaves, create, create_sleeper, ok, ppid, reap, runc, session_of, state, wait_child};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde_json::{json, Value};

#[test]
fn create_start_state_kill_delete_without_a_monitor() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let b = f.bundle(&["sh", "-c", "read x; echo got-$x; echo oops >&2; exit 3"], |_| {});
    let (mut c, out, err) = create(&f, &b);
    let st = state(&f);
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert_eq!(st["status"], "created");
    assert_eq!(st["runcMode"], true);
    // Exactly the number: containerd parses the file with Atoi.
    assert_eq!(fs::read_to_string(f.path("init.pid")).unwrap(), pid.to_string());
    // No monitor in between: the init was re-parented to us, the "shim".
    assert_eq!(ppid(pid), std::process::id() as i32);
    // Its own session, as runc's init (no terminal here).
    assert_eq!(session_of(pid), pid, "the created init is not a session leader");
    assert!(f.path("state").join(&f.id).join("exec.fifo").exists());

    ok(runc(&f).args(["start", &f.id]));
    assert_eq!(state(&f)["status"], "running");
    assert!(!f.path("state").join(&f.id).join("exec.fifo").exists());
    let e = runc(&f).args(["start", &f.id]).output().unwrap();
    assert!(!e.status.success(), "a second start must fail");

    // The init reads the stdin create had and writes to its stdout/stderr.
    c.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    assert_eq!(reap(pid), WaitStatus::Exited(Pid::from_raw(pid), 3));
    assert_eq!(fs::read_to_string(&out).unwrap(), "got-ping\n");
    assert_eq!(fs::read_to_string(&err).unwrap(), "oops\n");

    assert_eq!(state(&f)["status"], "stopped");
    let k = runc(&f).args(["kill", &f.id, "9"]).output().unwrap();
    assert!(!k.status.success() && String::from_utf8_lossy(&k.stderr).contains("container not running"), "{k:?}");
    let log = fs::read_to_string(f.path("log.json")).unwrap();
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("--log-format json line {l:?}: {e}"));
        assert_eq!(v["level"], "error");
    }
    ok(runc(&f).args(["delete", &f.id]));
    for leaf in cgroup_leaves(&st) {
        assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
    }
    assert!(!f.path("state").join(&f.id).exists());
    ok(runc(&f).args(["delete", "--force", &f.id]));
}

#[test]
fn exec_process_file_detached_and_kill_all() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let (b, _c) = create_sleeper(&f);
    ok(runc(&f).args(["start", &f.id]));
    let st = state(&f);
    let init = st["pid"].as_i64().unwrap() as i32;

    // containerd writes the whole process (the container's, with new args).
    let cfg: Value = serde_json::from_str(&fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    let mut p = cfg["process"].clone();
    p["args"] = json!(["sh", "-c", "echo exec-pid-$$; echo exec-err >&2; exit 5"]);
    fs::write(f.path("process.json"), p.to_string()).unwrap();
    let (out, err) = (f.path("exec.out"), f.path("exec.err"));
    let t = Instant::now();
    let mut c = runc(&f)
        .args(["exec", "--process", f.path("process.json").to_str().unwrap(), "--detach", "--pid-file"])
        .arg(f.path("exec.pid"))
        .arg(&f.id)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c).success(), "exec: {}", fs::read_to_string(&err).unwrap_or_default());
    eprintln!("runc-mode exec --detach: {:?}", t.elapsed());
    let pid: i32 = fs::read_to_string(f.path("exec.pid")).unwrap().trim().parse().unwrap();
    // The detached process is ours to reap, with its own exit code.
    assert_eq!(reap(pid), WaitStatus::Exited(Pid::from_raw(pid), 5));
    let o = fs::read_to_string(&out).unwrap();
    assert!(o.starts_with("exec-pid-") && o.trim() != "exec-pid-1", "{o}");
    assert_eq!(fs::read_to_string(&err).unwrap(), "exec-err\n");

    let ps: Vec<i32> = serde_json::from_str(&ok(runc(&f).args(["ps", "--format", "json", &f.id]))).unwrap();
    assert_eq!(ps, vec![init]);
    ok(runc(&f).args(["kill", "--all", &f.id, "9"]));
    assert_eq!(reap(init), WaitStatus::Signaled(Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL, false));
    assert_eq!(state(&f)["status"], "stopped");
    // What the shim sends after the init's exit when the pid namespace is shared.
    ok(runc(&f).args(["kill", "--all", &f.id, "9"]));
    ok(runc(&f).args(["delete", &f.id]));
    for leaf in cgroup_leaves(&st) {
        assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
    }
}

/// The file behind /proc/<pid>/exe: a sealed memfd, not the host binary, and
/// not writable.
fn assert_sealed_exe(pid: i32) {
    let exe = format!("/proc/{pid}/exe");
    let target = fs::read_link(&exe).unwrap();
    assert!(target.to_string_lossy().starts_with("/memfd:minion-runc"), "pid {pid} runs {}", target.display());
    let host = fs::metadata(BIN).unwrap();
    let f = fs::File::open(&exe).unwrap();
    let m = f.metadata().unwrap();
    assert!((m.dev(), m.ino()) != (host.dev(), host.ino()), "pid {pid} runs the host binary");
    let seals = minion_runtime::sealed_exe::seals_of(&f).expect("F_GET_SEALS on /proc/pid/exe");
    assert_eq!(seals & minion_runtime::sealed_exe::SEALS, minion_runtime::sealed_exe::SEALS);
    // What the CVE's payload does: reopen the exe for writing and overwrite it.
    match fs::OpenOptions::new().write(true).open(&exe) {
        Ok(mut w) => {
            assert!(w.write_all(b"\x7fELF-overwritten").is_err(), "wrote to the runtime binary through {exe}");
            assert!(w.set_len(0).is_err(), "truncated the runtime binary through {exe}");
        }
        Err(e) => assert!(matches!(e.raw_os_error(), Some(libc::ETXTBSY | libc::EPERM | libc::EACCES)), "{e}"),
    }
}

#[test]
fn create_and_exec_run_from_a_sealed_memfd() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let f = Bx::new();
    let (_b, _c) = create_sleeper(&f);
    let st = state(&f);
    let init = st["pid"].as_i64().unwrap() as i32;
    // The created init is still the runtime (waiting for start): what a
    // container process could reach through /proc/<init>/exe.
    assert_sealed_exe(init);
    ok(runc(&f).args(["start", &f.id]));

    // exec with the --runc-mode flag (not the name), and exec under the
    // monitor mode's name: the container, not the invocation, decides. The CLI
    // and its helper, which joins the container, run from the sealed copy
    // while the process runs.
    for flags in [&["--runc-mode"][..], &[]] {
        let mut c = Command::new(BIN)
            .args(flags)
            .arg("--root")
            .arg(f.path("state"))
            .args(["exec", &f.id, "--", "sleep", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let cli = c.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        let helper = loop {
            let kids = fs::read_to_string(format!("/proc/{cli}/task/{cli}/children")).unwrap_or_default();
            if let Some(h) = kids.split_whitespace().next().and_then(|h| h.parse::<i32>().ok()) {
                break h;
            }
            assert!(Instant::now() < deadline, "exec helper never appeared ({flags:?})");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_sealed_exe(cli);
        assert_sealed_exe(helper);
        assert!(wait_child(&mut c).success(), "exec {flags:?}");
    }

    ok(runc(&f).args(["delete", "--force", &f.id]));
    reap(init);
}
