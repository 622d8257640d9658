//! The runc-shaped commands the kubelet (minion-agent) runs: each maps onto the
//! library. `main.rs` parses flags and calls these.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;

use crate::bundle::{self, Bundle};
use crate::cgroups::{self, Cgroup};
use crate::image::{self, ImageConfig, ImageStore};
use crate::monitor::{self, CreateOptions};
use crate::netns;
use crate::signal::{self, parse_signal};
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

/// Loads a container's state with its status refreshed from /proc.
pub fn load_state(g: &Globals, id: &str) -> Result<ContainerState, Error> {
    let store = g.store();
    match store.load(id) {
        Ok(st) => {
            let init_alive = pid_matches(st.pid, st.init_start_time);
            let mon = alive(st.monitor_pid);
            Ok(st.refreshed(init_alive, mon))
        }
        Err(state::Error::NotExist(_)) if store.exists(id) => Err(cerr(id, "is being created (no state yet)")),
        Err(e) => Err(e.into()),
    }
}

/// `create ID --bundle DIR [--pid-file F]`.
pub fn create(g: &Globals, id: &str, bundle_dir: &Path, pid_file: Option<&Path>) -> Result<ContainerState, Error> {
    let bundle = Bundle::load(bundle_dir)?;
    let cgroup_mode = cgroups::detect(&g.cgroup_root)?;
    let opts = CreateOptions {
        id: id.to_string(),
        bundle,
        cgroup_root: g.cgroup_root.clone(),
        cgroup_mode,
        log_file: g.log.clone(),
    };
    let st = monitor::create(&g.store(), &opts)?;
    if let Some(p) = pid_file {
        std::fs::write(p, st.pid.to_string()).map_err(|source| Error::Io { op: "write pid file", path: p.into(), source })?;
    }
    Ok(st)
}

/// `start ID`: releases the init to exec; returns once it ran or failed.
pub fn start(g: &Globals, id: &str) -> Result<(), Error> {
    let st = load_state(g, id)?;
    if st.status != Status::Created {
        return Err(cerr(id, format!("cannot start a container that is {}", st.status)));
    }
    let fifo = g.store().dir(id).join(state::EXEC_FIFO);
    let fd = nix::fcntl::open(&fifo, nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| cerr(id, format!("open {}: {e} (monitor gone?)", fifo.display())))?;
    nix::unistd::write(&fd, b"1").map_err(|e| cerr(id, format!("write {}: {e}", fifo.display())))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = g.store().load(id)?;
        if let Some(msg) = st.message {
            return Err(cerr(id, format!("start failed: {msg}")));
        }
        if st.started_at.is_some() {
            return Ok(());
        }
        if st.finished_at.is_some() {
            return Err(cerr(id, "exited before it started"));
        }
        if Instant::now() > deadline {
            return Err(cerr(id, "timed out waiting for the process to start"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `kill ID [SIGNAL]`.
pub fn kill(g: &Globals, id: &str, sig: &str) -> Result<(), Error> {
    let sig = parse_signal(sig)?;
    let st = load_state(g, id)?;
    signal_init(&st, sig)
}

fn signal_init(st: &ContainerState, sig: Signal) -> Result<(), Error> {
    if st.status == Status::Stopped || !pid_matches(st.pid, st.init_start_time) {
        return Err(cerr(&st.id, "is not running"));
    }
    send_signal(Pid::from_raw(st.pid), sig).map_err(|e| cerr(&st.id, format!("kill pid {} with {sig}: {e}", st.pid)))
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
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `delete [--force] ID`: a running container needs --force (SIGKILL first).
pub fn delete(g: &Globals, id: &str, force: bool) -> Result<(), Error> {
    let store = g.store();
    let st = match load_state(g, id) {
        Ok(st) => st,
        Err(Error::Container { .. }) if store.exists(id) && force => {
            store.remove(id)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let st = match st.status {
        Status::Stopped => st,
        Status::Running if !force => {
            return Err(cerr(id, "cannot delete a running container (use --force)"));
        }
        _ => {
            let _ = signal_init(&st, Signal::SIGKILL);
            wait_stopped(g, id, Duration::from_secs(10))?
        }
    };
    wait_monitor_gone(st.monitor_pid);
    let levels = Cgroup::new(Path::new("/"), cgroups::Mode::V1, &st.cgroups_path).map(|c| c.levels()).unwrap_or(1);
    Cgroup::remove_paths(&st.cgroup_paths, levels)?;
    store.remove(id)?;
    Ok(())
}

fn wait_monitor_gone(pid: i32) {
    for _ in 0..250 {
        if !alive(pid) || is_zombie(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// `run ID --bundle DIR`: create, start, wait, delete; returns the exit code.
pub fn run(g: &Globals, id: &str, bundle_dir: &Path) -> Result<i32, Error> {
    create(g, id, bundle_dir, None)?;
    if let Err(e) = start(g, id) {
        let _ = delete(g, id, true);
        return Err(e);
    }
    let st = loop {
        let st = load_state(g, id)?;
        if st.status == Status::Stopped {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// `image import NAME PATH [--config FILE]`; the file holds either the image
/// config object (`{"Cmd":..}`) or an OCI image config (`{"config":{..}}`).
pub fn image_import(g: &Globals, name: &str, path: &Path, config: Option<&Path>) -> Result<image::Image, Error> {
    let cfg = match config {
        Some(p) => {
            let data = std::fs::read(p).map_err(|source| Error::Io { op: "read", path: p.into(), source })?;
            let v: serde_json::Value = serde_json::from_slice(&data)
                .map_err(|e| Error::Io { op: "parse", path: p.into(), source: std::io::Error::other(e) })?;
            let inner = v.get("config").cloned().unwrap_or(v);
            Some(
                serde_json::from_value::<ImageConfig>(inner)
                    .map_err(|e| Error::Io { op: "parse", path: p.into(), source: std::io::Error::other(e) })?,
            )
        }
        None => None,
    };
    Ok(ImageStore::open(&g.image_root)?.import(name, path, cfg)?)
}
