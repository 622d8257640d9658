//! The bounded answer cache of forwarded (out-of-zone) queries, like CoreDNS's
//! `cache` plugin: answers are kept in wire form with the offsets of their TTLs, so a
//! hit is a copy with the id, the question's case and the elapsed TTLs patched in.
//! Positive answers live for their smallest TTL, negative ones (NXDOMAIN, NODATA)
//! for the SOA's negative TTL (RFC 2308 §5); SERVFAIL, REFUSED and truncated answers
//! are not cached. When full, expired entries go first, then arbitrary ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::{skip_name, Query, HEADER_LEN};

/// Longest time a positive answer is kept.
const MAX_POSITIVE_TTL: u32 = 3600;
/// Longest time a negative answer is kept.
const MAX_NEGATIVE_TTL: u32 = 300;
const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;

/// Key of a cached answer: lower-case name, type, class, and the client's EDNS/DO.
pub fn cache_key(query: &Query<'_>) -> Box<[u8]> {
    let mut key = Vec::with_capacity(query.name().len() + 5);
    key.extend_from_slice(query.name());
    key.extend_from_slice(&query.qtype.to_be_bytes());
    key.extend_from_slice(&query.qclass.to_be_bytes());
    key.push(match query.edns {
        None => 0,
        Some(e) if e.dnssec_ok => 2,
        Some(_) => 1,
    });
    key.into_boxed_slice()
}

#[derive(Debug)]
struct Entry {
    reply: Box<[u8]>,
    ttl_offsets: Vec<usize>,
    stored: Instant,
    expires: Instant,
}

/// A bounded map from [`cache_key`] to upstream answers.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    entries: Mutex<HashMap<Box<[u8]>, Entry>>,
}

impl Cache {
    /// A cache of at most `capacity` answers (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `reply` (an upstream's answer to the query with `key`) if cacheable.
    pub fn insert(&self, key: Box<[u8]>, reply: &[u8]) {
        let Some((ttl, ttl_offsets)) = cacheable(reply) else {
            return;
        };
        if self.capacity == 0 || ttl == 0 {
            return;
        }
        let now = Instant::now();
        let entry = Entry {
            reply: reply.into(),
            ttl_offsets,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            while entries.len() >= self.capacity {
                let Some(victim) = entries.keys().next().cloned() else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(key, entry);
    }

    /// Writes the cached answer to `query` (TTLs decremented, id and question case
    /// from the query, truncated to `limit`) into `out`; false on a miss.
    pub fn answer(&self, query: &Query<'_>, limit: usize, out: &mut Vec<u8>) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let key = cache_key(query);
        let now = Instant::now();
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        let Some(entry) = entries.get(&key).filter(|e| e.expires > now) else {
            return false;
        };
        let elapsed = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        fit_reply(query, &entry.reply, limit, out);
        if out.len() == entry.reply.len() {
            for &offset in &entry.ttl_offsets {
                let ttl = u32::from_be_bytes([
                    out[offset],
                    out[offset + 1],
                    out[offset + 2],
                    out[offset + 3],
                ]);
                out[offset..offset + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
            }
        }
        true
    }
}

/// Copies `reply` into `out` with the query's id and question bytes; when it is
/// longer than `limit`, keeps only header and question and sets TC.
pub fn fit_reply(query: &Query<'_>, reply: &[u8], limit: usize, out: &mut Vec<u8>) {
    out.clear();
    let question = query.question();
    let end = HEADER_LEN + question.len();
    if reply.len() > limit {
        out.extend_from_slice(&reply[..4]);
        out[2] |= 0x02;
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(question);
    } else {
        out.extend_from_slice(reply);
        if out.len() >= end {
            out[HEADER_LEN..end].copy_from_slice(question);
        }
    }
    out[..2].copy_from_slice(&query.packet[..2]);
}

/// The time `reply` may be cached and the offsets of its TTL fields, or `None` when
/// it must not be cached.
fn cacheable(reply: &[u8]) -> Option<(u32, Vec<usize>)> {
    if reply.len() < HEADER_LEN || reply[2] & 0x02 != 0 {
        return None;
    }
    let rcode = reply[3] & 0x0F;
    if rcode != 0 && rcode != 3 {
        return None;
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([reply[i], reply[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut offset = HEADER_LEN;
    for _ in 0..qd {
        offset = skip_name(reply, offset)? + 4;
    }
    let mut offsets = Vec::new();
    let mut answer_ttl = u32::MAX;
    let mut negative_ttl = None;
    for index in 0..an + ns + ar {
        offset = skip_name(reply, offset)?;
        let fixed = reply.get(offset..offset + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = reply.get(offset + 10..offset + 10 + rdlen)?;
        if rtype != TYPE_OPT {
            offsets.push(offset + 4);
        }
        if index < an {
            answer_ttl = answer_ttl.min(ttl);
        } else if index < an + ns && rtype == TYPE_SOA && rdata.len() >= 4 {
            let min = &rdata[rdata.len() - 4..];
            negative_ttl = Some(ttl.min(u32::from_be_bytes([min[0], min[1], min[2], min[3]])));
        }
        offset += 10 + rdlen;
    }
    let ttl = if rcode == 0 && an > 0 {
        answer_ttl.min(MAX_POSITIVE_TTL)
    } else {
        negative_ttl?.min(MAX_NEGATIVE_TTL)
    };
    Some((ttl, offsets))
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
