//! Deriving one Service's state, as kube-proxy's change trackers do when a Service
//! or its Endpoints changed: the Service's ports (`ServicePortInfo`, with their
//! endpoints) and, per port, its rendered block of rules and that block's
//! fingerprint. A port whose info did not change keeps its block; the blocks of
//! ports that went away are retired when the last checkpoint had them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};

use crate::model::{ports_of, ServicePortInfo};
use crate::render::{self, RenderConfig, ServicePortRules};

/// One derived Service port: its info, rendered block and the block's fingerprint.
#[derive(Debug, Clone)]
pub(super) struct Derived {
    pub(super) info: ServicePortInfo,
    pub(super) rules: Arc<ServicePortRules>,
    pub(super) print: u64,
    /// The update that rendered it.
    pub(super) born: u64,
}

/// A Service as last derived.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) svc: Service,
    pub(super) eps: Option<Endpoints>,
    pub(super) ports: Vec<Derived>,
    /// The update that last saw this Service.
    pub(super) seen: u64,
}

/// What deriving needs besides the objects.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a RenderConfig,
    pub(super) node: Option<&'a str>,
    pub(super) generation: u64,
    pub(super) checkpoint: u64,
}

impl Ctx<'_> {
    /// Derives a Service's ports, reusing `old` blocks whose port info is unchanged
    /// and retiring the others.
    pub(super) fn derive(
        &self,
        svc: &Service,
        eps: Option<&Endpoints>,
        mut old: Vec<Derived>,
        retired: &mut Vec<Arc<ServicePortRules>>,
    ) -> Entry {
        let mut infos = ports_of(svc, eps, self.node);
        infos.sort_by(|a, b| (&a.name, a.protocol).cmp(&(&b.name, b.protocol)));
        let ports = infos
            .into_iter()
            .map(|info| match old.iter().position(|d| d.info == info) {
                Some(i) => old.swap_remove(i),
                None => {
                    let rules = render::render_service_port(&info, self.cfg);
                    let print = rules.fingerprint();
                    Derived {
                        info,
                        rules: Arc::new(rules),
                        print,
                        born: self.generation,
                    }
                }
            })
            .collect();
        self.retire(old.iter(), retired);
        Entry {
            svc: svc.clone(),
            eps: eps.cloned(),
            ports,
            seen: self.generation,
        }
    }

    /// Records dropped blocks that the last checkpoint had.
    pub(super) fn retire<'d>(
        &self,
        gone: impl Iterator<Item = &'d Derived>,
        retired: &mut Vec<Arc<ServicePortRules>>,
    ) {
        retired.extend(
            gone.filter(|d| d.born <= self.checkpoint)
                .map(|d| d.rules.clone()),
        );
    }
}
