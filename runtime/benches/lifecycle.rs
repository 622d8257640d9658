//! Benchmark: `create + start + wait + delete` of `/bin/true` in a busybox bundle,
//! minion-runtime against runc and crun, interleaved (the order rotates every
//! round), `MINION_BENCH_RUNS` (default 30) runs each.
//!
//! How it measures:
//! - wall: from spawning `create` to `delete` returning, per container;
//! - CPU: `getrusage(RUSAGE_CHILDREN)` user+sys delta around one container. The
//!   bench makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so every
//!   process of the tree that outlives its parent (our monitor, runc's and crun's
//!   container init) is re-parented to the bench and reaped by it; a reaped
//!   process's own usage plus that of the children it reaped lands in
//!   RUSAGE_CHILDREN. After `delete` the bench reaps until it has no child left,
//!   so the whole tree (CLI processes, monitor, init, runc's re-exec'd init...)
//!   is counted.
//! - The bench runs in a private mount namespace where /sys/fs/cgroup/unified is
//!   unmounted, because crun 1.8.1 refuses this hybrid host otherwise; all three
//!   runtimes run in that same namespace (cgroup v1 controllers).
//! - "floor" is `unshare -pfmnu --mount-proc /bin/true`: the kernel's cost of the
//!   namespaces alone.
#![allow(unsafe_code)]

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const OURS: &str = env!("CARGO_BIN_EXE_minion-runtime");

#[derive(Clone, Copy, PartialEq)]
enum Rt {
    Ours,
    Runc,
    Crun,
    Floor,
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Ours => "minion-runtime",
            Rt::Runc => "runc",
            Rt::Crun => "crun",
            Rt::Floor => "floor(unshare)",
        }
    }
    fn bin(self) -> &'static str {
        match self {
            Rt::Ours => OURS,
            Rt::Runc => "runc",
            Rt::Crun => "crun",
            Rt::Floor => "unshare",
        }
    }
}

fn cpu_children() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs a runtime command. Its stdio must not be a pipe: runc and crun hand
/// their stdio to the container, so a pipe would only reach EOF when the
/// container exits. stderr goes to a file read on failure.
fn sh(bin: &str, args: &[&str]) -> anyhow::Result<()> {
    let errf = std::env::temp_dir().join(format!("minion-bench-{}.err", std::process::id()));
    let status = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errf)?)
        .status()?;
    let err = if status.success() { String::new() } else { fs::read_to_string(&errf).unwrap_or_default() };
    let _ = fs::remove_file(&errf);
    anyhow::ensure!(status.success(), "{bin} {args:?}: {}", err.trim());
    Ok(())
}

/// Reaps every child (bounded); the subreaper gets the orphans.
fn reap_all() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: plain waitpid on any child.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for a pid to exit via pidfd (no polling interval).
fn wait_pid(pid: i32) {
    // SAFETY: pidfd_open syscall with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return;
    }
    // SAFETY: fd is a fresh pidfd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut p = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&fd), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 10_000) };
    // Reap it if it is ours (runc/crun's init is re-parented to us).
    // SAFETY: plain waitpid.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

fn one(rt: Rt, root: &Path, bundle: &Path, id: &str) -> anyhow::Result<(Duration, Duration)> {
    let cpu0 = cpu_children();
    let t0 = Instant::now();
    if rt == Rt::Floor {
        sh("unshare", &["-pfmnu", "--mount-proc", "/bin/true"])?;
    } else {
        let b = rt.bin();
        let r = root.to_str().unwrap_or_default();
        let pidf = root.join(format!("{id}.pid"));
        sh(b, &["--root", r, "create", "--bundle", bundle.to_str().unwrap_or_default(), "--pid-file", pidf.to_str().unwrap_or_default(), id])?;
        let pid: i32 = fs::read_to_string(&pidf)?.trim().parse()?;
        sh(b, &["--root", r, "start", id])?;
        wait_pid(pid);
        sh(b, &["--root", r, "delete", id])?;
        let _ = fs::remove_file(pidf);
    }
    let wall = t0.elapsed();
    reap_all();
    Ok((wall, cpu_children() - cpu0))
}

fn bundle(dir: &Path, cg: &str) -> anyhow::Result<()> {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin"))?;
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    for l in ["true", "sh"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l))?;
    }
    let caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"];
    let cfg = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "cgroupsPath": cg,
            "resources": {"pids": {"limit": 100}, "memory": {"limit": 67108864}},
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}

fn private_mount_ns() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE, None::<&str>)?;
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        let _ = nix::mount::umount2("/sys/fs/cgroup/unified", nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn remove_cgroups(top: &str) {
    let Ok(rd) = fs::read_dir("/sys/fs/cgroup") else { return };
    for c in rd.flatten() {
        let base = c.path().join(top);
        if !base.is_dir() {
            continue;
        }
        if let Ok(sub) = fs::read_dir(&base) {
            for s in sub.flatten() {
                let _ = fs::remove_dir(s.path());
            }
        }
        let _ = fs::remove_dir(&base);
    }
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::ensure!(std::env::var_os("CI").is_none(), "the lifecycle bench needs root");
        eprintln!("skipping lifecycle bench: not root");
        return Ok(());
    }
    let runs: usize = std::env::var("MINION_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    private_mount_ns()?;
    let tmp = tempfile::tempdir()?;
    let top = format!("minion-bench-{}", std::process::id());
    let rts = [Rt::Ours, Rt::Crun, Rt::Runc, Rt::Floor];
    let mut dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for rt in rts {
        let root = tmp.path().join(format!("root-{}", rt.bin()));
        let b = tmp.path().join(format!("bundle-{}", rt.bin()));
        fs::create_dir_all(&root)?;
        bundle(&b, &format!("/{top}/{}", rt.bin()))?;
        dirs.push((root, b));
    }
    let mut wall: Vec<Vec<Duration>> = vec![Vec::new(); rts.len()];
    let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); rts.len()];
    let started = Instant::now();
    let mut failure = None;
    'outer: for round in 0..runs + 1 {
        for k in 0..rts.len() {
            let i = (k + round) % rts.len();
            let id = format!("bench-{round}-{i}");
            match one(rts[i], &dirs[i].0, &dirs[i].1, &id) {
                // Round 0 is a warm-up (page cache), not recorded.
                Ok((w, c)) if round > 0 => {
                    wall[i].push(w);
                    cpu[i].push(c);
                }
                Ok(_) => {}
                Err(e) => {
                    failure = Some(format!("{}: {e:#}", rts[i].name()));
                    let _ = Command::new(rts[i].bin()).args(["--root", dirs[i].0.to_str().unwrap_or_default(), "delete", "--force", &id]).output();
                    break 'outer;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(240) {
            eprintln!("time budget reached after {round} rounds");
            break;
        }
    }
    reap_all();
    remove_cgroups(&top);
    if let Some(f) = failure {
        anyhow::bail!("benchmark failed: {f}");
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("lifecycle: create+start+wait+delete of /bin/true (busybox bundle), {} runs each, interleaved", wall[0].len());
    println!("load average: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("{:<16} {:>10} {:>10} {:>10} {:>10}", "runtime", "wall p50", "wall p90", "cpu p50", "cpu p90");
    let mut med = Vec::new();
    for (i, rt) in rts.iter().enumerate() {
        let (w50, w90) = (pct(&mut wall[i], 0.5), pct(&mut wall[i], 0.9));
        let (c50, c90) = (pct(&mut cpu[i], 0.5), pct(&mut cpu[i], 0.9));
        med.push((ms(w50), ms(c50)));
        println!("{:<16} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms", rt.name(), ms(w50), ms(w90), ms(c50), ms(c90));
    }
    let (o, c, r) = (med[0], med[1], med[2]);
    println!("ratio ours/crun: wall {:.2}x  cpu {:.2}x", o.0 / c.0, o.1 / c.1);
    println!("ratio ours/runc: wall {:.2}x  cpu {:.2}x", o.0 / r.0, o.1 / r.1);
    Ok(())
}
