//! `exec ID -- CMD...`: runs another process in a running container (what the
//! kubelet's exec probes and `kubectl exec` ask the CRI runtime for). The process
//! joins the container's cgroup and namespaces with setns, gets the container
//! process's capabilities, user, rlimits, env and cwd (resolved inside the
//! container's root), and its exit code is returned.
//!
//! Process tree: the CLI forks a helper that joins the cgroup and the namespaces
//! (a pid namespace only applies to children) and forks the process itself; the
//! CLI never leaves the host's namespaces. Setup errors come back on a CLOEXEC
//! pipe and are reported as errors; otherwise the helper exits with the
//! process's code (128+signal when killed). With `--detach` (containerd's shim)
//! the helper exits once it forked and the CLI once the process exec'd: the
//! process is re-parented to the caller's subreaper, which reaps it.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::Process;

use crate::bundle::Bundle;
use crate::cli::{self, Globals};
use crate::init;
use crate::state::{ContainerState, Status};

/// Errors of `exec`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cli(#[from] Box<cli::Error>),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::Error),
    #[error(transparent)]
    Sealed(#[from] crate::sealed_exe::Error),
    #[error("exec in container {id:?}: {msg}")]
    Exec { id: String, msg: String },
}

/// What to run; unset fields come from the container's `process`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    /// Extra `KEY=VALUE`, overriding the container's.
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `uid[:gid]`.
    pub user: Option<(u32, u32)>,
    /// A terminal; its pty master goes to `console_socket` (required).
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    /// runc's `--process FILE`: the whole OCI process (args, env, cwd, user,
    /// capabilities, terminal...) instead of the container's with overrides.
    pub process_file: Option<PathBuf>,
    /// Return once the process runs (it is re-parented to the caller's
    /// subreaper), instead of waiting for its exit code.
    pub detach: bool,
    /// Where to write the process's host pid.
    pub pid_file: Option<PathBuf>,
}

/// Namespaces joined, in order (mount late: it changes root and cwd).
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs `opts.args` in container `id`; returns its exit code (0 at once with
/// `detach`).
pub fn exec(g: &Globals, id: &str, opts: &ExecOptions) -> Result<i32, Error> {
    let err = |msg: String| Error::Exec { id: id.to_string(), msg };
    let given = opts.process_file.as_deref().map(read_process).transpose().map_err(err)?;
    let console_path = console_socket(given.as_ref(), opts).map_err(err)?;
    if given.is_none() && opts.args.is_empty() {
        return Err(err("no command given".into()));
    }
    let st = cli::load_state(g, id).map_err(Box::new)?;
    if st.status != Status::Running {
        return Err(err(format!("cannot exec in a container that is {}", st.status)));
    }
    seal_for(&st)?;
    let console = console_path
        .map(|p| std::os::unix::net::UnixStream::connect(p).map_err(|e| err(format!("connect console socket {}: {e}", p.display()))))
        .transpose()?;
    let bundle = Bundle::load(&st.bundle)?;
    let process = match given {
        Some(p) => p,
        None => exec_process(bundle.spec.process().clone().unwrap_or_default(), opts),
    };
    let seccomp = bundle.seccomp.clone();
    let nss = open_init_namespaces(&st).map_err(err)?;
    let helper = Helper { st: &st, p: &process, detach: opts.detach };
    let status = helper.spawn(nss, seccomp, console.map(OwnedFd::from), opts.pid_file.as_deref()).map_err(err)?;
    Ok(match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    })
}

/// CVE-2019-5736: a runc-mode container has no monitor keeping the host binary
/// busy, so whatever name `exec` was invoked under, the helper that enters the
/// container must run from the sealed copy (re-executes unless it already does).
fn seal_for(st: &ContainerState) -> Result<(), Error> {
    if st.runc_mode && !crate::sealed_exe::running_sealed() {
        crate::sealed_exe::ensure()?;
    }
    crate::sealed_exe::clear_guard();
    Ok(())
}

/// The console socket to connect to, checked against the terminal setting
/// (required with a terminal, refused without one), as runc does.
fn console_socket<'a>(given: Option<&Process>, opts: &'a ExecOptions) -> Result<Option<&'a Path>, String> {
    let tty = given.map_or(opts.tty, |p| p.terminal() == Some(true));
    match (tty, opts.console_socket.as_deref()) {
        (true, None) if given.is_some() => Err("process.terminal is true but no --console-socket was given".into()),
        (true, None) => Err("--tty needs --console-socket (the pty master is sent there)".into()),
        (false, Some(p)) if given.is_some() => Err(format!("--console-socket {} given but process.terminal is false", p.display())),
        (false, Some(p)) => Err(format!("--console-socket {} given without --tty", p.display())),
        (true, Some(p)) => Ok(Some(p)),
        (false, None) => Ok(None),
    }
}

/// Reads runc's `--process` file: one OCI `process` object.
fn read_process(path: &Path) -> Result<Process, String> {
    let data = std::fs::read(path).map_err(|e| format!("read process file {}: {e}", path.display()))?;
    let p: Process = serde_json::from_slice(&data).map_err(|e| format!("process file {}: {e}", path.display()))?;
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(format!("process file {}: args is empty", path.display()));
    }
    if !p.cwd().is_absolute() {
        return Err(format!("process file {}: cwd {:?} is not absolute", path.display(), p.cwd()));
    }
    Ok(p)
}

/// The container's process with the exec's args, env, cwd and user.
fn exec_process(mut p: Process, opts: &ExecOptions) -> Process {
    let mut env = p.env().clone().unwrap_or_default();
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_args(Some(opts.args.clone()));
    p.set_env(Some(env));
    if let Some(c) = &opts.cwd {
        p.set_cwd(c.clone());
    }
    if let Some((uid, gid)) = opts.user {
        let mut u = p.user().clone();
        u.set_uid(uid);
        u.set_gid(gid);
        u.set_additional_gids(None);
        p.set_user(u);
    }
    p.set_terminal(Some(false));
    p
}

/// Opens the namespaces of the recorded init, never of a process that reused
/// its pid: a pidfd taken before they are opened, checked against the
/// recorded start time, must still be alive after.
fn open_init_namespaces(st: &ContainerState) -> Result<Namespaces, String> {
    // The pidfd first, then the start-time check (None: no pidfds, old kernel).
    let pidfd = crate::sys::pidfd_open(st.pid);
    if !crate::state::pid_matches(st.pid, st.init_start_time) {
        return Err(format!("the container's init (pid {}) is gone", st.pid));
    }
    let nss = open_namespaces(st)?;
    if pidfd.as_ref().is_some_and(crate::sys::pidfd_exited) {
        return Err(format!("the container's init (pid {}) exited while exec opened its namespaces", st.pid));
    }
    Ok(nss)
}

/// Opens the init's namespaces that differ from ours (before joining any).
fn open_namespaces(st: &ContainerState) -> Result<Namespaces, String> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = PathBuf::from(format!("/proc/{}/ns/{name}", st.pid));
        let ours = Path::new("/proc/self/ns").join(name);
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            (Err(e), _) => return Err(format!("namespace {}: {e}", theirs.display())),
            _ => false,
        };
        if same {
            continue;
        }
        let fd = nix::fcntl::open(&theirs, OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| format!("open {}: {e}", theirs.display()))?;
        out.push((fd, *flag, theirs.display().to_string()));
    }
    Ok(out)
}

/// The forked helper: joins the container's cgroup and namespaces and forks
/// the process (a pid namespace only applies to children).
struct Helper<'a> {
    st: &'a ContainerState,
    p: &'a Process,
    /// Exit right after the fork instead of waiting for the process.
    detach: bool,
}

type Namespaces = Vec<(OwnedFd, CloneFlags, String)>;

impl Helper<'_> {
    /// Forks the helper; returns once the process exec'd (or failed: its
    /// error) with the pid file written, then waits for the helper, which
    /// exits with the process's status (at once with `detach`).
    fn spawn(
        &self,
        nss: Namespaces,
        seccomp: Option<crate::seccomp::Filter>,
        console: Option<OwnedFd>,
        pid_file: Option<&Path>,
    ) -> Result<WaitStatus, String> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe for the exec's setup errors: {e}"))?;
        let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe for the exec's pid: {e}"))?;
        // SAFETY: the CLI is single-threaded; the child only does setup and exits.
        let helper = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop((r, pid_r));
                std::process::exit(self.run(nss, seccomp, console, w, pid_w))
            }
            ForkResult::Parent { child } => child,
        };
        drop((w, pid_w, nss, console));
        // The pid comes first (the helper sends it right after forking); the
        // error pipe reaches EOF once the process exec'd (CLOEXEC) or failed,
        // and the helper closed its own end. So the pid file exists while the
        // process runs, with or without --detach, as with runc.
        let pid = crate::monitor::read_all(pid_r.as_fd());
        let msg = crate::monitor::read_all(r.as_fd());
        let written = match msg.trim() {
            "" => write_pid_file(pid_file, pid.trim()),
            m => Err(m.to_string()),
        };
        let status = waitpid(helper, None).map_err(|e| format!("wait for pid {helper}: {e}"))?;
        written.map(|()| status)
    }

    /// In the helper: cgroup, setns, fork the process, send its pid; then
    /// exit with its code (or 0 at once with `detach`).
    fn run(
        &self,
        nss: Namespaces,
        seccomp: Option<crate::seccomp::Filter>,
        console: Option<OwnedFd>,
        w: OwnedFd,
        pid_w: OwnedFd,
    ) -> i32 {
        if let Err(msg) = self.enter(nss) {
            init::send(w.as_fd(), &msg);
            return 1;
        }
        // SAFETY: single-threaded; the child sets up and execs or exits.
        match unsafe { fork() } {
            Err(e) => {
                init::send(w.as_fd(), &format!("fork: {e}"));
                1
            }
            Ok(ForkResult::Child) => {
                drop(pid_w);
                self.exec_process(console, seccomp, w)
            }
            Ok(ForkResult::Parent { child }) => {
                drop((console, w));
                // fork returned the pid in our (the host's) pid namespace.
                init::send(&pid_w, &format!("{child}\n"));
                drop(pid_w);
                if self.detach {
                    return 0;
                }
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => c,
                    Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
                    _ => 255,
                }
            }
        }
    }

    /// Joins the container's cgroup, then its namespaces.
    fn enter(&self, nss: Namespaces) -> Result<(), String> {
        crate::cgroups::enter_self(&self.st.cgroup_paths).map_err(|e| format!("join cgroup: {e}"))?;
        for (fd, flag, path) in nss {
            nix::sched::setns(fd, flag).map_err(|e| format!("setns {path}: {e}"))?;
        }
        Ok(())
    }

    /// In the process: terminal, then the container process's setup and execve;
    /// a failure goes to the CLI on `w` (closed by a successful execve).
    fn exec_process(&self, console: Option<OwnedFd>, seccomp: Option<crate::seccomp::Filter>, w: OwnedFd) -> ! {
        if let Some(sock) = console {
            if let Err(e) = init::exec_terminal(sock, self.p) {
                init::send(w.as_fd(), &e.to_string());
                std::process::exit(127)
            }
        }
        let e = init::exec_setup(self.p, seccomp, &[std::os::fd::AsRawFd::as_raw_fd(&w)]);
        init::send(w.as_fd(), &e.to_string());
        std::process::exit(127)
    }
}

/// Writes the process's host pid where `--pid-file` asked.
fn write_pid_file(path: Option<&Path>, pid: &str) -> Result<(), String> {
    let Some(f) = path else { return Ok(()) };
    if pid.is_empty() {
        return Err("the exec helper exited without reporting the process's pid".into());
    }
    std::fs::write(f, pid).map_err(|e| format!("write pid file {}: {e}", f.display()))
}
