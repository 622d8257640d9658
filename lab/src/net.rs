//! The lab's own plumbing: network namespaces, the LAN bridge and veths.
//!
//! This is test-harness work (the role Docker plays for kind), so it runs iproute2's
//! `ip` with `-n <netns>` (every link and address it makes lives in a namespace the
//! lab created). Pod networking itself is minion-netd's job and uses netlink.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use crate::error::io_err;
use crate::topology::{Topology, LAN_BRIDGE};
use crate::LabError;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs a command to completion; a non-zero exit becomes an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String, LabError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| LabError::Command { command: shown.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(LabError::Command { command: shown, detail: format!("{} ({})", detail, out.status) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

/// True when the named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Creates a network namespace with `lo` up.
pub fn add_netns(name: &str) -> Result<(), LabError> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes a network namespace; a missing one is not an error.
pub fn del_netns(name: &str) -> Result<(), LabError> {
    if netns_exists(name) {
        ip(&["netns", "del", name])?;
    }
    Ok(())
}

/// Builds the LAN: bridge `labbr0` with the API address in the control-plane namespace.
pub fn make_lan(t: &Topology) -> Result<(), LabError> {
    let cp = t.cp_netns();
    add_netns(&cp)?;
    ip(&["-n", &cp, "link", "add", LAN_BRIDGE, "type", "bridge"])?;
    ip(&["-n", &cp, "addr", "add", &format!("{}/24", t.api_ip()), "dev", LAN_BRIDGE])?;
    ip(&["-n", &cp, "link", "set", LAN_BRIDGE, "up"])?;
    Ok(())
}

/// Plugs node `index` into the LAN: eth0 in the node's namespace, its peer on labbr0.
/// The node's default route points at the control plane, which routes nowhere else,
/// so ClusterIP traffic from the node is routed (and DNATed) without leaving the lab.
pub fn plug_node(t: &Topology, node: &str, index: usize) -> Result<(), LabError> {
    let (cp, ns, port) = (t.cp_netns(), t.node_netns(node), t.lan_port(index));
    add_netns(&ns)?;
    ip(&["-n", &cp, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    ip(&["-n", &cp, "link", "set", &port, "master", LAN_BRIDGE, "up"])?;
    ip(&["-n", &ns, "addr", "add", &format!("{}/24", t.node_ip(index)), "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ns, "route", "add", "default", "via", &t.api_ip()])?;
    Ok(())
}

/// Sets `net.bridge.bridge-nf-call-iptables=1` in a node's namespace, so bridged
/// pod-to-pod packets traverse iptables (Service NAT, hairpin).
pub fn enable_bridge_nf(netns: &str) -> Result<(), LabError> {
    run(Command::new("ip").args(["netns", "exec", netns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])).map(|_| ())
}

/// Runs `f` on a thread that has entered the named network namespace, so sockets it
/// opens live there. The calling thread's namespace is left alone.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let path = Path::new(NETNS_DIR).join(name);
    let file = std::fs::File::open(&path).map_err(io_err(&path))?;
    let handle = std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map(|_| f())
    });
    let joined = handle.join().map_err(|_| LabError::Command {
        command: format!("thread in netns {name}"),
        detail: "panicked".into(),
    })?;
    joined.map_err(|e| LabError::Io { path, source: e.into() })
}

/// Polls `probe` until it returns true, for at most `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut probe: impl FnMut() -> bool) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if probe() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(LabError::Timeout { what: what.to_string(), secs })
}
