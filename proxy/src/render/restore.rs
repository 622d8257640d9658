//! The `iptables-restore --noflush` text of a sync: the filter table (kube-proxy's
//! REJECT/DROP chains `KUBE-SERVICES` and `KUBE-EXTERNAL-SERVICES`) and the nat table
//! (the top-level chains `KUBE-SERVICES`, `KUBE-NODEPORTS`, `KUBE-MARK-MASQ`,
//! `KUBE-POSTROUTING`, then the per-service chains that changed, then stale chains
//! flushed and deleted), or a nat-only batch of per-service chains, or a nat-only
//! transaction deleting stale chains.
//!
//! Line order matters for speed on iptables-nft 1.8.9: its `--noflush` restore
//! collects the names of the chains each transaction touches (every `:X`, every
//! `-A X`, every `-j X` to a chain) in a sorted linked list walked from its
//! smallest name, so one name costs as many string compares as there are smaller
//! names collected before it. Jumps are therefore written in descending order of
//! their target: each new `KUBE-SVC-` name is then the smallest so far (at 10k
//! Services the `KUBE-SERVICES` rewrite took 1.7 s in block order, 0.35 s sorted).

use super::{
    comment, Chain, ServicePortRules, KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ, KUBE_NODEPORTS,
    KUBE_POSTROUTING, KUBE_SERVICES, MASQ_MARK,
};
use crate::names::EXT_CHAIN_PREFIX;

/// The fixed nat chains with their fixed rules (KUBE-SERVICES' rules are per sync).
pub(super) fn base_nat_chains() -> Vec<Chain> {
    let post = KUBE_POSTROUTING;
    vec![
        Chain {
            name: KUBE_MARK_MASQ.into(),
            rules: vec![format!("-A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}")],
        },
        Chain {
            name: post.into(),
            rules: vec![
                format!("-A {post} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
                format!("-A {post} -j MARK --xor-mark {MASQ_MARK}"),
                format!(
                    "-A {post} {} -j MASQUERADE --random-fully",
                    comment("kubernetes service traffic requiring SNAT")
                ),
            ],
        },
        Chain {
            name: KUBE_NODEPORTS.into(),
            rules: vec![],
        },
    ]
}

fn nodeports_rule() -> String {
    format!(
        "-A {KUBE_SERVICES} {} -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}",
        comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    )
}

/// Builds one `iptables-restore --noflush` input from rendered blocks.
#[derive(Debug, Default)]
pub struct RestoreInput<'a> {
    blocks: Vec<&'a ServicePortRules>,
    skipped: Vec<bool>,
    stale: Vec<String>,
}

impl<'a> RestoreInput<'a> {
    /// Starts from borrowed blocks of all proxied Service ports.
    pub fn from_refs(blocks: Vec<&'a ServicePortRules>) -> Self {
        Self {
            skipped: vec![false; blocks.len()],
            blocks,
            stale: vec![],
        }
    }

    /// Starts from the blocks of all proxied Service ports.
    pub fn new(blocks: &'a [ServicePortRules]) -> Self {
        Self::from_refs(blocks.iter().collect())
    }

    /// Leaves out the own chains of block `i` (they are unchanged in the kernel);
    /// its `KUBE-SERVICES` entries are still written.
    pub fn skip_chains_of(mut self, i: usize) -> Self {
        if let Some(s) = self.skipped.get_mut(i) {
            *s = true;
        }
        self
    }

    /// Chains to flush and delete (`-X`): per-service chains no block wants any more.
    pub fn delete_chains(mut self, stale: Vec<String>) -> Self {
        self.stale = stale;
        self
    }

    /// The `*filter ... COMMIT *nat ... COMMIT` text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.size_hint());
        self.render_filter(&mut out);
        self.render_nat(&mut out);
        out
    }

    /// Roughly the bytes `render` writes, so the text is built without regrowing.
    fn size_hint(&self) -> usize {
        let lines = |v: &[String]| v.iter().map(|l| l.len() + 1).sum::<usize>();
        let shared: usize = self
            .blocks
            .iter()
            .map(|b| {
                lines(&b.nat_services)
                    + lines(&b.nat_nodeports)
                    + lines(&b.filter_services)
                    + lines(&b.filter_external)
            })
            .sum();
        let own: usize = self
            .written_chains()
            .map(|c| c.name.len() + 10 + lines(&c.rules))
            .sum();
        shared + own + self.stale.len() * 64 + 1024
    }

    fn render_filter(&self, out: &mut String) {
        out.push_str("*filter\n");
        push_decl(out, KUBE_SERVICES);
        push_decl(out, KUBE_EXTERNAL_SERVICES);
        for b in &self.blocks {
            push_lines(out, &b.filter_services);
        }
        for b in &self.blocks {
            push_lines(out, &b.filter_external);
        }
        out.push_str("COMMIT\n");
    }

    fn written_chains(&self) -> impl Iterator<Item = &Chain> {
        self.blocks
            .iter()
            .zip(&self.skipped)
            .filter(|(_, s)| !**s)
            .flat_map(|(b, _)| &b.chains)
    }

    fn render_nat(&self, out: &mut String) {
        let base = base_nat_chains();
        out.push_str("*nat\n");
        push_decl(out, KUBE_SERVICES);
        base.iter().for_each(|c| push_decl(out, &c.name));
        self.written_chains().for_each(|c| push_decl(out, &c.name));
        self.stale.iter().for_each(|c| push_decl(out, c));
        push_by_target_descending(out, self.blocks.iter().flat_map(|b| &b.nat_services));
        out.push_str(&nodeports_rule());
        out.push('\n');
        push_by_target_descending(out, self.blocks.iter().flat_map(|b| &b.nat_nodeports));
        base.iter().for_each(|c| push_lines(out, &c.rules));
        self.written_chains()
            .for_each(|c| push_lines(out, &c.rules));
        for c in &self.stale {
            out.push_str("-X ");
            out.push_str(c);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
}

/// Appends to `out` a nat-only `--noflush` section (one transaction) writing just
/// the own chains of `blocks` (plus `KUBE-MARK-MASQ`, which SEP chains jump to): one
/// section of a split sync. The chains it writes are not referenced by
/// `KUBE-SERVICES` until the final section, or replace, atomically, chains that
/// already are.
pub fn render_chain_batch(blocks: &[&ServicePortRules], out: &mut String) {
    let mark = &base_nat_chains()[0];
    let chains = || blocks.iter().flat_map(|b| &b.chains);
    out.push_str("*nat\n");
    push_decl(out, &mark.name);
    chains().for_each(|c| push_decl(out, &c.name));
    push_lines(out, &mark.rules);
    chains().for_each(|c| push_lines(out, &c.rules));
    out.push_str("COMMIT\n");
}

/// Appends to `out` a nat-only transaction that flushes and deletes the `stale`
/// per-service chains (which nothing but other stale chains jumps to any more),
/// each chain's flush right before its delete: `KUBE-EXT-` chains first (they jump
/// to `KUBE-SVC-`/`KUBE-SVL-`), then the rest in descending order, so every chain
/// is deleted after the chains that jump to it and each name is the smallest the
/// transaction has collected so far (see the module docs). Flushing everything
/// first and deleting after, at 40k stale chains, takes minutes on nft.
pub fn render_stale_deletion(stale: &[String], out: &mut String) {
    let mut order: Vec<&String> = stale.iter().collect();
    order.sort_unstable_by(|a, b| {
        let ext = |c: &str| c.starts_with(EXT_CHAIN_PREFIX);
        ext(b).cmp(&ext(a)).then_with(|| b.cmp(a))
    });
    out.push_str("*nat\n");
    for c in order {
        push_decl(out, c);
        out.push_str("-X ");
        out.push_str(c);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
}

/// The chain or target a rule jumps to (`-j X`), or "" without one.
fn jump_target(rule: &str) -> &str {
    rule.rsplit_once(" -j ")
        .map(|(_, t)| t.split(' ').next().unwrap_or(""))
        .unwrap_or("")
}

/// Appends `rules` in descending order of their jump target (see the module docs);
/// rules with the same target keep their order.
fn push_by_target_descending<'a>(out: &mut String, rules: impl Iterator<Item = &'a String>) {
    let mut rules: Vec<(&str, &String)> = rules.map(|l| (jump_target(l), l)).collect();
    rules.sort_by(|a, b| b.0.cmp(a.0));
    for (_, l) in rules {
        out.push_str(l);
        out.push('\n');
    }
}

fn push_decl(out: &mut String, chain: &str) {
    out.push(':');
    out.push_str(chain);
    out.push_str(" - [0:0]\n");
}

fn push_lines(out: &mut String, lines: &[String]) {
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
}
