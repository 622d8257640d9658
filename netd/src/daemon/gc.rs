//! Start-up garbage collection of IP allocations. A pod sandbox's veth pair dies with
//! its network namespace, so an allocation whose host veth (`veth<hash>` of container
//! id + ifname) is gone belongs to a sandbox that no longer exists (the node rebooted,
//! or the kubelet died between removing the sandbox and CNI DEL): it is released.
//! Allocations younger than `min_age` are left alone, as an ADD may be wiring them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::ipam::{IpamError, IpamStore};
use crate::plugin::host_veth_name;

/// Releases allocations under `network_dir` whose host veth `link_exists` denies;
/// returns the released addresses. A missing `network_dir` means nothing to do.
pub fn release_dead_sandboxes(
    network_dir: &Path,
    min_age: Duration,
    link_exists: impl Fn(&str) -> bool,
) -> Result<Vec<Ipv4Addr>, IpamError> {
    if !network_dir.exists() {
        return Ok(Vec::new());
    }
    let store = IpamStore::open(network_dir)?;
    let mut released = Vec::new();
    for (ip, owner) in store.list()? {
        let veth = host_veth_name(&owner.container_id, &owner.ifname);
        let young = store.age(ip).is_none_or(|a| a < min_age);
        if young || link_exists(&veth) {
            continue;
        }
        store.remove(ip, &owner)?;
        tracing::info!(%ip, container_id = %owner.container_id, %veth, "released allocation of a vanished sandbox");
        released.push(ip);
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{AddressRange, Owner};

    #[test]
    fn releases_only_sandboxes_whose_veth_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("minion");
        let range = AddressRange {
            start: "10.244.1.2".parse().unwrap(),
            end: "10.244.1.20".parse().unwrap(),
            gateway: "10.244.1.1".parse().unwrap(),
            network: "10.244.1.0".parse().unwrap(),
            broadcast: "10.244.1.255".parse().unwrap(),
        };
        let store = IpamStore::open(&dir).unwrap();
        let live = store.allocate(&range, &Owner::new("live", "eth0")).unwrap();
        let dead = store.allocate(&range, &Owner::new("dead", "eth0")).unwrap();
        drop(store);
        let live_veth = host_veth_name("live", "eth0");
        let exists = |name: &str| name == live_veth;
        // Too young: nothing released.
        assert!(release_dead_sandboxes(&dir, Duration::from_secs(3600), exists).unwrap().is_empty());
        assert_eq!(release_dead_sandboxes(&dir, Duration::ZERO, exists).unwrap(), vec![dead]);
        let left: Vec<Ipv4Addr> =
            IpamStore::open(&dir).unwrap().list().unwrap().into_iter().map(|(ip, _)| ip).collect();
        assert_eq!(left, vec![live]);
        assert!(release_dead_sandboxes(&tmp.path().join("absent"), Duration::ZERO, exists)
            .unwrap()
            .is_empty());
    }
}
