//! Sweep of stale pod veths: the node-side leftovers of Kubernetes pod sandboxes.
//! CNI DEL leaves a pod's veth pair to the destruction of the pod's network namespace,
//! only setting the host side down and removing the pod's addresses
//! ([`crate::plugin::cmd_del`]). When the namespace is never deleted (the agent
//! crashed between DEL and removing it), that down, addressless pair would stay for
//! good: the daemon deletes such host sides at start and then periodically, a bounded
//! number per pass.
//!
//! A host link is stale when it has our name shape (`veth<8 hex>`,
//! [`crate::plugin::host_veth_name`]), is a veth on our bridge or detached, is
//! administratively down, and no live allocation's container id + ifname derives to
//! its name.
//!
//! Why this cannot race with ADD or DEL. ADD (1) writes the allocation under the IPAM
//! lock, then (2) creates the pair in one request that already sets the host side up
//! on the bridge; a failed ADD deletes the link before releasing the allocation. DEL
//! (1) removes the allocation, then (2) sets the host side down. So a link of ours is
//! never down while an ADD is wiring it, and every link an ADD made has had its
//! allocation since before the link existed. The sweep lists the links FIRST and reads
//! the allocations AFTER, under the IPAM lock, which it holds until its deletions are
//! done: a link listed down whose name no allocation derives to was made by an ADD
//! whose allocation is gone again (DEL, or a rollback about to delete it anyway), and
//! an ADD starting meanwhile blocks on the lock before it allocates, so it cannot
//! replace a leftover of the same name while the sweep deletes it. Deletion is by
//! ifindex, so a link re-created under that name after the listing is never hit.
//! Hence one pass suffices; no "down for two passes" rule is needed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::ipam::{IpamError, IpamStore};
use crate::netops::{HostLink, NetError, NetOps};
use crate::plugin::host_veth_name;

use super::metrics::Metrics;

/// Interval between sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most links deleted in one pass (each delete waits ~20 ms in the kernel while the
/// IPAM lock is held, so ADDs wait at most ~0.2 s for a full pass).
pub const MAX_PER_PASS: usize = 8;
/// Pause before the next pass when a pass hit [`MAX_PER_PASS`] (the lock is free
/// in between).
const BACKLOG_PAUSE: Duration = Duration::from_secs(1);

/// Errors of one sweep pass.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Listing or deleting a link failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The allocations could not be read.
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

/// True for a name of the shape [`host_veth_name`] gives: `veth` + 8 lowercase hex.
pub fn is_our_veth_name(name: &str) -> bool {
    name.strip_prefix("veth").is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Links that may be our post-DEL leftovers, before allocations are looked at: our
/// name shape, a veth, down, and enslaved to `bridge` or detached.
pub fn leftover_candidates(links: &[HostLink], bridge: &str) -> Vec<HostLink> {
    let bridge_index = links.iter().find(|l| l.name == bridge).map(|l| l.index);
    links
        .iter()
        .filter(|l| l.veth && !l.up && is_our_veth_name(&l.name))
        .filter(|l| l.master.is_none() || l.master == bridge_index)
        .cloned()
        .collect()
}

/// The candidates whose name is not in `live` (host veth names of live allocations),
/// at most `limit`.
pub fn select_stale(
    candidates: Vec<HostLink>,
    live: &HashSet<String>,
    limit: usize,
) -> Vec<HostLink> {
    candidates
        .into_iter()
        .filter(|l| !live.contains(&l.name))
        .take(limit)
        .collect()
}

/// One pass: deletes up to `limit` stale host veths (see the module docs) and returns
/// their names. A missing `network_dir` means no ADD ever ran here: nothing is ours.
pub async fn sweep_once<O: NetOps>(
    ops: &mut O,
    network_dir: &Path,
    bridge: &str,
    limit: usize,
) -> Result<Vec<String>, SweepError> {
    // Links first, allocations after (the order the module docs rely on).
    let candidates = leftover_candidates(&ops.host_links().await?, bridge);
    if candidates.is_empty() || !network_dir.exists() {
        return Ok(Vec::new());
    }
    // Held until the deletions are done: no ADD allocates meanwhile.
    let store = IpamStore::open(network_dir)?;
    let live: HashSet<String> = store
        .list()?
        .iter()
        .map(|(_, o)| host_veth_name(&o.container_id, &o.ifname))
        .collect();
    let mut removed = Vec::new();
    for link in select_stale(candidates, &live, limit) {
        if ops.delete_link_index(link.index, &link.name).await? {
            tracing::info!(veth = %link.name, ifindex = link.index, "removed stale pod veth (down, no allocation)");
            removed.push(link.name);
        }
    }
    drop(store);
    Ok(removed)
}

/// Sweeps now and then every `interval` (sooner while a backlog remains), counting
/// removals in `metrics`; runs until the task is dropped.
pub async fn run_periodic<O: NetOps>(
    mut ops: O,
    network_dir: PathBuf,
    bridge: String,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    loop {
        let mut pause = interval;
        match sweep_once(&mut ops, &network_dir, &bridge, MAX_PER_PASS).await {
            Ok(removed) => {
                metrics
                    .stale_veths_removed
                    .fetch_add(removed.len() as u64, Ordering::Relaxed);
                if removed.len() == MAX_PER_PASS {
                    pause = BACKLOG_PAUSE;
                }
            }
            Err(error) => tracing::warn!(%error, "stale veth sweep failed (retrying)"),
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
#[path = "veth_sweep_tests.rs"]
mod tests;
