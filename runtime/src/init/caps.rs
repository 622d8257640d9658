//! Process identity and privileges: rlimits, user/groups, Linux capabilities.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
use oci_spec::runtime::Process;

use super::{sys, Error};

/// The default set containerd/docker give a container (what Kubernetes pods get
/// when the spec has no capabilities).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        _ => return None,
    })
}

/// Applies process.rlimits.
pub fn set_rlimits(p: &Process) -> Result<(), Error> {
    for r in p.rlimits().clone().unwrap_or_default() {
        let name = r.typ().to_string();
        let res = resource(&name).ok_or_else(|| Error::Invalid(format!("unknown rlimit {name}")))?;
        setrlimit(res, r.soft(), r.hard()).map_err(sys("setrlimit", &name))?;
    }
    Ok(())
}

/// Converts OCI capability names to the caps crate's set.
pub fn to_caps<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<CapsHashSet, Error> {
    names
        .into_iter()
        .map(|n| Capability::from_str(n).map_err(|_| Error::Caps(format!("unknown capability {n}"))))
        .collect()
}

fn oci_set(s: &Option<HashSet<oci_spec::runtime::Capability>>) -> Result<Option<CapsHashSet>, Error> {
    let Some(s) = s else { return Ok(None) };
    let names: Vec<String> = s
        .iter()
        .map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
        .collect();
    to_caps(names.iter().map(String::as_str)).map(Some)
}

/// The five capability sets to apply.
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

/// Reads process.capabilities, defaulting every missing set to DEFAULT_CAPS
/// (inheritable and ambient default to empty).
pub fn cap_sets(p: &Process) -> Result<CapSets, Error> {
    let default = to_caps(DEFAULT_CAPS.iter().copied())?;
    let Some(c) = p.capabilities() else {
        return Ok(CapSets {
            bounding: default.clone(),
            effective: default.clone(),
            permitted: default,
            ..Default::default()
        });
    };
    Ok(CapSets {
        bounding: oci_set(c.bounding())?.unwrap_or_else(|| default.clone()),
        effective: oci_set(c.effective())?.unwrap_or_else(|| default.clone()),
        permitted: oci_set(c.permitted())?.unwrap_or_else(|| default.clone()),
        inheritable: oci_set(c.inheritable())?.unwrap_or_default(),
        ambient: oci_set(c.ambient())?.unwrap_or_default(),
    })
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> Error {
    move |e| Error::Caps(format!("{what}: {e}"))
}

/// Drops the bounding set, switches user (keeping caps across setuid), then sets
/// inheritable, effective, permitted and ambient.
pub fn set_user_and_caps(p: &Process) -> Result<(), Error> {
    let sets = cap_sets(p)?;
    for cap in caps::all() {
        if !sets.bounding.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop bounding"))?;
        }
    }
    let user = p.user();
    nix::sys::prctl::set_keepcaps(true).map_err(sys("prctl", "PR_SET_KEEPCAPS"))?;
    let groups: Vec<Gid> = user.additional_gids().clone().unwrap_or_default().into_iter().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(sys("setgroups", format!("{groups:?}")))?;
    setgid(Gid::from_raw(user.gid())).map_err(sys("setgid", user.gid()))?;
    setuid(Uid::from_raw(user.uid())).map_err(sys("setuid", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).map_err(sys("prctl", "PR_SET_KEEPCAPS"))?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as nix::libc::mode_t));
    }
    caps::set(None, CapSet::Inheritable, &sets.inheritable).map_err(caps_err("set inheritable"))?;
    caps::set(None, CapSet::Effective, &sets.effective).map_err(caps_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &sets.permitted).map_err(caps_err("set permitted"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient"))?;
    // Like runc: an ambient cap needs to be permitted and inheritable; those that
    // are not (e.g. `runc spec` lists ambient caps but no inheritable set) are
    // skipped. No log here: the init's stderr is the container's log.
    for cap in &sets.ambient {
        let _ = caps::raise(None, CapSet::Ambient, *cap);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_names() {
        let p = Process::default();
        let mut p = p;
        p.set_capabilities(None);
        let s = cap_sets(&p).unwrap();
        assert!(s.bounding.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!s.bounding.contains(&Capability::CAP_SYS_ADMIN));
        assert!(s.ambient.is_empty());
        assert!(to_caps(["CAP_BOGUS"]).is_err());
    }
}
