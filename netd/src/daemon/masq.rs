//! Egress masquerade: pods talking to anything outside the cluster CIDR leave with the
//! node's address. One rule for this node's pod subnet in our own chain
//! `MINION-NETD-MASQ`, jumped to from nat POSTROUTING; the KUBE-* chains belong to the
//! proxy and are never touched. Applied with one `iptables-restore --noflush`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnetwork::Ipv4Network;

/// Our chain in the nat table.
pub const MASQ_CHAIN: &str = "MINION-NETD-MASQ";
const JUMP_COMMENT: &str = "minion-netd: pod egress masquerade";

/// Errors programming the masquerade rules.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    /// iptables could not be run or failed.
    #[error("{command}: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// stderr or the spawn error.
        detail: String,
    },
}

/// The `iptables-restore --noflush` input that (re)writes our chain: masquerade what
/// `pod_subnet` sends outside `cluster_cidr`.
pub fn render(pod_subnet: Ipv4Network, cluster_cidr: Ipv4Network) -> String {
    format!(
        "*nat\n:{MASQ_CHAIN} - [0:0]\n\
         -A {MASQ_CHAIN} -s {pod_subnet} ! -d {cluster_cidr} -m comment --comment \"pod subnet {pod_subnet} leaving the cluster\" -j MASQUERADE\n\
         COMMIT\n"
    )
}

/// Programs the rules through `iptables` / `iptables-restore` binaries.
#[derive(Debug, Clone)]
pub struct Masquerade {
    /// iptables binary (for the jump rule check).
    pub iptables: PathBuf,
    /// iptables-restore binary.
    pub iptables_restore: PathBuf,
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<bool, MasqError> {
    let shown = format!("{cmd:?}");
    let err = |detail: String| MasqError::Command { command: shown.clone(), detail };
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        return Ok(true);
    }
    if stdin.is_none() && out.status.code() == Some(1) {
        return Ok(false);
    }
    Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
}

impl Masquerade {
    /// Writes our chain and makes sure POSTROUTING jumps to it (once).
    pub fn apply(&self, pod_subnet: Ipv4Network, cluster_cidr: Ipv4Network) -> Result<(), MasqError> {
        let rules = render(pod_subnet, cluster_cidr);
        run(Command::new(&self.iptables_restore).arg("--noflush"), Some(&rules))?;
        let jump = ["POSTROUTING", "-m", "comment", "--comment", JUMP_COMMENT, "-j", MASQ_CHAIN];
        let present = run(Command::new(&self.iptables).args(["-t", "nat", "-C"]).args(jump), None)?;
        if !present {
            run(Command::new(&self.iptables).args(["-t", "nat", "-A"]).args(jump), None)?;
        }
        Ok(())
    }
}

/// The default binaries, found on PATH.
pub fn default_masquerade() -> Masquerade {
    Masquerade {
        iptables: Path::new("iptables").to_path_buf(),
        iptables_restore: Path::new("iptables-restore").to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_pod_subnet_in_our_chain() {
        let text = render("10.244.1.0/24".parse().unwrap(), "10.244.0.0/16".parse().unwrap());
        assert!(text.starts_with("*nat\n:MINION-NETD-MASQ - [0:0]\n"));
        assert_eq!(text.matches("-j MASQUERADE").count(), 1);
        assert!(text.contains("-A MINION-NETD-MASQ -s 10.244.1.0/24 ! -d 10.244.0.0/16 "));
        assert!(!text.contains("KUBE-"));
        assert!(text.ends_with("COMMIT\n"));
    }
}
