//! Services and Endpoints → the cluster zone, following the Kubernetes DNS
//! specification (schema 1.1.0):
//!
//! - ClusterIP Service: `<svc>.<ns>.svc.<zone>` A/AAAA = its clusterIPs, and
//!   `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for each named port.
//! - Headless Service (`clusterIP: None`): one A/AAAA per ready endpoint address at
//!   `<svc>.<ns>.svc.<zone>`, `<hostname>.<svc>.<ns>.svc.<zone>` per address (the
//!   endpoint's hostname, or its IP with dashes like CoreDNS), SRV per named port
//!   targeting those hostnames.
//! - ExternalName Service: a CNAME to `spec.externalName`.
//! - PTR: every ClusterIP → `<svc>.<ns>.svc.<zone>`, every published headless
//!   endpoint address → `<hostname>.<svc>.<ns>.svc.<zone>` (under `in-addr.arpa` /
//!   `ip6.arpa`).
//! - Every Namespace: `<ns>.svc.<zone>` exists (NODATA), even without Services.
//!
//! A pure function: no IO, unit-tested.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{CNAME, SRV};
use hickory_proto::rr::{Name, RData};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints, Service, ServicePort};

use crate::records::{Records, RecordsBuilder, Zone};

/// SRV priority and weight of every record (one target per name, as in the spec's examples).
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 100;

/// Builds the zone snapshot from every Namespace (by name), Service and Endpoints
/// object of the cluster. `serial` becomes the SOA serial (bump it whenever the
/// inputs change).
pub fn build_records<'a>(
    zone: &Zone,
    serial: u32,
    namespaces: impl IntoIterator<Item = &'a str>,
    services: impl IntoIterator<Item = &'a Service>,
    endpoints: impl IntoIterator<Item = &'a Endpoints>,
) -> Records {
    let endpoints_by_name: HashMap<(&str, &str), &Endpoints> = endpoints
        .into_iter()
        .filter_map(|ep| {
            Some((
                (
                    ep.metadata.namespace.as_deref()?,
                    ep.metadata.name.as_deref()?,
                ),
                ep,
            ))
        })
        .collect();
    let mut builder = RecordsBuilder::new(zone.clone(), serial);
    for ns in namespaces {
        builder.add_namespace(ns);
    }
    for svc in services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        add_service(
            &mut builder,
            ns,
            name,
            svc,
            endpoints_by_name.get(&(ns, name)).copied(),
        );
    }
    builder.finish()
}

fn add_service(
    b: &mut RecordsBuilder,
    ns: &str,
    name: &str,
    svc: &Service,
    eps: Option<&Endpoints>,
) {
    let Some(spec) = svc.spec.as_ref() else {
        return;
    };
    let Some(base) = b.zone().name(&format!("{name}.{ns}.svc")) else {
        tracing::warn!(service = %format!("{ns}/{name}"), "service name is not a DNS name, skipped");
        return;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        add_external_name(b, &base, spec.external_name.as_deref());
        return;
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        if let Some(eps) = eps {
            add_headless(b, &base, eps, publish_not_ready);
        }
        return;
    }
    add_cluster_ip(
        b,
        &base,
        cluster_ips(spec),
        spec.ports.as_deref().unwrap_or_default(),
    );
}

/// The Service's clusterIPs (dual stack) or its single clusterIP, parsed.
fn cluster_ips(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Vec<IpAddr> {
    let from_list = spec.cluster_ips.iter().flatten();
    let single = spec.cluster_ip.iter();
    let mut ips: Vec<IpAddr> = from_list
        .chain(single)
        .filter_map(|s| s.parse().ok())
        .collect();
    ips.dedup();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    ips
}

fn add_cluster_ip(b: &mut RecordsBuilder, base: &Name, ips: Vec<IpAddr>, ports: &[ServicePort]) {
    if ips.is_empty() {
        return;
    }
    for ip in ips {
        b.add(base, address_rdata(ip));
        b.add_ptr(ip, base);
    }
    for port in ports {
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        add_srv(
            b,
            base,
            port.name.as_deref(),
            port.protocol.as_deref(),
            number,
            base,
        );
    }
}

fn add_headless(b: &mut RecordsBuilder, base: &Name, eps: &Endpoints, publish_not_ready: bool) {
    for subset in eps.subsets.iter().flatten() {
        let ready = subset.addresses.iter().flatten();
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .filter(|_| publish_not_ready);
        let ports = subset.ports.as_deref().unwrap_or_default();
        for address in ready.chain(not_ready) {
            add_endpoint_address(b, base, address, ports);
        }
    }
}

fn add_endpoint_address(
    b: &mut RecordsBuilder,
    base: &Name,
    address: &EndpointAddress,
    ports: &[EndpointPort],
) {
    let Ok(ip) = address.ip.parse::<IpAddr>() else {
        tracing::warn!(ip = %address.ip, service = %base, "endpoint address is not an IP, skipped");
        return;
    };
    b.add(base, address_rdata(ip));
    let label = endpoint_label(address, ip);
    let Some(host) = Name::from_ascii(&label)
        .ok()
        .and_then(|l| l.append_domain(base).ok())
    else {
        return;
    };
    b.add(&host, address_rdata(ip));
    b.add_ptr(ip, &host);
    for port in ports {
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        add_srv(
            b,
            base,
            port.name.as_deref(),
            port.protocol.as_deref(),
            number,
            &host,
        );
    }
}

/// The endpoint's DNS label: its hostname, or its IP with dashes (`10-244-1-5`) like CoreDNS.
pub fn endpoint_label(address: &EndpointAddress, ip: IpAddr) -> String {
    match address.hostname.as_deref() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => ip.to_string().replace(['.', ':'], "-"),
    }
}

/// `_<port>._<proto>.<base>` SRV → `target`, for named ports only.
fn add_srv(
    b: &mut RecordsBuilder,
    base: &Name,
    port_name: Option<&str>,
    protocol: Option<&str>,
    port: u16,
    target: &Name,
) {
    let Some(port_name) = port_name.filter(|n| !n.is_empty()) else {
        return;
    };
    let proto = protocol.unwrap_or("TCP").to_ascii_lowercase();
    let Some(owner) = Name::from_ascii(format!("_{port_name}._{proto}"))
        .ok()
        .and_then(|n| n.append_domain(base).ok())
    else {
        return;
    };
    b.add(
        &owner,
        RData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, port, target.clone())),
    );
}

fn add_external_name(b: &mut RecordsBuilder, base: &Name, external: Option<&str>) {
    let Some(external) = external.filter(|e| !e.is_empty()) else {
        return;
    };
    let fqdn = format!("{}.", external.trim_end_matches('.'));
    match Name::from_ascii(&fqdn) {
        Ok(target) => b.add(base, RData::CNAME(CNAME(target))),
        Err(e) => {
            tracing::warn!(service = %base, external, error = %e, "externalName is not a DNS name")
        }
    }
}

fn address_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(v4.into()),
        IpAddr::V6(v6) => RData::AAAA(v6.into()),
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
