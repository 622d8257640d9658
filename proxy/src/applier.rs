//! The kernel seam of the proxier: `RulesetApplier` hands a whole ruleset to
//! `iptables-restore` in one process (kube-proxy's `RestoreAll`), lists the chains
//! that exist, and ensures the few jump rules from built-in chains. `IptablesApplier`
//! runs the real binaries (optionally under a command prefix such as
//! `ip netns exec NS`); `RecordingApplier` is an in-memory fake for unit tests.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{parse_nft_chains, Backend};

/// Failures talking to iptables.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The program could not be started or fed.
    #[error("failed to run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its arguments, space-joined.
        args: String,
        /// Exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

/// A jump rule in a built-in chain, e.g. nat `OUTPUT -j KUBE-SERVICES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    /// `nat` or `filter`.
    pub table: &'static str,
    /// Built-in chain, e.g. `PREROUTING`.
    pub chain: &'static str,
    /// Match and target arguments, one argv element each (no shell quoting).
    pub args: Vec<String>,
}

/// Where rules meet the kernel.
pub trait RulesetApplier: Send {
    /// Applies `iptables-restore --noflush` input atomically, in one process.
    fn apply(&self, input: &str) -> Result<(), ApplyError>;
    /// Names of the user-defined chains that exist in `table`.
    fn current_chains(&self, table: &str) -> Result<BTreeSet<String>, ApplyError>;
    /// Inserts `rule` at the top of its chain unless an identical rule exists.
    /// Returns whether it was inserted.
    fn ensure_rule(&self, rule: &JumpRule) -> Result<bool, ApplyError>;
    /// The iptables backend in use (decides how big syncs are split).
    fn backend(&self) -> Result<Backend, ApplyError>;
    /// Runs `conntrack ARGS` (a `-D` with filters); no matching entry is success.
    fn conntrack(&self, args: &[String]) -> Result<(), ApplyError>;
}

/// Runs `iptables-restore` and `iptables`.
#[derive(Debug, Clone)]
pub struct IptablesApplier {
    /// argv prefix put before every program, e.g. `["ip","netns","exec","NS"]`.
    pub prefix: Vec<String>,
    /// The `iptables-restore` binary.
    pub restore: PathBuf,
    /// The `iptables` binary.
    pub iptables: PathBuf,
    /// `nft` binary used for fast chain listings on the nft backend, if installed.
    pub nft: PathBuf,
    /// `conntrack` binary (stale UDP entries).
    pub conntrack: PathBuf,
    backend: OnceLock<Backend>,
}

impl IptablesApplier {
    /// Applier for the current network namespace.
    pub fn new(restore: PathBuf, iptables: PathBuf) -> Self {
        Self {
            prefix: Vec::new(),
            restore,
            iptables,
            nft: PathBuf::from("nft"),
            conntrack: PathBuf::from("conntrack"),
            backend: OnceLock::new(),
        }
    }

    /// Same, running every program under `prefix` (e.g. `ip netns exec NS`).
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    fn command(&self, program: &Path, args: &[&str]) -> (Command, String) {
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(program.display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        (cmd, program.display().to_string())
    }

    fn run(&self, program: &Path, args: &[&str]) -> Result<Output, ApplyError> {
        let (mut cmd, name) = self.command(program, args);
        cmd.output().map_err(|source| ApplyError::Spawn {
            program: name,
            source,
        })
    }

    fn iptables_ok(&self, args: &[&str]) -> Result<Output, ApplyError> {
        let out = self.run(&self.iptables, args)?;
        check(&self.iptables, args, out)
    }
}

fn check(program: &Path, args: &[&str], out: Output) -> Result<Output, ApplyError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(ApplyError::Failed {
        program: program.display().to_string(),
        args: args.join(" "),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

impl RulesetApplier for IptablesApplier {
    fn apply(&self, input: &str) -> Result<(), ApplyError> {
        let args = ["--noflush", "--wait"];
        let (mut cmd, name) = self.command(&self.restore, &args);
        let spawn_err = |source| ApplyError::Spawn {
            program: name.clone(),
            source,
        };
        let mut child = cmd.stdin(Stdio::piped()).spawn().map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        check(&self.restore, &args, out).map(|_| ())
    }

    fn current_chains(&self, table: &str) -> Result<BTreeSet<String>, ApplyError> {
        if self.backend()? == Backend::Nft {
            // `iptables-nft -S` decodes every rule (25 s at 10k services); `nft`
            // lists chain names only. Without nft installed, fall back.
            if let Ok(out) = self.run(&self.nft, &["list", "chains", "ip"]) {
                if out.status.success() {
                    return Ok(parse_nft_chains(
                        &String::from_utf8_lossy(&out.stdout),
                        table,
                    ));
                }
            }
        }
        let out = self.iptables_ok(&["-w", "-t", table, "-S"])?;
        Ok(parse_chain_list(&String::from_utf8_lossy(&out.stdout)))
    }

    fn conntrack(&self, args: &[String]) -> Result<(), ApplyError> {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&self.conntrack, &argv)?;
        // conntrack exits 1 with "0 flow entries have been deleted" when none match.
        if out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("0 flow entries")
        {
            return Ok(());
        }
        check(&self.conntrack, &argv, out).map(|_| ())
    }

    fn backend(&self) -> Result<Backend, ApplyError> {
        if let Some(b) = self.backend.get() {
            return Ok(*b);
        }
        let out = self.iptables_ok(&["-V"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let backend = Backend::from_version(&text).ok_or_else(|| ApplyError::Failed {
            program: self.iptables.display().to_string(),
            args: "-V".into(),
            status: "unrecognised version".into(),
            stderr: text.trim().to_string(),
        })?;
        Ok(*self.backend.get_or_init(|| backend))
    }

    fn ensure_rule(&self, rule: &JumpRule) -> Result<bool, ApplyError> {
        let mut args = vec!["-w", "-t", rule.table, "-C", rule.chain];
        args.extend(rule.args.iter().map(String::as_str));
        if self.run(&self.iptables, &args)?.status.success() {
            return Ok(false);
        }
        args[3] = "-I";
        self.iptables_ok(&args).map(|_| true)
    }
}

/// User-defined chains (`-N NAME` lines) of `iptables -S` output.
pub fn parse_chain_list(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(|c| c.trim().to_string())
        .collect()
}

/// One call the fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `apply(input)`.
    Apply(String),
    /// `ensure_rule(rule)`.
    EnsureRule(JumpRule),
    /// `conntrack(args)`.
    Conntrack(Vec<String>),
    /// `current_chains(table)`.
    CurrentChains(String),
}

/// In-memory fake: records calls and tracks nat chains declared (`:X`) and deleted
/// (`-X X`) by the nat sections of applied inputs, like the kernel would.
#[derive(Debug, Clone, Default)]
pub struct RecordingApplier {
    /// Everything called, in order.
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// Chains that "exist" in the nat table.
    pub nat_chains: Arc<Mutex<BTreeSet<String>>>,
    /// When set, `apply` fails with this message.
    pub fail_apply: Arc<Mutex<Option<String>>>,
    /// Report the nft backend (else legacy).
    pub nft: bool,
}

impl RecordingApplier {
    /// The inputs passed to `apply`, in order.
    pub fn applied(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Apply(s) => Some(s.clone()),
                Call::EnsureRule(_) | Call::Conntrack(_) | Call::CurrentChains(_) => None,
            })
            .collect()
    }
}

impl RulesetApplier for RecordingApplier {
    fn apply(&self, input: &str) -> Result<(), ApplyError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Call::Apply(input.into()));
        if let Some(msg) = self
            .fail_apply
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(ApplyError::Failed {
                program: "fake-iptables-restore".into(),
                args: String::new(),
                status: "exit status: 1".into(),
                stderr: msg,
            });
        }
        let mut chains = self.nat_chains.lock().unwrap_or_else(|e| e.into_inner());
        let nat = input
            .split("*nat\n")
            .skip(1)
            .flat_map(|section| section.split("COMMIT\n").next())
            .flat_map(str::lines);
        for line in nat {
            if let Some(decl) = line.strip_prefix(':') {
                chains.insert(decl.split(' ').next().unwrap_or("").to_string());
            } else if let Some(del) = line.strip_prefix("-X ") {
                chains.remove(del.trim());
            }
        }
        Ok(())
    }

    fn current_chains(&self, table: &str) -> Result<BTreeSet<String>, ApplyError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Call::CurrentChains(table.to_string()));
        Ok(self
            .nat_chains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    fn ensure_rule(&self, rule: &JumpRule) -> Result<bool, ApplyError> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let seen = calls.iter().any(|c| c == &Call::EnsureRule(rule.clone()));
        calls.push(Call::EnsureRule(rule.clone()));
        Ok(!seen)
    }

    fn backend(&self) -> Result<Backend, ApplyError> {
        Ok(if self.nft {
            Backend::Nft
        } else {
            Backend::Legacy
        })
    }

    fn conntrack(&self, args: &[String]) -> Result<(), ApplyError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Call::Conntrack(args.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_chains_from_iptables_s() {
        let listing = "-P PREROUTING ACCEPT\n-N KUBE-SERVICES\n-N KUBE-SVC-ABC\n-A KUBE-SERVICES -j KUBE-SVC-ABC\n";
        let got: Vec<_> = parse_chain_list(listing).into_iter().collect();
        assert_eq!(got, vec!["KUBE-SERVICES", "KUBE-SVC-ABC"]);
    }

    #[test]
    fn fake_tracks_declared_and_deleted_chains() {
        let fake = RecordingApplier::default();
        fake.apply("*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-B - [0:0]\nCOMMIT\n").unwrap();
        fake.apply("*nat\n:KUBE-SEP-B - [0:0]\n-X KUBE-SEP-B\nCOMMIT\n")
            .unwrap();
        let chains: Vec<_> = fake.current_chains("nat").unwrap().into_iter().collect();
        assert_eq!(chains, vec!["KUBE-SVC-A"]);
    }

    #[test]
    fn real_applier_reports_missing_binary() {
        let a = IptablesApplier::new(
            "/nonexistent/iptables-restore".into(),
            "/nonexistent/iptables".into(),
        );
        let err = a.apply("*nat\nCOMMIT\n").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/iptables-restore"),
            "{err}"
        );
    }
}
