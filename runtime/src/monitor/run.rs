//! The monitor process body: cgroup, init fork, readiness, start, logs, exit.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::log::{timestamp, LogWriter, StreamBuf};
use super::plumbing::{fork_init, init_config, make_cgroup, Plumbing};
use super::spawn::{initial_state, read_line, redirect_stdio};
use super::{above_stdio, close_other_fds, CreateOptions};
use crate::cgroups::Cgroup;
use crate::init;
use crate::state::{self, now_rfc3339, ContainerState, StateStore, Status};
use crate::sys;

/// Runs the monitor; `result` receives `ok` or `error: ...` for `create`.
pub fn monitor_main(store: &StateStore, dir: &Path, opts: &CreateOptions, result: OwnedFd) -> i32 {
    let result = above_stdio(result);
    // SAFETY: after the fork this process owns its copy of the caller's
    // console socket fd (kept open by `create` until we report); nothing else in
    // the monitor owns or closes that number. One that landed on 0-2 (a caller
    // with closed stdio) is moved above stdio before stdio is redirected.
    let console = opts.console_fd.map(|fd| above_stdio(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }));
    let mut keep = vec![result.as_raw_fd()];
    keep.extend(console.as_ref().map(|c| c.as_raw_fd()));
    close_other_fds(&keep);
    redirect_stdio(opts.log_file.as_deref());
    let _ = nix::unistd::chdir("/");
    if let Err(e) = sys::set_child_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
    match Monitor::start(store, dir, opts, console) {
        Ok(mut m) => {
            init::send(result.as_fd(), "ok\n");
            drop(result);
            m.supervise();
            0
        }
        Err(msg) => {
            tracing::error!(id = %opts.id, %msg, "create failed");
            init::send(result.as_fd(), &format!("error: {msg}\n"));
            1
        }
    }
}

pub(super) struct Monitor {
    store: StateStore,
    state: ContainerState,
    cgroup: Cgroup,
    oom_baseline: u64,
    child: Pid,
    /// pidfd of the init: readable when it exits.
    child_fd: Option<OwnedFd>,
    /// `start` connects here; dropped once started.
    listener: Option<UnixListener>,
    /// The `start` caller waiting for the outcome.
    start_conn: Option<UnixStream>,
    go_w: Option<OwnedFd>,
    sync_r: Option<OwnedFd>,
    out_r: Option<OwnedFd>,
    err_r: Option<OwnedFd>,
    log: Option<LogWriter>,
    start_error: Option<String>,
    /// The spec, when it has hooks.
    hooks_spec: Option<Box<oci_spec::runtime::Spec>>,
    /// The init has no pid namespace of its own: its exit does not end the
    /// other processes, the monitor kills them (as containerd's shim does).
    shared_pidns: bool,
}


impl Monitor {
    /// The container's state as last saved.
    pub(super) fn state(&self) -> &ContainerState {
        &self.state
    }

    /// Makes the cgroup, the plumbing and the init, and waits until the init
    /// is ready (created) or failed; on failure nothing of it is left.
    pub(super) fn start(store: &StateStore, dir: &Path, opts: &CreateOptions, console: Option<OwnedFd>) -> Result<Self, String> {
        let b = &opts.bundle;
        let cg_path = b.cgroups_path().unwrap_or_else(|| format!("/{}", opts.id));
        let (cgroup, leaves, oom_baseline) = make_cgroup(opts, &cg_path)?;
        let levels = if opts.runc_mode { 1 } else { cgroup.levels() };
        let cleanup = leaves.clone();
        let fail = move |msg: String| {
            let _ = Cgroup::remove_paths(&cleanup, levels);
            msg
        };
        let plumbing = Plumbing::new(dir, opts).map_err(&fail)?;
        let cfg = init_config(dir, opts, &cg_path, &leaves);
        let (child, parent) = fork_init(&cfg, opts, plumbing.child, console).map_err(&fail)?;
        let mut m = Monitor {
            store: store.clone(),
            state: initial_state(opts, child.as_raw(), leaves, &cg_path),
            cgroup,
            oom_baseline,
            child,
            child_fd: sys::pidfd_open(child.as_raw()),
            listener: plumbing.listener,
            start_conn: None,
            go_w: Some(parent.go_w),
            sync_r: Some(parent.sync_r),
            out_r: parent.out_r,
            err_r: parent.err_r,
            log: plumbing.log,
            start_error: None,
            hooks_spec: b.spec.hooks().is_some().then(|| Box::new(b.spec.clone())),
            shared_pidns: super::spawn::shares_pidns(&b.spec),
        };
        parent.restored.and_then(|()| m.wait_ready()).map_err(|e| {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            fail(e)
        })?;
        Ok(m)
    }

    /// Lets the init set up (it has moved itself into the cgroup), waits for
    /// "ready".
    fn wait_ready(&mut self) -> Result<(), String> {
        let pid = self.child.as_raw();
        if self.state.runc_mode {
            self.save_provisional()?;
        }
        let Some(go) = &self.go_w else { return Err("no go pipe".into()) };
        init::send(go.as_fd(), "g");
        let Some(sync) = &self.sync_r else { return Err("no sync pipe".into()) };
        if let Some(spec) = &self.hooks_spec {
            if super::hooks::init_needs_state(spec) {
                let mut line = super::hooks::state_json(&self.state);
                line.push(b'\n');
                init::send(go.as_fd(), &String::from_utf8_lossy(&line));
            }
        }
        let mut msg = read_line(sync.as_fd());
        if msg == super::hooks::HOOKS_DUE {
            let spec = self.hooks_spec.as_deref().ok_or("the init asked for hooks the spec does not have")?;
            super::hooks::run_create_runtime(spec, &self.state)?;
            init::send(go.as_fd(), super::hooks::HOOKS_DONE);
            msg = read_line(sync.as_fd());
        }
        if msg != "ready" {
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
            return Err(if msg.is_empty() { "container init exited during setup".into() } else { msg });
        }
        self.state.init_start_time =
            state::proc_start_time(Path::new("/proc"), pid).ok_or_else(|| format!("init pid {pid} vanished"))?;
        self.state.status = Status::Created;
        self.store.save(&self.state).map_err(|e| e.to_string())?;
        if self.state.runc_mode {
            // The state is on disk: the init may wait for `start` now (it exits
            // if `create` dies before this byte).
            init::send(go.as_fd(), super::spawn::COMMITTED);
        }
        Ok(())
    }

    /// runc mode: a `creating` state with the init's pid, start time and
    /// cgroup, saved right after the fork, so that `delete --force` finds the
    /// init and the cgroup even if `create` is killed before it finishes.
    fn save_provisional(&mut self) -> Result<(), String> {
        let pid = self.child.as_raw();
        self.state.init_start_time =
            state::proc_start_time(Path::new("/proc"), pid).ok_or_else(|| format!("init pid {pid} vanished"))?;
        self.store.save(&self.state).map_err(|e| e.to_string())
    }

    /// The monitor loop until the init exits and its output is drained.
    fn supervise(&mut self) {
        let mut outb = StreamBuf::new("stdout");
        let mut errb = StreamBuf::new("stderr");
        let mut exit: Option<WaitStatus> = None;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if exit.is_none() {
                exit = self.reap();
                if exit.is_some() {
                    if self.shared_pidns {
                        super::spawn::kill_leftovers(&self.state);
                    }
                    self.child_fd = None;
                    drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                }
            } else {
                let _ = self.reap();
            }
            let pipes_open = self.out_r.is_some() || self.err_r.is_some() || self.sync_r.is_some();
            let timeout = match drain_deadline {
                Some(d) if !pipes_open || Instant::now() >= d => break,
                Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::ZERO),
                // Without a pidfd (old kernel) fall back to a periodic waitpid.
                None if self.child_fd.is_none() => PollTimeout::from(100u16),
                None => PollTimeout::NONE,
            };
            self.poll_once(&mut outb, &mut errb, timeout);
        }
        let ts = timestamp();
        if let Some(f) = self.log.as_mut() {
            f.write(&outb.finish(&ts));
            f.write(&errb.finish(&ts));
        }
        if let Some(st) = exit {
            self.record_exit(st);
        }
        if let Some(mut c) = self.start_conn.take() {
            let msg = self.start_error.clone().unwrap_or_else(|| "container exited before it started".into());
            let _ = writeln!(c, "error: {msg}");
        }
    }

    /// Reaps every exited child (orphans re-parented to this subreaper too);
    /// returns the init's status once it exited.
    fn reap(&self) -> Option<WaitStatus> {
        let mut init_exit = None;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(s @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, ..))) => {
                    if p == self.child {
                        init_exit = Some(s);
                    }
                }
                Ok(WaitStatus::StillAlive) => return init_exit,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return init_exit.or(Some(WaitStatus::Exited(self.child, 255))),
            }
        }
    }

    fn poll_once(&mut self, outb: &mut StreamBuf, errb: &mut StreamBuf, timeout: PollTimeout) {
        const LISTEN: u8 = 0;
        const SYNC: u8 = 1;
        const OUT: u8 = 2;
        const ERR: u8 = 3;
        const CHILD: u8 = 4;
        let mut which: Vec<u8> = Vec::with_capacity(5);
        let mut fds: Vec<PollFd> = Vec::with_capacity(5);
        if let (Some(l), true) = (&self.listener, self.go_w.is_some() || self.start_conn.is_none()) {
            which.push(LISTEN);
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        let entries = [(SYNC, self.sync_r.as_ref()), (OUT, self.out_r.as_ref()), (ERR, self.err_r.as_ref()), (CHILD, self.child_fd.as_ref())];
        for (k, fd) in entries {
            if let Some(fd) = fd {
                which.push(k);
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let ready: Vec<u8> = which
            .iter()
            .zip(fds.iter())
            .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(k, _)| *k)
            .collect();
        drop(fds);
        for k in ready {
            match k {
                LISTEN => self.on_start(),
                SYNC => self.on_sync(),
                OUT => Self::on_output(&mut self.out_r, outb, &mut self.log),
                ERR => Self::on_output(&mut self.err_r, errb, &mut self.log),
                _ => {} // the init exited: reaped at the top of the loop
            }
        }
    }

    /// A `start` caller connected: release the init to exec. The answer is
    /// sent when the exec succeeded (sync pipe closed) or failed.
    fn on_start(&mut self) {
        let Some(l) = &self.listener else { return };
        let Ok((mut conn, _)) = l.accept() else { return };
        let _ = conn.set_nonblocking(false);
        match self.go_w.take() {
            Some(go) => {
                init::send(go.as_fd(), "s");
                self.start_conn = Some(conn);
            }
            None => {
                let _ = writeln!(conn, "error: container was already started");
            }
        }
    }

    fn on_sync(&mut self) {
        let Some(fd) = &self.sync_r else { return };
        let mut b = [0u8; 4096];
        match nix::unistd::read(fd.as_fd(), &mut b) {
            Ok(0) | Err(_) => {
                self.sync_r = None;
                if self.go_w.is_none() && self.start_error.is_none() {
                    self.state.started_at = Some(now_rfc3339());
                    self.state.status = Status::Running;
                    let _ = self.store.save(&self.state);
                    if let Some(mut c) = self.start_conn.take() {
                        let _ = c.write_all(b"ok\n");
                    }
                    self.listener = None;
                }
            }
            Ok(n) => {
                let msg = String::from_utf8_lossy(&b[..n]).trim().to_string();
                let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
                if let Some(mut c) = self.start_conn.take() {
                    let _ = writeln!(c, "error: {msg}");
                }
                self.start_error = Some(msg);
            }
        }
    }

    fn on_output(fd: &mut Option<OwnedFd>, buf: &mut StreamBuf, log: &mut Option<LogWriter>) {
        let Some(f) = fd else { return };
        let mut b = [0u8; 8192];
        match nix::unistd::read(f.as_fd(), &mut b) {
            Ok(0) | Err(_) => *fd = None,
            Ok(n) => {
                let entries = buf.push(&b[..n], &timestamp());
                if let Some(l) = log.as_mut() {
                    l.write(&entries);
                }
            }
        }
    }

    fn record_exit(&mut self, st: WaitStatus) {
        let code = match st {
            WaitStatus::Exited(_, c) => c,
            WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
            _ => 255,
        };
        let oom = self.cgroup.oom_kill_count() > self.oom_baseline;
        let s = &mut self.state;
        s.exit_code = Some(code);
        s.reason = Some(
            if oom {
                state::REASON_OOM
            } else if code == 0 && self.start_error.is_none() {
                state::REASON_COMPLETED
            } else {
                state::REASON_ERROR
            }
            .to_string(),
        );
        s.message = self.start_error.clone();
        s.finished_at = Some(now_rfc3339());
        s.status = Status::Stopped;
        tracing::info!(id = %s.id, code, oom, "container exited");
        if let Err(e) = self.store.save(s) {
            tracing::error!(error = %e, "cannot record exit");
        }
    }
}
