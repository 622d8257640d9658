use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::{RData, RecordType};

use super::*;
use crate::test_fixtures::*;

fn ips(records: &Records, name: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = records
        .lookup(&lower(name))
        .unwrap_or_default()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn cluster_ip_service_gets_one_a_record() {
    let r = sample_records();
    assert_eq!(
        ips(&r, "web.default.svc.cluster.local."),
        vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20))]
    );
    let set = r.lookup(&lower("web.default.svc.cluster.local.")).unwrap();
    assert!(set.iter().all(|rec| rec.ttl == 5));
}

#[test]
fn cluster_ip_named_port_gets_srv() {
    let r = sample_records();
    let srv = r
        .lookup(&lower("_http._tcp.web.default.svc.cluster.local."))
        .unwrap();
    let RData::SRV(srv) = &srv[0].data else {
        panic!("not SRV")
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_string(), "web.default.svc.cluster.local.");
}

#[test]
fn headless_service_gets_one_a_per_ready_address() {
    let r = sample_records();
    let want: Vec<IpAddr> = vec!["10.244.1.5".parse().unwrap(), "10.244.2.7".parse().unwrap()];
    assert_eq!(ips(&r, "pg.db.svc.cluster.local."), want);
    assert_eq!(
        ips(&r, "10-244-1-5.pg.db.svc.cluster.local."),
        want[..1].to_vec()
    );
    assert!(r
        .lookup(&lower("10-244-3-9.pg.db.svc.cluster.local."))
        .is_none());
    let srv = r
        .lookup(&lower("_db._tcp.pg.db.svc.cluster.local."))
        .unwrap();
    assert_eq!(srv.len(), 2);
}

#[test]
fn headless_publish_not_ready_includes_not_ready() {
    let mut svc = headless_service("db", "pg");
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let eps = endpoints("db", "pg", &["10.244.1.5"], &["10.244.3.9"]);
    let r = build_records(&zone(), 1, ["default", "db"], [&svc], [&eps]);
    assert_eq!(ips(&r, "pg.db.svc.cluster.local.").len(), 2);
}

#[test]
fn headless_without_endpoints_has_no_records() {
    let svc = headless_service("db", "lonely");
    let r = build_records(&zone(), 1, ["default", "db"], [&svc], []);
    assert!(r.lookup(&lower("lonely.db.svc.cluster.local.")).is_none());
}

#[test]
fn endpoint_hostname_names_the_address() {
    let svc = headless_service("db", "pg");
    let mut eps = endpoints("db", "pg", &["10.244.1.5"], &[]);
    eps.subsets.as_mut().unwrap()[0].addresses.as_mut().unwrap()[0].hostname = Some("pg-0".into());
    let r = build_records(&zone(), 1, ["default", "db"], [&svc], [&eps]);
    assert_eq!(ips(&r, "pg-0.pg.db.svc.cluster.local.").len(), 1);
}

#[test]
fn external_name_gets_cname() {
    let r = sample_records();
    let set = r.lookup(&lower("ext.default.svc.cluster.local.")).unwrap();
    assert_eq!(set[0].record_type(), RecordType::CNAME);
    let RData::CNAME(c) = &set[0].data else {
        panic!("not CNAME")
    };
    assert_eq!(c.0.to_string(), "example.com.");
}

#[test]
fn dual_stack_service_gets_a_and_aaaa() {
    let mut svc = cluster_ip_service("default", "dual", "10.96.0.30");
    svc.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.30".into(), "fd00::30".into()]);
    let r = build_records(&zone(), 1, ["default", "db"], [&svc], []);
    assert_eq!(ips(&r, "dual.default.svc.cluster.local.").len(), 2);
}

#[test]
fn service_without_cluster_ip_is_skipped() {
    let mut svc = cluster_ip_service("default", "pending", "");
    svc.spec.as_mut().unwrap().cluster_ips = None;
    let r = build_records(&zone(), 1, ["default", "db"], [&svc], []);
    assert!(!r.exists(&lower("pending.default.svc.cluster.local.")));
}

#[test]
fn namespaces_with_services_exist_as_empty_non_terminals() {
    let r = sample_records();
    assert!(r.exists(&lower("default.svc.cluster.local.")));
    assert!(r.exists(&lower("db.svc.cluster.local.")));
    assert!(!r.exists(&lower("nope.svc.cluster.local.")));
}
