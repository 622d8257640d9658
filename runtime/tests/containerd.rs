//! A real client: containerd 1.6 (Debian's `containerd`, `ctr` and
//! `containerd-shim-runc-v2`) runs busybox containers with minion-runtime as its
//! runc binary (runc mode, through a `minion-runc` symlink).
//!
//! Each test starts its own containerd with a private root, state dir, sockets
//! and runc root under a temp dir, the CRI plugin disabled (no network, no
//! iptables), in a private mount namespace whose /run is a tmpfs: the shim's
//! hard-wired /run/containerd/s sockets and every mount containerd and its shims
//! make stay out of the host's mount table. On drop: the containers' processes,
//! the shims and containerd are killed by pid, mounts under the temp dir are
//! unmounted and the cgroups and dirs removed.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, unique};

const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");
const IMAGE: &str = "docker.io/minion/busybox:test";
/// Bound of every ctr call (coreutils `timeout`).
const CTR_TIMEOUT: &str = "60";

/// containerd, ctr and the shim are needed; missing ones skip (or fail under CI).
fn require_tools() -> bool {
    common::require_commands(
        &["containerd", "ctr", "containerd-shim-runc-v2", "unshare", "timeout", "script"],
        "apt-get install containerd",
    )
}

/// A private containerd; everything it made is removed on drop.
struct Containerd {
    tmp: tempfile::TempDir,
    child: Child,
    ns: String,
}

impl Containerd {
    fn start() -> Self {
        let tmp = tempfile::Builder::new().prefix("mctd").tempdir().unwrap();
        assert!(!tmp.path().starts_with("/run"), "the temp dir must not be under /run (hidden in containerd's namespace)");
        let d = tmp.path();
        for sub in ["root", "state", "fifo", "runc"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(BIN, d.join("minion-runc")).unwrap();
        let cfg = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n[debug]\n  address = \"\"\n  level = \"info\"\n\
             [metrics]\n  address = \"\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
            ttrpc = d.join("c.ttrpc.sock").display(),
        );
        fs::write(d.join("config.toml"), cfg).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let script = format!(
            "mount -t tmpfs -o mode=0755,size=16m minion-ctd-run /run && exec containerd --config {}",
            d.join("config.toml").display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut c = Containerd { tmp, child, ns: unique("minion-test") };
        c.wait_ready();
        c
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `ctr version` answers on the socket.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("containerd exited ({st}): {}", self.log());
            }
            if self.path("c.sock").exists() && self.ctr(&["version"]).status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "containerd did not answer within 30 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr -a SOCK -n NS ARGS...`, bounded by `timeout`.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "5", CTR_TIMEOUT, "ctr", "-a"])
            .arg(self.path("c.sock"))
            .args(["-n", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run` with minion-runc as the runc binary and a private runc root.
    fn run(&self, extra: &[&str], id: &str, cmd: &[&str]) -> Output {
        let fifo = self.path("fifo");
        let bin = self.path("minion-runc");
        let root = self.path("runc");
        let mut args = vec!["run", "--fifo-dir", fifo.to_str().unwrap(), "--runc-binary", bin.to_str().unwrap()];
        args.extend(["--runc-root", root.to_str().unwrap()]);
        args.extend(extra);
        args.extend([IMAGE, id]);
        args.extend(cmd);
        self.ctr(&args)
    }

    /// Builds the busybox image as an OCI archive and imports it.
    fn import_busybox(&self) {
        let layout = self.path("layout");
        fs::create_dir_all(&layout).unwrap();
        common::oci_fixture::build_image_with(&layout, "test", 0, 0, false);
        // containerd takes the image's name from this annotation.
        let idx_path = layout.join("index.json");
        let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
        idx["manifests"][0]["annotations"]["io.containerd.image.name"] = IMAGE.into();
        fs::write(&idx_path, idx.to_string()).unwrap();
        let tar_path = self.path("busybox.tar");
        let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        b.append_dir_all(".", &layout).unwrap();
        b.into_inner().unwrap().flush().unwrap();
        self.ctr_ok(&["images", "import", tar_path.to_str().unwrap()]);
        assert!(self.ctr_ok(&["images", "ls", "-q"]).contains(IMAGE));
    }

    /// The task's status from `ctr task ls` (None when there is no task).
    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.first() == Some(&id)).and_then(|f| f.get(2).map(|s| s.to_string()))
    }

    fn task_pid(&self, id: &str) -> i32 {
        let out = self.ctr_ok(&["task", "ls"]);
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(id)).unwrap_or_else(|| panic!("no task {id}: {out}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The task directories containerd made (one per container, with the shim's
    /// and the init's pid files).
    fn task_dirs(&self) -> Vec<PathBuf> {
        let d = self.path("state/io.containerd.runtime.v2.task").join(&self.ns);
        fs::read_dir(d).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    }
}

impl Containerd {
    /// Live processes (not zombies) whose command line names this temp dir.
    fn our_processes(&self) -> Vec<i32> {
        let me = self.tmp.path().to_string_lossy().into_owned();
        let Ok(rd) = fs::read_dir("/proc") else { return vec![] };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != std::process::id() as i32)
            .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&me)))
            .filter(|pid| !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))))
            .collect()
    }
}

fn pid_in(p: &Path) -> Option<i32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

/// The directory of `cgroups_path` for a controller: under the v1 controller's
/// hierarchy, or in the v2 unified tree (the same for every controller).
fn cgroup_dir(controller: &str, cgroups_path: &str) -> PathBuf {
    common::cgroup_files::CgroupFiles::new(cgroups_path).dir(controller)
}

/// The controllers whose hierarchies are checked and cleaned (v2: one tree).
fn controllers() -> &'static [&'static str] {
    if common::cgroup_files::mode() == minion_runtime::cgroups::Mode::V2 {
        &["unified"]
    } else {
        &["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "systemd", "unified"]
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Container processes first (their pid namespace dies with the init),
        // then the shims: every pid from the files containerd wrote, checked
        // against what the process runs before it is killed.
        for dir in self.task_dirs() {
            if let Some(pid) = pid_in(&dir.join("init.pid")) {
                let ours = fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&format!("/{}/", self.ns)));
                if ours {
                    sigkill(pid);
                }
            }
            if let Some(pid) = pid_in(&dir.join("shim.pid")) {
                if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("containerd-shim")) {
                    sigkill(pid);
                }
            }
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims still shutting down (or started for a cleanup) name our private
        // socket on their command line: kill those pids and wait for them.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ours = self.our_processes();
            if ours.is_empty() || Instant::now() > deadline {
                break;
            }
            ours.into_iter().for_each(sigkill);
            std::thread::sleep(Duration::from_millis(20));
        }
        // Nothing should be mounted under the temp dir in our namespace (the
        // mounts were made in containerd's); unmount whatever is, deepest first.
        let root = self.tmp.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-R", "-l", &m]).status();
        }
        for c in controllers() {
            let top = cgroup_dir(c, &self.ns);
            if let Ok(rd) = fs::read_dir(&top) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(&top);
        }
    }
}

/// (a) stdout through containerd's stdio and exit 0; (b) exit status 3 and
/// stderr; a terminal through the console socket.
#[test]
fn containerd_runs_busybox_with_minion_runc() {
    if !require_root() || !require_tools() {
        return;
    }
    let host_run_containerd = Path::new("/run/containerd").exists();
    let c = Containerd::start();
    c.import_busybox();

    let id = unique("echo");
    let t = Instant::now();
    let out = c.run(&["--rm"], &id, &["echo", "hello"]);
    eprintln!("ctr run --rm echo hello: {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), c.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    let id = unique("exit3");
    let out = c.run(&["--rm"], &id, &["sh", "-c", "echo to-stderr >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), c.log());
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"), "{}", String::from_utf8_lossy(&out.stderr));

    // A terminal: `create --console-socket`, the pty master goes to the shim
    // (ctr needs a terminal of its own: `script` gives it one).
    let id = unique("tty");
    let ctr_cmd = format!(
        "timeout --foreground -k 5 {CTR_TIMEOUT} ctr -a {} -n {} run --rm -t --fifo-dir {} --runc-binary {} --runc-root {} {IMAGE} {id} sh -c 'tty; echo tty-$((6*7))'",
        c.path("c.sock").display(),
        c.ns,
        c.path("fifo").display(),
        c.path("minion-runc").display(),
        c.path("runc").display(),
    );
    // `timeout --foreground`: a plain timeout moves ctr into a process group
    // of its own, which is then not the pty's foreground group, and ctr
    // stops on SIGTTIN when it reads the terminal. Whether that bites
    // depends on the shell `script` runs (bash or dash), so pin the shell
    // to CI's (no $SHELL there: /bin/sh).
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &ctr_cmd, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("/dev/pts/0") && text.contains("tty-42"), "{text}{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());

    // --rm removed them all; minion-runc left no state and no cgroup behind.
    assert!(c.ctr_ok(&["container", "ls", "-q"]).trim().is_empty());
    let state_dir = c.path("runc").join(&c.ns);
    let left: Vec<_> = fs::read_dir(&state_dir).map(|rd| rd.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "runc state left in {}: {left:?}", state_dir.display());
    for ctl in controllers() {
        let dir = cgroup_dir(ctl, &c.ns);
        let sub: Vec<_> = fs::read_dir(&dir).map(|rd| rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(sub.is_empty(), "cgroups left under {}: {sub:?}", dir.display());
    }
    // The shim's sockets went to containerd's private /run, not the host's.
    assert!(host_run_containerd || !Path::new("/run/containerd").exists(), "the test made the host's /run/containerd");
}

/// (c) a long-running container: exec, ps, kill, delete, no cgroup left.
#[test]
fn containerd_exec_ps_kill_delete() {
    if !require_root() || !require_tools() {
        return;
    }
    let c = Containerd::start();
    c.import_busybox();
    let id = unique("long");
    let out = c.run(&["-d"], &id, &["busybox", "sleep", "300"]);
    assert!(out.status.success(), "{}{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), c.log());
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    let init = c.task_pid(&id);

    // The cgroup containerd asked for holds the init.
    let info: serde_json::Value = serde_json::from_str(&c.ctr_ok(&["container", "info", &id])).unwrap();
    let cg = info["Spec"]["linux"]["cgroupsPath"].as_str().expect("cgroupsPath in the spec").to_string();
    let procs = fs::read_to_string(cgroup_dir("pids", &cg).join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l.trim() == init.to_string()), "init {init} not in {cg}: {procs}");

    // exec: output through containerd, runs in the container's pid namespace.
    let fifo = c.path("fifo");
    let t = Instant::now();
    let out = c.ctr_ok(&["task", "exec", "--fifo-dir", fifo.to_str().unwrap(), "--exec-id", "e1", &id, "sh", "-c", "echo in-exec; cat /proc/1/cmdline"]);
    eprintln!("ctr task exec: {:?}", t.elapsed());
    assert!(out.starts_with("in-exec\n"), "{out}");
    assert!(out.contains("busybox\u{0}sleep\u{0}300"), "pid 1 of the exec is the container's init: {out:?}");
    let out = c.ctr(&["task", "exec", "--fifo-dir", fifo.to_str().unwrap(), "--exec-id", "e2", &id, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));

    // A detached exec keeps running: ps lists it next to the init.
    let out = c.ctr(&["task", "exec", "-d", "--fifo-dir", fifo.to_str().unwrap(), "--exec-id", "e3", &id, "busybox", "sleep", "200"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let ps = c.ctr_ok(&["task", "ps", &id]);
        let pids: Vec<i32> = ps.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
        if pids.len() >= 2 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(pids.contains(&init) && pids.len() == 2, "ctr task ps: {pids:?} (init {init})");

    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.task_status(&id).as_deref() != Some("STOPPED") {
        assert!(Instant::now() < deadline, "task never stopped: {:?}\n{}", c.task_status(&id), c.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &pids {
        assert!(!Path::new(&format!("/proc/{p}")).exists() || fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z")), "pid {p} still runs");
    }
    let out = c.ctr(&["task", "delete", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(c.task_status(&id).is_none());
    c.ctr_ok(&["container", "delete", &id]);
    assert!(!c.ctr_ok(&["container", "ls", "-q"]).contains(&id));
    for ctl in controllers() {
        let dir = cgroup_dir(ctl, &cg);
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    assert!(!c.path("runc").join(&c.ns).join(&id).exists(), "runc state of {id} left behind");
}
