use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;
use crate::wire::parse;

fn request(name: &str, id: u16) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(HQuery::query(
        Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    msg.to_vec().unwrap()
}

fn reply(name: &str, id: u16, ttl: Option<u32>, rcode: ResponseCode) -> Vec<u8> {
    let mut msg = Message::response(id, OpCode::Query);
    msg.metadata.response_code = rcode;
    let qname = Name::from_ascii(name).unwrap();
    msg.add_query(HQuery::query(qname.clone(), RecordType::A));
    match ttl {
        Some(ttl) => {
            msg.add_answer(Record::from_rdata(
                qname,
                ttl,
                RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
            ));
        }
        None => {
            let apex = Name::from_ascii("example.").unwrap();
            let soa = SOA::new(apex.clone(), apex.clone(), 1, 1, 1, 1, 60);
            msg.add_authority(Record::from_rdata(apex, 600, RData::SOA(soa)));
        }
    }
    msg.to_vec().unwrap()
}

#[test]
fn hit_patches_id_and_question_case() {
    let cache = Cache::new(10);
    let first = request("www.example.", 1);
    let q = parse(&first).unwrap();
    cache.insert(
        cache_key(&q),
        &reply("www.example.", 1, Some(120), ResponseCode::NoError),
    );
    let second = request("WWW.Example.", 2);
    let q2 = parse(&second).unwrap();
    let mut out = Vec::new();
    assert!(cache.answer(&q2, 512, &mut out));
    let msg = Message::from_vec(&out).unwrap();
    assert_eq!(msg.metadata.id, 2);
    assert_eq!(msg.queries[0].name().to_string(), "WWW.Example.");
    assert_eq!(msg.answers[0].ttl, 120);
}

#[test]
fn negative_answers_use_the_soa_minimum_and_servfail_is_not_cached() {
    let cache = Cache::new(10);
    let req = request("nx.example.", 1);
    let q = parse(&req).unwrap();
    assert_eq!(
        cacheable(&reply("nx.example.", 1, None, ResponseCode::NXDomain))
            .unwrap()
            .0,
        60
    );
    assert!(cacheable(&reply("nx.example.", 1, Some(5), ResponseCode::ServFail)).is_none());
    cache.insert(
        cache_key(&q),
        &reply("nx.example.", 1, Some(5), ResponseCode::ServFail),
    );
    assert!(cache.is_empty());
    cache.insert(
        cache_key(&q),
        &reply("nx.example.", 1, Some(0), ResponseCode::NoError),
    );
    assert!(cache.is_empty(), "TTL 0 is not cached");
}

#[test]
fn cache_is_bounded() {
    let cache = Cache::new(3);
    for i in 0..10 {
        let name = format!("n{i}.example.");
        let req = request(&name, 1);
        cache.insert(
            cache_key(&parse(&req).unwrap()),
            &reply(&name, 1, Some(60), ResponseCode::NoError),
        );
    }
    assert_eq!(cache.len(), 3);
}

#[test]
fn oversized_hit_is_truncated_for_udp() {
    let cache = Cache::new(10);
    let req = request("www.example.", 1);
    let q = parse(&req).unwrap();
    cache.insert(
        cache_key(&q),
        &reply("www.example.", 1, Some(60), ResponseCode::NoError),
    );
    let mut out = Vec::new();
    assert!(cache.answer(&q, 20, &mut out));
    let msg = Message::from_vec(&out).unwrap();
    assert!(msg.metadata.truncation);
    assert!(msg.answers.is_empty());
}

/// Fuzz over the cache with mutated upstream replies: never a panic, and a hit is
/// always a reply with the client's id.
#[test]
fn mutated_upstream_replies_never_panic() {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let req = request("www.example.", 7);
    let q = parse(&req).unwrap();
    let seeds = [
        reply("www.example.", 7, Some(60), ResponseCode::NoError),
        reply("www.example.", 7, None, ResponseCode::NXDomain),
    ];
    let mut out = Vec::new();
    for round in 0..20_000 {
        let mut r = seeds[round % 2].clone();
        for _ in 0..1 + next() % 4 {
            let i = usize::try_from(next() % r.len() as u64).unwrap();
            match next() % 3 {
                0 => r[i] = next() as u8,
                1 => r.truncate(i.max(1)),
                _ => r.insert(i, next() as u8),
            }
        }
        let cache = Cache::new(4);
        cache.insert(cache_key(&q), &r);
        if cache.answer(&q, 512, &mut out) {
            assert_eq!(out[..2], req[..2]);
        }
    }
}
