//! One DNS request → one response, on raw bytes (RFC 1035 §4, EDNS RFC 6891).
//!
//! The request is parsed by hand (header, one question, an optional OPT record) and
//! answered from the pre-encoded [`crate::index::WireIndex`], so the common query costs one hash
//! lookup and no per-record allocation. Negative answers carry the zone's SOA, UDP
//! answers larger than the client's buffer (512 bytes, or its EDNS size) are
//! truncated with TC set so the client retries over TCP, malformed requests get
//! FORMERR (or are dropped when not even the header is readable), and names outside
//! the zone are handed back to the caller for forwarding.

use crate::index::RrSet;
use crate::records::Records;

/// Size of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Largest UDP answer without EDNS.
pub const CLASSIC_UDP_SIZE: usize = 512;
/// The UDP payload size dnsd advertises in its own OPT record.
pub const ADVERTISED_UDP_SIZE: u16 = 1232;
/// Longest name in wire form.
const MAX_NAME: usize = 255;

const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

/// Response codes used here (RFC 1035 §4.1.1, RFC 6891 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    /// No error (answers and NODATA).
    NoError = 0,
    /// The request could not be parsed.
    FormErr = 1,
    /// Not yet synced with the API server, or the upstream failed.
    ServFail = 2,
    /// The name does not exist in the zone.
    NxDomain = 3,
    /// The opcode is not QUERY.
    NotImp = 4,
    /// Refused (zone transfers; out-of-zone names without an upstream).
    Refused = 5,
}

/// The client's EDNS OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Its advertised UDP payload size.
    pub payload: u16,
    /// Its EDNS version (only 0 is supported).
    pub version: u8,
    /// The DO bit.
    pub dnssec_ok: bool,
}

/// A parsed query: one question, borrowed from the packet.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The whole request.
    pub packet: &'a [u8],
    /// Offset just past the question section.
    pub question_end: usize,
    name: [u8; MAX_NAME],
    name_len: usize,
    /// The question's type.
    pub qtype: u16,
    /// The question's class.
    pub qclass: u16,
    /// The client's OPT record, if any.
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The query id.
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.packet[0], self.packet[1]])
    }

    /// The question's name, lower case, in wire form.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    /// The question section exactly as the client sent it.
    pub fn question(&self) -> &[u8] {
        &self.packet[HEADER_LEN..self.question_end]
    }

    /// Largest response the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(edns) => usize::from(edns.payload).max(CLASSIC_UDP_SIZE),
            None => CLASSIC_UDP_SIZE,
        }
    }
}

/// Why a request could not be answered normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not even a query header: drop silently (never answer a response or noise).
    Drop,
    /// Answer with this code and no question.
    Code(Rcode),
}

/// What to do with a request.
// The forwarded query stays on the stack: boxing it would allocate per query.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action<'a> {
    /// `out` holds the response.
    Reply,
    /// Send nothing.
    Drop,
    /// The name is outside the zone: forward (the caller replies REFUSED without an
    /// upstream).
    Forward(Query<'a>),
}

/// Parses a query. Only QUERY with exactly one question is accepted.
pub fn parse(packet: &[u8]) -> Result<Query<'_>, Reject> {
    if packet.len() < HEADER_LEN || packet[2] & 0x80 != 0 {
        return Err(Reject::Drop);
    }
    if (packet[2] >> 3) & 0x0F != 0 {
        return Err(Reject::Code(Rcode::NotImp));
    }
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let formerr = Reject::Code(Rcode::FormErr);
    if count(4) != 1 {
        return Err(formerr);
    }
    let mut query = Query {
        packet,
        question_end: 0,
        name: [0; MAX_NAME],
        name_len: 0,
        qtype: 0,
        qclass: 0,
        edns: None,
    };
    let mut offset = read_qname(packet, HEADER_LEN, &mut query).ok_or(formerr)?;
    let fixed = packet.get(offset..offset + 4).ok_or(formerr)?;
    query.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    query.qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    offset += 4;
    query.question_end = offset;
    let records = usize::from(count(6)) + usize::from(count(8));
    for index in 0..records + usize::from(count(10)) {
        let (next, edns) = read_rr(packet, offset).ok_or(formerr)?;
        if let Some(edns) = edns {
            if index < records || query.edns.is_some() {
                return Err(formerr);
            }
            query.edns = Some(edns);
        }
        offset = next;
    }
    Ok(query)
}

/// Reads the question name at `offset` (no compression allowed in a question),
/// lower-casing it into `query`. Returns the offset after it.
fn read_qname(packet: &[u8], mut offset: usize, query: &mut Query<'_>) -> Option<usize> {
    let mut len = 0;
    loop {
        let label = usize::from(*packet.get(offset)?);
        if label > 63 || len + 1 + label > MAX_NAME {
            return None;
        }
        let bytes = packet.get(offset..offset + 1 + label)?;
        for (dst, src) in query.name[len..len + 1 + label].iter_mut().zip(bytes) {
            *dst = src.to_ascii_lowercase();
        }
        len += 1 + label;
        offset += 1 + label;
        if label == 0 {
            query.name_len = len;
            return Some(offset);
        }
    }
}

/// Skips a (possibly compressed) name; returns the offset after it.
pub fn skip_name(packet: &[u8], mut offset: usize) -> Option<usize> {
    for _ in 0..128 {
        let label = *packet.get(offset)?;
        match label {
            0 => return Some(offset + 1),
            l if l & 0xC0 == 0xC0 => {
                packet.get(offset + 1)?;
                return Some(offset + 2);
            }
            l if l & 0xC0 != 0 => return None,
            l => offset += 1 + usize::from(l),
        }
    }
    None
}

/// Skips one resource record, returning the offset after it and, for an OPT
/// record, the EDNS fields.
fn read_rr(packet: &[u8], offset: usize) -> Option<(usize, Option<Edns>)> {
    let root_owner = packet.get(offset) == Some(&0);
    let offset = skip_name(packet, offset)?;
    let fixed = packet.get(offset..offset + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let end = offset + 10 + rdlen;
    if end > packet.len() {
        return None;
    }
    let edns = (rtype == TYPE_OPT && root_owner).then(|| Edns {
        payload: u16::from_be_bytes([fixed[2], fixed[3]]),
        version: fixed[5],
        dnssec_ok: fixed[6] & 0x80 != 0,
    });
    if rtype == TYPE_OPT && !root_owner {
        return None;
    }
    Some((end, edns))
}

/// Answers `packet` from `records` into `out` (cleared first). `limit` is the
/// largest response allowed (the client's UDP size, or 65535 over TCP);
/// `recursion` sets RA (an upstream is configured).
pub fn respond<'a>(
    records: &Records,
    packet: &'a [u8],
    out: &mut Vec<u8>,
    tcp: bool,
    recursion: bool,
) -> Action<'a> {
    out.clear();
    let query = match parse(packet) {
        Ok(q) => q,
        Err(Reject::Drop) => return Action::Drop,
        Err(Reject::Code(code)) => {
            error_reply(packet, code, recursion, out);
            return Action::Reply;
        }
    };
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        query.udp_limit()
    };
    let index = records.wire();
    let name = query.name();
    let in_zone = index.in_zone(name);
    let entry = index.get(name);
    if (!in_zone && entry.is_none()) || !matches!(query.qclass, CLASS_IN | CLASS_ANY) {
        return Action::Forward(query);
    }
    let flags = Flags {
        authoritative: true,
        recursion,
        rcode: Rcode::NoError,
    };
    if query.edns.is_some_and(|e| e.version != 0) {
        reply(
            &query,
            Flags {
                authoritative: false,
                rcode: Rcode::NoError,
                ..flags
            },
            None,
            None,
            limit,
            1,
            out,
        );
        return Action::Reply;
    }
    if !records.synced() {
        let flags = Flags {
            authoritative: false,
            rcode: Rcode::ServFail,
            ..flags
        };
        reply(&query, flags, None, None, limit, 0, out);
        return Action::Reply;
    }
    if matches!(query.qtype, TYPE_AXFR | TYPE_IXFR) {
        let flags = Flags {
            authoritative: false,
            rcode: Rcode::Refused,
            ..flags
        };
        reply(&query, flags, None, None, limit, 0, out);
        return Action::Reply;
    }
    let soa = Some(index.soa());
    match entry.map(|e| e.answer(query.qtype)) {
        Some(Some(set)) => reply(&query, flags, Some(set), None, limit, 0, out),
        Some(None) => reply(&query, flags, None, soa, limit, 0, out),
        None => {
            let flags = Flags {
                rcode: Rcode::NxDomain,
                ..flags
            };
            reply(&query, flags, None, soa, limit, 0, out)
        }
    }
    Action::Reply
}

/// Header flags of a response.
#[derive(Debug, Clone, Copy)]
struct Flags {
    authoritative: bool,
    recursion: bool,
    rcode: Rcode,
}

/// Writes header + the client's question + `answer` + `authority` (+ OPT when the
/// client sent one); when that exceeds `limit`, drops the records and sets TC.
fn reply(
    query: &Query<'_>,
    flags: Flags,
    answer: Option<&RrSet>,
    authority: Option<&[u8]>,
    limit: usize,
    extended_rcode: u8,
    out: &mut Vec<u8>,
) {
    let question = query.question();
    let opt_len = if query.edns.is_some() { 11 } else { 0 };
    let answer_len = answer.map_or(0, |a| a.bytes.len());
    let authority_len = authority.map_or(0, <[u8]>::len);
    let full = HEADER_LEN + question.len() + answer_len + authority_len + opt_len;
    let truncated = full > limit;
    let (ancount, nscount) = if truncated {
        (0, 0)
    } else {
        (
            answer.map_or(0, |a| a.count),
            u16::from(authority.is_some()),
        )
    };
    let packet = query.packet;
    let mut flags0 = 0x80 | (packet[2] & 0x01);
    if flags.authoritative {
        flags0 |= 0x04;
    }
    if truncated {
        flags0 |= 0x02;
    }
    let flags1 = (if flags.recursion { 0x80 } else { 0 }) | (packet[3] & 0x10) | flags.rcode as u8;
    out.reserve(full.min(limit));
    out.extend_from_slice(&packet[..2]);
    out.extend_from_slice(&[flags0, flags1, 0, 1]);
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&nscount.to_be_bytes());
    out.extend_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
    out.extend_from_slice(question);
    if !truncated {
        if let Some(answer) = answer {
            out.extend_from_slice(&answer.bytes);
        }
        if let Some(authority) = authority {
            out.extend_from_slice(authority);
        }
    }
    if query.edns.is_some() {
        push_opt(out, extended_rcode);
    }
}

/// Appends dnsd's OPT record (RFC 6891 §6.1.2).
pub fn push_opt(out: &mut Vec<u8>, extended_rcode: u8) {
    let size = ADVERTISED_UDP_SIZE.to_be_bytes();
    out.extend_from_slice(&[0, 0, 41, size[0], size[1], extended_rcode, 0, 0, 0, 0, 0]);
}

/// A header-only response with `code` (FORMERR, NOTIMP) to a request whose header
/// is readable.
pub fn error_reply(packet: &[u8], code: Rcode, recursion: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&packet[..2]);
    out.push(0x80 | (packet[2] & 0x79));
    out.push((if recursion { 0x80 } else { 0 }) | code as u8);
    out.extend_from_slice(&[0; 8]);
}

/// A response with `code`, the client's question and no records (SERVFAIL when the
/// upstream failed, REFUSED without an upstream).
pub fn code_reply(query: &Query<'_>, code: Rcode, recursion: bool, out: &mut Vec<u8>) {
    out.clear();
    let flags = Flags {
        authoritative: false,
        recursion,
        rcode: code,
    };
    reply(query, flags, None, None, usize::from(u16::MAX), 0, out);
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
