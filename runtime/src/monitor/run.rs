//! The monitor process body: cgroup, init fork, readiness, start, logs, exit.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::log::{open_log, timestamp, write_entries, StreamBuf};
use super::{above_stdio, close_other_fds, CreateOptions};
use crate::cgroups::{Cgroup, Resources};
use crate::init::{self, InitConfig};
use crate::state::{self, now_rfc3339, ContainerState, StateStore, Status};

/// Runs the monitor; `result` receives `ok` or `error: ...` for `create`.
pub fn monitor_main(store: &StateStore, dir: &Path, opts: &CreateOptions, result: OwnedFd) -> i32 {
    let result = above_stdio(result);
    close_other_fds(&[result.as_raw_fd()]);
    redirect_stdio(opts.log_file.as_deref());
    let _ = nix::unistd::chdir("/");
    match Monitor::start(store, dir, opts) {
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

fn redirect_stdio(log: Option<&Path>) {
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty());
    if let Ok(null) = &null {
        let _ = nix::unistd::dup2_stdin(null);
        let _ = nix::unistd::dup2_stdout(null);
    }
    let logf = log.and_then(|p| open_log(p).ok());
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

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

struct Monitor {
    store: StateStore,
    state: ContainerState,
    cgroup: Cgroup,
    oom_baseline: u64,
    child: Pid,
    fifo: OwnedFd,
    go_w: Option<OwnedFd>,
    sync_r: Option<OwnedFd>,
    out_r: Option<OwnedFd>,
    err_r: Option<OwnedFd>,
    log: Option<File>,
    start_error: Option<String>,
}

/// The init-side ends of the pipes.
struct ChildFds {
    go_r: OwnedFd,
    sync_w: OwnedFd,
    out_w: OwnedFd,
    err_w: OwnedFd,
}

impl Monitor {
    fn start(store: &StateStore, dir: &Path, opts: &CreateOptions) -> Result<Self, String> {
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
        let fifo_path = dir.join(state::EXEC_FIFO);
        let fifo = nix::fcntl::open(&fifo_path, OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| fail(format!("open {}: {e}", fifo_path.display())))?;
        let log_path = b.log_path().unwrap_or_else(|| dir.join("container.log"));
        let log = open_log(&log_path).map_err(|e| fail(format!("open log {}: {e}", log_path.display())))?;
        let (go_r, go_w) = pipe().map_err(&fail)?;
        let (sync_r, sync_w) = pipe().map_err(&fail)?;
        let (out_r, out_w) = pipe().map_err(&fail)?;
        let (err_r, err_w) = pipe().map_err(&fail)?;
        enter_pid_ns(&b.spec).map_err(&fail)?;
        let cfg = InitConfig {
            spec: b.spec.clone(),
            rootfs: b.rootfs.clone(),
            bundle: b.dir.clone(),
            image_rootfs: b.image_rootfs(),
            state_dir: dir.to_path_buf(),
            cgroup_root: opts.cgroup_root.clone(),
            cgroup_mode: opts.cgroup_mode,
        };
        // SAFETY: the monitor is single-threaded.
        let child = match unsafe { fork() }.map_err(|e| fail(format!("fork init: {e}")))? {
            ForkResult::Child => {
                drop((fifo, go_w, sync_r, out_r, err_r, log));
                // The create caller's result pipe must not stay open in the init.
                let keep = [go_r.as_raw_fd(), sync_w.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
                close_other_fds(&keep);
                init_main(&cfg, ChildFds { go_r, sync_w, out_w, err_w })
            }
            ForkResult::Parent { child } => child,
        };
        drop((go_r, sync_w, out_w, err_w));
        let mut m = Monitor {
            store: store.clone(),
            state: initial_state(opts, child.as_raw(), leaves.clone(), &cg_path),
            cgroup,
            oom_baseline,
            child,
            fifo,
            go_w: Some(go_w),
            sync_r: Some(sync_r),
            out_r: Some(out_r),
            err_r: Some(err_r),
            log: Some(log),
            start_error: None,
        };
        m.wait_ready().map_err(|e| {
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
        if let Some(go) = &self.go_w {
            init::send(go.as_fd(), "g");
        }
        let Some(sync) = &self.sync_r else { return Err("no sync pipe".into()) };
        let msg = read_line(sync.as_fd());
        if msg != "ready" {
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
            return Err(if msg.is_empty() { "container init exited during setup".into() } else { msg });
        }
        self.state.init_start_time =
            state::proc_start_time(Path::new("/proc"), pid).ok_or_else(|| format!("init pid {pid} vanished"))?;
        self.state.status = Status::Created;
        self.store.save(&self.state).map_err(|e| e.to_string())
    }

    /// The monitor loop until the init exits.
    fn supervise(&mut self) {
        let mut outb = StreamBuf::new("stdout");
        let mut errb = StreamBuf::new("stderr");
        let mut exit: Option<WaitStatus> = None;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if exit.is_none() {
                exit = match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => Some(s),
                    Err(nix::errno::Errno::ECHILD) => Some(WaitStatus::Exited(self.child, 255)),
                    _ => None,
                };
                if exit.is_some() {
                    drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                }
            }
            let pipes_open = self.out_r.is_some() || self.err_r.is_some() || self.sync_r.is_some();
            if exit.is_some() && (!pipes_open || drain_deadline.is_some_and(|d| Instant::now() > d)) {
                break;
            }
            self.poll_once(&mut outb, &mut errb);
        }
        let ts = timestamp();
        if let Some(f) = self.log.as_mut() {
            write_entries(f, &outb.finish(&ts));
            write_entries(f, &errb.finish(&ts));
        }
        if let Some(st) = exit {
            self.record_exit(st);
        }
    }

    fn poll_once(&mut self, outb: &mut StreamBuf, errb: &mut StreamBuf) {
        let mut which: Vec<u8> = Vec::new();
        let mut fds: Vec<PollFd> = Vec::new();
        let entries = [(0u8, Some(&self.fifo)), (1, self.sync_r.as_ref()), (2, self.out_r.as_ref()), (3, self.err_r.as_ref())];
        for (k, fd) in entries {
            if let Some(fd) = fd {
                if k == 0 && self.go_w.is_none() {
                    continue;
                }
                which.push(k);
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap_or(0) <= 0 {
            return;
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
                0 => self.on_start(),
                1 => self.on_sync(),
                2 => Self::on_output(&mut self.out_r, outb, &mut self.log),
                _ => Self::on_output(&mut self.err_r, errb, &mut self.log),
            }
        }
    }

    fn on_start(&mut self) {
        let mut b = [0u8; 64];
        let _ = nix::unistd::read(self.fifo.as_fd(), &mut b);
        if let Some(go) = self.go_w.take() {
            init::send(go.as_fd(), "s");
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
                }
            }
            Ok(n) => {
                let msg = String::from_utf8_lossy(&b[..n]).trim().to_string();
                self.start_error = Some(msg.strip_prefix("error: ").unwrap_or(&msg).to_string());
            }
        }
    }

    fn on_output(fd: &mut Option<OwnedFd>, buf: &mut StreamBuf, log: &mut Option<File>) {
        let Some(f) = fd else { return };
        let mut b = [0u8; 8192];
        match nix::unistd::read(f.as_fd(), &mut b) {
            Ok(0) | Err(_) => *fd = None,
            Ok(n) => {
                let entries = buf.push(&b[..n], &timestamp());
                if let Some(l) = log.as_mut() {
                    write_entries(l, &entries);
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

fn initial_state(opts: &CreateOptions, pid: i32, leaves: Vec<std::path::PathBuf>, cg_path: &str) -> ContainerState {
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
        monitor_pid: std::process::id() as i32,
        init_start_time: 0,
        cgroup_paths: leaves,
        cgroups_path: cg_path.to_string(),
    }
}

/// Joins the pid namespace given by path, or unshares a new one, so the next
/// fork is in it (the init becomes PID 1 of a new namespace).
fn enter_pid_ns(spec: &oci_spec::runtime::Spec) -> Result<(), String> {
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

fn read_line(fd: std::os::fd::BorrowedFd<'_>) -> String {
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
fn init_main(cfg: &InitConfig, fds: ChildFds) -> ! {
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
