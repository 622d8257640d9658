//! What `Monitor::start` sets up before and around the init's fork: the
//! cgroup, the pipes, start socket and log (monitor mode) or the exec fifo
//! (runc mode), the pid namespace, and the fork itself; and runc mode's
//! monitor-less `create`.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult, Pid};

use super::log::LogWriter;
use super::run::Monitor;
use super::spawn::{enter_pid_ns, init_main, ChildFds};
use super::{close_other_fds, CreateOptions};
use crate::cgroups::{Cgroup, Resources};
use crate::init::InitConfig;
use crate::state::{self, ContainerState, StateStore};
use crate::sys;

/// runc mode: `create` does the monitor's setup itself (cgroup, pid namespace,
/// init, hooks, state) and returns; nothing of it stays behind but the init,
/// which keeps the caller's stdio and waits on the exec fifo for `start`.
pub fn create_without_monitor(store: &StateStore, dir: &Path, opts: &CreateOptions) -> Result<ContainerState, super::Error> {
    let fail = |msg: String| super::Error::Create { id: opts.id.clone(), msg };
    let console = match opts.console_fd {
        // The caller keeps its socket; the init gets its own copy.
        // SAFETY: `create`'s caller keeps the console socket open during the call.
        Some(fd) => Some(
            nix::fcntl::fcntl(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                // SAFETY: F_DUPFD_CLOEXEC returned a new fd that we now own.
                .map(|n| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
                .map_err(|e| fail(format!("dup console socket: {e}")))?,
        ),
        None => None,
    };
    let m = Monitor::start(store, dir, opts, console).map_err(fail)?;
    Ok(m.state().clone())
}

/// Makes the exec fifo in the state dir and opens it read-write for the init:
/// with itself as a writer, its read blocks until `start` writes a byte.
fn exec_fifo(dir: &Path) -> Result<OwnedFd, String> {
    let p = dir.join(state::EXEC_FIFO);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| format!("mkfifo {}: {e}", p.display()))?;
    nix::fcntl::open(&p, OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(|e| format!("open {}: {e}", p.display()))
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe for the init's {what}: {e}"))
}

/// Creates the cgroup and applies the limits (removing it again if they
/// fail); returns it, its leaf directories and the OOM-kill baseline.
pub(super) fn make_cgroup(opts: &CreateOptions, cg_path: &str) -> Result<(Cgroup, Vec<PathBuf>, u64), String> {
    let cgroup = Cgroup::new(&opts.cgroup_root, opts.cgroup_mode, cg_path).map_err(|e| e.to_string())?;
    let res = opts.bundle.spec.linux().as_ref().and_then(|l| l.resources().as_ref()).map(Resources::from).unwrap_or_default();
    let leaves = cgroup.create(&res).map_err(|e| e.to_string())?;
    if let Err(e) = cgroup.apply(&res) {
        // runc mode: the parents belong to the caller (kubelet, containerd).
        let _ = Cgroup::remove_paths(&leaves, if opts.runc_mode { 1 } else { cgroup.levels() });
        return Err(e.to_string());
    }
    let oom_baseline = cgroup.oom_kill_count();
    Ok((cgroup, leaves, oom_baseline))
}

/// What the init needs, besides the spec.
pub(super) fn init_config(dir: &Path, opts: &CreateOptions, cg_path: &str, leaves: &[PathBuf]) -> InitConfig {
    let b = &opts.bundle;
    InitConfig {
        spec: b.spec.clone(),
        rootfs: b.rootfs.clone(),
        bundle: b.dir.clone(),
        image_rootfs: b.image_rootfs(),
        state_dir: dir.to_path_buf(),
        cgroup_root: opts.cgroup_root.clone(),
        cgroup_mode: opts.cgroup_mode,
        cgroups_path: cg_path.to_string(),
        cgroup_leaves: leaves.to_vec(),
        seccomp: b.seccomp.clone(),
    }
}

/// The monitor's side of the container's plumbing (start socket, log) and the
/// ends the init gets (stdout/stderr pipes, or the exec fifo in runc mode).
pub(super) struct Plumbing {
    pub listener: Option<UnixListener>,
    pub log: Option<LogWriter>,
    pub child: StdioEnds,
}

/// The container's output pipes (monitor mode) or exec fifo (runc mode).
pub(super) struct StdioEnds {
    out: Option<(OwnedFd, OwnedFd)>,
    err: Option<(OwnedFd, OwnedFd)>,
    start_fifo: Option<OwnedFd>,
}

impl Plumbing {
    /// runc mode: only the exec fifo (the init keeps the caller's stdio).
    /// Monitor mode: the start socket, the CRI log and the output pipes.
    pub fn new(dir: &Path, opts: &CreateOptions) -> Result<Self, String> {
        if opts.runc_mode {
            let child = StdioEnds { out: None, err: None, start_fifo: Some(exec_fifo(dir)?) };
            return Ok(Self { listener: None, log: None, child });
        }
        let b = &opts.bundle;
        let (_dirfd, sock_path) = sys::sock_path(dir, sys::START_SOCK).map_err(|e| format!("start socket in {}: {e}", dir.display()))?;
        let listener = UnixListener::bind(&sock_path).map_err(|e| format!("bind {}: {e}", dir.join(sys::START_SOCK).display()))?;
        listener.set_nonblocking(true).map_err(|e| format!("start socket: {e}"))?;
        let log_path = b.log_path().unwrap_or_else(|| dir.join("container.log"));
        let log = LogWriter::open(&log_path, b.log_max_size(), b.log_max_files()).map_err(|e| format!("open log {}: {e}", log_path.display()))?;
        let child = StdioEnds { out: Some(pipe("stdout")?), err: Some(pipe("stderr")?), start_fifo: None };
        Ok(Self { listener: Some(listener), log: Some(log), child })
    }
}

/// The monitor's ends after the fork.
pub(super) struct ParentFds {
    pub go_w: OwnedFd,
    pub sync_r: OwnedFd,
    pub out_r: Option<OwnedFd>,
    pub err_r: Option<OwnedFd>,
    /// Whether the caller's pid namespace was restored after the fork.
    pub restored: Result<(), String>,
}

/// Forks the init into the container's pid namespace and returns to the
/// caller's own (always in runc mode, where `start` runs poststart hooks
/// with threads right after in the same process; in monitor mode when it
/// runs hooks).
pub(super) fn fork_init(cfg: &InitConfig, opts: &CreateOptions, ends: StdioEnds, console: Option<OwnedFd>) -> Result<(Pid, ParentFds), String> {
    let (out_r, out_w) = ends.out.unzip();
    let (err_r, err_w) = ends.err.unzip();
    let (go_r, go_w) = pipe("go signal")?;
    let (sync_r, sync_w) = pipe("reports")?;
    let own_pidns = super::hooks::own_pidns(&cfg.spec, opts.runc_mode)?;
    enter_pid_ns(&cfg.spec)?;
    let start_fifo = ends.start_fifo;
    // SAFETY: the monitor (or runc mode's `create`) is single-threaded.
    let child = match unsafe { fork() }.map_err(|e| format!("fork init: {e}"))? {
        ForkResult::Child => {
            drop((go_w, sync_r, out_r, err_r));
            // The create caller's result pipe must not stay open in the init.
            let mut keep = vec![go_r.as_raw_fd(), sync_w.as_raw_fd()];
            keep.extend([&out_w, &err_w, &console, &start_fifo].into_iter().flatten().map(|f| f.as_raw_fd()));
            close_other_fds(&keep);
            init_main(cfg, ChildFds { go_r, sync_w, out_w, err_w, console, start_fifo })
        }
        ForkResult::Parent { child } => child,
    };
    drop((go_r, sync_w, out_w, err_w, console, start_fifo));
    let restored = super::hooks::restore_pidns(own_pidns);
    Ok((child, ParentFds { go_w, sync_r, out_r, err_r, restored }))
}
