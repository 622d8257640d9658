//! The cluster DNS zone as an immutable snapshot: every owner name under
//! `<cluster-domain>` with its resource records, as the Kubernetes DNS specification
//! (schema 1.1.0) derives them from Services and Endpoints.
//!
//! A [`Records`] value is built once per watch event (see [`crate::build`]) and then
//! only read; the server swaps the whole snapshot atomically, so lookups never lock.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{NS, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};

use crate::index::WireIndex;

/// The schema version of the Kubernetes DNS specification served at `dns-version.<zone>`.
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";
/// Default TTL of answers and of the SOA's negative-caching minimum.
pub const DEFAULT_TTL: u32 = 30;

/// SOA timers, as CoreDNS's kubernetes plugin publishes them.
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;

/// Errors while setting up a zone.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidZone {
        /// The domain as given.
        domain: String,
        /// Why hickory rejected it.
        reason: String,
    },
}

/// The zone's identity: its apex and the TTL of every record in it.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The apex, e.g. `cluster.local.` (always fully qualified, lower case).
    pub apex: Name,
    /// TTL of every answer and of the SOA (`--ttl`, default [`DEFAULT_TTL`]).
    pub ttl: u32,
}

impl Zone {
    /// A zone for `domain` (`cluster.local`, with or without the trailing dot).
    pub fn new(domain: &str, ttl: u32) -> Result<Self, RecordsError> {
        let invalid = |reason: String| RecordsError::InvalidZone {
            domain: domain.to_string(),
            reason,
        };
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(invalid("empty name".into()));
        }
        let apex = Name::from_ascii(format!("{trimmed}."))
            .map_err(|e| invalid(e.to_string()))?
            .to_lowercase();
        Ok(Self { apex, ttl })
    }

    /// `relative` + `.` + the apex, e.g. `("web.default.svc")` → `web.default.svc.cluster.local.`.
    pub fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(relative)
            .ok()?
            .append_domain(&self.apex)
            .ok()
            .map(|n| n.to_lowercase())
    }

    /// The SOA record CoreDNS serves: `ns.dns.<zone>. hostmaster.<zone>.`.
    pub fn soa(&self, serial: u32) -> Record {
        let mname = self.name("ns.dns").unwrap_or_else(|| self.apex.clone());
        let rname = self.name("hostmaster").unwrap_or_else(|| self.apex.clone());
        let soa = SOA::new(
            mname,
            rname,
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.ttl,
        );
        Record::from_rdata(self.apex.clone(), self.ttl, RData::SOA(soa))
    }

    /// The apex's NS record, naming `ns.dns.<zone>.` like CoreDNS.
    fn ns(&self) -> Record {
        let target = self.name("ns.dns").unwrap_or_else(|| self.apex.clone());
        Record::from_rdata(self.apex.clone(), self.ttl, RData::NS(NS(target)))
    }
}

/// An immutable snapshot of the cluster zone.
#[derive(Debug, Clone)]
pub struct Records {
    zone: Zone,
    apex: LowerName,
    soa: Record,
    /// Record sets by owner name (all record types of one name together).
    names: HashMap<LowerName, Vec<Record>>,
    /// Names that own no records but exist: structural names (`svc.<zone>`), every
    /// namespace's `<ns>.svc.<zone>`, and ancestors of names that own records. Queries
    /// for them get NODATA, not NXDOMAIN.
    empty_non_terminals: HashSet<LowerName>,
    /// Built from the API server's lists (false for the placeholder served before the
    /// first sync, which answers SERVFAIL).
    synced: bool,
    /// The same records pre-encoded for the wire (the server's fast path).
    wire: WireIndex,
}

impl Records {
    /// The placeholder served before the first sync with the API server: it holds
    /// only the apex and is not [`Records::synced`], so in-zone queries get SERVFAIL.
    pub fn empty(zone: Zone, serial: u32) -> Self {
        let mut builder = RecordsBuilder::new(zone, serial);
        builder.seal();
        builder.records.synced = false;
        builder.records
    }

    /// False until the snapshot was built from the API server's lists.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The pre-encoded form of this snapshot.
    pub fn wire(&self) -> &WireIndex {
        &self.wire
    }

    /// True when `name` is a reverse (`in-addr.arpa` / `ip6.arpa`) name this snapshot
    /// owns a PTR for.
    pub fn is_known_reverse(&self, name: &LowerName) -> bool {
        !self.in_zone(name) && self.names.contains_key(name)
    }

    /// Every owner name with its records (for the wire index and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&LowerName, &[Record])> {
        self.names.iter().map(|(n, r)| (n, r.as_slice()))
    }

    /// Every empty non-terminal (existing name without records).
    pub fn empty_names(&self) -> impl Iterator<Item = &LowerName> {
        self.empty_non_terminals.iter()
    }

    /// The zone this snapshot serves.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// True when `name` is the apex or below it.
    pub fn in_zone(&self, name: &LowerName) -> bool {
        self.apex.zone_of(name)
    }

    /// The zone's SOA record (for the authority section of negative answers).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The serial of this snapshot's SOA.
    pub fn soa_serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// All records owned by `name`, or `None` when the name owns none.
    pub fn lookup(&self, name: &LowerName) -> Option<&[Record]> {
        self.names.get(name).map(Vec::as_slice)
    }

    /// True when `name` exists in the zone (owns records or has descendants that do).
    pub fn exists(&self, name: &LowerName) -> bool {
        self.names.contains_key(name) || self.empty_non_terminals.contains(name)
    }

    /// Number of owner names with records (for logs).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the zone holds nothing but its apex and `dns-version`.
    pub fn is_empty(&self) -> bool {
        self.names.len() <= 2
    }
}

/// Accumulates records for one snapshot; [`RecordsBuilder::finish`] seals it.
#[derive(Debug)]
pub struct RecordsBuilder {
    records: Records,
    /// Names that exist without records (structural names, namespaces).
    explicit: HashSet<LowerName>,
}

impl RecordsBuilder {
    /// A builder for `zone` whose SOA carries `serial`.
    pub fn new(zone: Zone, serial: u32) -> Self {
        let soa = zone.soa(serial);
        let apex = LowerName::new(&zone.apex);
        let mut names = HashMap::new();
        names.insert(apex.clone(), vec![soa.clone(), zone.ns()]);
        let mut builder = Self {
            records: Records {
                zone,
                apex,
                soa,
                names,
                empty_non_terminals: HashSet::new(),
                synced: true,
                wire: WireIndex::default(),
            },
            explicit: HashSet::new(),
        };
        if let Some(version) = builder.zone().name("dns-version") {
            let txt = TXT::new(vec![DNS_SCHEMA_VERSION.to_string()]);
            builder.add(&version, RData::TXT(txt));
        }
        if let Some(svc) = builder.zone().name("svc") {
            builder.explicit.insert(LowerName::new(&svc));
        }
        builder
    }

    /// Marks the namespace `ns` as existing: `<ns>.svc.<zone>` answers NODATA even
    /// when the namespace has no Services.
    pub fn add_namespace(&mut self, ns: &str) {
        if let Some(name) = self.zone().name(&format!("{ns}.svc")) {
            self.explicit.insert(LowerName::new(&name));
        }
    }

    /// Adds a PTR from `ip`'s reverse name (`in-addr.arpa` / `ip6.arpa`) to `target`.
    pub fn add_ptr(&mut self, ip: IpAddr, target: &Name) {
        let owner = Name::from(ip).to_lowercase();
        let record = Record::from_rdata(
            owner.clone(),
            self.records.zone.ttl,
            RData::PTR(PTR(target.clone())),
        );
        let set = self
            .records
            .names
            .entry(LowerName::new(&owner))
            .or_default();
        if !set.iter().any(|r| r.data == record.data) {
            set.push(record);
        }
    }

    /// The zone being built.
    pub fn zone(&self) -> &Zone {
        &self.records.zone
    }

    /// Adds `rdata` at `name` with the zone's TTL, skipping exact duplicates and
    /// names outside the zone.
    pub fn add(&mut self, name: &Name, rdata: RData) {
        let owner = LowerName::new(name);
        if !self.records.apex.zone_of(&owner) {
            tracing::warn!(%name, "record outside the cluster zone ignored");
            return;
        }
        let record = Record::from_rdata(name.to_lowercase(), self.records.zone.ttl, rdata);
        let set = self.records.names.entry(owner).or_default();
        if !set.iter().any(|r| r.data == record.data) {
            set.push(record);
        }
    }

    /// Computes the empty non-terminals and returns the snapshot.
    pub fn finish(mut self) -> Records {
        self.seal();
        self.records
    }

    fn seal(&mut self) {
        let apex = &self.records.apex;
        let mut ents: HashSet<LowerName> = self
            .explicit
            .iter()
            .filter(|n| !self.records.names.contains_key(*n))
            .cloned()
            .collect();
        for owner in self.records.names.keys().chain(self.explicit.iter()) {
            let mut name = owner.base_name();
            while apex.zone_of(&name) && name != *apex {
                if !self.records.names.contains_key(&name) {
                    ents.insert(name.clone());
                }
                name = name.base_name();
            }
        }
        self.records.empty_non_terminals = ents;
        self.records.wire = WireIndex::build(&self.records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    #[test]
    fn zone_accepts_trailing_dot_and_case() {
        let zone = Zone::new("Cluster.Local.", 5).unwrap();
        assert_eq!(zone.apex.to_string(), "cluster.local.");
        assert!(Zone::new("", 5).is_err());
        assert!(Zone::new("a..b", 5).is_err());
    }

    #[test]
    fn soa_names_like_coredns() {
        let zone = Zone::new("cluster.local", 5).unwrap();
        let soa = zone.soa(42);
        let RData::SOA(soa) = &soa.data else {
            panic!("not a SOA")
        };
        assert_eq!(soa.mname.to_string(), "ns.dns.cluster.local.");
        assert_eq!(soa.rname.to_string(), "hostmaster.cluster.local.");
        assert_eq!(soa.serial, 42);
        assert_eq!(soa.minimum, 5);
    }

    #[test]
    fn builder_tracks_empty_non_terminals() {
        let zone = Zone::new("cluster.local", 5).unwrap();
        let mut b = RecordsBuilder::new(zone.clone(), 1);
        let name = zone.name("web.default.svc").unwrap();
        b.add(&name, RData::A(Ipv4Addr::new(10, 96, 0, 5).into()));
        b.add(&name, RData::A(Ipv4Addr::new(10, 96, 0, 5).into()));
        let other = Name::from_ascii("example.com.").unwrap();
        b.add(&other, RData::A(Ipv4Addr::LOCALHOST.into()));
        let r = b.finish();
        assert_eq!(
            r.lookup(&lower("web.default.svc.cluster.local."))
                .unwrap()
                .len(),
            1
        );
        assert!(r.exists(&lower("default.svc.cluster.local.")));
        assert!(r.exists(&lower("svc.cluster.local.")));
        assert!(r.lookup(&lower("svc.cluster.local.")).is_none());
        assert!(!r.exists(&lower("other.svc.cluster.local.")));
        assert!(!r.exists(&lower("example.com.")));
        assert!(r.in_zone(&lower("x.cluster.local.")));
        assert!(!r.in_zone(&lower("cluster.local.example.")));
    }

    #[test]
    fn empty_zone_has_apex_soa_and_ns() {
        let r = Records::empty(Zone::new("cluster.local", 5).unwrap(), 1);
        let apex = r.lookup(&lower("cluster.local.")).unwrap();
        assert_eq!(apex.len(), 2);
        assert!(r.is_empty());
        assert!(!r.synced());
        assert!(r.exists(&lower("svc.cluster.local.")));
        let txt = r.lookup(&lower("dns-version.cluster.local.")).unwrap();
        assert_eq!(txt[0].data.to_string(), "1.1.0");
    }
}
