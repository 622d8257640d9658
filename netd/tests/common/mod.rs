//! Helpers for privileged tests: root check, self-deleting network namespaces, running
//! the built plugin inside a node namespace.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when running as root. Without root: skip (print) unless CI is set, then panic.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("privileged test needs root (CI is set, refusing to skip)");
    }
    eprintln!("skipping privileged test: not root");
    false
}

/// A unique suffix `<pid>-<n>` for names in this process.
pub fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(kind: &str) -> Self {
        let name = format!("mtest-{kind}-{}", unique());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        Self { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside this namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// Runs a command inside this namespace and returns stdout; panics on failure.
    pub fn sh(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deletes the namespace now (drop then does nothing).
    pub fn delete(&mut self) {
        if !self.name.is_empty() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
            self.name.clear();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// One CNI invocation's environment.
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
}

/// What a plugin run produced.
pub struct PluginOutput {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

impl PluginOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs plugin binary `bin` inside `node` with the CNI env and `config` on stdin.
pub fn run_plugin(bin: &str, node: &Netns, inv: &Invocation<'_>, config: &str) -> PluginOutput {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.name, "env"])
        .arg(format!("CNI_COMMAND={}", inv.command))
        .arg(format!("CNI_CONTAINERID={}", inv.container_id))
        .arg(format!("CNI_NETNS={}", inv.netns))
        .arg(format!("CNI_IFNAME={}", inv.ifname))
        .arg("CNI_PATH=/usr/lib/cni")
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait plugin");
    PluginOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        success: out.status.success(),
    }
}

/// The built minion-netd.
pub fn netd_bin() -> String {
    env!("CARGO_BIN_EXE_minion-netd").to_string()
}

/// A fresh temp dir for IPAM data.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The plugin config (what the agent passes: per-plugin object with name and cniVersion).
pub fn netd_config(subnet: &str, data_dir: &std::path::Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "minion", "type": "minion-netd", "bridge": "cni0",
        "isGateway": true, "hairpinMode": true,
        "ipam": {"subnet": subnet, "dataDir": data_dir.display().to_string()}
    })
    .to_string()
}

/// Pings `ip` from `ns` with busybox (no iputils here), up to 3 tries.
pub fn ping(ns: &Netns, ip: &str) -> bool {
    (0..3).any(|_| {
        ns.exec(&["/bin/busybox", "ping", "-c1", "-W1", ip])
            .status
            .success()
    })
}

pub fn ipam_file(dir: &std::path::Path, ip: &str) -> PathBuf {
    dir.join("minion").join(ip)
}
