//! cgroup v1 (legacy/hybrid): one directory per controller under the root.

use std::fs;
use std::path::{Path, PathBuf};

use super::{io, write_file, Error, Resources};

/// Controllers minion places containers in, when mounted.
/// `systemd` is the named (controller-less) hierarchy; runc places containers
/// there too, and the container's view of /sys/fs/cgroup shows it.
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "systemd"];

/// Controller mount directories available under `root`, deduplicated (cpu and
/// cpuacct are often one mount with two symlinks).
fn available(root: &Path) -> Vec<PathBuf> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for c in CONTROLLERS {
        let d = root.join(c);
        if !d.is_dir() {
            continue;
        }
        let canon = fs::canonicalize(&d).unwrap_or_else(|_| d.clone());
        if !seen.contains(&canon) {
            seen.push(canon);
            out.push(d);
        }
    }
    out
}

fn require(root: &Path, controller: &str, what: &str) -> Result<PathBuf, Error> {
    let d = root.join(controller);
    if d.is_dir() {
        Ok(d)
    } else {
        Err(Error::MissingController { controller: controller.into(), what: what.into(), root: root.to_path_buf() })
    }
}

/// Creates `parts` under every available controller; returns the leaves.
pub fn create(root: &Path, parts: &[String], res: &Resources) -> Result<Vec<PathBuf>, Error> {
    check_controllers(root, res)?;
    let mut leaves = Vec::new();
    for ctrl in available(root) {
        let is_cpuset = ctrl.file_name().is_some_and(|n| n == "cpuset");
        let mut dir = ctrl.clone();
        for p in parts {
            let parent = dir.clone();
            dir.push(p);
            if !dir.is_dir() {
                fs::create_dir(&dir).or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
                    .map_err(io("create cgroup", &dir))?;
            }
            if is_cpuset {
                // Also fills levels made by others (e.g. the agent's pod dir).
                copy_cpuset(&parent, &dir)?;
            }
        }
        leaves.push(dir);
    }
    Ok(leaves)
}

/// Device access a container gets (runc's default allow list): the standard
/// /dev nodes, ptys, tun, and mknod of anything (opening needs an allow rule).
pub const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
];

/// Denies all devices, applies the spec's rules in order, then allows the
/// default list (as runc appends its allowed devices to the spec's rules).
fn restrict_devices(dir: &Path, rules: &[(bool, String)]) -> Result<(), Error> {
    write_file(&dir.join("devices.deny"), "a")?;
    for (allow, rule) in rules {
        write_file(&dir.join(if *allow { "devices.allow" } else { "devices.deny" }), rule)?;
    }
    for rule in DEFAULT_DEVICE_RULES {
        write_file(&dir.join("devices.allow"), rule)?;
    }
    Ok(())
}

fn check_controllers(root: &Path, res: &Resources) -> Result<(), Error> {
    if res.memory_limit.is_some() || res.memory_swap.is_some() {
        require(root, "memory", "memory limit")?;
    }
    if res.cpu_shares.is_some() || res.cpu_quota.is_some() || res.cpu_period.is_some() {
        require(root, "cpu", "cpu shares/quota")?;
    }
    if res.cpuset_cpus.is_some() || res.cpuset_mems.is_some() {
        require(root, "cpuset", "cpuset")?;
    }
    if res.pids_limit.is_some() {
        require(root, "pids", "pids limit")?;
    }
    Ok(())
}

/// A new cpuset cgroup starts with empty cpus/mems; copy the parent's.
fn copy_cpuset(parent: &Path, dir: &Path) -> Result<(), Error> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let src = parent.join(f);
        let val = fs::read_to_string(&src).map_err(io("read", &src))?;
        let cur = fs::read_to_string(dir.join(f)).unwrap_or_default();
        if cur.trim().is_empty() {
            write_file(&dir.join(f), val.trim())?;
        }
    }
    Ok(())
}

fn limit(v: i64) -> String {
    if v < 0 { "-1".into() } else { v.to_string() }
}

/// Writes the limits into the leaves under each controller.
pub fn apply(root: &Path, rel: &Path, res: &Resources) -> Result<(), Error> {
    check_controllers(root, res)?;
    let mem = root.join("memory").join(rel);
    if let Some(l) = res.memory_limit {
        write_file(&mem.join("memory.limit_in_bytes"), &limit(l))?;
    }
    if let Some(s) = res.memory_swap {
        write_file(&mem.join("memory.memsw.limit_in_bytes"), &limit(s))?;
    }
    let cpu = root.join("cpu").join(rel);
    if let Some(s) = res.cpu_shares {
        write_file(&cpu.join("cpu.shares"), &s.to_string())?;
    }
    if let Some(p) = res.cpu_period {
        write_file(&cpu.join("cpu.cfs_period_us"), &p.to_string())?;
    }
    if let Some(q) = res.cpu_quota {
        write_file(&cpu.join("cpu.cfs_quota_us"), &limit(q))?;
    }
    let cpuset = root.join("cpuset").join(rel);
    if let Some(c) = &res.cpuset_cpus {
        write_file(&cpuset.join("cpuset.cpus"), c)?;
    }
    if let Some(m) = &res.cpuset_mems {
        write_file(&cpuset.join("cpuset.mems"), m)?;
    }
    if let Some(p) = res.pids_limit {
        let v = if p <= 0 { "max".to_string() } else { p.to_string() };
        write_file(&root.join("pids").join(rel).join("pids.max"), &v)?;
    }
    if !res.devices.is_empty() {
        require(root, "devices", "device rules")?;
    }
    let dev = root.join("devices").join(rel);
    if dev.is_dir() {
        restrict_devices(&dev, &res.devices)?;
    }
    Ok(())
}
