//! The container init: the child the monitor forks, which becomes the container's
//! PID 1. It joins/creates namespaces, sets up the rootfs (overlay, mounts, /dev,
//! pivot_root), drops privileges, reports "ready", waits for `start` and execs the
//! process. Every failing step is reported to `create`/`start` by name.

pub(crate) mod caps;
mod console;
mod dev;
mod mounts;

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

pub use mounts::{parse_mount_options, MountOptions};

use crate::cgroups::Mode;

/// Errors of container setup; each names the step and what it touched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} {target}: {source}")]
    Sys { step: &'static str, target: String, source: nix::Error },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("capabilities: {0}")]
    Caps(String),
}

pub(crate) fn sys(step: &'static str, target: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Sys { step, target, source }
}

pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// What the init needs besides the spec.
#[derive(Debug, Clone)]
pub struct InitConfig {
    pub spec: Spec,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    /// Overlay lowerdir (image rootfs), if the rootfs comes from the image store.
    pub image_rootfs: Option<PathBuf>,
    /// The container's state dir (overlay upper/work live here).
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub cgroup_mode: Mode,
    /// The container's `linux.cgroupsPath` (as used by the monitor).
    pub cgroups_path: String,
    /// The cgroup directories the monitor made (one per v1 controller, one
    /// on v2); the init moves itself into them first thing.
    pub cgroup_leaves: Vec<PathBuf>,
    /// `linux.seccomp`, compiled by the monitor before the fork (libseccomp's work
    /// stays out of the container's init).
    pub seccomp: Option<crate::seccomp::Filter>,
}

/// Maps an OCI namespace type to clone flags.
pub fn ns_flag(t: LinuxNamespaceType) -> Result<CloneFlags, Error> {
    Ok(match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        other => return Err(Error::Invalid(format!("namespace type {other:?} is not supported"))),
    })
}

/// Namespaces of the spec as (flag, optional path).
pub fn namespaces(spec: &Spec) -> Result<Vec<(CloneFlags, Option<PathBuf>)>, Error> {
    let nss = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    nss.iter().map(|n| Ok((ns_flag(n.typ())?, n.path().clone()))).collect()
}

/// Joins (setns) a namespace by path.
pub fn join_ns(path: &Path, flag: CloneFlags) -> Result<(), Error> {
    let fd = nix::fcntl::open(path, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(sys("open namespace", path.display()))?;
    nix::sched::setns(fd, flag).map_err(sys("setns", path.display()))
}

/// The container's namespaces except pid (the monitor handles pid before fork):
/// first join those given by path, then unshare the new ones.
fn setup_namespaces(cfg: &InitConfig) -> Result<(), Error> {
    let nss = namespaces(&cfg.spec)?;
    if !nss.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWNS) {
        return Err(Error::Invalid("linux.namespaces must include a mount namespace".into()));
    }
    let mut fds: Vec<(OwnedFd, CloneFlags, PathBuf)> = Vec::new();
    for (flag, path) in &nss {
        if let (Some(p), false) = (path, *flag == CloneFlags::CLONE_NEWPID) {
            let fd = nix::fcntl::open(p, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                .map_err(sys("open namespace", p.display()))?;
            fds.push((fd, *flag, p.clone()));
        }
    }
    for (fd, flag, p) in fds {
        nix::sched::setns(fd, flag).map_err(sys("setns", p.display()))?;
    }
    let mut new = CloneFlags::empty();
    for (flag, path) in &nss {
        if path.is_none() && *flag != CloneFlags::CLONE_NEWPID {
            new |= *flag;
        }
    }
    nix::sched::unshare(new).map_err(sys("unshare", format!("{new:?}")))
}

/// Everything up to (not including) exec; returns the resolved exec.
/// `before_pivot` runs once namespaces and mounts are made, before
/// pivot_root (the hooks' point: createRuntime, createContainer).
pub fn setup(cfg: &InitConfig, console: Option<OwnedFd>, before_pivot: &mut dyn FnMut() -> Result<(), Error>) -> Result<Exec, Error> {
    let process = cfg.spec.process().clone().ok_or_else(|| Error::Invalid("process is missing".into()))?;
    setup_namespaces(cfg)?;
    mounts::prepare_rootfs(cfg)?;
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(io("write", Path::new("/proc/self/oom_score_adj")))?;
    }
    before_pivot()?;
    mounts::pivot(&cfg.rootfs)?;
    mounts::finish_rootfs(&cfg.spec)?;
    if let Some(sock) = console {
        console::setup(sock, &process, true)?;
    }
    set_hostname(&cfg.spec)?;
    set_sysctls(&cfg.spec)?;
    caps::set_rlimits(&process)?;
    let cwd = process.cwd().clone();
    std::fs::create_dir_all(&cwd).map_err(io("create cwd", &cwd))?;
    finish_process(&process, cfg.seccomp.clone())
}

/// The last steps shared by the init and `exec`: user, capabilities, cwd,
/// no_new_privs and the seccomp filter (loaded here, before capabilities are
/// dropped, without no_new_privs; else right before execve, as runc does).
fn finish_process(process: &Process, seccomp: Option<crate::seccomp::Filter>) -> Result<Exec, Error> {
    let nnp = process.no_new_privileges() == Some(true);
    let mut deferred = None;
    if let Some(f) = seccomp {
        if nnp {
            deferred = Some(f);
        } else {
            f.load().map_err(|e| Error::Invalid(e.to_string()))?;
        }
    }
    caps::set_user_and_caps(process)?;
    enter_cwd(process.cwd())?;
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(sys("prctl", "PR_SET_NO_NEW_PRIVS"))?;
    }
    let mut exec = Exec::resolve(process)?;
    exec.seccomp = deferred;
    Ok(exec)
}

/// chdir to the process's cwd and check that it lies inside the container's
/// root (CVE-2024-21626: a cwd reached through a leaked host fd or a path that
/// escapes the root makes getcwd fail with ENOENT or return "(unreachable)").
fn enter_cwd(cwd: &Path) -> Result<(), Error> {
    nix::unistd::chdir(cwd).map_err(sys("chdir to cwd", cwd.display()))?;
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        Ok(p) => Err(Error::Invalid(format!("cwd {} is outside the container root ({})", cwd.display(), p.display()))),
        Err(e) => Err(Error::Invalid(format!("cwd {} is outside the container root: {e}", cwd.display()))),
    }
}

/// For `exec --tty`: a pty from the container's devpts (the caller joined
/// its mount namespace) as stdio and controlling terminal, its master sent
/// over the console socket.
pub fn exec_terminal(socket: OwnedFd, process: &Process) -> Result<(), Error> {
    console::setup(socket, process, false)
}

/// For `exec`, in a process that already joined the container's namespaces and
/// cgroup: closes inherited fds, applies rlimits, cwd, user, capabilities and
/// no_new_privs as for the container's init, then execs. Returns only on error.
pub fn exec_setup(process: &Process, seccomp: Option<crate::seccomp::Filter>, keep: &[std::os::fd::RawFd]) -> Error {
    let run = || -> Result<Exec, Error> {
        crate::sys::close_fds_except(keep);
        caps::set_rlimits(process)?;
        finish_process(process, seccomp)
    };
    match run() {
        Ok(exec) => exec.exec(),
        Err(e) => e,
    }
}

fn set_hostname(spec: &Spec) -> Result<(), Error> {
    let Some(h) = spec.hostname() else { return Ok(()) };
    let has_uts = namespaces(spec)?.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUTS);
    if !has_uts {
        return Err(Error::Invalid("hostname is set but there is no uts namespace".into()));
    }
    nix::unistd::sethostname(h).map_err(sys("sethostname", h))
}

fn set_sysctls(spec: &Spec) -> Result<(), Error> {
    let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().clone()).unwrap_or_default();
    for (k, v) in sysctls {
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v).map_err(io("write sysctl", &p))?;
    }
    Ok(())
}

/// A resolved program to exec.
#[derive(Debug, Clone)]
pub struct Exec {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// A seccomp filter to load right before execve (with no_new_privs).
    pub seccomp: Option<crate::seccomp::Filter>,
}

fn cstr(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Invalid(format!("string {s:?} contains a NUL byte")))
}

impl Exec {
    /// Finds args[0] on the container's PATH (in the current root).
    pub fn resolve(process: &Process) -> Result<Self, Error> {
        let args = process.args().clone().unwrap_or_default();
        let env = process.env().clone().unwrap_or_default();
        let prog = args.first().ok_or_else(|| Error::Invalid("process.args is empty".into()))?;
        let path = find_program(prog, &env).ok_or_else(|| Error::NotFound(prog.clone()))?;
        Ok(Self {
            path: cstr(&path)?,
            args: args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            env: env.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            seccomp: None,
        })
    }

    /// Loads the deferred seccomp filter, then execve; returns only on failure.
    pub fn exec(&self) -> Error {
        // Before the filter: it may not allow rt_sigaction.
        crate::sys::sigpipe_default(true);
        if let Some(f) = &self.seccomp {
            if let Err(e) = f.load() {
                crate::sys::sigpipe_default(false);
                return Error::Invalid(e.to_string());
            }
        }
        match nix::unistd::execve(&self.path, &self.args, &self.env) {
            Err(e) => {
                crate::sys::sigpipe_default(false);
                Error::Sys { step: "exec", target: format!("{:?}", self.path), source: e }
            }
            Ok(never) => match never {},
        }
    }
}

/// PATH lookup like Go's exec.LookPath: names with a slash are used as they are.
pub fn find_program(prog: &str, env: &[String]) -> Option<String> {
    let is_exec = |p: &str| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && Path::new(p).is_file();
    if prog.contains('/') {
        return is_exec(prog).then(|| prog.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/{prog}")).find(|p| is_exec(p))
}

/// Blocks reading one byte from `fd`; false on EOF (the peer went away).
pub fn wait_byte(fd: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(fd, &mut b) {
            Ok(1) => return true,
            Ok(_) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Writes a whole message, ignoring errors (the reader may be gone).
pub fn send(fd: impl AsFd, msg: &str) {
    let _ = nix::unistd::write(fd, msg.as_bytes());
}
