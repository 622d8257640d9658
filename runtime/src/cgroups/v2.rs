//! cgroup v2 (unified): one directory under the cgroup2 root; controllers are
//! enabled in every ancestor's `cgroup.subtree_control`.

use std::fs;
use std::path::{Path, PathBuf};

use super::devices_bpf::{self, DeviceRule};
use super::{io, v1, write_file, Error, Resources};

fn controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn needed(res: &Resources) -> Vec<(&'static str, &'static str)> {
    let mut n = Vec::new();
    if res.memory_limit.is_some() || res.memory_swap.is_some() {
        n.push(("memory", "memory limit"));
    }
    if res.cpu_shares.is_some() || res.cpu_quota.is_some() || res.cpu_period.is_some() {
        n.push(("cpu", "cpu weight/max"));
    }
    if res.cpuset_cpus.is_some() || res.cpuset_mems.is_some() {
        n.push(("cpuset", "cpuset"));
    }
    if res.pids_limit.is_some() {
        n.push(("pids", "pids limit"));
    }
    n
}

/// Creates the cgroup and enables controllers on the way down; returns the leaf.
pub fn create(root: &Path, parts: &[String], res: &Resources) -> Result<Vec<PathBuf>, Error> {
    let avail = controllers(root);
    for (c, what) in needed(res) {
        if !avail.iter().any(|a| a == c) {
            return Err(Error::MissingController { controller: c.into(), what: what.into(), root: root.to_path_buf() });
        }
    }
    let wanted: Vec<&String> =
        avail.iter().filter(|c| ["memory", "cpu", "pids", "cpuset", "io"].contains(&c.as_str())).collect();
    let mut dir = root.to_path_buf();
    for p in parts {
        if !wanted.is_empty() {
            let v: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
            write_file(&dir.join("cgroup.subtree_control"), &v.join(" "))?;
        }
        dir.push(p);
        if !dir.is_dir() {
            fs::create_dir(&dir).or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
                .map_err(io("create cgroup", &dir))?;
        }
    }
    Ok(vec![dir])
}

/// cgroup v1 shares (2..262144) → v2 weight (1..10000), as runc converts.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Writes the limits into the leaf and attaches the device program.
pub fn apply(leaf: &Path, res: &Resources) -> Result<(), Error> {
    apply_limits(leaf, res)?;
    devices_bpf::attach(leaf, &device_rules(res)?)
}

/// The device rules in force, as v1 writes them: deny all, the spec's rules in
/// order, then the default allow list.
pub fn device_rules(res: &Resources) -> Result<Vec<DeviceRule>, Error> {
    let mut rules = vec![DeviceRule::parse(false, "a")?];
    for (allow, r) in &res.devices {
        rules.push(DeviceRule::parse(*allow, r)?);
    }
    for r in v1::DEFAULT_DEVICE_RULES {
        rules.push(DeviceRule::parse(true, r)?);
    }
    Ok(rules)
}

/// Writes the limits (the files only) into the leaf.
pub fn apply_limits(leaf: &Path, res: &Resources) -> Result<(), Error> {
    if let Some(l) = res.memory_limit {
        write_file(&leaf.join("memory.max"), &max(l))?;
        if let Some(s) = res.memory_swap {
            let swap = if s < 0 || l < 0 { -1 } else { (s - l).max(0) };
            write_file(&leaf.join("memory.swap.max"), &max(swap))?;
        }
    }
    if let Some(s) = res.cpu_shares {
        write_file(&leaf.join("cpu.weight"), &shares_to_weight(s).to_string())?;
    }
    if res.cpu_quota.is_some() || res.cpu_period.is_some() {
        let q = res.cpu_quota.map(max).unwrap_or_else(|| "max".into());
        let p = res.cpu_period.unwrap_or(100_000);
        write_file(&leaf.join("cpu.max"), &format!("{q} {p}"))?;
    }
    if let Some(c) = &res.cpuset_cpus {
        write_file(&leaf.join("cpuset.cpus"), c)?;
    }
    if let Some(m) = &res.cpuset_mems {
        write_file(&leaf.join("cpuset.mems"), m)?;
    }
    if let Some(p) = res.pids_limit {
        write_file(&leaf.join("pids.max"), &if p <= 0 { "max".into() } else { p.to_string() })?;
    }
    Ok(())
}

fn max(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}
