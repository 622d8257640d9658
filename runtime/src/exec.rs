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
//! process's code (128+signal when killed).
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
    let console = match (opts.tty, &opts.console_socket) {
        (true, None) => return Err(err("--tty needs --console-socket (the pty master is sent there)".into())),
        (false, Some(p)) => return Err(err(format!("--console-socket {} given without --tty", p.display()))),
        (true, Some(p)) => Some(
            std::os::unix::net::UnixStream::connect(p).map_err(|e| err(format!("connect console socket {}: {e}", p.display())))?,
        ),
        (false, None) => None,
    };
    if opts.args.is_empty() {
        return Err(err("no command given".into()));
    }
    let st = cli::load_state(g, id).map_err(Box::new)?;
    if st.status != Status::Running {
        return Err(err(format!("cannot exec in a container that is {}", st.status)));
    }
    let bundle = Bundle::load(&st.bundle)?;
    let process = exec_process(bundle.spec.process().clone().unwrap_or_default(), opts);
    let seccomp = crate::seccomp::from_spec(&bundle.spec).map_err(|e| err(e.to_string()))?;
    let nss = open_namespaces(&st).map_err(err)?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err(format!("pipe: {e}")))?;
    // SAFETY: the CLI is single-threaded; the child only does setup and exits.
    let helper = match unsafe { fork() }.map_err(|e| err(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(r);
            let code = helper_main(&st, nss, &process, seccomp, console.map(OwnedFd::from), &w);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => child,
    };
    drop((w, nss, console));
    let msg = crate::monitor::read_all(r.as_fd());
    let status = waitpid(helper, None).map_err(|e| err(format!("wait for pid {helper}: {e}")))?;
    if !msg.trim().is_empty() {
        return Err(err(msg.trim().to_string()));
    }
    Ok(match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    })
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

/// The helper: cgroup, setns, fork the process, wait, exit with its code.
fn helper_main(
    st: &ContainerState,
    nss: Vec<(OwnedFd, CloneFlags, String)>,
    p: &Process,
    seccomp: Option<crate::seccomp::Filter>,
    mut console: Option<OwnedFd>,
    w: &OwnedFd,
) -> i32 {
    let fail = |msg: String| {
        init::send(w.as_fd(), &msg);
        1
    };
    for leaf in &st.cgroup_paths {
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
            if let Some(sock) = console {
                if let Err(e) = init::exec_terminal(sock, p) {
                    init::send(w.as_fd(), &e.to_string());
                    std::process::exit(127)
                }
            }
            let e = init::exec_setup(p, seccomp, &[std::os::fd::AsRawFd::as_raw_fd(w)]);
            init::send(w.as_fd(), &e.to_string());
            std::process::exit(127)
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => c,
            Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
            _ => 255,
        },
    }
}
