//! runc mode: minion-runtime as the `runc` binary of containerd's
//! containerd-shim-runc-v2 (the CRI runtime of a stock Kubernetes node).
//!
//! The shim is a subreaper and plays the monitor's part itself: it runs
//! `create --bundle B --pid-file F [--console-socket S] ID` with its own pipes
//! as stdio, reaps the init once `create` has left (the init is re-parented to
//! it) and takes the exit code from wait4; then `start`, `state`, `kill [--all]`,
//! `delete [--force]`, `ps --format json` and
//! `exec --process P --detach --pid-file F ID`. So in this mode:
//! - no monitor: `create` itself makes the cgroup and the init (the same code
//!   as the monitor, `crate::monitor`), runs the createRuntime hooks, writes the
//!   state and exits; the init keeps the caller's stdio;
//! - `create` saves a provisional `creating` state (pid, start time, cgroup)
//!   right after the fork, so `delete --force` can clean up after a `create`
//!   that was killed; the init only waits for `start` once `create` sent a
//!   commit byte after the final state, and exits if `create`'s pipe closes
//!   before that;
//! - the created init (its own session, like runc's) blocks reading the exec
//!   fifo in the state directory (`state::EXEC_FIFO`), ended by SIGTERM, SIGINT
//!   or SIGHUP meanwhile; `start` writes one byte to it and removes it, so the
//!   fifo's presence is the `created` status; `running`/`stopped` come from
//!   /proc (a zombie is stopped), guarded against pid reuse by the start time;
//! - `delete` removes only the container's leaf cgroup: the parents (such as
//!   `/kubepods/burstable/pod<uid>`) belong to the kubelet and containerd;
//! - `create` and `exec` first re-execute from a sealed memfd copy of the binary
//!   (`crate::sealed_exe`, CVE-2019-5736), since no monitor keeps the host
//!   binary busy; `exec` does so for any runc-mode container, whatever name
//!   it was invoked under.
//!
//! Selected explicitly, never guessed from the environment: a binary name
//! ending in `runc` (a `minion-runc -> minion-runtime` symlink, busybox-style)
//! or the global `--runc-mode` flag.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::state::EXEC_FIFO;

/// Whether the binary was invoked under a name ending in `runc` (argv[0]'s
/// file name); the other way in is the global `--runc-mode` flag.
pub fn selected_by_name(argv0: Option<&OsStr>) -> bool {
    argv0.and_then(|a0| Path::new(a0).file_name()).is_some_and(|n| n.as_encoded_bytes().ends_with(b"runc"))
}

/// Errors of releasing a created init.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the container's init is not waiting for start (it exited)")]
    NotWaiting,
    #[error("{op} {}: {source}", path.display())]
    Sys { op: &'static str, path: PathBuf, source: nix::Error },
    #[error("short write to {}", .0.display())]
    ShortWrite(PathBuf),
}

/// `start` of a runc-mode container: writes the byte its init waits for on the
/// exec fifo and removes the fifo (the container is `running` from then on).
/// Fails when no init waits on it (it died or was started already).
pub fn release(state_dir: &Path) -> Result<(), Error> {
    let p = state_dir.join(EXEC_FIFO);
    let sys = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Sys { op, path, source }
    };
    // Non-blocking: with no reader (the init is gone) this is ENXIO, not a hang.
    let fifo = nix::fcntl::open(&p, OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| match e {
            nix::errno::Errno::ENXIO => Error::NotWaiting,
            e => sys("open", &p)(e),
        })?;
    nix::unistd::unlink(&p).map_err(sys("remove", &p))?;
    match nix::unistd::write(fifo.as_fd(), b"0") {
        Ok(1) => Ok(()),
        Ok(_) => Err(Error::ShortWrite(p)),
        Err(e) => Err(sys("write", &p)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        let by = |a: &str| selected_by_name(Some(OsStr::new(a)));
        assert!(by("/usr/local/bin/minion-runc"));
        assert!(by("runc"));
        assert!(!by("/x/minion-runtime"));
        assert!(!by("/x/runc-wrapper"));
        assert!(!selected_by_name(None));
    }

    #[test]
    fn release_without_init_fails_cleanly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(EXEC_FIFO);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = release(d.path()).unwrap_err();
        assert!(matches!(e, Error::NotWaiting), "{e}");
        // A waiting reader gets the byte, and the fifo is gone.
        let r = nix::fcntl::open(&p, OFlag::O_RDWR, nix::sys::stat::Mode::empty()).unwrap();
        release(d.path()).unwrap();
        assert!(!p.exists());
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(r.as_fd(), &mut b).unwrap(), 1);
    }
}
