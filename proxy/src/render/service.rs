//! One Service port's rules (kube-proxy's per-service chains): its `KUBE-SERVICES`
//! and `KUBE-NODEPORTS` entries, its `KUBE-SVC-`/`KUBE-SVL-`/`KUBE-EXT-`/`KUBE-SEP-`
//! chains (with `statistic` spreading and ClientIP `recent` affinity), and the filter
//! REJECT/DROP rules of a port without (local) endpoints.

use std::net::SocketAddrV4;

use super::{
    comment, Chain, RenderConfig, ServicePortRules, KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ,
    KUBE_NODEPORTS, KUBE_SERVICES,
};
use crate::model::ServicePortInfo;
use crate::names::{endpoint_chain, external_chain, local_chain, service_chain};

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
    eps: &'a [SocketAddrV4],
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

/// A `KUBE-SEP-` chain: hairpin masquerade, then DNAT (recording affinity).
fn sep_chain(info: &ServicePortInfo, ep: SocketAddrV4) -> Chain {
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

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
