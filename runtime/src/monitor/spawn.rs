//! The monitor's side of the container init: entering the pid namespace before
//! the fork, and the forked child's life until it execs the container process.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;

use crate::init::{self, InitConfig};

/// The init-side ends of the pipes.
pub(super) struct ChildFds {
    pub go_r: OwnedFd,
    pub sync_w: OwnedFd,
    pub out_w: OwnedFd,
    pub err_w: OwnedFd,
}

/// Joins the pid namespace given by path, or unshares a new one, so the next
/// fork is in it (the init becomes PID 1 of a new namespace).
pub(super) fn enter_pid_ns(spec: &oci_spec::runtime::Spec) -> Result<(), String> {
    for (flag, path) in init::namespaces(spec).map_err(|e| e.to_string())? {
        if flag != CloneFlags::CLONE_NEWPID {
            continue;
        }
        return match path {
            Some(p) => init::join_ns(&p, flag).map_err(|e| e.to_string()),
            None => nix::sched::unshare(flag).map_err(|e| format!("unshare pid namespace: {e}")),
        };
    }
    Ok(())
}

pub(super) fn read_line(fd: std::os::fd::BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(fd, &mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => out.push(b[0]),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The init child: stdio, wait for the cgroup, setup, ready, wait for start, exec.
pub(super) fn init_main(cfg: &InitConfig, fds: ChildFds) -> ! {
    if let Ok(null) = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()) {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let _ = nix::unistd::dup2_stdout(&fds.out_w);
    let _ = nix::unistd::dup2_stderr(&fds.err_w);
    drop((fds.out_w, fds.err_w));
    if !init::wait_byte(fds.go_r.as_fd()) {
        std::process::exit(1);
    }
    match init::setup(cfg) {
        Ok(exec) => {
            init::send(fds.sync_w.as_fd(), "ready\n");
            if !init::wait_byte(fds.go_r.as_fd()) {
                std::process::exit(1);
            }
            let e = exec.exec();
            init::send(fds.sync_w.as_fd(), &format!("error: {e}\n"));
            std::process::exit(127)
        }
        Err(e) => {
            init::send(fds.sync_w.as_fd(), &format!("error: {e}\n"));
            std::process::exit(1)
        }
    }
}
