//! Answering one DNS question from a zone snapshot, the way CoreDNS's kubernetes
//! plugin answers for the cluster domain:
//!
//! - a name with records of the asked type → NOERROR, the records, AA set;
//! - a name that exists with other types only (or an empty non-terminal such as
//!   `<ns>.svc.<zone>`) → NOERROR with no answers (NODATA) and the SOA in authority;
//! - a name that does not exist in the zone → NXDOMAIN and the SOA in authority;
//! - a CNAME (ExternalName Service) is returned for any other type and followed while
//!   its target stays in the zone;
//! - a reverse name (`in-addr.arpa`, `ip6.arpa`) of a ClusterIP or endpoint → its PTR;
//! - a name outside the zone → [`Outcome::OutOfZone`] (REFUSED, or forwarded upstream).
//!
//! Pure: no sockets, unit-tested.

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::records::Records;

/// Longest CNAME chain followed inside the zone.
const MAX_CNAME_CHAIN: usize = 8;

/// What kind of answer a question got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Records of the asked type (or a CNAME chain) were found.
    Success,
    /// The name exists but has no records of the asked type.
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
    /// The name is outside the cluster zone (or the class is not IN).
    OutOfZone,
}

/// The sections of a response to one question (a "response-ish" value, turned into a
/// wire message by the server).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Which case applied.
    pub outcome: Outcome,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA on negative answers).
    pub authority: Vec<Record>,
}

impl Answer {
    /// The response code: NOERROR, NXDOMAIN, or REFUSED for names outside the zone.
    pub fn response_code(&self) -> ResponseCode {
        match self.outcome {
            Outcome::Success | Outcome::NoData => ResponseCode::NoError,
            Outcome::NxDomain => ResponseCode::NXDomain,
            Outcome::OutOfZone => ResponseCode::Refused,
        }
    }

    /// True for every in-zone answer (the AA flag).
    pub fn authoritative(&self) -> bool {
        self.outcome != Outcome::OutOfZone
    }

    fn out_of_zone() -> Self {
        Self {
            outcome: Outcome::OutOfZone,
            answers: Vec::new(),
            authority: Vec::new(),
        }
    }

    fn negative(records: &Records, outcome: Outcome) -> Self {
        Self {
            outcome,
            answers: Vec::new(),
            authority: vec![records.soa().clone()],
        }
    }
}

/// Answers `query` from `records`. Names compare case-insensitively; answer records
/// for the asked name carry the name exactly as asked (so 0x20-randomising resolvers
/// accept them).
pub fn answer(records: &Records, query: &Query) -> Answer {
    let qname = LowerName::new(query.name());
    let known = records.in_zone(&qname) || records.is_known_reverse(&qname);
    if query.query_class() != DNSClass::IN || !known {
        return Answer::out_of_zone();
    }
    let answers = resolve_chain(records, query.name(), query.query_type());
    if !answers.is_empty() {
        return Answer {
            outcome: Outcome::Success,
            answers,
            authority: Vec::new(),
        };
    }
    if records.exists(&qname) {
        Answer::negative(records, Outcome::NoData)
    } else {
        Answer::negative(records, Outcome::NxDomain)
    }
}

/// The records of type `qtype` at `name`, following in-zone CNAMEs.
fn resolve_chain(records: &Records, name: &Name, qtype: RecordType) -> Vec<Record> {
    let mut out = Vec::new();
    let mut owner = name.clone();
    for _ in 0..MAX_CNAME_CHAIN {
        let lower = LowerName::new(&owner);
        let Some(set) = records.lookup(&lower) else {
            break;
        };
        let matching: Vec<Record> = set
            .iter()
            .filter(|r| type_matches(r, qtype))
            .map(|r| with_owner(r, &owner))
            .collect();
        if !matching.is_empty() {
            out.extend(matching);
            break;
        }
        let Some((record, cname)) = set.iter().find_map(|r| Some((r, cname_target(r)?))) else {
            break;
        };
        out.push(with_owner(record, &owner));
        if !records.in_zone(&LowerName::new(&cname)) {
            break;
        }
        owner = cname;
    }
    out
}

fn type_matches(record: &Record, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || record.record_type() == qtype
}

fn cname_target(record: &Record) -> Option<Name> {
    match &record.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    }
}

fn with_owner(record: &Record, owner: &Name) -> Record {
    let mut r = record.clone();
    r.name = owner.clone();
    r
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
