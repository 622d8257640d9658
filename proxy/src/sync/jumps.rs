//! kube-proxy's `iptablesJumpChains`: the rules in the built-in chains
//! (`PREROUTING`, `OUTPUT`, `POSTROUTING`, `INPUT`, `FORWARD`) that send traffic into
//! kube-proxy's own chains. They live outside the chains a sync rewrites, so they
//! are ensured one by one (`iptables -C`, then `-I`) rather than restored.

use tracing::info;

use super::SyncError;
use crate::applier::{JumpRule, RulesetApplier};
use crate::render;

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
    let external = "kubernetes externally-visible service portals";
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
        rule(
            "filter",
            "INPUT",
            &new,
            external,
            render::KUBE_EXTERNAL_SERVICES,
        ),
        rule(
            "filter",
            "FORWARD",
            &new,
            external,
            render::KUBE_EXTERNAL_SERVICES,
        ),
    ]
}

/// Ensures every jump rule through `applier`, logging the ones it inserted.
pub(super) fn ensure_jump_rules<A: RulesetApplier>(applier: &A) -> Result<(), SyncError> {
    for rule in jump_rules() {
        let inserted = applier
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
    Ok(())
}
