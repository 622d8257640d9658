//! The per-container monitor (what containerd-shim is to a Kubernetes node): the
//! container's parent and reaper, owner of its log file and of its exit status.
//!
//! `create` forks the monitor, which starts its own session and outlives the
//! caller; the monitor becomes a child subreaper, makes the cgroup, forks the init
//! (after unsharing the pid namespace so the init is PID 1), puts it in the
//! cgroup, waits for it to report "ready" (or an error, which `create` prints),
//! then waits for `start` on its start socket, pumps logs, reaps the init (and any
//! orphan re-parented to it) and records the exit. Every wait is event-driven
//! (pipes, the socket and a pidfd of the init in one poll), never a sleep.
//!
//! Zombies: PID 1 of the container is the user's process itself (as with runc
//! without `--init`); it reaps its own children. The monitor is a subreaper for
//! processes that leave the container's pid namespace tree (e.g. a container
//! that shares the host's or a pod's pid namespace).
//!
//! The runtime binary and CVE-2019-5736: the init and `exec`'s helper are
//! forks of the runtime binary, so until they exec, a process in the container
//! could reach that binary through /proc/<pid>/exe, and an entrypoint rewritten
//! to `#!/proc/self/exe` makes the exec run the runtime binary again inside the
//! container, which then keeps an O_PATH fd to it and later reopens it for
//! writing through /proc/self/fd. runc was overwritten because it had exited by
//! then, so the write-open succeeded. Here the monitor, itself running the
//! runtime binary, lives as long as any process of the container can (it exits
//! after the init, whose death kills its pid namespace; a pod-shared pid
//! namespace lives as long as the sandbox's init, whose monitor outlives it
//! too; without a pid namespace of its own, the monitor SIGKILLs what is left
//! in the container's cgroup when the init exits), and the kernel refuses to
//! open for writing a file that a live process executes (ETXTBSY, checked by
//! the tests). We chose this over re-executing
//! from a sealed memfd copy, which would copy the ~12 MB binary for every
//! container and cost about as much CPU as crun's whole lifecycle. The limit:
//! a process that left the container's cgroup (needs cgroupfs write access,
//! i.e. a privileged container) and outlives every monitor on the node, and a
//! kernel that stops giving ETXTBSY for running executables.
//! runc mode (containerd's shim, `crate::runc_mode`) has no monitor, so there
//! `create` and `exec` re-execute from a sealed memfd copy instead
//! (`crate::sealed_exe`).
#![allow(unsafe_code)]

mod hooks;
pub mod log;
mod plumbing;
mod run;
mod spawn;

pub(crate) use spawn::kill_leftovers;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};

use crate::bundle::Bundle;
use crate::cgroups::Mode;
use crate::state::{self, ContainerState, StateStore};

/// Errors of container creation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] state::Error),
    #[error("{step}: {source}")]
    Sys { step: &'static str, source: nix::Error },
    #[error("create container {id:?}: {msg}")]
    Create { id: String, msg: String },
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |source| Error::Sys { step, source }
}

/// Everything the monitor needs to create one container.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: Bundle,
    pub cgroup_root: PathBuf,
    pub cgroup_mode: Mode,
    /// Where the monitor's own diagnostics go (else /dev/null).
    pub log_file: Option<PathBuf>,
    /// The connected console socket (owned by the caller), for process.terminal.
    pub console_fd: Option<RawFd>,
    /// runc mode (containerd's shim is the caller): no monitor; the init keeps
    /// the caller's stdio, waits on the exec fifo and is reaped by the caller.
    pub runc_mode: bool,
}

/// Creates a container and returns once it is `created` (init waiting for start)
/// or failed (then the state dir is removed and the init's error returned).
/// In runc mode the calling process does the monitor's setup work itself and
/// leaves; the init is then re-parented to the caller's subreaper.
pub fn create(store: &StateStore, opts: &CreateOptions) -> Result<ContainerState, Error> {
    let dir = store.create_dir(&opts.id)?;
    let made = if opts.runc_mode { plumbing::create_without_monitor(store, &dir, opts) } else { create_in(store, &dir, opts) };
    match made {
        Ok(st) => Ok(st),
        Err(e) => {
            let _ = store.remove(&opts.id);
            Err(e)
        }
    }
}

fn create_in(store: &StateStore, dir: &Path, opts: &CreateOptions) -> Result<ContainerState, Error> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // One fork: the monitor starts its own session and outlives this process
    // (it is re-parented to the nearest subreaper or init when `create` exits).
    // SAFETY: the runtime binary is single-threaded here.
    match unsafe { fork() }.map_err(sys("fork monitor"))? {
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            let code = run::monitor_main(store, dir, opts, w);
            std::process::exit(code)
        }
        ForkResult::Parent { .. } => {
            drop(w);
            let msg = read_all(r.as_fd());
            let msg = msg.trim();
            if msg == "ok" {
                return Ok(store.load(&opts.id)?);
            }
            let msg = msg.strip_prefix("error: ").unwrap_or(msg);
            let msg = if msg.is_empty() { "container monitor exited without reporting" } else { msg };
            Err(Error::Create { id: opts.id.clone(), msg: msg.to_string() })
        }
    }
}

/// Reads until EOF.
pub(crate) fn read_all(fd: std::os::fd::BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Closes every fd above 2 that is not in `keep` (fds the caller leaked to us).
pub(crate) fn close_other_fds(keep: &[RawFd]) {
    crate::sys::close_fds_except(keep);
}

/// Moves an fd above 2 (so dup2 onto stdio cannot clobber it).
pub(crate) fn above_stdio(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() > 2 {
        return fd;
    }
    match nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that we now own.
        Ok(n) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) },
        Err(_) => fd,
    }
}
