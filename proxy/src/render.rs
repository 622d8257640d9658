//! Rendering of kube-proxy's iptables layout (Service NAT) as pure functions:
//! each Service port becomes a `ServicePortRules` block (its `KUBE-SERVICES` entries
//! and its own `KUBE-SVC-`/`KUBE-SEP-` chains) so a sync can rewrite only the blocks
//! that changed; `RestoreInput` assembles blocks into `iptables-restore` input.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::model::{ServicePortInfo, Snapshot};
use crate::names::{endpoint_chain, external_chain, local_chain, service_chain};

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

    /// Key identifying the block across syncs: the name of its first chain, or of the
    /// `KUBE-SVC-` chain it would have.
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.name.as_str())
    }
}

fn comment(text: &str) -> String {
    format!("-m comment --comment \"{text}\"")
}

/// `-d <ip>/32 -p <proto> -m comment --comment "<spn> <what>" -m <proto> --dport <port>`
fn cluster_ip_match(info: &ServicePortInfo, what: &str) -> String {
    let p = info.protocol.as_str();
    format!(
        "-d {}/32 -p {p} {} -m {p} --dport {}",
        info.cluster_ip,
        comment(&format!("{} {what}", info.name)),
        info.port
    )
}

/// kube-proxy's probability for endpoint `i` of `n`: 1/(n-i), printed `%0.10f`.
pub fn probability(n: usize, i: usize) -> String {
    format!("{:.10}", 1.0 / (n - i) as f64)
}

/// `-p <proto> -m comment --comment "<spn> <what>" -m addrtype --dst-type LOCAL -m <proto> --dport <nodePort>`
fn node_port_match(info: &ServicePortInfo, node_port: u16, what: &str) -> String {
    let p = info.protocol.as_str();
    format!(
        "-p {p} {} -m addrtype --dst-type LOCAL -m {p} --dport {node_port}",
        comment(&format!("{} {what}", info.name))
    )
}

/// Renders the block of one Service port.
pub fn render_service_port(info: &ServicePortInfo, cfg: &RenderConfig) -> ServicePortRules {
    let mut out = ServicePortRules {
        nat_services: vec![],
        filter_services: vec![],
        nat_nodeports: vec![],
        filter_external: vec![],
        chains: vec![],
    };
    if info.endpoints.is_empty() {
        out.filter_services.push(format!(
            "-A {KUBE_SERVICES} {} -j REJECT --reject-with icmp-port-unreachable",
            cluster_ip_match(info, "has no endpoints")
        ));
        if let Some(np) = info.node_port {
            out.filter_external.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} {} -j REJECT --reject-with icmp-port-unreachable",
                node_port_match(info, np, "has no endpoints")
            ));
        }
        return out;
    }
    let svc = service_chain(&info.name, info.protocol);
    out.nat_services.push(format!(
        "-A {KUBE_SERVICES} {} -j {svc}",
        cluster_ip_match(info, "cluster IP")
    ));
    let masq = format!(
        "-A {svc} ! -s {} {} -j {KUBE_MARK_MASQ}",
        cfg.cluster_cidr,
        cluster_ip_match(info, "cluster IP")
    );
    out.chains.push(Chain {
        name: svc.clone(),
        rules: std::iter::once(masq)
            .chain(endpoint_jumps(info, &svc, &info.endpoints))
            .collect(),
    });
    if let Some(np) = info.node_port {
        render_node_port(info, np, cfg, &svc, &mut out);
    }
    out.chains
        .extend(info.endpoints.iter().map(|ep| sep_chain(info, *ep)));
    out
}

/// `KUBE-NODEPORTS` → `KUBE-EXT-` (→ `KUBE-SVL-` under `externalTrafficPolicy: Local`).
fn render_node_port(
    info: &ServicePortInfo,
    np: u16,
    cfg: &RenderConfig,
    svc: &str,
    out: &mut ServicePortRules,
) {
    let ext = external_chain(&info.name, info.protocol);
    let p = info.protocol.as_str();
    out.nat_nodeports.push(format!(
        "-A {KUBE_NODEPORTS} -p {p} {} -m {p} --dport {np} -j {ext}",
        comment(&info.name.to_string())
    ));
    let spn = &info.name;
    let mut rules = Vec::new();
    if !info.external_local {
        rules.push(format!(
            "-A {ext} {} -j {KUBE_MARK_MASQ}",
            comment(&format!(
                "masquerade traffic for {spn} external destinations"
            ))
        ));
        rules.push(format!("-A {ext} -j {svc}"));
    } else {
        rules.push(format!(
            "-A {ext} -s {} {} -j {svc}",
            cfg.cluster_cidr,
            comment(&format!("pod traffic for {spn} external destinations"))
        ));
        rules.push(format!(
            "-A {ext} {} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
            comment(&format!(
                "masquerade LOCAL traffic for {spn} external destinations"
            ))
        ));
        rules.push(format!(
            "-A {ext} {} -m addrtype --src-type LOCAL -j {svc}",
            comment(&format!(
                "route LOCAL traffic for {spn} external destinations"
            ))
        ));
        if info.local_endpoints.is_empty() {
            out.filter_external.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} {} -j DROP",
                node_port_match(info, np, "has no local endpoints")
            ));
        } else {
            let svl = local_chain(&info.name, info.protocol);
            rules.push(format!("-A {ext} -j {svl}"));
            out.chains.push(Chain {
                rules: endpoint_jumps(info, &svl, &info.local_endpoints).collect(),
                name: svl,
            });
        }
    }
    out.chains.push(Chain { name: ext, rules });
}

/// The rules of a SVC/SVL chain choosing among `eps`: ClientIP affinity checks
/// first (`-m recent --rcheck`), then `statistic` 1/(n−i) for all but the last.
fn endpoint_jumps<'a>(
    info: &'a ServicePortInfo,
    chain: &'a str,
    eps: &'a [std::net::SocketAddrV4],
) -> impl Iterator<Item = String> + 'a {
    let n = eps.len();
    let sticky = info.affinity_seconds.into_iter().flat_map(move |secs| {
        eps.iter().map(move |ep| {
            let sep = endpoint_chain(&info.name, info.protocol, *ep);
            let c = comment(&format!("{} -> {ep}", info.name));
            format!(
                "-A {chain} {c} -m recent --rcheck --seconds {secs} --reap --name {sep} --mask 255.255.255.255 --rsource -j {sep}"
            )
        })
    });
    let spread = eps.iter().enumerate().map(move |(i, ep)| {
        let sep = endpoint_chain(&info.name, info.protocol, *ep);
        let c = comment(&format!("{} -> {ep}", info.name));
        if i + 1 < n {
            let p = probability(n, i);
            format!("-A {chain} {c} -m statistic --mode random --probability {p} -j {sep}")
        } else {
            format!("-A {chain} {c} -j {sep}")
        }
    });
    sticky.chain(spread)
}

fn sep_chain(info: &ServicePortInfo, ep: std::net::SocketAddrV4) -> Chain {
    let sep = endpoint_chain(&info.name, info.protocol, ep);
    let c = comment(&info.name.to_string());
    let p = info.protocol.as_str();
    let recent = if info.affinity_seconds.is_some() {
        format!(" -m recent --set --name {sep} --mask 255.255.255.255 --rsource")
    } else {
        String::new()
    };
    let rules = vec![
        format!("-A {sep} -s {}/32 {c} -j {KUBE_MARK_MASQ}", ep.ip()),
        format!("-A {sep} -p {p} {c}{recent} -m {p} -j DNAT --to-destination {ep}"),
    ];
    Chain { name: sep, rules }
}

/// The fixed nat chains with their fixed rules (KUBE-SERVICES' rules are per sync).
fn base_nat_chains() -> Vec<Chain> {
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

/// Renders every proxied port of a snapshot.
pub fn render_blocks(snapshot: &Snapshot, cfg: &RenderConfig) -> Vec<ServicePortRules> {
    snapshot
        .service_ports_on(cfg.node_name.as_deref())
        .iter()
        .map(|p| render_service_port(p, cfg))
        .collect()
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
        Self {
            blocks: blocks.iter().collect(),
            skipped: vec![false; blocks.len()],
            stale: vec![],
        }
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
        let mut out = String::new();
        self.render_filter(&mut out);
        self.render_nat(&mut out);
        out
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
        for b in &self.blocks {
            push_lines(out, &b.nat_services);
        }
        out.push_str(&nodeports_rule());
        out.push('\n');
        for b in &self.blocks {
            push_lines(out, &b.nat_nodeports);
        }
        base.iter().for_each(|c| push_lines(out, &c.rules));
        self.written_chains()
            .for_each(|c| push_lines(out, &c.rules));
        for c in &self.stale {
            out.push_str(&format!("-X {c}\n"));
        }
        out.push_str("COMMIT\n");
    }
}

/// A nat-only `--noflush` input writing just the own chains of `blocks` (plus
/// `KUBE-MARK-MASQ`, which SEP chains jump to): one batch of a split sync. The
/// chains it writes are not referenced by `KUBE-SERVICES` until the final batch, or
/// replace, atomically, chains that already are.
pub fn render_chain_batch(blocks: &[&ServicePortRules]) -> String {
    let mark = &base_nat_chains()[0];
    let chains = || blocks.iter().flat_map(|b| &b.chains);
    let mut out = String::from("*nat\n");
    push_decl(&mut out, &mark.name);
    chains().for_each(|c| push_decl(&mut out, &c.name));
    push_lines(&mut out, &mark.rules);
    chains().for_each(|c| push_lines(&mut out, &c.rules));
    out.push_str("COMMIT\n");
    out
}

/// Number of rules (`-A` lines) of the whole desired ruleset, both tables.
pub fn rule_count<'a>(blocks: impl IntoIterator<Item = &'a ServicePortRules>) -> usize {
    let base: usize = base_nat_chains().iter().map(|c| c.rules.len()).sum();
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

fn push_decl(out: &mut String, chain: &str) {
    out.push_str(&format!(":{chain} - [0:0]\n"));
}

fn push_lines(out: &mut String, lines: &[String]) {
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
}

/// The whole ruleset for a snapshot as `iptables-restore` input, nothing skipped and
/// nothing deleted: the pure `Snapshot → String` view of the proxier.
pub fn render(snapshot: &Snapshot, cfg: &RenderConfig) -> String {
    RestoreInput::new(&render_blocks(snapshot, cfg)).render()
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
