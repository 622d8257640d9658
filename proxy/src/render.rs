//! Rendering of kube-proxy's iptables layout (Service NAT) as pure functions:
//! each Service port becomes a `ServicePortRules` block (its `KUBE-SERVICES` entries
//! and its own `KUBE-SVC-`/`KUBE-SEP-` chains, see [`service`]) so a sync can rewrite
//! only the blocks that changed; [`RestoreInput`] assembles blocks with the
//! top-level chains into `iptables-restore` input for the filter and nat tables
//! (see [`restore`]).

mod restore;
mod service;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::model::Snapshot;

pub use restore::{render_chain_batch, render_stale_deletion, RestoreInput};
pub use service::{probability, render_service_port};

/// The shared nat chain every ClusterIP jump lives in.
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// NodePort dispatch chain: one jump per NodePort to its `KUBE-EXT-` chain.
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// filter chain for NodePorts without (local) endpoints, jumped to from INPUT and
/// FORWARD.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// POSTROUTING's chain that masquerades marked traffic.
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// Chain that marks a packet for SNAT.
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// The fwmark bit kube-proxy uses for "masquerade this".
pub const MASQ_MARK: &str = "0x4000";

/// Settings that shape the rules, not the Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderConfig {
    /// Pod CIDR of the cluster: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: String,
    /// This node's name (`--hostname-override`): endpoints with this `nodeName` are
    /// local (for `externalTrafficPolicy: Local`).
    pub node_name: Option<String>,
}

/// One chain and the rules (`-A ...` lines) it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Chain name, e.g. `KUBE-SVC-XPGD46QRK7WJZT7O`.
    pub name: String,
    /// Complete `-A <name> ...` lines.
    pub rules: Vec<String>,
}

/// Everything one Service port contributes to the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortRules {
    /// Lines appended to nat `KUBE-SERVICES`.
    pub nat_services: Vec<String>,
    /// Lines appended to filter `KUBE-SERVICES` (REJECT when there are no endpoints).
    pub filter_services: Vec<String>,
    /// Lines appended to nat `KUBE-NODEPORTS`.
    pub nat_nodeports: Vec<String>,
    /// Lines appended to filter `KUBE-EXTERNAL-SERVICES` (NodePorts without
    /// endpoints, or without local ones under `externalTrafficPolicy: Local`).
    pub filter_external: Vec<String>,
    /// The port's own nat chains: `KUBE-SVC-` then one `KUBE-SEP-` per endpoint.
    pub chains: Vec<Chain>,
}

impl ServicePortRules {
    /// A stable digest of the port's own chains: equal digests mean the chains need
    /// not be rewritten.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.chains.hash(&mut h);
        h.finish()
    }

    /// Names of the port's own chains, in order (`KUBE-SVC-` first).
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.name.as_str())
    }
}

/// `-m comment --comment "<text>"`.
fn comment(text: &str) -> String {
    format!("-m comment --comment \"{text}\"")
}

/// Renders every proxied port of a snapshot.
pub fn render_blocks(snapshot: &Snapshot, cfg: &RenderConfig) -> Vec<ServicePortRules> {
    snapshot
        .service_ports_on(cfg.node_name.as_deref())
        .iter()
        .map(|p| render_service_port(p, cfg))
        .collect()
}

/// Number of rules (`-A` lines) of the whole desired ruleset, both tables.
pub fn rule_count<'a>(blocks: impl IntoIterator<Item = &'a ServicePortRules>) -> usize {
    let base: usize = restore::base_nat_chains().iter().map(|c| c.rules.len()).sum();
    let own: usize = blocks
        .into_iter()
        .map(|b| {
            b.nat_services.len()
                + b.filter_services.len()
                + b.nat_nodeports.len()
                + b.filter_external.len()
                + b.chains.iter().map(|c| c.rules.len()).sum::<usize>()
        })
        .sum();
    base + own + 1
}

/// The whole ruleset for a snapshot as `iptables-restore` input, nothing skipped and
/// nothing deleted: the pure `Snapshot → String` view of the proxier.
pub fn render(snapshot: &Snapshot, cfg: &RenderConfig) -> String {
    RestoreInput::new(&render_blocks(snapshot, cfg)).render()
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
