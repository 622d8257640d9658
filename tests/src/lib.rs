//! Helpers for minion's end-to-end tests: they drive the real binaries (`minion-lab`,
//! and through it every daemon) and the real `/usr/bin/kubectl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Where the built minion binaries are: `MINION_BIN_DIR`, or the workspace's target dir.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MINION_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// The workspace root (for examples/).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// True when the test may run privileged steps. Not root: skip with a message, unless
/// `CI` is set, where skipping would hide a failure, so it panics instead.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root and CI is set: refusing to skip");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Runs a command; fails with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!("{:?} failed ({}): {}{}", cmd, out.status, String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns its output whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("spawning {cmd:?}"))
}

/// Polls `f` until it returns Some, for at most `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A lab brought up for one test and removed when the guard drops, even on panic.
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    pub state_root: PathBuf,
}

impl Lab {
    /// `minion-lab up --name <name> --nodes <n>` under a private state root.
    pub fn up(prefix: &str, nodes: usize) -> Result<Lab> {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        let state_root = std::env::temp_dir().join(format!("minion-lab-test-{name}"));
        let lab = Lab { name: name.clone(), state_root };
        run(lab.lab_cmd().args(["up", "--name", &name, "--nodes", &nodes.to_string(), "--timeout", "90"]))
            .context("minion-lab up")?;
        Ok(lab)
    }

    /// Like [`Lab::up`] with extra `minion-lab up` flags (e.g. `["--cni", "reference"]`).
    pub fn up_with(prefix: &str, nodes: usize, extra: &[&str]) -> Result<Lab> {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        let state_root = std::env::temp_dir().join(format!("minion-lab-test-{name}"));
        let lab = Lab { name: name.clone(), state_root };
        run(lab.lab_cmd().args(["up", "--name", &name, "--nodes", &nodes.to_string(), "--timeout", "90"]).args(extra))
            .context("minion-lab up")?;
        Ok(lab)
    }

    /// `minion-lab restart <lab> <daemon>` (e.g. `node-1/netd`).
    pub fn restart(&self, daemon: &str) -> Result<String> {
        run(self.lab_cmd().args(["restart", &self.name, daemon]))
    }

    fn lab_cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("minion-lab"));
        c.arg("--state-dir").arg(&self.state_root).arg("--bin-dir").arg(bin_dir());
        c
    }

    /// The real kubectl against this lab; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.lab_cmd().args(["kubectl", &self.name, "--"]).args(args))
    }

    /// The real kubectl against this lab, not yet run (to read stderr, or to stream
    /// `logs -f` from a child process).
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.lab_cmd();
        c.args(["kubectl", &self.name, "--"]).args(args);
        c
    }

    /// A command in a node's network namespace (`cp` for the control plane).
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Result<String> {
        run(self.lab_cmd().args(["exec", &self.name, node, "--"]).args(cmd))
    }

    /// Like `exec`, returning the raw output.
    pub fn exec_output(&self, node: &str, cmd: &[&str]) -> Result<Output> {
        output(self.lab_cmd().args(["exec", &self.name, node, "--"]).args(cmd))
    }

    /// This lab's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join(&self.name)
    }

    /// A node's network namespace name.
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// `minion-lab down`; the guard calls it too, so calling it twice is fine.
    pub fn down(&self) -> Result<()> {
        if self.state_dir().exists() {
            run(self.lab_cmd().args(["down", &self.name]))?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("cleanup of lab {}: {e:#}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.state_root);
    }
}

/// A pod the tests found Running, with what they need to reach into it.
#[derive(Debug, Clone)]
pub struct RunningPod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node: String,
    pub ip: String,
}

impl RunningPod {
    fn from_json(p: &Value) -> Option<RunningPod> {
        let s = |v: &Value| v.as_str().map(String::from);
        (p["status"]["phase"] == "Running").then_some(())?;
        Some(RunningPod {
            name: s(&p["metadata"]["name"])?,
            namespace: s(&p["metadata"]["namespace"])?,
            uid: s(&p["metadata"]["uid"])?,
            node: s(&p["spec"]["nodeName"])?,
            ip: s(&p["status"]["podIP"])?,
        })
    }
}

impl Lab {
    /// kubectl's output (`-o json` among `args`) parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let text = self.kubectl(args)?;
        serde_json::from_str(&text).with_context(|| format!("kubectl {args:?} printed {text}"))
    }

    /// The pods `kubectl get pods ARGS -o json` lists that are Running with an IP.
    pub fn running_pods(&self, args: &[&str]) -> Result<Vec<RunningPod>> {
        let mut all = vec!["get", "pods", "-o", "json"];
        all.extend_from_slice(args);
        let list = self.json(&all)?;
        let items = list["items"].as_array().context("no items in pod list")?;
        let mut pods: Vec<RunningPod> = items.iter().filter_map(RunningPod::from_json).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Waits until `kubectl get pods ARGS` shows `count` Running pods with IPs.
    pub fn wait_running(&self, args: &[&str], count: usize, timeout: Duration) -> Result<Vec<RunningPod>> {
        wait_until(&format!("{count} pods Running ({args:?})"), timeout, || {
            self.running_pods(args).ok().filter(|p| p.len() == count)
        })
    }

    /// The host pid of a pod's container, from the runtime's state on the pod's node.
    pub fn container_pid(&self, pod: &RunningPod, container: &str) -> Result<String> {
        let root = self.state_dir().join(format!("nodes/{}/runtime", pod.node));
        let state = run(Command::new(bin_dir().join("minion-runtime"))
            .arg("--root")
            .arg(&root)
            .args(["state", &format!("{}-{container}", pod.uid)]))?;
        let v: Value = serde_json::from_str(&state)?;
        Ok(v["pid"].as_i64().context("container has no pid")?.to_string())
    }

    /// Runs a command in all of a container's namespaces, like `kubectl exec`.
    pub fn in_pod(&self, pod: &RunningPod, container: &str, cmd: &[&str]) -> Result<String> {
        let pid = self.container_pid(pod, container)?;
        run(Command::new("nsenter").args(["-t", &pid, "-n", "-m", "-u", "-i", "-p", "--"]).args(cmd))
    }
}
