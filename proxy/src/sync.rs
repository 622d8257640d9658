//! kube-proxy's `syncProxyRules`: render the desired Service NAT for a snapshot and
//! apply it with one `iptables-restore`. A partial sync rewrites only the chains of
//! Service ports whose rules changed since the last successful apply (kube-proxy's
//! `MinimizeIPTablesRestore`); a full sync rewrites everything. Stale `KUBE-SVC-`/
//! `KUBE-SEP-` chains are flushed and deleted in the same batch.
//!
//! The desired state lives in memory: the kernel's chains are listed once (at the
//! first sync, or after a failed one) and then tracked, never re-read or diffed
//! (the bookkeeping is in `sync/applied.rs`). On the nft backend a sync writing
//! more than [`Backend::max_chains_per_commit`] chains is split into transactions of
//! whole Service ports followed by one final transaction with the top-level chains,
//! all in the same `iptables-restore` run ([`plan`], see [`crate::backend`]). The
//! jumps from the built-in chains are ensured once ([`jump_rules`]).
//!
//! [`Backend::max_chains_per_commit`]: crate::backend::Backend::max_chains_per_commit

mod applied;
mod jumps;
mod plan;

use std::collections::{HashMap, HashSet};
use tracing::{debug, warn};

use crate::applier::{ApplyError, RulesetApplier};
use crate::conntrack::{self, UdpPorts};
use crate::model::Snapshot;
use crate::names::is_per_service_chain;
use crate::render::{self, RenderConfig, ServicePortRules};
use crate::tracker::PortTracker;

pub use applied::Changes;
use applied::{record_all, stale_chains, unchanged_blocks};
pub use jumps::jump_rules;
pub use plan::plan;

/// Failures of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Listing the nat chains failed.
    #[error("failed to list nat chains: {0}")]
    ListChains(#[source] Box<ApplyError>),
    /// The iptables backend could not be detected.
    #[error("failed to detect the iptables backend: {0}")]
    Backend(#[source] Box<ApplyError>),
    /// iptables-restore rejected the ruleset.
    #[error("failed to apply ruleset ({chains} chains): {source}")]
    Apply {
        /// Chains the input declared.
        chains: usize,
        /// The applier's error.
        source: Box<ApplyError>,
    },
    /// A jump rule from a built-in chain could not be ensured.
    #[error("failed to ensure jump rule {table} {chain}: {source}")]
    Jump {
        /// Table.
        table: &'static str,
        /// Built-in chain.
        chain: &'static str,
        /// The applier's error.
        source: Box<ApplyError>,
    },
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Service ports proxied.
    pub service_ports: usize,
    /// Per-service chains written.
    pub chains_written: usize,
    /// Per-service chains left untouched because unchanged.
    pub chains_skipped: usize,
    /// Stale chains deleted.
    pub chains_deleted: usize,
    /// `iptables-restore` runs this sync took (one, unless nothing was applied).
    pub restores: usize,
    /// Transactions (`COMMIT`s) in its input: filter and nat, plus on nft one per
    /// section of a big sync and one deleting many stale chains.
    pub commits: usize,
    /// Rules of the whole desired ruleset.
    pub rules: usize,
    /// `conntrack -D` runs for stale UDP endpoints.
    pub conntrack_deletes: usize,
}

/// Keeps the kernel's Service NAT in step with snapshots.
#[derive(Debug)]
pub struct Syncer<A: RulesetApplier> {
    applier: A,
    cfg: RenderConfig,
    jumps_ensured: bool,
    /// Fingerprint of each block's chains as last applied, keyed by its KUBE-SVC chain.
    applied: HashMap<String, u64>,
    /// Our per-service chains in the kernel; `None` until listed (first sync, or
    /// after a failure left the kernel in an unknown state).
    kernel_chains: Option<HashSet<String>>,
    /// Each Service's derived ports and rendered blocks, re-derived on change.
    tracker: PortTracker,
    /// Whether the last sync succeeded, so the tracker's checkpoint matches
    /// `applied` and `kernel_chains`.
    consistent: bool,
    /// UDP service ports as last applied (`None` before the first success).
    udp: Option<UdpPorts>,
}

impl<A: RulesetApplier> Syncer<A> {
    /// A syncer that has applied nothing yet (its first sync is full).
    pub fn new(applier: A, cfg: RenderConfig) -> Self {
        Self {
            applier,
            cfg,
            jumps_ensured: false,
            applied: HashMap::new(),
            kernel_chains: None,
            tracker: PortTracker::default(),
            udp: None,
            consistent: false,
        }
    }

    /// The applier (tests inspect fakes through it).
    pub fn applier(&self) -> &A {
        &self.applier
    }

    /// Services whose ports the last sync re-derived (changed ones; all on a full
    /// sync).
    pub fn last_derived(&self) -> usize {
        self.tracker.last_derived()
    }

    /// Renders `snapshot` and applies it; `full` rewrites every chain.
    pub fn sync(&mut self, snapshot: &Snapshot, full: bool) -> Result<SyncStats, SyncError> {
        let consistent = std::mem::replace(&mut self.consistent, false);
        let d = self.tracker.update(snapshot, &self.cfg, full);
        let (owned, prints, udp) = (d.blocks, d.prints, d.udp);
        let blocks: Vec<&ServicePortRules> = owned.iter().map(|b| b.as_ref()).collect();
        let backend = self
            .applier
            .backend()
            .map_err(|e| SyncError::Backend(Box::new(e)))?;
        let existing = self.kernel_chains()?;
        // Since the checkpoint the kernel holds exactly the checkpoint's blocks'
        // chains and `applied` their fingerprints: only new and retired blocks
        // need looking up.
        let changes = (consistent && !full && !d.duplicates).then_some(Changes {
            clean: &d.clean,
            retired: &d.retired,
        });
        let stale = match &changes {
            Some(c) => c.stale_chains(&blocks, &existing),
            None => stale_chains(&blocks, &existing),
        };
        let skip = unchanged_blocks(
            &self.applied,
            &blocks,
            &prints,
            &existing,
            full,
            changes.as_ref(),
        );
        if !full
            && stale.is_empty()
            && skip.len() == blocks.len()
            && blocks.len() == self.applied.len()
        {
            // Nothing changed since the last apply: rewriting the top-level chains
            // would only reset the counters a user is watching.
            let mut stats = stats(&blocks, &skip, 0);
            (stats.restores, stats.commits) = (0, 0);
            self.kernel_chains = Some(existing);
            self.checkpoint();
            self.ensure_jumps()?;
            return Ok(stats);
        }
        let (input, commits) = plan(&blocks, &skip, stale.clone(), backend);
        let mut stats = stats(&blocks, &skip, stale.len());
        stats.commits = commits;
        debug!(?stats, full, backend = backend.as_str(), "applying ruleset");
        if let Err(source) = self.applier.apply(&input) {
            self.applied.clear();
            self.kernel_chains = None;
            self.jumps_ensured = false;
            return Err(SyncError::Apply {
                chains: stats.chains_written + stats.chains_deleted,
                source: Box::new(source),
            });
        }
        let mut known = existing;
        stale.iter().for_each(|c| {
            known.remove(c);
        });
        match &changes {
            Some(c) => c.record(&blocks, &prints, &mut self.applied, &mut known),
            None => record_all(&blocks, &prints, &mut self.applied, &mut known),
        }
        self.kernel_chains = Some(known);
        self.checkpoint();
        self.ensure_jumps()?;
        stats.conntrack_deletes = self.clear_stale_udp(udp);
        Ok(stats)
    }

    /// Makes the next sync look every block up, as after a failure (tests compare
    /// both ways).
    #[cfg(test)]
    pub(crate) fn forget_checkpoint(&mut self) {
        self.consistent = false;
    }

    /// The kernel now holds this sync's blocks: later syncs compare against them.
    fn checkpoint(&mut self) {
        self.tracker.checkpoint();
        self.consistent = true;
    }

    /// Deletes conntrack entries of UDP endpoints that went away (the rules no longer
    /// reach them, so this runs after the apply). Failures are logged, not fatal.
    fn clear_stale_udp(&mut self, now: UdpPorts) -> usize {
        let filters = match &self.udp {
            Some(old) => conntrack::stale_filters(old, &now),
            None => Vec::new(),
        };
        self.udp = Some(now);
        for args in &filters {
            if let Err(error) = self.applier.conntrack(args) {
                warn!(%error, "failed to delete stale UDP conntrack entries");
            }
        }
        filters.len()
    }

    /// Our per-service chains in the kernel: tracked, or listed once. Taken out of
    /// `self` for the sync; put back only when the sync succeeds.
    fn kernel_chains(&mut self) -> Result<HashSet<String>, SyncError> {
        if let Some(known) = self.kernel_chains.take() {
            return Ok(known);
        }
        let listed: HashSet<String> = self
            .applier
            .current_chains("nat")
            .map_err(|e| SyncError::ListChains(Box::new(e)))?
            .into_iter()
            .filter(|c| is_per_service_chain(c))
            .collect();
        Ok(listed)
    }

    /// Ensures the jump rules once, then again only after a failed apply.
    fn ensure_jumps(&mut self) -> Result<(), SyncError> {
        if !self.jumps_ensured {
            jumps::ensure_jump_rules(&self.applier)?;
            self.jumps_ensured = true;
        }
        Ok(())
    }
}

/// What a sync writing `blocks` (but those in `skip`) and deleting `deleted` stale
/// chains does, in one restore of two transactions.
fn stats(blocks: &[&ServicePortRules], skip: &[usize], deleted: usize) -> SyncStats {
    let total: usize = blocks.iter().map(|b| b.chains.len()).sum();
    let skipped: usize = skip.iter().map(|i| blocks[*i].chains.len()).sum();
    SyncStats {
        service_ports: blocks.len(),
        chains_written: total - skipped,
        chains_skipped: skipped,
        chains_deleted: deleted,
        restores: 1,
        commits: 2,
        rules: render::rule_count(blocks.iter().copied()),
        conntrack_deletes: 0,
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
