//! The zone snapshot pre-encoded in DNS wire format, so that answering a question is
//! one hash lookup and a few byte copies (the role of CoreDNS's cached responses).
//!
//! Every owner name of a [`Records`] snapshot maps, by its lower-case wire form, to
//! its resource record sets already encoded with the owner written as a compression
//! pointer to the question (`0xC00C`). The client's question is copied into the
//! response as sent, so the answers carry the name exactly as asked (0x20-randomising
//! resolvers accept them). An ExternalName CNAME whose target is inside the zone is
//! followed once at build time, like CoreDNS does.

use std::collections::HashMap;

use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::records::Records;

/// Wire value of the CNAME type.
pub const TYPE_CNAME: u16 = 5;
/// Wire value of the ANY (`*`) query type.
pub const TYPE_ANY: u16 = 255;
/// A compression pointer to offset 12, where the question's name starts.
const POINTER_TO_QNAME: [u8; 2] = [0xC0, 0x0C];

/// Encoded records of one answer: `count` RRs back to back.
#[derive(Debug, Default, Clone)]
pub struct RrSet {
    /// The RR type of the set (the first record's type for a followed CNAME).
    pub rtype: u16,
    /// Number of RRs in `bytes`.
    pub count: u16,
    /// The RRs in wire format.
    pub bytes: Box<[u8]>,
}

/// Everything known about one owner name.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    sets: Vec<RrSet>,
    cname: Option<RrSet>,
    all: RrSet,
}

impl Entry {
    /// The answer for `qtype`: the set of that type, every set for ANY, or the CNAME
    /// for any other type when the name is an alias. `None` means NODATA.
    pub fn answer(&self, qtype: u16) -> Option<&RrSet> {
        if qtype == TYPE_ANY {
            return (self.all.count > 0).then_some(&self.all);
        }
        self.sets
            .iter()
            .find(|s| s.rtype == qtype)
            .or(self.cname.as_ref())
    }
}

/// The wire form of a whole snapshot.
#[derive(Debug, Default, Clone)]
pub struct WireIndex {
    names: HashMap<Box<[u8]>, Entry>,
    apex: Box<[u8]>,
    soa: Box<[u8]>,
}

impl WireIndex {
    /// Encodes every name of `records` (records that fail to encode are skipped with
    /// a warning; the hickory types they come from make that unexpected).
    pub fn build(records: &Records) -> Self {
        let apex = wire_name(&records.zone().apex);
        let soa = encode_full(records.soa()).unwrap_or_default();
        let mut names = HashMap::with_capacity(records.len() * 2);
        for (owner, set) in records.iter() {
            names.insert(wire_name(&Name::from(owner.clone())), entry(records, set));
        }
        for owner in records.empty_names() {
            names.insert(wire_name(&Name::from(owner.clone())), Entry::default());
        }
        Self {
            names,
            apex,
            soa: soa.into_boxed_slice(),
        }
    }

    /// The entry of `name` (lower-case wire form, with the root label).
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.names.get(name)
    }

    /// True when `name` (lower-case wire form) is the apex or below it.
    pub fn in_zone(&self, name: &[u8]) -> bool {
        let mut offset = 0;
        while offset < name.len() {
            if name.len() - offset == self.apex.len() {
                return name[offset..] == *self.apex;
            }
            let label = usize::from(name[offset]);
            if label == 0 {
                return false;
            }
            offset += 1 + label;
        }
        false
    }

    /// The zone's SOA RR in wire format (owner written out, for authority sections).
    pub fn soa(&self) -> &[u8] {
        &self.soa
    }
}

/// The lower-case wire form of `name` (always fully qualified).
pub fn wire_name(name: &Name) -> Box<[u8]> {
    let mut lower = name.to_lowercase();
    lower.set_fqdn(true);
    lower.to_bytes().unwrap_or_default().into_boxed_slice()
}

fn entry(records: &Records, set: &[Record]) -> Entry {
    let mut by_type: Vec<RrSet> = Vec::new();
    let mut all = RrSet::default();
    for record in set {
        let Some(bytes) = encode_at_qname(record) else {
            continue;
        };
        let rtype = u16::from(record.record_type());
        push(&mut all, rtype, &bytes);
        match by_type.iter_mut().find(|s| s.rtype == rtype) {
            Some(existing) => push(existing, rtype, &bytes),
            None => by_type.push(rr_set(rtype, 1, bytes)),
        }
    }
    let cname = by_type.iter().find(|s| s.rtype == TYPE_CNAME).cloned();
    let mut entry = Entry {
        sets: by_type,
        cname: cname.clone(),
        all,
    };
    if let Some(cname) = cname {
        follow_cname(records, set, &cname, &mut entry);
    }
    entry
}

/// For an alias whose target is in the zone: per type of the target, the CNAME
/// followed by the target's records.
fn follow_cname(records: &Records, set: &[Record], cname: &RrSet, entry: &mut Entry) {
    let Some(target) = set.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    }) else {
        return;
    };
    let lower = LowerName::new(&target);
    if !records.in_zone(&lower) {
        return;
    }
    let Some(target_set) = records.lookup(&lower) else {
        return;
    };
    for record in target_set {
        let rtype = u16::from(record.record_type());
        if rtype == TYPE_CNAME {
            continue;
        }
        let Some(bytes) = encode_full(record) else {
            continue;
        };
        match entry.sets.iter_mut().find(|s| s.rtype == rtype) {
            Some(existing) => push(existing, rtype, &bytes),
            None => {
                let mut followed = cname.clone();
                followed.rtype = rtype;
                push(&mut followed, rtype, &bytes);
                entry.sets.push(followed);
            }
        }
    }
}

fn rr_set(rtype: u16, count: u16, bytes: Vec<u8>) -> RrSet {
    RrSet {
        rtype,
        count,
        bytes: bytes.into_boxed_slice(),
    }
}

fn push(set: &mut RrSet, rtype: u16, bytes: &[u8]) {
    let mut joined = std::mem::take(&mut set.bytes).into_vec();
    joined.extend_from_slice(bytes);
    *set = rr_set(rtype, set.count.saturating_add(1), joined);
}

/// `record` with its owner written out and names inside RDATA uncompressed.
fn encode_full(record: &Record) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    match record.emit(&mut encoder) {
        Ok(()) => Some(buf),
        Err(error) => {
            tracing::warn!(name = %record.name, %error, "record cannot be encoded, skipped");
            None
        }
    }
}

/// `record` with its owner replaced by a pointer to the question's name.
fn encode_at_qname(record: &Record) -> Option<Vec<u8>> {
    let full = encode_full(record)?;
    let owner_len = wire_name(&record.name).len();
    let mut out = Vec::with_capacity(full.len() - owner_len + 2);
    out.extend_from_slice(&POINTER_TO_QNAME);
    out.extend_from_slice(full.get(owner_len..)?);
    Some(out)
}
