//! kube-proxy's `syncProxyRules`: render the desired Service NAT for a snapshot and
//! apply it with one `iptables-restore`. A partial sync rewrites only the chains of
//! Service ports whose rules changed since the last successful apply (kube-proxy's
//! `MinimizeIPTablesRestore`); a full sync rewrites everything. Stale `KUBE-SVC-`/
//! `KUBE-SEP-` chains found in the kernel are flushed and deleted in the same batch.

use std::collections::{BTreeSet, HashMap};

use tracing::{debug, info};

use crate::applier::{ApplyError, JumpRule, RulesetApplier};
use crate::model::Snapshot;
use crate::names::is_per_service_chain;
use crate::render::{self, RenderConfig, RestoreInput, ServicePortRules};

/// Failures of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Listing the nat chains failed.
    #[error("failed to list nat chains: {0}")]
    ListChains(#[source] Box<ApplyError>),
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
}

/// The jumps from built-in chains into kube-proxy's chains.
pub fn jump_rules() -> Vec<JumpRule> {
    let rule = |table, chain, pre: &[&str], comment: &str, target: &str| JumpRule {
        table,
        chain,
        args: pre
            .iter()
            .map(|s| s.to_string())
            .chain(["-m", "comment", "--comment", comment, "-j", target].map(String::from))
            .collect(),
    };
    let new = ["-m", "conntrack", "--ctstate", "NEW"];
    let portals = "kubernetes service portals";
    vec![
        rule("nat", "PREROUTING", &[], portals, render::KUBE_SERVICES),
        rule("nat", "OUTPUT", &[], portals, render::KUBE_SERVICES),
        rule(
            "nat",
            "POSTROUTING",
            &[],
            "kubernetes postrouting rules",
            render::KUBE_POSTROUTING,
        ),
        rule("filter", "OUTPUT", &new, portals, render::KUBE_SERVICES),
        rule("filter", "FORWARD", &new, portals, render::KUBE_SERVICES),
    ]
}

/// Keeps the kernel's Service NAT in step with snapshots.
#[derive(Debug)]
pub struct Syncer<A: RulesetApplier> {
    applier: A,
    cfg: RenderConfig,
    jumps_ensured: bool,
    /// Fingerprint of each block's chains as last applied, keyed by its KUBE-SVC chain.
    applied: HashMap<String, u64>,
}

impl<A: RulesetApplier> Syncer<A> {
    /// A syncer that has applied nothing yet (its first sync is full).
    pub fn new(applier: A, cfg: RenderConfig) -> Self {
        Self {
            applier,
            cfg,
            jumps_ensured: false,
            applied: HashMap::new(),
        }
    }

    /// The applier (tests inspect fakes through it).
    pub fn applier(&self) -> &A {
        &self.applier
    }

    /// Renders `snapshot` and applies it; `full` rewrites every chain.
    pub fn sync(&mut self, snapshot: &Snapshot, full: bool) -> Result<SyncStats, SyncError> {
        let blocks = render::render_blocks(snapshot, &self.cfg);
        let existing = self
            .applier
            .current_chains("nat")
            .map_err(|e| SyncError::ListChains(Box::new(e)))?;
        let stale = stale_chains(&blocks, &existing);
        let skip = self.unchanged_blocks(&blocks, &existing, full);
        let input = skip
            .iter()
            .fold(RestoreInput::new(&blocks), |ri, i| ri.skip_chains_of(*i))
            .delete_chains(stale.clone())
            .render();
        let stats = stats(&blocks, &skip, stale.len());
        debug!(?stats, full, "applying ruleset");
        if let Err(source) = self.applier.apply(&input) {
            self.applied.clear();
            return Err(SyncError::Apply {
                chains: input.lines().filter(|l| l.starts_with(':')).count(),
                source: Box::new(source),
            });
        }
        self.applied = blocks
            .iter()
            .filter_map(|b| Some((key(b)?, b.fingerprint())))
            .collect();
        self.ensure_jumps()?;
        Ok(stats)
    }

    fn unchanged_blocks(
        &self,
        blocks: &[ServicePortRules],
        existing: &BTreeSet<String>,
        full: bool,
    ) -> Vec<usize> {
        if full {
            return Vec::new();
        }
        let unchanged = |b: &ServicePortRules| {
            key(b).is_some_and(|k| self.applied.get(&k) == Some(&b.fingerprint()))
                && b.chain_names().all(|c| existing.contains(c))
        };
        blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| unchanged(b))
            .map(|(i, _)| i)
            .collect()
    }

    fn ensure_jumps(&mut self) -> Result<(), SyncError> {
        if self.jumps_ensured {
            return Ok(());
        }
        for rule in jump_rules() {
            let inserted = self
                .applier
                .ensure_rule(&rule)
                .map_err(|source| SyncError::Jump {
                    table: rule.table,
                    chain: rule.chain,
                    source: Box::new(source),
                })?;
            if inserted {
                info!(table = rule.table, chain = rule.chain, "inserted jump rule");
            }
        }
        self.jumps_ensured = true;
        Ok(())
    }
}

fn key(b: &ServicePortRules) -> Option<String> {
    b.chains.first().map(|c| c.name.clone())
}

/// Per-service chains in the kernel that no block wants.
fn stale_chains(blocks: &[ServicePortRules], existing: &BTreeSet<String>) -> Vec<String> {
    let wanted: BTreeSet<&str> = blocks.iter().flat_map(|b| b.chain_names()).collect();
    existing
        .iter()
        .filter(|c| is_per_service_chain(c) && !wanted.contains(c.as_str()))
        .cloned()
        .collect()
}

fn stats(blocks: &[ServicePortRules], skip: &[usize], deleted: usize) -> SyncStats {
    let total: usize = blocks.iter().map(|b| b.chains.len()).sum();
    let skipped: usize = skip.iter().map(|i| blocks[*i].chains.len()).sum();
    SyncStats {
        service_ports: blocks.len(),
        chains_written: total - skipped,
        chains_skipped: skipped,
        chains_deleted: deleted,
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
