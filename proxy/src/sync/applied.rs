//! What the kernel holds, as a sync keeps track of it — kube-proxy's
//! `MinimizeIPTablesRestore` bookkeeping: each Service port's block fingerprint as
//! last applied (keyed by its `KUBE-SVC-` chain) and the per-service chains in the
//! kernel. A sync uses them to decide which blocks it may skip and which chains are
//! stale, and records what it applied.
//!
//! Two ways to answer: looking every block up (the first sync, a full one, after a
//! failure, or when a Service appears twice), or, for a partial sync after a
//! successful one, looking up only the blocks the tracker reports as new or retired
//! since its checkpoint ([`Changes`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::names::is_per_service_chain;
use crate::render::ServicePortRules;

/// A block's key in the applied fingerprints: its first (`KUBE-SVC-`) chain.
fn key(b: &ServicePortRules) -> Option<&str> {
    b.chains.first().map(|c| c.name.as_str())
}

/// Indices of the blocks whose chains are in the kernel as last applied (none on a
/// full sync): clean since the checkpoint, or looked up by fingerprint.
pub(super) fn unchanged_blocks(
    applied: &HashMap<String, u64>,
    blocks: &[&ServicePortRules],
    prints: &[u64],
    existing: &HashSet<String>,
    full: bool,
    changes: Option<&Changes>,
) -> Vec<usize> {
    if full {
        return Vec::new();
    }
    let unchanged = |i: usize, b: &ServicePortRules, p: &u64| {
        changes.is_some_and(|c| c.clean[i])
            || key(b).is_some_and(|k| applied.get(k) == Some(p))
                && b.chain_names().all(|c| existing.contains(c))
    };
    blocks
        .iter()
        .zip(prints)
        .enumerate()
        .filter(|(i, (b, p))| unchanged(*i, b, p))
        .map(|(i, _)| i)
        .collect()
}

/// Records every block as applied and its chains as in the kernel.
pub(super) fn record_all(
    blocks: &[&ServicePortRules],
    prints: &[u64],
    applied: &mut HashMap<String, u64>,
    known: &mut HashSet<String>,
) {
    *applied = blocks
        .iter()
        .zip(prints)
        .filter_map(|(b, p)| Some((key(b)?.to_string(), *p)))
        .collect();
    // Skipped blocks' chains are in `known` already (else they'd be written).
    for c in blocks.iter().flat_map(|b| b.chain_names()) {
        if !known.contains(c) {
            known.insert(c.to_string());
        }
    }
}

/// Per-service chains in the kernel that no block wants. Usually there are none,
/// which counting shows without building a set of every wanted name (40k at 10k
/// Services: a tenth of a partial sync's own CPU time). Counting is exact because
/// blocks (sorted by port) name distinct chains, checked here for neighbours.
pub(super) fn stale_chains(
    blocks: &[&ServicePortRules],
    existing: &HashSet<String>,
) -> Vec<String> {
    let ours = existing.iter().filter(|c| is_per_service_chain(c)).count();
    let kept = blocks
        .iter()
        .flat_map(|b| b.chain_names())
        .filter(|c| existing.contains(*c))
        .count();
    let distinct = blocks
        .windows(2)
        .all(|w| key(w[0]).is_none() || key(w[0]) != key(w[1]));
    if kept == ours && distinct {
        return Vec::new();
    }
    let mut wanted: HashSet<&str> = HashSet::with_capacity(existing.len());
    wanted.extend(blocks.iter().flat_map(|b| b.chain_names()));
    let mut stale: Vec<String> = existing
        .iter()
        .filter(|c| is_per_service_chain(c) && !wanted.contains(c.as_str()))
        .cloned()
        .collect();
    stale.sort_unstable();
    stale
}

/// A partial sync's view of what changed since the checkpoint, when the kernel
/// holds exactly the checkpoint's blocks' chains and `applied` their fingerprints
/// (chain names are per Service port, so no two blocks share one).
#[derive(Debug)]
pub struct Changes<'a> {
    /// Per block: unchanged since the checkpoint (so applied and in the kernel).
    pub clean: &'a [bool],
    /// Blocks of the checkpoint that are gone.
    pub retired: &'a [Arc<ServicePortRules>],
}

impl Changes<'_> {
    fn dirty<'b>(
        &'b self,
        blocks: &'b [&'b ServicePortRules],
    ) -> impl Iterator<Item = &'b ServicePortRules> {
        blocks
            .iter()
            .zip(self.clean)
            .filter(|(_, clean)| !**clean)
            .map(|(b, _)| *b)
    }

    /// The chains of retired blocks that are in the kernel and no block wants,
    /// sorted: the kernel's other chains are the clean blocks'.
    pub fn stale_chains(
        &self,
        blocks: &[&ServicePortRules],
        existing: &HashSet<String>,
    ) -> Vec<String> {
        let wanted: HashSet<&str> = self.dirty(blocks).flat_map(|b| b.chain_names()).collect();
        let mut stale: Vec<String> = self
            .retired
            .iter()
            .flat_map(|b| b.chain_names())
            .filter(|c| existing.contains(*c) && !wanted.contains(c))
            .map(String::from)
            .collect();
        stale.sort_unstable();
        stale.dedup();
        stale
    }

    /// Records the new blocks as applied and their chains as in the kernel, and
    /// forgets the retired ones (their stale chains are already out of `known`).
    pub fn record(
        &self,
        blocks: &[&ServicePortRules],
        prints: &[u64],
        applied: &mut HashMap<String, u64>,
        known: &mut HashSet<String>,
    ) {
        for gone in self.retired {
            if let Some(k) = key(gone) {
                applied.remove(k);
            }
        }
        for (b, p) in blocks
            .iter()
            .zip(prints)
            .zip(self.clean)
            .filter(|(_, c)| !**c)
            .map(|(bp, _)| bp)
        {
            if let Some(k) = key(b) {
                applied.insert(k.to_string(), *p);
            }
            for c in b.chain_names() {
                if !known.contains(c) {
                    known.insert(c.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "applied_tests.rs"]
mod tests;
