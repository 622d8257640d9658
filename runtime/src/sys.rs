//! Small kernel helpers nix does not cover: pidfd waits (event-driven waits for
//! a container's init or monitor, no polling interval), close_range, the child
//! subreaper bit, and the monitor's start socket address.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Opens a pidfd for `pid` (None if it is gone or the kernel lacks pidfds).
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a fresh fd that nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_send_signal(2): signals the very process the pidfd refers to, never one
/// that reused its pid.
pub fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> Result<(), nix::errno::Errno> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0) };
    nix::errno::Errno::result(r).map(drop)
}

/// Whether the process of a pidfd has exited (a zombie counts), without waiting.
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// Waits until `pid` has exited (a zombie counts as exited), at most `timeout`
/// (None: forever). True when it exited (or never existed).
pub fn wait_exit(pid: i32, timeout: Option<Duration>) -> bool {
    let Some(fd) = pidfd_open(pid) else { return true };
    let ms = timeout.map(|t| t.as_millis().min(i32::MAX as u128) as i32).unwrap_or(-1);
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return r > 0;
    }
}

/// Closes every fd from 3 up, except those in `keep` (close_range(2) per gap).
pub fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|f| *f > 2).collect();
    keep.sort_unstable();
    let mut from: u32 = 3;
    for k in keep {
        if (k as u32) > from {
            close_range(from, k as u32 - 1);
        }
        from = k as u32 + 1;
    }
    close_range(from, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes fds in the range; the callers own them all.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r < 0 {
        // Old kernel: fall back to closing one by one what /proc lists.
        if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<u32> = rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
            for fd in fds.into_iter().filter(|f| (first..=last).contains(f)) {
                let _ = nix::unistd::close(fd as RawFd);
            }
        }
    }
}

/// Makes the calling process a child subreaper: orphaned descendants are
/// re-parented to it instead of the host's init.
pub fn set_child_subreaper() -> Result<(), nix::Error> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    nix::errno::Errno::result(r).map(drop)
}

/// Sets SIGPIPE's disposition: default (`true`) right before the container's
/// execve, back to ignored (`false`) if it failed. Rust's runtime ignores
/// SIGPIPE, and an ignored signal stays ignored across execve, so without this
/// the container's processes would get EPIPE where they expect to die.
pub fn sigpipe_default(default: bool) {
    let h = if default { libc::SIG_DFL } else { libc::SIG_IGN };
    // SAFETY: installs SIG_DFL or SIG_IGN, no handler function.
    unsafe { libc::signal(libc::SIGPIPE, h) };
}

extern "C" fn exit_with_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// SIGTERM, SIGINT and SIGHUP: with `on`, handlers that end the process at once
/// with 128+signal (a created container's init, PID 1 of its namespace, would
/// ignore them by default); without it, default dispositions again (handlers
/// would not survive execve anyway; this closes the window before it).
pub fn exit_on_termination_signals(on: bool) {
    let h = if on { exit_with_signal as extern "C" fn(libc::c_int) as libc::sighandler_t } else { libc::SIG_DFL };
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs either SIG_DFL or a handler that only calls _exit.
        unsafe { libc::signal(sig, h) };
    }
}

/// Name of the monitor's start socket in a container's state directory.
pub const START_SOCK: &str = "start.sock";

/// The address of `dir/name` for bind/connect. Unix socket paths are limited to
/// 107 bytes; a longer one is reached through `/proc/self/fd/<dirfd>/name`, and
/// the returned fd must be kept open while the address is used.
pub fn sock_path(dir: &Path, name: &str) -> std::io::Result<(Option<OwnedFd>, PathBuf)> {
    let p = dir.join(name);
    if p.as_os_str().len() < 100 {
        return Ok((None, p));
    }
    let fd = nix::fcntl::open(dir, nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(std::io::Error::from)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()));
    Ok((Some(fd), short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_exit_of_child_and_timeout() {
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(!wait_exit(c.id() as i32, Some(Duration::from_millis(50))));
        c.kill().unwrap();
        assert!(wait_exit(c.id() as i32, Some(Duration::from_secs(5))));
        c.wait().unwrap();
        assert!(wait_exit(c.id() as i32, Some(Duration::from_millis(1))));
    }

    #[test]
    fn pidfd_signal_and_exit() {
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let fd = pidfd_open(c.id() as i32).unwrap();
        assert!(!pidfd_exited(&fd));
        pidfd_send_signal(&fd, libc::SIGKILL).unwrap();
        assert!(wait_exit(c.id() as i32, Some(Duration::from_secs(5))));
        assert!(pidfd_exited(&fd));
        c.wait().unwrap();
        // Reaped: the pidfd still names that process, and no other.
        assert_eq!(pidfd_send_signal(&fd, libc::SIGKILL), Err(nix::errno::Errno::ESRCH));
    }

    #[test]
    fn long_socket_path_goes_through_proc() {
        let d = tempfile::tempdir().unwrap();
        let long = d.path().join("x".repeat(100));
        std::fs::create_dir(&long).unwrap();
        let (fd, p) = sock_path(&long, START_SOCK).unwrap();
        assert!(fd.is_some() && p.starts_with("/proc/self/fd"));
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        std::os::unix::net::UnixStream::connect(&p).unwrap();
        drop(l);
        assert!(long.join(START_SOCK).exists());
    }
}
