use std::collections::BTreeSet;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::*;
use crate::answer::{answer, Outcome};
use crate::build::build_records;
use crate::test_fixtures::*;

fn packet(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.edns = Some(e);
    }
    msg.to_vec().unwrap()
}

fn run(records: &Records, request: &[u8], tcp: bool) -> Option<Message> {
    let mut out = Vec::new();
    match respond(records, request, &mut out, tcp, false) {
        Action::Reply => Some(Message::from_vec(&out).expect("response parses")),
        Action::Drop => None,
        Action::Forward(_) => panic!("forwarded"),
    }
}

fn ask(name: &str, qtype: RecordType) -> Message {
    run(&sample_records(), &packet(name, qtype, None), false).expect("a reply")
}

fn rrs(records: &[hickory_proto::rr::Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name.to_lowercase(),
                r.ttl,
                r.record_type(),
                r.data
            )
        })
        .collect()
}

/// The wire path answers exactly like the reference `answer()` on hickory types.
#[test]
fn wire_path_matches_reference_answers() {
    let records = sample_records();
    let names = [
        "web.default.svc.cluster.local.",
        "WEB.Default.SVC.cluster.local.",
        "pg.db.svc.cluster.local.",
        "10-244-1-5.pg.db.svc.cluster.local.",
        "10-244-3-9.pg.db.svc.cluster.local.",
        "_http._tcp.web.default.svc.cluster.local.",
        "_db._tcp.pg.db.svc.cluster.local.",
        "ext.default.svc.cluster.local.",
        "default.svc.cluster.local.",
        "empty.svc.cluster.local.",
        "missing.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
        "dns-version.cluster.local.",
        "nope.default.svc.cluster.local.",
        "20.0.96.10.in-addr.arpa.",
        "5.1.244.10.in-addr.arpa.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::PTR,
        RecordType::TXT,
        RecordType::CNAME,
        RecordType::SOA,
        RecordType::NS,
        RecordType::MX,
    ];
    for name in names {
        for qtype in types {
            let reference = answer(
                &records,
                &HQuery::query(Name::from_ascii(name).unwrap(), qtype),
            );
            let wire = ask(name, qtype);
            let ctx = format!("{name} {qtype}");
            assert_eq!(
                wire.metadata.response_code,
                reference.response_code(),
                "{ctx}"
            );
            assert_eq!(
                wire.metadata.authoritative,
                reference.authoritative(),
                "{ctx}"
            );
            assert_eq!(rrs(&wire.answers), rrs(&reference.answers), "{ctx}");
            assert_eq!(rrs(&wire.authorities), rrs(&reference.authority), "{ctx}");
            assert_eq!(
                wire.queries[0].name().to_string(),
                name,
                "{ctx}: question as sent"
            );
            if let Some(first) = wire.answers.first() {
                assert_eq!(first.name.to_string(), name, "{ctx}: owner as asked (0x20)");
            }
        }
    }
}

#[test]
fn ptr_txt_namespaces_and_soa_on_negative_answers() {
    let ptr = ask("20.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        ptr.answers[0].data.to_string(),
        "web.default.svc.cluster.local."
    );
    let ep = ask("7.2.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        ep.answers[0].data.to_string(),
        "10-244-2-7.pg.db.svc.cluster.local."
    );
    let txt = ask("dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(txt.answers[0].data.to_string(), "1.1.0");
    for empty in ["empty.svc.cluster.local.", "svc.cluster.local."] {
        let nodata = ask(empty, RecordType::A);
        assert_eq!(
            nodata.metadata.response_code,
            ResponseCode::NoError,
            "{empty}"
        );
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nodata.authorities[0].ttl, 5);
    }
    let nx = ask("nope.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn unknown_reverse_and_external_names_are_forwarded() {
    let records = sample_records();
    for name in [
        "example.com.",
        "9.9.9.9.in-addr.arpa.",
        "cluster.local.example.",
    ] {
        let mut out = Vec::new();
        let request = packet(name, RecordType::A, None);
        assert!(
            matches!(
                respond(&records, &request, &mut out, false, true),
                Action::Forward(_)
            ),
            "{name}"
        );
    }
}

#[test]
fn servfail_until_first_sync() {
    let records = Records::empty(zone(), 1);
    let reply = run(
        &records,
        &packet("web.default.svc.cluster.local.", RecordType::A, None),
        false,
    )
    .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(!reply.metadata.authoritative);
}

fn big_headless() -> Records {
    let ips: Vec<String> = (1..=60).map(|i| format!("10.244.9.{i}")).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    build_records(
        &zone(),
        1,
        ["db"],
        &[headless_service("db", "big")],
        &[endpoints("db", "big", &ips, &[])],
    )
}

#[test]
fn udp_answers_over_the_client_size_are_truncated() {
    let records = big_headless();
    let name = "big.db.svc.cluster.local.";
    let small = run(&records, &packet(name, RecordType::A, None), false).unwrap();
    assert!(small.metadata.truncation);
    assert!(small.answers.is_empty());
    let edns = run(&records, &packet(name, RecordType::A, Some(4096)), false).unwrap();
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert!(edns.edns.is_some(), "EDNS answered with OPT");
    let tcp = run(&records, &packet(name, RecordType::A, None), true).unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 60);
}

#[test]
fn malformed_requests_get_formerr_or_are_dropped() {
    let records = sample_records();
    let good = packet("web.default.svc.cluster.local.", RecordType::A, None);
    let mut out = Vec::new();
    assert!(matches!(
        respond(&records, &good[..5], &mut out, false, false),
        Action::Drop
    ));
    let mut response = good.clone();
    response[2] |= 0x80;
    assert!(matches!(
        respond(&records, &response, &mut out, false, false),
        Action::Drop
    ));
    let code = |request: &[u8]| {
        let mut out = Vec::new();
        assert!(matches!(
            respond(&records, request, &mut out, false, false),
            Action::Reply
        ));
        assert_eq!(out[..2], request[..2]);
        out[3] & 0x0F
    };
    assert_eq!(
        code(&good[..good.len() - 3]),
        Rcode::FormErr as u8,
        "cut question"
    );
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(code(&two), Rcode::FormErr as u8, "two questions");
    let mut long_label = good.clone();
    long_label[12] = 64;
    assert_eq!(code(&long_label), Rcode::FormErr as u8, "label > 63");
    let mut status = good.clone();
    status[2] = 2 << 3;
    assert_eq!(code(&status), Rcode::NotImp as u8, "opcode STATUS");
    let mut badvers = packet("web.default.svc.cluster.local.", RecordType::A, Some(1232));
    let opt_version = badvers.len() - 5;
    badvers[opt_version] = 1;
    let reply = run(&records, &badvers, false).unwrap();
    assert_eq!(
        u16::from(reply.metadata.response_code),
        16,
        "BADVERS (shares 16 with BADSIG)"
    );
}

/// Tiny deterministic PRNG (xorshift64*) for the mutation fuzz.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Fuzz over the request path: mutated and random packets never panic, and every
/// reply is a response with the request's id that hickory can parse.
#[test]
fn mutated_and_random_packets_never_panic() {
    let records = big_headless();
    let seeds = [
        packet("big.db.svc.cluster.local.", RecordType::A, Some(1232)),
        packet("x.db.svc.cluster.local.", RecordType::AAAA, None),
        packet("example.com.", RecordType::MX, Some(512)),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    for round in 0..50_000 {
        let mut p = if round % 10 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..1 + rng.below(4) {
            if p.is_empty() {
                break;
            }
            match rng.below(3) {
                0 => {
                    let i = rng.below(p.len());
                    p[i] = rng.next() as u8;
                }
                1 => p.truncate(rng.below(p.len() + 1)),
                _ => {
                    let i = rng.below(p.len() + 1);
                    p.insert(i, rng.next() as u8);
                }
            }
        }
        for tcp in [false, true] {
            if let Action::Reply = respond(&records, &p, &mut out, tcp, true) {
                assert!(out.len() >= HEADER_LEN);
                assert_eq!(out[..2], p[..2]);
                assert!(out[2] & 0x80 != 0, "QR set");
                assert!(
                    tcp || out.len()
                        <= CLASSIC_UDP_SIZE.max(parse(&p).map_or(0, |q| q.udp_limit()))
                );
                Message::from_vec(&out).expect("reply parses");
            }
        }
    }
}

#[test]
fn outcome_enum_still_names_cases() {
    assert_ne!(Outcome::NoData, Outcome::NxDomain);
}
