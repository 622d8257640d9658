//! A deterministic mutation fuzzer over dnsd's request path (the kube-dns promise that
//! malformed packets get FORMERR or are dropped, never a panic).
//!
//! It runs on stable Rust without libFuzzer: a seeded PRNG mutates real queries
//! (bit flips, truncations, compression pointer loops, huge section counts, odd
//! labels, EDNS oddities, odd types and classes, several questions, random noise)
//! and feeds each input to [`DnsHandler::handle`] over UDP and TCP, on a synced
//! snapshot with a populated forwarding cache and on an unsynced one without
//! upstreams. Every reply must parse (hickory-proto), carry the request's id, QR and
//! a known rcode, fit the client's UDP size, and echo the question when it answers
//! one; a drop is only allowed for packets without a query header. Upstream answers
//! are untrusted input too: mutated ones go through the cache ([`check_reply`],
//! [`Cache::insert`], [`Cache::answer`], [`fit_reply`]).
//!
//! `cargo test -p minion-dnsd` runs a bounded campaign;
//! `cargo run -p minion-dnsd --example fuzz -- --iterations N --seed S` a longer one.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cache::{cache_key, fit_reply, Cache};
use crate::forward::{check_reply, Forwarder};
use crate::records::{Records, Zone};
use crate::server::{DnsHandler, Handled};
use crate::wire::{self, Reject, HEADER_LEN};

/// A wrong answer or a panic, with the input that caused it.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The campaign's seed.
    pub seed: u64,
    /// The iteration (input number) that failed.
    pub iteration: u64,
    /// The offending packet.
    pub input: Vec<u8>,
    /// What went wrong.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} iteration {}: {}\ninput ({} bytes): ",
            self.seed,
            self.iteration,
            self.problem,
            self.input.len()
        )?;
        write!(f, "{}", hex(&self.input))
    }
}

/// What a campaign saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs tried.
    pub inputs: u64,
    /// Requests answered (per handler and transport), by rcode (BADVERS is 16).
    pub rcodes: [u64; 17],
    /// Requests dropped.
    pub drops: u64,
    /// Requests handed to the forwarder (parsed, not cached).
    pub forwards: u64,
    /// Mutated upstream answers the cache accepted and served.
    pub upstream_served: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} inputs: NOERROR {} FORMERR {} SERVFAIL {} NXDOMAIN {} NOTIMP {} REFUSED {} \
             BADVERS {}, dropped {}, forwarded {}, mutated upstream answers served {}",
            self.inputs,
            self.rcodes[0],
            self.rcodes[1],
            self.rcodes[2],
            self.rcodes[3],
            self.rcodes[4],
            self.rcodes[5],
            self.rcodes[16],
            self.drops,
            self.forwards,
            self.upstream_served
        )
    }
}

/// Runs `iterations` mutated inputs from `seed`; the first wrong reply or panic stops
/// the campaign.
pub fn run(seed: u64, iterations: u64) -> Result<Stats, Finding> {
    let target = Target::new();
    let mut rng = Rng::new(seed);
    let mut stats = Stats::default();
    let mut input = Vec::with_capacity(1024);
    for iteration in 0..iterations {
        let seed_index = rng.below(target.corpus.len());
        input.clear();
        input.extend_from_slice(&target.corpus[seed_index]);
        mutate(&mut rng, &mut input, &target.corpus);
        let answer = target.upstream[seed_index].clone().map(|mut answer| {
            mutate(&mut rng, &mut answer, &target.corpus);
            // Mostly keep the id and QR so the answer gets past the forwarder's checks.
            if answer.len() > 2 && rng.below(4) != 0 {
                answer[..2].copy_from_slice(&target.corpus[seed_index][..2]);
                answer[2] |= 0x80;
            }
            answer
        });
        let finding = |problem: String| Finding {
            seed,
            iteration,
            input: input.clone(),
            problem,
        };
        let checked = catch_unwind(AssertUnwindSafe(|| {
            target.check_request(&input, &mut stats)?;
            match &answer {
                Some(answer) => target
                    .check_upstream(&target.corpus[seed_index], answer, &mut stats)
                    .map_err(|e| format!("{e}; upstream answer {}", hex(answer))),
                None => Ok(()),
            }
        }));
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(problem)) => return Err(finding(problem)),
            Err(panic) => {
                let upstream = answer.as_deref().map(hex).unwrap_or_default();
                let problem = format!(
                    "panic: {} (upstream answer {upstream})",
                    panic_message(&*panic)
                );
                return Err(finding(problem));
            }
        }
        stats.inputs += 1;
    }
    Ok(stats)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_string())
}

/// The request path under test: two handlers and the seed queries.
struct Target {
    synced: DnsHandler,
    unsynced: DnsHandler,
    corpus: Vec<Vec<u8>>,
    /// A real upstream answer per seed query (for the upstream path).
    upstream: Vec<Option<Vec<u8>>>,
}

impl Target {
    fn new() -> Self {
        let zone = fuzz_zone();
        let records = Arc::new(ArcSwap::from_pointee(fuzz_records(&zone)));
        let forwarder = Forwarder::new(vec![SocketAddr::from(([127, 0, 0, 1], 9))], 64);
        let corpus = corpus();
        let upstream: Vec<Option<Vec<u8>>> = corpus.iter().map(|q| upstream_answer(q)).collect();
        for (query, answer) in corpus.iter().zip(&upstream) {
            if let (Ok(parsed), Some(answer)) = (wire::parse(query), answer) {
                if parsed.name().ends_with(b"\x07example\x03com\x00") {
                    forwarder.cache().insert(cache_key(&parsed), answer);
                }
            }
        }
        let unsynced = Arc::new(ArcSwap::from_pointee(Records::empty(zone, 1)));
        Self {
            synced: DnsHandler::new(records, Some(forwarder)),
            unsynced: DnsHandler::new(unsynced, None),
            corpus,
            upstream,
        }
    }

    /// Every handler and transport on one request.
    fn check_request(&self, request: &[u8], stats: &mut Stats) -> Result<(), String> {
        let mut out = Vec::new();
        for (handler, name) in [(&self.synced, "synced"), (&self.unsynced, "unsynced")] {
            for tcp in [false, true] {
                let handled = handler.handle(request, tcp, &mut out);
                check_handled(request, handled, &out, tcp, stats)
                    .map_err(|e| format!("{name} handler, tcp={tcp}: {e}"))?;
            }
        }
        Ok(())
    }

    /// A mutated upstream `answer` to the seed `query` goes through the forwarder's
    /// checks and the cache, never panicking; what is served keeps the client's id
    /// and fits its size.
    fn check_upstream(&self, query: &[u8], answer: &[u8], stats: &mut Stats) -> Result<(), String> {
        let Ok(query) = wire::parse(query) else {
            return Ok(());
        };
        if check_reply(SocketAddr::from(([127, 0, 0, 1], 9)), &query, answer).is_err() {
            return Ok(());
        }
        let mut out = Vec::new();
        let cache = Cache::new(4);
        cache.insert(cache_key(&query), answer);
        for limit in [query.udp_limit(), usize::from(u16::MAX)] {
            fit_reply(&query, answer, limit, &mut out);
            check_served(&query, &out, limit)?;
            if cache.answer(&query, limit, &mut out) {
                check_served(&query, &out, limit)?;
                stats.upstream_served += 1;
            }
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_served(query: &wire::Query<'_>, out: &[u8], limit: usize) -> Result<(), String> {
    if out.len() < HEADER_LEN || out[..2] != query.packet[..2] {
        return Err("served upstream answer lost the client's id".into());
    }
    if out.len() > limit {
        return Err(format!("served {} bytes over the limit {limit}", out.len()));
    }
    Ok(())
}

/// The properties of one handled request.
fn check_handled(
    request: &[u8],
    handled: Handled,
    reply: &[u8],
    tcp: bool,
    stats: &mut Stats,
) -> Result<(), String> {
    let parsed = wire::parse(request);
    match handled {
        Handled::Drop => {
            if request.len() >= HEADER_LEN && request[2] & 0x80 == 0 {
                return Err("dropped a request with a query header".into());
            }
            stats.drops += 1;
            Ok(())
        }
        Handled::Forward => {
            let Ok(query) = parsed else {
                return Err("forwarded a request that does not parse".into());
            };
            // What the client gets when every upstream fails.
            let mut out = Vec::new();
            wire::code_reply(&query, wire::Rcode::ServFail, true, &mut out);
            check_reply_packet(request, &out, &Ok(query), tcp)?;
            stats.forwards += 1;
            Ok(())
        }
        Handled::Reply => {
            let rcode = check_reply_packet(request, reply, &parsed, tcp)?;
            stats.rcodes[usize::from(rcode)] += 1;
            Ok(())
        }
    }
}

/// A reply must parse, match the request, carry a known rcode and fit UDP; returns
/// the full rcode.
fn check_reply_packet(
    request: &[u8],
    reply: &[u8],
    parsed: &Result<wire::Query<'_>, Reject>,
    tcp: bool,
) -> Result<u8, String> {
    if reply.len() < HEADER_LEN {
        return Err(format!("reply of {} bytes", reply.len()));
    }
    if reply[..2] != request[..2] {
        return Err("reply id differs from the request's".into());
    }
    let message = Message::from_vec(reply).map_err(|e| format!("reply does not parse: {e}"))?;
    if message.metadata.message_type != MessageType::Response {
        return Err("reply has QR clear".into());
    }
    let rcode = u16::from(message.metadata.response_code);
    let rcode = match rcode {
        0..=5 | 16 => rcode as u8,
        other => return Err(format!("unexpected rcode {other}")),
    };
    let limit = match parsed {
        Ok(query) => query.udp_limit(),
        Err(_) => wire::CLASSIC_UDP_SIZE,
    };
    if !tcp && reply.len() > limit {
        return Err(format!("UDP reply of {} bytes over {limit}", reply.len()));
    }
    match parsed {
        Err(Reject::Code(code)) if rcode != *code as u8 => Err(format!(
            "rejected request answered rcode {rcode}, not {code:?}"
        )),
        Err(Reject::Drop) => Err("answered a request without a query header".into()),
        Ok(query) => {
            let echoed = reply.get(HEADER_LEN..HEADER_LEN + query.question().len());
            if message.queries.len() != 1 || echoed != Some(query.question()) {
                return Err("reply does not echo the question".into());
            }
            Ok(rcode)
        }
        Err(Reject::Code(_)) => Ok(rcode),
    }
}

/// The zone the fuzzer queries: a ClusterIP Service with a named port, a headless
/// one with a hostname endpoint, an ExternalName, and namespaces.
fn fuzz_zone() -> Zone {
    match Zone::new("cluster.local", 30) {
        Ok(zone) => zone,
        Err(error) => unreachable!("cluster.local is a valid zone: {error}"),
    }
}

fn fuzz_records(zone: &Zone) -> Records {
    let meta = |ns: &str, name: &str| ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    };
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let service = |ns: &str, name: &str, spec: ServiceSpec| Service {
        metadata: meta(ns, name),
        spec: Some(spec),
        status: None,
    };
    let services = [
        service(
            "default",
            "web",
            ServiceSpec {
                cluster_ip: Some("10.96.0.20".into()),
                cluster_ips: Some(vec!["10.96.0.20".into(), "fd00::20".into()]),
                ports: Some(vec![port("http", 80)]),
                ..ServiceSpec::default()
            },
        ),
        service(
            "db",
            "pg",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: Some(vec![port("db", 5432)]),
                ..ServiceSpec::default()
            },
        ),
        service(
            "default",
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("example.com".into()),
                ..ServiceSpec::default()
            },
        ),
    ];
    let address = |ip: &str, hostname: Option<&str>| EndpointAddress {
        ip: ip.into(),
        hostname: hostname.map(Into::into),
        ..EndpointAddress::default()
    };
    // Enough endpoints that A answers overflow 512 bytes (truncation).
    let mut ready: Vec<EndpointAddress> = (1..=40)
        .map(|i| address(&format!("10.244.1.{i}"), None))
        .collect();
    ready.push(address("10.244.2.7", Some("primary")));
    let endpoints = [Endpoints {
        metadata: meta("db", "pg"),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(ready),
            not_ready_addresses: Some(vec![address("10.244.3.9", None)]),
            ports: Some(vec![EndpointPort {
                name: Some("db".into()),
                port: 5432,
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        }]),
    }];
    crate::build::build_records(zone, 2, ["default", "db", "empty"], &services, &endpoints)
}

/// Real queries the mutations start from.
fn corpus() -> Vec<Vec<u8>> {
    let plain = [
        ("web.default.svc.cluster.local.", RecordType::A),
        ("WEB.default.svc.cluster.local.", RecordType::AAAA),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ("pg.db.svc.cluster.local.", RecordType::A),
        ("primary.pg.db.svc.cluster.local.", RecordType::A),
        ("20.0.96.10.in-addr.arpa.", RecordType::PTR),
        ("ext.default.svc.cluster.local.", RecordType::CNAME),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("cluster.local.", RecordType::SOA),
        ("cluster.local.", RecordType::AXFR),
        ("empty.svc.cluster.local.", RecordType::ANY),
        ("nope.default.svc.cluster.local.", RecordType::A),
        ("www.example.com.", RecordType::A),
        ("www.example.org.", RecordType::MX),
    ];
    let mut corpus = Vec::new();
    for (i, (name, qtype)) in plain.into_iter().enumerate() {
        let Ok(name) = Name::from_ascii(name) else {
            continue;
        };
        let edns = match i % 3 {
            0 => None,
            1 => Some((1232, false)),
            _ => Some((512, true)),
        };
        corpus.extend(query(
            u16::try_from(i).unwrap_or(0) + 0x100,
            name,
            qtype,
            edns,
        ));
    }
    corpus
}

fn query(id: u16, name: Name, qtype: RecordType, edns: Option<(u16, bool)>) -> Option<Vec<u8>> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(HQuery::query(name, qtype));
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        msg.edns = Some(e);
    }
    msg.to_vec().ok()
}

/// An upstream's answer to `query`: one A record (and the query's OPT).
fn upstream_answer(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.response_code = ResponseCode::NoError;
    let question = request.queries.first()?.clone();
    reply.add_answer(Record::from_rdata(
        question.name().clone(),
        300,
        RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
    ));
    reply.add_query(question);
    reply.edns = request.edns.clone();
    reply.to_vec().ok()
}

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Byte values that hit edges: label lengths, pointer bits, sign bits.
const INTERESTING_BYTES: [u8; 10] = [0, 1, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xC0 | 0x0C, 0xFF];
/// Counts that hit edges.
const INTERESTING_COUNTS: [u16; 7] = [0, 1, 2, 3, 0x7FFF, 0xFFFE, 0xFFFF];
/// Types and classes that take special paths (OPT, IXFR, AXFR, ANY, NONE, CH...).
const INTERESTING_TYPES: [u16; 14] = [0, 1, 3, 5, 6, 12, 16, 28, 33, 41, 251, 252, 254, 255];

/// Applies one to four random mutations to `input`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        mutate_once(rng, input, corpus);
        if input.len() > 4096 {
            input.truncate(4096);
        }
    }
}

fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = input.len();
    let at = rng.below(len + 1);
    match rng.below(16) {
        0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => input[at.min(len - 1)] = rng.pick(&INTERESTING_BYTES),
        2 => input.truncate(at),
        3 => {
            for _ in 0..=rng.below(64) {
                input.push(rng.byte());
            }
        }
        4 => {
            let bytes: Vec<u8> = (0..=rng.below(16)).map(|_| rng.byte()).collect();
            input.splice(at..at, bytes);
        }
        5 if at < len => {
            let end = (at + 1 + rng.below(16)).min(len);
            input.drain(at..end);
        }
        6 => set_u16(input, 4 + 2 * rng.below(4), rng.pick(&INTERESTING_COUNTS)),
        7 => pointer(rng, input),
        8 => {
            let at = question_end(input).saturating_sub(4 - 2 * rng.below(2));
            set_u16(input, at, rng.pick(&INTERESTING_TYPES));
        }
        9 => append_opt(rng, input),
        10 => duplicate_question(input),
        11 if len > 3 => {
            input[2] = rng.byte();
            input[3] = rng.byte();
        }
        12 => long_name(rng, input),
        13 => {
            let other = &corpus[rng.below(corpus.len())];
            let from = rng.below(other.len());
            let take = (from + 1 + rng.below(32)).min(other.len());
            input.truncate(at);
            input.extend_from_slice(&other[from..take]);
        }
        14 if len > HEADER_LEN => {
            // A label length that runs past the end or into the next label.
            let label = HEADER_LEN + rng.below(len - HEADER_LEN);
            input[label] = rng.pick(&[0x3F, 0x40, 0x41, 0x80, 0xC0, 0xFF, 0x20]);
        }
        _ => {
            // Pure noise, sometimes with a plausible header.
            let size = rng.below(600);
            let keep_header = rng.below(2) == 0 && len >= HEADER_LEN;
            let header: Vec<u8> = input.iter().take(HEADER_LEN).copied().collect();
            input.clear();
            if keep_header {
                input.extend_from_slice(&header);
            }
            input.extend((0..size).map(|_| rng.byte()));
        }
    }
}

fn set_u16(input: &mut [u8], at: usize, value: u16) {
    if let Some(slot) = input.get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// Offset after the first question, by label walk (pointers end it); at least 12.
fn question_end(input: &[u8]) -> usize {
    wire::skip_name(input, HEADER_LEN).map_or(HEADER_LEN, |end| end + 4)
}

/// A compression pointer somewhere: to itself (a loop), to the header, to the
/// question, forward past the end, or to another pointer.
fn pointer(rng: &mut Rng, input: &mut Vec<u8>) {
    let at = if rng.below(2) == 0 {
        HEADER_LEN
    } else {
        rng.below(input.len() + 1)
    };
    let target = match rng.below(5) {
        0 => at,
        1 => 0,
        2 => HEADER_LEN,
        3 => input.len() + rng.below(64),
        _ => at.saturating_sub(2),
    };
    let target = u16::try_from(target & 0x3FFF).unwrap_or(0) | 0xC000;
    if at + 2 <= input.len() {
        input[at..at + 2].copy_from_slice(&target.to_be_bytes());
    } else {
        input.truncate(at);
        input.extend_from_slice(&target.to_be_bytes());
    }
}

/// Appends an OPT record with odd fields (owner, size, version, DO, options, rdlen)
/// and sometimes counts it in ARCOUNT (or in ANCOUNT, where it is illegal).
fn append_opt(rng: &mut Rng, input: &mut Vec<u8>) {
    match rng.below(4) {
        0 => input.push(0),
        1 => input.extend_from_slice(&[0xC0, 0x0C]),
        2 => input.extend_from_slice(&[3, b'f', b'o', b'o', 0]),
        _ => input.extend_from_slice(&[0xC0, 0xFF]),
    }
    input.extend_from_slice(&41u16.to_be_bytes());
    let payload = rng.pick(&[0u16, 1, 511, 512, 513, 1232, 4096, 65535]);
    input.extend_from_slice(&payload.to_be_bytes());
    let version = rng.pick(&[0u8, 0, 1, 255]);
    let dnssec_ok = rng.pick(&[0u8, 0x80]);
    input.extend_from_slice(&[rng.pick(&[0, 0, 1, 0xFF]), version, dnssec_ok, 0]);
    let options: Vec<u8> = match rng.below(3) {
        0 => Vec::new(),
        // A cookie option.
        1 => [0, 10, 0, 8]
            .into_iter()
            .chain((0..8).map(|_| rng.byte()))
            .collect(),
        // An option whose length runs past the record.
        _ => vec![0, 8, 0xFF, 0xFF, 1],
    };
    let rdlen = if rng.below(4) == 0 {
        rng.pick(&[0xFFFFu16, 1, 200])
    } else {
        u16::try_from(options.len()).unwrap_or(0)
    };
    input.extend_from_slice(&rdlen.to_be_bytes());
    input.extend_from_slice(&options);
    let section = rng.pick(&[10usize, 10, 10, 6, 8]);
    if let Some(count) = input.get(section..section + 2) {
        let count = u16::from_be_bytes([count[0], count[1]]).wrapping_add(1);
        set_u16(input, section, count);
    }
}

/// Two (or more) questions: the first one repeated.
fn duplicate_question(input: &mut Vec<u8>) {
    let end = question_end(input).min(input.len());
    let question = input[HEADER_LEN.min(end)..end].to_vec();
    input.splice(end..end, question);
    if let Some(count) = input.get(4..6) {
        let count = u16::from_be_bytes([count[0], count[1]]).wrapping_add(1);
        set_u16(input, 4, count);
    }
}

/// Replaces the question name with one at or past the 255-byte limit.
fn long_name(rng: &mut Rng, input: &mut Vec<u8>) {
    let end = question_end(input).min(input.len());
    let name_end = end.saturating_sub(4).max(HEADER_LEN.min(input.len()));
    let mut name = Vec::new();
    let label = 1 + rng.below(63);
    let total = 240 + rng.below(30);
    while name.len() + label < total {
        name.push(u8::try_from(label).unwrap_or(63));
        name.extend((0..label).map(|_| b'a' + rng.byte() % 26));
    }
    name.push(0);
    let start = HEADER_LEN.min(input.len());
    input.splice(start..name_end, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounded campaign of `cargo test` (override with `DNSD_FUZZ_ITERATIONS`).
    #[test]
    fn malformed_requests_get_formerr_or_are_dropped_never_a_panic() {
        let iterations = std::env::var("DNSD_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(250_000);
        let mut total = Stats::default();
        for seed in 1..=4 {
            match run(seed, iterations / 4) {
                Ok(stats) => {
                    total.inputs += stats.inputs;
                    total.drops += stats.drops;
                    total.forwards += stats.forwards;
                    total.upstream_served += stats.upstream_served;
                    for (t, s) in total.rcodes.iter_mut().zip(stats.rcodes) {
                        *t += s;
                    }
                }
                Err(finding) => panic!("{finding}"),
            }
        }
        println!("{total}");
        // The campaign reaches every outcome, or the mutations are too weak.
        for (code, name) in [
            (0, "NOERROR"),
            (1, "FORMERR"),
            (2, "SERVFAIL"),
            (3, "NXDOMAIN"),
        ] {
            assert!(total.rcodes[code] > 0, "no {name} reply: {total}");
        }
        assert!(
            total.rcodes[4] > 0 && total.rcodes[5] > 0 && total.rcodes[16] > 0,
            "{total}"
        );
        assert!(
            total.drops > 0 && total.forwards > 0 && total.upstream_served > 0,
            "{total}"
        );
    }

    /// The oracle rejects what it must: a wrong id, a query echoed as a reply, a
    /// reply missing the question, an oversized UDP reply.
    #[test]
    fn the_oracle_catches_wrong_replies() {
        let target = Target::new();
        let request = &target.corpus[0];
        let parsed = wire::parse(request);
        let mut reply = Vec::new();
        assert_eq!(
            target.synced.handle(request, false, &mut reply),
            Handled::Reply
        );
        assert!(check_reply_packet(request, &reply, &parsed, false).is_ok());
        let mut wrong_id = reply.clone();
        wrong_id[0] ^= 1;
        assert!(check_reply_packet(request, &wrong_id, &parsed, false).is_err());
        assert!(check_reply_packet(request, request, &parsed, false).is_err());
        let mut no_question = Vec::new();
        wire::error_reply(request, wire::Rcode::NoError, false, &mut no_question);
        assert!(check_reply_packet(request, &no_question, &parsed, false).is_err());
        let mut huge = reply.clone();
        huge.resize(600, 0);
        assert!(check_reply_packet(request, &huge, &parsed, false).is_err());
    }

    #[test]
    fn same_seed_same_campaign() {
        assert_eq!(run(7, 500).ok(), run(7, 500).ok());
    }

    #[test]
    fn the_corpus_is_answered_normally() {
        let target = Target::new();
        let mut stats = Stats::default();
        for query in &target.corpus {
            target.check_request(query, &mut stats).unwrap();
        }
        assert_eq!(stats.rcodes[1], 0, "{stats}");
    }
}
