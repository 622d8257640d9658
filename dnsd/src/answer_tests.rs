use std::net::Ipv4Addr;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;
use crate::test_fixtures::*;

fn ask(name: &str, qtype: RecordType) -> Answer {
    answer(
        &sample_records(),
        &Query::query(Name::from_ascii(name).unwrap(), qtype),
    )
}

fn a_records(answer: &Answer) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn assert_soa_authority(a: &Answer) {
    assert_eq!(a.authority.len(), 1);
    let RData::SOA(soa) = &a.authority[0].data else {
        panic!("authority is not SOA")
    };
    assert_eq!(soa.mname.to_string(), "ns.dns.cluster.local.");
    assert_eq!(soa.rname.to_string(), "hostmaster.cluster.local.");
    assert_eq!(a.authority[0].name.to_string(), "cluster.local.");
}

#[test]
fn cluster_ip_service_a() {
    let a = ask("web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.outcome, Outcome::Success);
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert!(a.authoritative());
    assert_eq!(a_records(&a), vec![Ipv4Addr::new(10, 96, 0, 20)]);
    assert_eq!(a.answers[0].ttl, 5);
    assert!(a.authority.is_empty());
}

#[test]
fn headless_service_multi_a() {
    let a = ask("pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(a.outcome, Outcome::Success);
    assert_eq!(
        a_records(&a),
        vec![Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 7)]
    );
}

#[test]
fn unknown_name_in_zone_is_nxdomain_with_soa() {
    let a = ask("nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.outcome, Outcome::NxDomain);
    assert_eq!(a.response_code(), ResponseCode::NXDomain);
    assert!(a.authoritative());
    assert!(a.answers.is_empty());
    assert_soa_authority(&a);
}

#[test]
fn other_type_of_existing_name_is_nodata_with_soa() {
    let a = ask("web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(a.outcome, Outcome::NoData);
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert!(a.authoritative());
    assert!(a.answers.is_empty());
    assert_soa_authority(&a);
}

#[test]
fn namespace_name_is_nodata() {
    let a = ask("default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.outcome, Outcome::NoData);
    assert_soa_authority(&a);
}

#[test]
fn names_are_case_insensitive_and_echo_the_question() {
    let a = ask("WeB.DeFault.SVC.Cluster.Local.", RecordType::A);
    assert_eq!(a_records(&a), vec![Ipv4Addr::new(10, 96, 0, 20)]);
    assert_eq!(
        a.answers[0].name.to_string(),
        "WeB.DeFault.SVC.Cluster.Local."
    );
}

#[test]
fn out_of_zone_is_refused() {
    let a = ask("example.com.", RecordType::A);
    assert_eq!(a.outcome, Outcome::OutOfZone);
    assert_eq!(a.response_code(), ResponseCode::Refused);
    assert!(!a.authoritative());
    assert!(a.answers.is_empty() && a.authority.is_empty());
}

#[test]
fn non_in_class_is_out_of_zone() {
    let mut q = Query::query(
        Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    );
    q.set_query_class(DNSClass::CH);
    assert_eq!(answer(&sample_records(), &q).outcome, Outcome::OutOfZone);
}

#[test]
fn apex_soa_and_ns() {
    let soa = ask("cluster.local.", RecordType::SOA);
    assert_eq!(soa.outcome, Outcome::Success);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    let ns = ask("cluster.local.", RecordType::NS);
    let RData::NS(target) = &ns.answers[0].data else {
        panic!("not NS")
    };
    assert_eq!(target.0.to_string(), "ns.dns.cluster.local.");
    assert_eq!(
        ask("cluster.local.", RecordType::A).outcome,
        Outcome::NoData
    );
}

#[test]
fn external_name_returns_cname_for_a() {
    let a = ask("ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.outcome, Outcome::Success);
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
}

#[test]
fn srv_for_named_port() {
    let a = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(a.outcome, Outcome::Success);
    assert_eq!(a.answers.len(), 1);
}

#[test]
fn any_returns_every_type() {
    let a = ask("cluster.local.", RecordType::ANY);
    assert_eq!(a.answers.len(), 2);
}
