//! kube-proxy's change trackers (`ServiceChangeTracker`, `EndpointsChangeTracker`):
//! a Service's ports are re-derived from the API objects, and re-rendered, only when
//! its Service or Endpoints object changed since the last sync. At 10k Services
//! re-deriving and hashing every port was most of a partial sync's own CPU.
//!
//! An object is unchanged when its `uid` and `resourceVersion` are (the API server
//! bumps the version on every write), or, for objects without a version (the
//! Endpoints folded from EndpointSlices, hand-built snapshots), when it is equal to
//! the copy seen last time. A full sync re-derives every Service, so nothing the
//! cache holds can hide drift from it.
//!
//! This module keeps the bookkeeping: which Services it holds (in namespace/name
//! order), which update saw or derived what, and which blocks are new since the
//! last successful apply ([`PortTracker::checkpoint`]) or went away since, so a
//! partial sync looks up only those in its bookkeeping ([`Changes`]). Deriving a
//! changed Service's ports and blocks is in `tracker/derive.rs`.

mod derive;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::conntrack::{self, UdpPorts};
use crate::model::Snapshot;
use crate::render::{RenderConfig, ServicePortRules};
use derive::{Ctx, Derived, Entry};

/// A partial sync's view of a [`Derivation`] (it lives with the sync's bookkeeping
/// of what the kernel holds; re-exported at its old path).
pub use crate::sync::Changes;

/// Every proxied Service port of one sync, in `ServicePortName`/protocol order.
#[derive(Debug, Default)]
pub struct Derivation {
    /// Rendered blocks.
    pub blocks: Vec<Arc<ServicePortRules>>,
    /// Their fingerprints.
    pub prints: Vec<u64>,
    /// The UDP ports among them.
    pub udp: UdpPorts,
    /// Per block: unchanged since the last checkpoint.
    pub clean: Vec<bool>,
    /// Blocks of the last checkpoint that are gone (replaced or deleted).
    pub retired: Vec<Arc<ServicePortRules>>,
    /// Some Service appears more than once (copies share chain names).
    pub duplicates: bool,
}

/// A Service's place in the tracker: one entry per copy in the snapshot
/// (normally one).
#[derive(Debug)]
struct Slot {
    ns: String,
    name: String,
    copies: Vec<Entry>,
}

/// Derived ports per Service.
#[derive(Debug, Default)]
pub struct PortTracker {
    /// Services; `None` marks a free slot.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Slot of each Service, by namespace then name.
    index: HashMap<String, HashMap<String, usize>>,
    /// Live slots sorted by namespace and name.
    order: Vec<usize>,
    /// Entries in all slots.
    live: usize,
    generation: u64,
    derived: usize,
    /// The generation of the last checkpoint.
    checkpoint: u64,
    /// Blocks of the last checkpoint dropped since.
    retired: Vec<Arc<ServicePortRules>>,
}

impl PortTracker {
    /// Services whose ports the last [`PortTracker::update`] re-derived.
    pub fn last_derived(&self) -> usize {
        self.derived
    }

    /// Marks the blocks of the last update as applied: later updates report
    /// blocks against them.
    pub fn checkpoint(&mut self) {
        self.checkpoint = self.generation;
        self.retired.clear();
    }

    /// The ports of `snapshot`, re-deriving those of changed Services (all with
    /// `full`) and re-rendering the ports whose info changed.
    pub fn update(&mut self, snapshot: &Snapshot, cfg: &RenderConfig, full: bool) -> Derivation {
        self.generation += 1;
        self.derived = 0;
        let generation = self.generation;
        let eps: HashMap<(&str, &str), &Endpoints> = snapshot
            .endpoints
            .iter()
            .map(|e| (key(&e.metadata), e))
            .collect();
        let ctx = Ctx {
            cfg,
            node: cfg.node_name.as_deref(),
            generation,
            checkpoint: self.checkpoint,
        };
        for svc in &snapshot.services {
            let (ns, name) = key(&svc.metadata);
            let ep = eps.get(&(ns, name)).copied();
            let at = self.slot_of(ns, name);
            let Some(slot) = self.slots[at].as_mut() else {
                continue;
            };
            let copies = &mut slot.copies;
            let free = copies.iter().position(|e| e.seen != generation);
            let Some(i) = free else {
                copies.push(ctx.derive(svc, ep, Vec::new(), &mut self.retired));
                (self.derived, self.live) = (self.derived + 1, self.live + 1);
                continue;
            };
            let entry = &mut copies[i];
            if !full && same(&entry.svc, svc, meta_svc) && same_eps(entry.eps.as_ref(), ep) {
                entry.seen = generation;
                continue;
            }
            let old = std::mem::take(&mut entry.ports);
            *entry = ctx.derive(svc, ep, old, &mut self.retired);
            self.derived += 1;
        }
        // Every entry was seen unless a Service went away.
        if snapshot.services.len() != self.live {
            self.drop_unseen(&ctx);
        }
        self.collect()
    }

    /// The slot of Service `ns/name`, made (empty) when new.
    fn slot_of(&mut self, ns: &str, name: &str) -> usize {
        if let Some(at) = self.index.get(ns).and_then(|m| m.get(name)) {
            return *at;
        }
        let slot = Slot {
            ns: ns.to_string(),
            name: name.to_string(),
            copies: Vec::new(),
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = Some(slot);
                at
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        let names = self.index.entry(ns.to_string()).or_default();
        names.insert(name.to_string(), at);
        let pos = self.position(ns, name).unwrap_or_else(|p| p);
        self.order.insert(pos, at);
        at
    }

    /// Where `ns/name` is (`Ok`) or belongs (`Err`) in `order`.
    fn position(&self, ns: &str, name: &str) -> Result<usize, usize> {
        self.order.binary_search_by(|at| {
            let key = self.slots[*at]
                .as_ref()
                .map(|s| (s.ns.as_str(), s.name.as_str()));
            key.unwrap_or_default().cmp(&(ns, name))
        })
    }

    /// Drops the entries this update did not see (deleted Services), retiring
    /// their blocks.
    fn drop_unseen(&mut self, ctx: &Ctx) {
        for at in 0..self.slots.len() {
            let Some(slot) = self.slots[at].as_mut() else {
                continue;
            };
            for gone in slot.copies.iter().filter(|e| e.seen != ctx.generation) {
                ctx.retire(gone.ports.iter(), &mut self.retired);
            }
            let before = slot.copies.len();
            slot.copies.retain(|e| e.seen == ctx.generation);
            self.live -= before - slot.copies.len();
            if !slot.copies.is_empty() {
                continue;
            }
            let (ns, name) = (slot.ns.clone(), slot.name.clone());
            if let Ok(pos) = self.position(&ns, &name) {
                self.order.remove(pos);
            }
            if let Some(names) = self.index.get_mut(&ns) {
                names.remove(&name);
                if names.is_empty() {
                    self.index.remove(&ns);
                }
            }
            self.slots[at] = None;
            self.free.push(at);
        }
    }

    fn collect(&self) -> Derivation {
        let copies = || {
            self.order
                .iter()
                .filter_map(|at| self.slots[*at].as_ref())
                .map(|s| &s.copies)
        };
        let mut ports: Vec<&Derived> = copies().flatten().flat_map(|e| &e.ports).collect();
        let order = |a: &&Derived, b: &&Derived| {
            (&a.info.name, a.info.protocol).cmp(&(&b.info.name, b.info.protocol))
        };
        // Copies of one Service interleave their ports; sort (stably) only then.
        if !ports.windows(2).all(|w| order(&w[0], &w[1]).is_le()) {
            ports.sort_by(order);
        }
        Derivation {
            blocks: ports.iter().map(|d| d.rules.clone()).collect(),
            prints: ports.iter().map(|d| d.print).collect(),
            udp: conntrack::udp_ports(ports.iter().map(|d| &d.info)),
            clean: ports.iter().map(|d| d.born <= self.checkpoint).collect(),
            retired: self.retired.clone(),
            duplicates: copies().any(|c| c.len() > 1),
        }
    }
}

fn key(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn meta_svc(s: &Service) -> &ObjectMeta {
    &s.metadata
}

fn meta_eps(e: &Endpoints) -> &ObjectMeta {
    &e.metadata
}

/// Whether `new` is the object seen as `old`: same uid and resourceVersion when
/// both have a version, else equal.
fn same<K: PartialEq>(old: &K, new: &K, meta: fn(&K) -> &ObjectMeta) -> bool {
    let (a, b) = (meta(old), meta(new));
    match (a.resource_version.as_deref(), b.resource_version.as_deref()) {
        (Some(x), Some(y)) if !x.is_empty() && !y.is_empty() => x == y && a.uid == b.uid,
        _ => old == new,
    }
}

fn same_eps(old: Option<&Endpoints>, new: Option<&Endpoints>) -> bool {
    match (old, new) {
        (None, None) => true,
        (Some(a), Some(b)) => same(a, b, meta_eps),
        _ => false,
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
