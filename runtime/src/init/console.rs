//! The container's terminal (`kubectl run -it` / `kubectl attach -t`: the CRI's
//! `tty: true`, which containerd turns into `process.terminal` and
//! `--console-socket`). As runc does: the init opens a pty from the container's
//! own devpts (`/dev/ptmx` → `pts/ptmx`, newinstance), bind-mounts the slave on
//! /dev/console, sends the master fd over the console socket with SCM_RIGHTS
//! (data: the master's name, `/dev/ptmx`), makes the slave its stdio and, as a
//! session leader, its controlling terminal.
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;

use super::mounts::NONE;
use super::{sys, Error};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(set_ctty, libc::TIOCSCTTY);

/// Sets up the terminal; `socket` is the connected console socket (closed
/// here). `console`: also bind the slave on /dev/console (the init, not exec).
pub fn setup(socket: OwnedFd, process: &Process, console: bool) -> Result<(), Error> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(sys("open", "/dev/ptmx"))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt", "/dev/ptmx"))?;
    let slave_path = nix::pty::ptsname_r(&master).map_err(sys("ptsname", "/dev/ptmx"))?;
    if let Some(size) = process.console_size() {
        let ws = libc::winsize { ws_row: size.height() as u16, ws_col: size.width() as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        unsafe { set_winsize(master.as_raw_fd(), &ws) }.map_err(sys("set window size", &slave_path))?;
    }
    if console {
        mount_console(Path::new(&slave_path))?;
    }
    let name = b"/dev/ptmx";
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(name)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(sys("send the pty master over the console socket", "/dev/ptmx"))?;
    drop((master, socket));
    let slave = nix::fcntl::open(slave_path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()).map_err(sys("open", &slave_path))?;
    match nix::unistd::setsid() {
        Ok(_) | Err(nix::errno::Errno::EPERM) => {} // EPERM: already a session leader
        Err(e) => return Err(sys("setsid", "container init")(e)),
    }
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    unsafe { set_ctty(slave.as_raw_fd(), 0) }.map_err(sys("make controlling terminal", &slave_path))?;
    nix::unistd::dup2_stdin(&slave).map_err(sys("dup2 stdin", &slave_path))?;
    nix::unistd::dup2_stdout(&slave).map_err(sys("dup2 stdout", &slave_path))?;
    nix::unistd::dup2_stderr(&slave).map_err(sys("dup2 stderr", &slave_path))?;
    if slave.as_raw_fd() <= 2 {
        // It is one of the stdio fds now: keep it open.
        std::mem::forget(slave);
    }
    Ok(())
}

/// Bind-mounts the pty slave on /dev/console (an empty file is made first).
fn mount_console(slave: &Path) -> Result<(), Error> {
    let console = Path::new("/dev/console");
    if !console.exists() {
        std::fs::File::create(console).map_err(super::io("create", console))?;
    }
    mount(Some(slave), console, NONE, MsFlags::MS_BIND, NONE)
        .map_err(sys("bind-mount the console", format!("{} on /dev/console", slave.display())))
}
