//! The per-container monitor (what containerd-shim is to a Kubernetes node): the
//! container's parent and reaper, owner of its log file and of its exit status.
//!
//! `create` forks twice (the middle process calls setsid and exits) so the monitor
//! is detached from the caller; the monitor makes the cgroup, forks the init (after
//! unsharing the pid namespace so the init is PID 1), puts it in the cgroup, waits
//! for it to report "ready" (or an error, which `create` prints), then waits for
//! `start` on the exec FIFO, pumps logs, reaps the init and records its exit.
#![allow(unsafe_code)]

pub mod log;
mod run;

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
}

/// Creates a container and returns once it is `created` (init waiting for start)
/// or failed (then the state dir is removed and the init's error returned).
pub fn create(store: &StateStore, opts: &CreateOptions) -> Result<ContainerState, Error> {
    let dir = store.create_dir(&opts.id)?;
    match create_in(store, &dir, opts) {
        Ok(st) => Ok(st),
        Err(e) => {
            let _ = store.remove(&opts.id);
            Err(e)
        }
    }
}

fn create_in(store: &StateStore, dir: &Path, opts: &CreateOptions) -> Result<ContainerState, Error> {
    let fifo = dir.join(state::EXEC_FIFO);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622)).map_err(sys("mkfifo exec.fifo"))?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: the runtime binary is single-threaded here; the child only forks
    // again or exits.
    match unsafe { fork() }.map_err(sys("fork monitor"))? {
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            // SAFETY: still single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let code = run::monitor_main(store, dir, opts, w);
                    std::process::exit(code)
                }
                _ => std::process::exit(0),
            }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let _ = nix::sys::wait::waitpid(child, None);
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
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<RawFd> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
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
