//! The monitor process body: cgroup, init fork, readiness, start, logs, exit.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::log::{timestamp, LogWriter, StreamBuf};
use super::spawn::{enter_pid_ns, init_main, initial_state, read_line, redirect_stdio, ChildFds};
use super::{above_stdio, close_other_fds, CreateOptions};
use crate::cgroups::{Cgroup, Resources};
use crate::init::{self, InitConfig};
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
    Ok(m.state.clone())
}

/// Makes the exec fifo in the state dir and opens it read-write for the init:
/// with itself as a writer, its read blocks until `start` writes a byte.
fn exec_fifo(dir: &Path) -> Result<OwnedFd, String> {
    let p = dir.join(state::EXEC_FIFO);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| format!("mkfifo {}: {e}", p.display()))?;
    nix::fcntl::open(&p, OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(|e| format!("open {}: {e}", p.display()))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

struct Monitor {
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
    fn start(store: &StateStore, dir: &Path, opts: &CreateOptions, console: Option<OwnedFd>) -> Result<Self, String> {
        let b = &opts.bundle;
        let cg_path = b.cgroups_path().unwrap_or_else(|| format!("/{}", opts.id));
        let cgroup = Cgroup::new(&opts.cgroup_root, opts.cgroup_mode, &cg_path).map_err(|e| e.to_string())?;
        let res = b
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .map(Resources::from)
            .unwrap_or_default();
        let leaves = cgroup.create(&res).map_err(|e| e.to_string())?;
        let (levels, cleanup) = (cgroup.levels(), leaves.clone());
        let fail = move |msg: String| {
            let _ = Cgroup::remove_paths(&cleanup, levels);
            msg
        };
        cgroup.apply(&res).map_err(|e| fail(e.to_string()))?;
        let oom_baseline = cgroup.oom_kill_count();
        let (listener, log, out, err, start_fifo) = if opts.runc_mode {
            (None, None, None, None, Some(exec_fifo(dir).map_err(&fail)?))
        } else {
            let (_dirfd, sock_path) =
                sys::sock_path(dir, sys::START_SOCK).map_err(|e| fail(format!("start socket in {}: {e}", dir.display())))?;
            let listener = UnixListener::bind(&sock_path).map_err(|e| fail(format!("bind {}: {e}", dir.join(sys::START_SOCK).display())))?;
            listener.set_nonblocking(true).map_err(|e| fail(format!("start socket: {e}")))?;
            let log_path = b.log_path().unwrap_or_else(|| dir.join("container.log"));
            let log = LogWriter::open(&log_path, b.log_max_size(), b.log_max_files())
                .map_err(|e| fail(format!("open log {}: {e}", log_path.display())))?;
            (Some(listener), Some(log), Some(pipe().map_err(&fail)?), Some(pipe().map_err(&fail)?), None)
        };
        let (out_r, out_w) = out.unzip();
        let (err_r, err_w) = err.unzip();
        let (go_r, go_w) = pipe().map_err(&fail)?;
        let (sync_r, sync_w) = pipe().map_err(&fail)?;
        let own_pidns = super::hooks::own_pidns(&b.spec).map_err(&fail)?;
        enter_pid_ns(&b.spec).map_err(&fail)?;
        let cfg = InitConfig {
            spec: b.spec.clone(),
            rootfs: b.rootfs.clone(),
            bundle: b.dir.clone(),
            image_rootfs: b.image_rootfs(),
            state_dir: dir.to_path_buf(),
            cgroup_root: opts.cgroup_root.clone(),
            cgroup_mode: opts.cgroup_mode,
            cgroups_path: cg_path.clone(),
            seccomp: crate::seccomp::from_spec(&b.spec).map_err(|e| fail(e.to_string()))?,
        };
        // SAFETY: the monitor is single-threaded.
        let child = match unsafe { fork() }.map_err(|e| fail(format!("fork init: {e}")))? {
            ForkResult::Child => {
                drop((listener, go_w, sync_r, out_r, err_r, log));
                // The create caller's result pipe must not stay open in the init.
                let mut keep = vec![go_r.as_raw_fd(), sync_w.as_raw_fd()];
                keep.extend([&out_w, &err_w, &console, &start_fifo].into_iter().flatten().map(|f| f.as_raw_fd()));
                close_other_fds(&keep);
                init_main(&cfg, ChildFds { go_r, sync_w, out_w, err_w, console, start_fifo })
            }
            ForkResult::Parent { child } => child,
        };
        drop((go_r, sync_w, out_w, err_w, console, start_fifo));
        let restored = super::hooks::restore_pidns(own_pidns);
        let mut m = Monitor {
            store: store.clone(),
            state: initial_state(opts, child.as_raw(), leaves.clone(), &cg_path),
            cgroup,
            oom_baseline,
            child,
            child_fd: sys::pidfd_open(child.as_raw()),
            listener,
            start_conn: None,
            go_w: Some(go_w),
            sync_r: Some(sync_r),
            out_r,
            err_r,
            log,
            start_error: None,
            hooks_spec: b.spec.hooks().is_some().then(|| Box::new(b.spec.clone())),
            shared_pidns: super::spawn::shares_pidns(&b.spec),
        };
        restored.and_then(|()| m.wait_ready()).map_err(|e| {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            fail(e)
        })?;
        Ok(m)
    }

    /// Puts the init in the cgroup, lets it set up, waits for "ready".
    fn wait_ready(&mut self) -> Result<(), String> {
        let pid = self.child.as_raw();
        self.cgroup.add_pid(&self.state.cgroup_paths, pid).map_err(|e| e.to_string())?;
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
