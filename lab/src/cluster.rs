//! `up` and `down`: build a whole cluster in namespaces, and remove every trace of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credentials;
use crate::error::io_err;
use crate::image::build_busybox_rootfs;
use crate::net::{self, run, NETNS_DIR};
use crate::process::{self, Daemon};
use crate::topology::Topology;
use crate::LabError;

/// Where labs keep their state unless told otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/run/minion-lab";
/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What `minion-lab up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    pub state_root: PathBuf,
    /// Directory holding the minion-* binaries.
    pub bin_dir: PathBuf,
    /// The static busybox the starter image is made from.
    pub busybox: PathBuf,
    /// Seconds to wait for the API server and for every node to be Ready.
    pub timeout_secs: u64,
    /// Which CNI plugins wire the pods.
    pub cni: CniChoice,
    /// Registries (HOST:PORT) the agents may pull from over plain HTTP.
    pub insecure_registries: Vec<String>,
}

/// The CNI plugins a lab's agents run: minion-netd, or the reference `bridge` +
/// `host-local` from containernetworking-plugins (to compare and to prove the CNI
/// contract). minion-netd's daemon runs on every node either way (routes, masquerade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CniChoice {
    /// minion-netd as the plugin.
    #[default]
    Minion,
    /// The reference bridge + host-local plugins from `REFERENCE_CNI_DIR`.
    Reference,
}

/// Where Debian's containernetworking-plugins are installed.
pub const REFERENCE_CNI_DIR: &str = "/usr/lib/cni";
/// The metrics address of each node's minion-netd daemon (in the node's netns).
pub const NETD_METRICS: &str = "127.0.0.1:9101";

/// What the lab records about itself, so `down` needs only the name.
#[derive(Debug, Serialize, Deserialize)]
struct LabRecord {
    name: String,
    nodes: usize,
    bin_dir: PathBuf,
    #[serde(default)]
    cni: CniChoice,
}

fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() { Ok(()) } else { Err(LabError::NotRoot) }
}

/// Builds the lab. On failure it prints what the daemons logged and removes all it made.
pub fn up(opts: &UpOptions) -> Result<Topology, LabError> {
    require_root()?;
    let t = Topology::new(&opts.name, opts.nodes, &opts.state_root)?;
    if t.state_dir.exists() || net::netns_exists(&t.cp_netns()) {
        return Err(LabError::Exists(t.name.clone()));
    }
    for bin in ["minion-apiserver", "minion-agent", "minion-runtime", "minion-netd", "minion-proxy", "minion-dnsd"] {
        let p = opts.bin_dir.join(bin);
        if !p.exists() {
            return Err(LabError::MissingBinary(p));
        }
    }
    if opts.cni == CniChoice::Reference {
        for bin in ["bridge", "host-local"] {
            let p = Path::new(REFERENCE_CNI_DIR).join(bin);
            if !p.exists() {
                return Err(LabError::MissingBinary(p));
            }
        }
    }
    std::fs::create_dir_all(t.state_dir.join("logs")).map_err(io_err(&t.state_dir))?;
    let record = LabRecord { name: t.name.clone(), nodes: t.nodes, bin_dir: opts.bin_dir.clone(), cni: opts.cni };
    let rec_path = t.state_dir.join("lab.json");
    std::fs::write(&rec_path, serde_json::to_string_pretty(&record).unwrap_or_default()).map_err(io_err(&rec_path))?;
    if let Err(e) = build(&t, opts) {
        for d in process::load(&daemons_file(&t)) {
            eprintln!("--- last lines of {} ({}) ---\n{}", d.name, d.log.display(), d.log_tail(15));
        }
        let _ = teardown(&t, &opts.bin_dir);
        return Err(e);
    }
    Ok(t)
}

fn daemons_file(t: &Topology) -> PathBuf {
    t.state_dir.join("daemons.json")
}

fn build(t: &Topology, opts: &UpOptions) -> Result<(), LabError> {
    net::make_lan(t)?;
    for (i, node) in t.node_names().iter().enumerate() {
        net::plug_node(t, node, i + 1)?;
    }
    let mut daemons = Vec::new();
    let identities = credentials::write_token_file(t)?;
    let api = start_apiserver(t, &opts.bin_dir)?;
    daemons.push(api.clone());
    process::save(&daemons_file(t), &daemons)?;
    // The API server generates the cluster CA on its first start; the kubeconfigs name it.
    net::wait_for("the API server's CA certificate", opts.timeout_secs, || api.alive() && t.ca_file().exists())?;
    credentials::write_kubeconfigs(t, &identities)?;
    net::wait_for("the API server's /healthz over TLS", opts.timeout_secs, || {
        api.alive() && kubectl_output(t, &["get", "--raw", "/healthz", "--request-timeout=2s"]).is_ok()
    })?;
    let rootfs = t.state_dir.join("images/busybox-rootfs");
    build_busybox_rootfs(&opts.busybox, &rootfs)?;
    for (i, node) in t.node_names().iter().enumerate() {
        daemons.extend(crate::node::start_node(t, opts, node, i + 1, &rootfs)?);
        process::save(&daemons_file(t), &daemons)?;
    }
    for node in t.node_names() {
        net::wait_for(&format!("node {node} to be Ready"), opts.timeout_secs, || {
            daemons.iter().all(Daemon::alive) && node_ready(t, &node)
        })?;
    }
    Ok(())
}

fn start_apiserver(t: &Topology, bin_dir: &Path) -> Result<Daemon, LabError> {
    let data = t.apiserver_dir();
    std::fs::create_dir_all(&data).map_err(io_err(&data))?;
    let args = vec![
        "--listen".into(),
        format!("{}:{}", t.api_ip(), minion_api::API_PORT),
        "--advertise-address".into(),
        t.api_ip(),
        "--data-dir".into(),
        data.display().to_string(),
        "--token-auth-file".into(),
        t.token_file().display().to_string(),
        "--kubelet-client-token-file".into(),
        t.kubelet_client_token_file().display().to_string(),
    ];
    let log = t.state_dir.join("logs/apiserver.log");
    process::spawn_in_netns("apiserver", &t.cp_netns(), &bin_dir.join("minion-apiserver"), &args, &log)
}

/// True when kubectl reports the node's Ready condition as True.
pub fn node_ready(t: &Topology, node: &str) -> bool {
    let jsonpath = "-o=jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    kubectl_output(t, &["get", "node", node, jsonpath]).map(|s| s.trim() == "True").unwrap_or(false)
}

/// Runs the real kubectl against the lab from the control-plane namespace.
pub fn kubectl_command(t: &Topology, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={NETNS_DIR}/{}", t.cp_netns()))
        .args(["--", "kubectl"])
        .args(args)
        .env("KUBECONFIG", t.kubeconfig());
    cmd
}

/// kubectl's stdout, or an error naming the command.
pub fn kubectl_output(t: &Topology, args: &[&str]) -> Result<String, LabError> {
    run(&mut kubectl_command(t, args))
}

/// Opens an existing lab by name.
pub fn open(name: &str, state_root: &Path) -> Result<(Topology, PathBuf), LabError> {
    let probe = Topology::new(name, 1, state_root)?;
    let rec_path = probe.state_dir.join("lab.json");
    let text = std::fs::read_to_string(&rec_path)
        .map_err(|_| LabError::NotFound(name.to_string(), probe.state_dir.clone()))?;
    let rec: LabRecord = serde_json::from_str(&text).map_err(|e| LabError::Command {
        command: format!("read {}", rec_path.display()),
        detail: e.to_string(),
    })?;
    Ok((Topology::new(&rec.name, rec.nodes, state_root)?, rec.bin_dir))
}

/// Restarts one of a lab's daemons (e.g. `node-1/netd`): SIGTERM to its recorded pid,
/// then the same program and arguments again in the same namespace.
pub fn restart(name: &str, state_root: &Path, daemon: &str) -> Result<Daemon, LabError> {
    require_root()?;
    let (t, _) = open(name, state_root)?;
    let path = daemons_file(&t);
    let mut daemons = process::load(&path);
    let Some(slot) = daemons.iter_mut().find(|d| d.name == daemon) else {
        let known: Vec<String> = daemons.iter().map(|d| d.name.clone()).collect();
        return Err(LabError::Command { command: format!("restart {daemon}"), detail: format!("no such daemon (known: {})", known.join(", ")) });
    };
    if slot.bin.as_os_str().is_empty() {
        return Err(LabError::Command { command: format!("restart {daemon}"), detail: "its command line was not recorded".into() });
    }
    slot.stop(Duration::from_secs(10));
    let fresh = process::spawn_in_netns(&slot.name, &slot.netns, &slot.bin, &slot.args, &slot.log)?;
    *slot = fresh.clone();
    process::save(&path, &daemons)?;
    Ok(fresh)
}

/// Removes a lab by name: daemons, containers, pod namespaces, cgroups, namespaces and
/// state. Tolerates half-built labs; a lab with no state but leftover namespaces is
/// cleaned as far as its name allows.
pub fn down(name: &str, state_root: &Path, bin_dir: &Path) -> Result<(), LabError> {
    require_root()?;
    match open(name, state_root) {
        Ok((t, recorded_bin)) => teardown(&t, &recorded_bin),
        Err(LabError::NotFound(..)) => {
            let t = Topology::new(name, 1, state_root)?;
            if !net::netns_exists(&t.cp_netns()) {
                return Err(LabError::NotFound(name.to_string(), t.state_dir));
            }
            teardown(&t, bin_dir)
        }
        Err(e) => Err(e),
    }
}

fn teardown(t: &Topology, bin_dir: &Path) -> Result<(), LabError> {
    let daemons = process::load(&daemons_file(t));
    // Agents first, so nothing restarts containers while they are being removed.
    let (agents, others): (Vec<_>, Vec<_>) = daemons.iter().partition(|d| d.name.ends_with("/agent"));
    // Each group stops in parallel: dnsd, for one, keeps answering for its lameduck
    // seconds after SIGTERM, and waiting for the daemons one by one adds those up.
    for group in [agents, others] {
        std::thread::scope(|scope| {
            for d in group {
                scope.spawn(move || d.stop(Duration::from_secs(10)));
            }
        });
    }
    let mut errors = Vec::new();
    for node in t.node_names() {
        if let Err(e) = teardown_node(t, bin_dir, &node) {
            errors.push(e.to_string());
        }
    }
    for ns in t.node_names().iter().map(|n| t.node_netns(n)).chain([t.cp_netns()]) {
        if let Err(e) = net::del_netns(&ns) {
            errors.push(e.to_string());
        }
    }
    if t.state_dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&t.state_dir) {
            errors.push(format!("{}: {e}", t.state_dir.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LabError::Command { command: format!("minion-lab down {}", t.name), detail: errors.join("; ") })
    }
}

fn teardown_node(t: &Topology, bin_dir: &Path, node: &str) -> Result<(), LabError> {
    let dir = t.node_dir(node);
    let runtime = bin_dir.join("minion-runtime");
    let root = dir.join("runtime");
    if root.exists() && runtime.exists() {
        let list = run(Command::new(&runtime).arg("--root").arg(&root).arg("list")).unwrap_or_default();
        let states: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap_or_default();
        for id in states.iter().filter_map(|s| s["id"].as_str()) {
            let _ = run(Command::new(&runtime).arg("--root").arg(&root).args(["delete", "--force", id]));
        }
    }
    let pods = dir.join("agent/pods");
    for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        let netns = Path::new(NETNS_DIR).join(format!("minion-{}", entry.file_name().to_string_lossy()));
        if netns.exists() && runtime.exists() {
            let _ = run(Command::new(&runtime).args(["netns", "del"]).arg(&netns));
        }
    }
    remove_cgroups(Path::new(CGROUP_ROOT), &t.cgroup_parent(node));
    Ok(())
}

/// Removes `<root>/<controller>/<parent>` (v1) and `<root>/<parent>` (v2) bottom-up.
pub fn remove_cgroups(root: &Path, parent: &str) {
    let mut candidates = vec![root.join(parent)];
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        candidates.push(entry.path().join(parent));
    }
    for dir in candidates.into_iter().filter(|p| p.is_dir()) {
        remove_tree_bottom_up(&dir);
    }
}

fn remove_tree_bottom_up(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree_bottom_up(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
