//! The runc-shaped commands the kubelet (minion-agent) runs: each maps onto the
//! library. `main.rs` parses flags and calls these.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::kill as send_signal;
use nix::unistd::Pid;

use crate::bundle::{self, Bundle};
use crate::cgroups::{self, Cgroup};
use crate::image;
use crate::monitor::{self, CreateOptions};
use crate::netns;
use crate::signal;

mod procs;

pub use procs::{cgroup_pids, kill, ps};
use procs::signal_init;
use crate::state::{self, pid_matches, ContainerState, StateStore, Status};

/// Errors of the CLI commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Monitor(#[from] monitor::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error(transparent)]
    Signal(#[from] signal::SignalError),
    #[error("container {id:?}: start: {source}")]
    Release { id: String, source: crate::runc_mode::Error },
    #[error("container {id:?}: {msg}")]
    Container { id: String, msg: String },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// Global flags.
#[derive(Debug, Clone)]
pub struct Globals {
    pub root: PathBuf,
    pub image_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub log: Option<PathBuf>,
    /// runc mode (see `crate::runc_mode`): no monitor, for containerd's shim.
    pub runc_mode: bool,
    /// runc's `--systemd-cgroup`: accepted, but a systemd `slice:prefix:name`
    /// cgroupsPath is refused (cgroupfs driver only).
    pub systemd_cgroup: bool,
    /// `--log-format json`: warnings (failed poststart/poststop hooks) go to
    /// `log` as JSON objects, the only lines allowed there.
    pub log_json: bool,
}

impl Globals {
    fn store(&self) -> StateStore {
        StateStore::new(&self.root)
    }
}

fn cerr(id: &str, msg: impl Into<String>) -> Error {
    Error::Container { id: id.to_string(), msg: msg.into() }
}

/// Whether a pid exists (signal 0).
fn alive(pid: i32) -> bool {
    pid > 0 && send_signal(Pid::from_raw(pid), None).is_ok()
}

/// Whether the init recorded in `st` still runs (same start time, not a zombie).
fn init_running(st: &ContainerState) -> bool {
    pid_matches(st.pid, st.init_start_time) && !is_zombie(st.pid)
}

/// Loads a container's state with its status refreshed from /proc. When the
/// init has just exited and its monitor is still recording the exit, waits for
/// the monitor (it exits right after writing the state), so a `state` or
/// `delete` right after the process ended sees `stopped` with the exit code.
pub fn load_state(g: &Globals, id: &str) -> Result<ContainerState, Error> {
    let store = g.store();
    match store.load(id) {
        Ok(st) if st.runc_mode => {
            let fifo = store.dir(id).join(state::EXEC_FIFO).exists();
            let alive = init_running(&st);
            Ok(st.refreshed_runc(alive, fifo))
        }
        Ok(st) => {
            let mut st = st;
            if st.finished_at.is_none() && st.pid > 0 && !init_running(&st) && alive(st.monitor_pid) {
                crate::sys::wait_exit(st.monitor_pid, Some(Duration::from_secs(5)));
                st = store.load(id)?;
            }
            let init_alive = init_running(&st);
            let mon = alive(st.monitor_pid) && !is_zombie(st.monitor_pid);
            Ok(st.refreshed(init_alive, mon))
        }
        Err(state::Error::NotExist(_)) if store.exists(id) => Err(cerr(id, "is being created (no state yet)")),
        Err(e) => Err(e.into()),
    }
}

/// `create ID --bundle DIR [--pid-file F] [--console-socket S]`: with
/// process.terminal the console socket is required (it receives the pty
/// master), without it the socket is refused, as in runc.
pub fn create(g: &Globals, id: &str, bundle_dir: &Path, pid_file: Option<&Path>, console_socket: Option<&Path>) -> Result<ContainerState, Error> {
    let bundle = Bundle::load(bundle_dir)?;
    let terminal = bundle.spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let console = match (terminal, console_socket) {
        (true, None) => return Err(cerr(id, "process.terminal is true but no --console-socket was given")),
        (false, Some(p)) => {
            return Err(cerr(id, format!("--console-socket {} given but process.terminal is false", p.display())))
        }
        (true, Some(p)) => Some(UnixStream::connect(p).map_err(|source| Error::Io { op: "connect console socket", path: p.into(), source })?),
        (false, None) => None,
    };
    check_systemd_cgroup(g, id, &bundle)?;
    let cgroup_mode = cgroups::detect(&g.cgroup_root)?;
    let opts = CreateOptions {
        id: id.to_string(),
        bundle,
        cgroup_root: g.cgroup_root.clone(),
        cgroup_mode,
        log_file: g.log.clone(),
        console_fd: console.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        runc_mode: g.runc_mode,
    };
    let st = monitor::create(&g.store(), &opts)?;
    if let Some(p) = pid_file {
        if let Err(source) = std::fs::write(p, st.pid.to_string()) {
            // The caller sees a failed create: nothing of the container may stay.
            if let Err(e) = delete(g, id, true) {
                tracing::warn!(id, error = %e, "cannot remove the container after a failed create");
            }
            return Err(Error::Io { op: "write pid file", path: p.into(), source });
        }
    }
    Ok(st)
}

/// `--systemd-cgroup` with a systemd-style `slice:prefix:name` cgroupsPath is
/// refused by name (only the cgroupfs driver exists); an absolute path is used
/// as it is.
fn check_systemd_cgroup(g: &Globals, id: &str, bundle: &Bundle) -> Result<(), Error> {
    let path = bundle.cgroups_path().unwrap_or_default();
    if g.systemd_cgroup && !path.starts_with('/') && path.matches(':').count() == 2 {
        return Err(cerr(
            id,
            format!("--systemd-cgroup: the systemd cgroup driver is not supported (cgroupsPath {path:?}); use cgroupfs with an absolute cgroupsPath"),
        ));
    }
    Ok(())
}

/// `start ID`: releases the init to exec; returns once it ran or failed. The
/// monitor answers on its start socket (`ok` or `error: ...`) as soon as the
/// exec succeeded or failed, so there is no polling.
pub fn start(g: &Globals, id: &str) -> Result<(), Error> {
    let st = load_state(g, id)?;
    if st.status != Status::Created {
        return Err(cerr(id, format!("cannot start a container that is {}", st.status)));
    }
    if st.runc_mode {
        crate::runc_mode::release(&g.store().dir(id)).map_err(|source| Error::Release { id: id.to_string(), source })?;
        // What the hooks see, as in monitor mode: the process runs now.
        let mut st = st;
        st.status = Status::Running;
        st.started_at = Some(state::now_rfc3339());
        run_bundle_hooks(g, &st, crate::hooks::Kind::Poststart);
        return Ok(());
    }
    let dir = g.store().dir(id);
    let (_dirfd, path) = crate::sys::sock_path(&dir, crate::sys::START_SOCK)
        .map_err(|e| cerr(id, format!("start socket in {}: {e}", dir.display())))?;
    let mut conn = UnixStream::connect(&path)
        .map_err(|e| cerr(id, format!("connect {}: {e} (monitor gone?)", dir.join(crate::sys::START_SOCK).display())))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    match reply.trim() {
        "ok" => {
            // poststart runs here, in `start`'s own process, as runc does: a slow hook
            // delays `start`, never the monitor that drains the container's output.
            if let Ok(st) = load_state(g, id) {
                run_bundle_hooks(g, &st, crate::hooks::Kind::Poststart);
            }
            Ok(())
        }
        "" => Err(cerr(id, "the monitor closed the start socket without an answer")),
        r => Err(cerr(id, format!("start failed: {}", r.strip_prefix("error: ").unwrap_or(r)))),
    }
}

/// `delete [--force] ID`: a running container needs --force (SIGKILL first).
/// Safe to repeat and to run on a half-made container: whatever is left (state
/// dir, cgroups) is removed; a missing container is not an error with --force.
pub fn delete(g: &Globals, id: &str, force: bool) -> Result<(), Error> {
    let store = g.store();
    let st = match load_state(g, id) {
        Ok(st) => st,
        Err(Error::State(state::Error::NotExist(_))) if force => return Ok(()),
        Err(Error::Container { .. }) if store.exists(id) && force => {
            store.remove(id)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let st = match st.status {
        Status::Stopped => {
            if st.runc_mode {
                // Without a pid namespace of its own, the init's exit leaves the
                // rest of the container running: nothing else kills it here.
                crate::monitor::kill_leftovers(&st);
            }
            st
        }
        Status::Running if !force => {
            return Err(cerr(id, "cannot delete a running container (use --force)"));
        }
        _ => {
            if let Ok(pids) = cgroup_pids(&st) {
                for pid in pids {
                    let _ = signal::SIGKILL.send(pid);
                }
            }
            let _ = signal_init(&st, signal::SIGKILL);
            wait_stopped(g, id, Duration::from_secs(10))?
        }
    };
    crate::sys::wait_exit(st.monitor_pid, Some(Duration::from_secs(5)));
    Cgroup::remove_paths(&st.cgroup_paths, removed_levels(&st))?;
    store.remove(id)?;
    run_bundle_hooks(g, &st, crate::hooks::Kind::Poststop);
    Ok(())
}

/// How many levels of the cgroup path `delete` may remove: in runc mode only
/// the leaf (the kubelet and containerd own the parents, like
/// `/kubepods/burstable/pod<uid>`); in monitor mode also the empty parents
/// below the first path element (see `crate::cgroups`).
pub(crate) fn removed_levels(st: &ContainerState) -> usize {
    if st.runc_mode {
        return 1;
    }
    Cgroup::new(Path::new("/"), cgroups::Mode::V1, &st.cgroups_path).map(|c| c.levels()).unwrap_or(1)
}

/// The bundle's hooks of `kind` whose failures are only logged (poststart once the
/// process runs, poststop once the container is gone), with `st` on their stdin.
fn run_bundle_hooks(g: &Globals, st: &ContainerState, kind: crate::hooks::Kind) {
    let cfg = st.bundle.join("config.json");
    match std::fs::read_to_string(&cfg) {
        Ok(text) if text.contains(&format!("\"{}\"", kind.name())) => match serde_json::from_str::<oci_spec::runtime::Spec>(&text) {
            Ok(spec) => {
                for e in crate::hooks::run_all(&spec, kind, &serde_json::to_vec(st).unwrap_or_default()) {
                    warn(g, &format!("container {:?}: {e}", st.id));
                }
            }
            Err(e) => warn(g, &format!("container {:?}: cannot read the {} hooks from {}: {e}", st.id, kind.name(), cfg.display())),
        },
        _ => {}
    }
}

/// A failure that does not fail the command: to tracing, or with
/// `--log-format json` as one JSON error object appended to `--log` (containerd's
/// shim reads that file as a stream of JSON objects; tracing does not write there).
fn warn(g: &Globals, msg: &str) {
    match (&g.log, g.log_json) {
        (Some(p), true) => {
            use std::io::Write;
            let line = serde_json::json!({"level": "error", "msg": msg, "time": state::now_rfc3339()});
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
                let _ = writeln!(f, "{line}");
            }
        }
        _ => tracing::warn!("{msg}"),
    }
}

/// Waits (bounded) until the monitor recorded the exit.
fn wait_stopped(g: &Globals, id: &str, timeout: Duration) -> Result<ContainerState, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = load_state(g, id)?;
        if st.status == Status::Stopped {
            return Ok(st);
        }
        if Instant::now() > deadline {
            return Err(cerr(id, format!("still {} after {timeout:?}", st.status)));
        }
        // The monitor exits right after recording the exit; in runc mode there
        // is none, and the init's exit (a zombie counts) is the event.
        let waited = if st.runc_mode { st.pid } else { st.monitor_pid };
        crate::sys::wait_exit(waited, Some(Duration::from_millis(200)));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// `run ID --bundle DIR [--detach]`: create and start; without `detach` also
/// wait, delete and return the exit code (with it, return 0 once started).
pub fn run(g: &Globals, id: &str, bundle_dir: &Path, detach: bool, console_socket: Option<&Path>) -> Result<i32, Error> {
    if g.runc_mode && !detach {
        // Waiting needs a parent or a monitor to collect the exit code.
        return Err(cerr(id, "run without --detach is not supported in runc mode (create, start, and reap the init yourself)"));
    }
    create(g, id, bundle_dir, None, console_socket)?;
    if let Err(e) = start(g, id) {
        let _ = delete(g, id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let st = loop {
        let st = load_state(g, id)?;
        if st.status == Status::Stopped {
            break st;
        }
        crate::sys::wait_exit(st.monitor_pid, None);
    };
    delete(g, id, true)?;
    Ok(st.exit_code.unwrap_or(255))
}

/// `list`: every container's refreshed state.
pub fn list(g: &Globals) -> Result<Vec<ContainerState>, Error> {
    let mut out = Vec::new();
    for id in g.store().ids()? {
        if let Ok(st) = load_state(g, &id) {
            out.push(st);
        }
    }
    Ok(out)
}

/// `image …`: the image service lives in `crate::image::cli`.
pub fn image(g: &Globals, cmd: image::cli::ImageCmd) -> Result<(), Error> {
    Ok(image::cli::run(&g.image_root, cmd)?)
}
