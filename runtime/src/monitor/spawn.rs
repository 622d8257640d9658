//! The monitor's side of the container init: entering the pid namespace before
//! the fork, the forked child's life until it execs the container process,
//! and the monitor's own stdio and first state.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;

use crate::hooks::{self, Kind};
use crate::init::{self, InitConfig};
use crate::state::{now_rfc3339, ContainerState, Status};

use super::CreateOptions;

/// The init-side ends of the pipes.
pub(super) struct ChildFds {
    pub go_r: OwnedFd,
    pub sync_w: OwnedFd,
    /// The container's stdout/stderr pipes to the monitor; None in runc mode,
    /// where the init keeps the caller's stdio.
    pub out_w: Option<OwnedFd>,
    pub err_w: Option<OwnedFd>,
    /// The console socket, when process.terminal is set.
    pub console: Option<OwnedFd>,
    /// runc mode: the exec fifo (read-write); `start` is a byte written to it.
    pub start_fifo: Option<OwnedFd>,
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

/// What runc mode's `create` sends on the go pipe once the state is saved:
/// until then the init must not wait for `start` (if `create` dies first, the
/// pipe's EOF ends the init instead).
pub(crate) const COMMITTED: &str = "c";

/// The init child: stdio, cgroup, wait for the monitor, setup, ready, wait for start, exec.
pub(super) fn init_main(cfg: &InitConfig, fds: ChildFds) -> ! {
    if fds.start_fifo.is_some() && fds.console.is_none() {
        // runc mode: its own session, as runc's init has (with a terminal,
        // the console setup makes one with the pty as controlling terminal).
        let _ = nix::unistd::setsid();
    }
    if let (Some(out_w), Some(err_w)) = (&fds.out_w, &fds.err_w) {
        if let Ok(null) = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty()) {
            let _ = nix::unistd::dup2_stdin(&null);
        }
        let _ = nix::unistd::dup2_stdout(out_w);
        let _ = nix::unistd::dup2_stderr(err_w);
    }
    drop((fds.out_w, fds.err_w));
    // Into the container's cgroup before anything else (namespaces, mounts)
    // is charged, and without the monitor's help: see `cgroups::enter_self`.
    if let Err(e) = crate::cgroups::enter_self(&cfg.cgroup_leaves) {
        init::send(fds.sync_w.as_fd(), &format!("error: join cgroup: {e}\n"));
        std::process::exit(1);
    }
    if !init::wait_byte(fds.go_r.as_fd()) {
        std::process::exit(1);
    }
    let state = if super::hooks::init_needs_state(&cfg.spec) { read_line(fds.go_r.as_fd()) } else { String::new() };
    let mut before_pivot = || -> Result<(), init::Error> {
        if super::hooks::runtime_hooks_before_pivot(&cfg.spec) {
            init::send(fds.sync_w.as_fd(), &format!("{}\n", super::hooks::HOOKS_DUE));
            if !init::wait_byte(fds.go_r.as_fd()) {
                return Err(init::Error::Invalid("the monitor went away while running hooks".into()));
            }
        }
        hooks::run(&cfg.spec, Kind::CreateContainer, state.as_bytes()).map_err(|e| init::Error::Invalid(e.to_string()))
    };
    match init::setup(cfg, fds.console, &mut before_pivot) {
        Ok(exec) => {
            init::send(fds.sync_w.as_fd(), "ready\n");
            if !wait_for_start(fds.go_r.as_fd(), fds.start_fifo.as_ref()) {
                std::process::exit(1);
            }
            let runc_mode = fds.start_fifo.is_some();
            drop(fds.start_fifo);
            let fail_started = |e: &dyn std::fmt::Display| {
                if runc_mode {
                    // Nobody reads the sync pipe after `create` in runc mode: the
                    // container's stderr (the caller's) is where this can be seen.
                    eprintln!("minion-runtime: error: {e}");
                }
                init::send(fds.sync_w.as_fd(), &format!("error: {e}\n"));
            };
            let started = state.replacen("\"status\":\"creating\"", "\"status\":\"created\"", 1);
            if let Err(e) = hooks::run(&cfg.spec, Kind::StartContainer, started.as_bytes()) {
                fail_started(&e);
                std::process::exit(1);
            }
            let e = exec.exec();
            fail_started(&e);
            std::process::exit(127)
        }
        Err(e) => {
            init::send(fds.sync_w.as_fd(), &format!("error: {e}\n"));
            std::process::exit(1)
        }
    }
}

/// Blocks until `start`: the monitor's byte on the go pipe, or in runc mode
/// `create`'s commit byte and then a byte on the exec fifo. False when the
/// monitor or `create` went away first. In runc mode the init is PID 1 of its
/// namespace with no handler, which would ignore SIGTERM/SIGINT/SIGHUP: while
/// it waits, handlers make them end it (exit 128+signal), as they would end a
/// created runc container.
fn wait_for_start(go_r: std::os::fd::BorrowedFd<'_>, start_fifo: Option<&OwnedFd>) -> bool {
    let Some(fifo) = start_fifo else { return init::wait_byte(go_r) };
    crate::sys::exit_on_termination_signals(true);
    let started = init::wait_byte(go_r) && init::wait_byte(fifo.as_fd());
    crate::sys::exit_on_termination_signals(false);
    started
}

/// The monitor's stdio: /dev/null, stderr to the --log file when given.
pub(super) fn redirect_stdio(log: Option<&Path>) {
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty());
    if let Ok(null) = &null {
        let _ = nix::unistd::dup2_stdin(null);
        let _ = nix::unistd::dup2_stdout(null);
    }
    let logf = log.and_then(|p| super::log::open_log(p).ok());
    match (logf, &null) {
        (Some(f), _) => {
            let _ = nix::unistd::dup2_stderr(&f);
        }
        (None, Ok(null)) => {
            let _ = nix::unistd::dup2_stderr(null);
        }
        _ => {}
    }
}

/// The state saved once the init reported ready (status `creating` until then).
pub(super) fn initial_state(opts: &CreateOptions, pid: i32, leaves: Vec<std::path::PathBuf>, cg_path: &str) -> ContainerState {
    let b = &opts.bundle;
    ContainerState {
        oci_version: b.spec.version().clone(),
        id: opts.id.clone(),
        pid,
        status: Status::Creating,
        bundle: b.dir.clone(),
        rootfs: b.rootfs.clone(),
        created: now_rfc3339(),
        owner: String::new(),
        annotations: b.annotations.clone(),
        exit_code: None,
        reason: None,
        message: None,
        started_at: None,
        finished_at: None,
        monitor_pid: if opts.runc_mode { 0 } else { std::process::id() as i32 },
        init_start_time: 0,
        cgroup_paths: leaves,
        cgroups_path: cg_path.to_string(),
        runc_mode: opts.runc_mode,
    }
}

/// Whether the spec gives the init no pid namespace of its own.
pub(super) fn shares_pidns(spec: &oci_spec::runtime::Spec) -> bool {
    !init::namespaces(spec).unwrap_or_default().iter().any(|(f, p)| *f == CloneFlags::CLONE_NEWPID && p.is_none())
}

/// SIGKILLs what is left in the container's cgroup once its init exited
/// (bounded: a few rounds for processes forked meanwhile). No process of the
/// container outlives its monitor, which keeps the runtime binary busy
/// (CVE-2019-5736, see the module doc of `monitor`).
pub(crate) fn kill_leftovers(st: &ContainerState) {
    for _ in 0..10 {
        let pids = crate::cli::cgroup_pids(st).unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
