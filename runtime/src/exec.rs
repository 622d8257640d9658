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

/// Runs `opts.args` in container `id`; returns its exit code.
pub fn exec(g: &Globals, id: &str, opts: &ExecOptions) -> Result<i32, Error> {
    let err = |msg: String| Error::Exec { id: id.to_string(), msg };
    let given = opts.process_file.as_deref().map(read_process).transpose().map_err(err)?;
    let tty = match &given {
        Some(p) => p.terminal() == Some(true),
        None => opts.tty,
    };
    let console = match (tty, &opts.console_socket) {
        (true, None) if given.is_some() => {
            return Err(err("process.terminal is true but no --console-socket was given".into()))
        }
        (true, None) => return Err(err("--tty needs --console-socket (the pty master is sent there)".into())),
        (false, Some(p)) if given.is_some() => {
            return Err(err(format!("--console-socket {} given but process.terminal is false", p.display())))
        }
        (false, Some(p)) => return Err(err(format!("--console-socket {} given without --tty", p.display()))),
        (true, Some(p)) => Some(
            std::os::unix::net::UnixStream::connect(p).map_err(|e| err(format!("connect console socket {}: {e}", p.display())))?,
        ),
        (false, None) => None,
    };
    if given.is_none() && opts.args.is_empty() {
        return Err(err("no command given".into()));
    }
    let st = cli::load_state(g, id).map_err(Box::new)?;
    if st.status != Status::Running {
        return Err(err(format!("cannot exec in a container that is {}", st.status)));
    }
    let bundle = Bundle::load(&st.bundle)?;
    let process = match given {
        Some(p) => p,
        None => exec_process(bundle.spec.process().clone().unwrap_or_default(), opts),
    };
    let seccomp = crate::seccomp::from_spec(&bundle.spec).map_err(|e| err(e.to_string()))?;
    let nss = open_namespaces(&st).map_err(err)?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err(format!("pipe: {e}")))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err(format!("pipe: {e}")))?;
    // SAFETY: the CLI is single-threaded; the child only does setup and exits.
    let helper = match unsafe { fork() }.map_err(|e| err(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop((r, pid_r));
            let h = Helper { st: &st, p: &process, detach: opts.detach, w: &w };
            let code = h.run(nss, seccomp, console.map(OwnedFd::from), pid_w);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => child,
    };
    drop((w, pid_w, nss, console));
    // The pid comes first (the helper sends it right after forking), so the
    // pid file exists while the process runs, as with runc.
    let pid = crate::monitor::read_all(pid_r.as_fd());
    let msg = crate::monitor::read_all(r.as_fd());
    let status = waitpid(helper, None).map_err(|e| err(format!("wait for pid {helper}: {e}")))?;
    if !msg.trim().is_empty() {
        return Err(err(msg.trim().to_string()));
    }
    if let Some(f) = &opts.pid_file {
        let pid = pid.trim();
        if pid.is_empty() {
            return Err(err("the exec helper exited without reporting the process's pid".into()));
        }
        std::fs::write(f, pid).map_err(|e| err(format!("write pid file {}: {e}", f.display())))?;
    }
    Ok(match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    })
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

/// Opens the init's namespaces that differ from ours (before joining any).
fn open_namespaces(st: &ContainerState) -> Result<Vec<(OwnedFd, CloneFlags, String)>, String> {
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
    /// The error pipe to the CLI (CLOEXEC: closed by the process's execve).
    w: &'a OwnedFd,
}

impl Helper<'_> {
    /// Cgroup, setns, fork the process, send its pid; then exit with its code
    /// (or 0 at once with `detach`).
    fn run(
        &self,
        nss: Vec<(OwnedFd, CloneFlags, String)>,
        seccomp: Option<crate::seccomp::Filter>,
        mut console: Option<OwnedFd>,
        pid_w: OwnedFd,
    ) -> i32 {
        let w = self.w;
        let fail = |msg: String| {
            init::send(w.as_fd(), &msg);
            1
        };
        for leaf in &self.st.cgroup_paths {
            let f = leaf.join("cgroup.procs");
            if let Err(e) = std::fs::write(&f, "0") {
                return fail(format!("join cgroup {}: {e}", f.display()));
            }
        }
        for (fd, flag, path) in nss {
            if let Err(e) = nix::sched::setns(fd, flag) {
                return fail(format!("setns {path}: {e}"));
            }
        }
        // SAFETY: single-threaded; the child sets up and execs or exits.
        let forked = unsafe { fork() };
        if let Ok(ForkResult::Parent { .. }) = forked {
            drop(console.take());
        }
        match forked {
            Err(e) => fail(format!("fork: {e}")),
            Ok(ForkResult::Child) => {
                drop(pid_w);
                if let Some(sock) = console {
                    if let Err(e) = init::exec_terminal(sock, self.p) {
                        init::send(w.as_fd(), &e.to_string());
                        std::process::exit(127)
                    }
                }
                let e = init::exec_setup(self.p, seccomp, &[std::os::fd::AsRawFd::as_raw_fd(w)]);
                init::send(w.as_fd(), &e.to_string());
                std::process::exit(127)
            }
            Ok(ForkResult::Parent { child }) => {
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
}
