//! Self-registration behind the `kube-system/kube-dns` Service. That Service has no
//! selector (the API server creates it with clusterIP 10.96.0.10), so no endpoints
//! controller fills its Endpoints: each dnsd adds its own advertise address there
//! (ports `dns` 53/UDP and `dns-tcp` 53/TCP) and removes it on shutdown, so that
//! kube-proxy sends 10.96.0.10:53 to the running DNS servers.
//!
//! The edits are pure functions over `Endpoints`; the API calls are read-modify-write
//! with the object's resourceVersion, retried on 409 Conflict.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Namespace and name of the DNS Service's Endpoints.
pub const KUBE_DNS_NAMESPACE: &str = "kube-system";
/// Name of the DNS Service and its Endpoints.
pub const KUBE_DNS_NAME: &str = "kube-dns";
/// Read-modify-write attempts before giving up on conflicts.
const MAX_ATTEMPTS: usize = 10;
/// Pause between conflicting attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Errors while editing the kube-dns Endpoints.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// An API call failed.
    #[error("failed to {action} Endpoints {KUBE_DNS_NAMESPACE}/{KUBE_DNS_NAME}: {source}")]
    Api {
        /// What was attempted (get, create, update).
        action: &'static str,
        /// The client's error.
        source: kube::Error,
    },
    /// Every attempt hit a conflict.
    #[error("Endpoints {KUBE_DNS_NAMESPACE}/{KUBE_DNS_NAME} kept changing: gave up after {MAX_ATTEMPTS} conflicts")]
    Conflicts,
}

/// This server's place in the kube-dns Endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The advertise address (`--advertise-address`).
    pub address: IpAddr,
    /// The DNS port (the listen port).
    pub port: u16,
    /// The node this dnsd runs on, if known.
    pub node_name: Option<String>,
}

impl Registration {
    /// The ports every kube-dns subset carries: `dns` UDP and `dns-tcp` TCP.
    pub fn ports(&self) -> Vec<EndpointPort> {
        let port = |name: &str, protocol: &str| EndpointPort {
            name: Some(name.to_string()),
            port: i32::from(self.port),
            protocol: Some(protocol.to_string()),
            ..Default::default()
        };
        vec![port("dns", "UDP"), port("dns-tcp", "TCP")]
    }

    fn endpoint_address(&self) -> EndpointAddress {
        EndpointAddress {
            ip: self.address.to_string(),
            node_name: self.node_name.clone(),
            ..Default::default()
        }
    }

    /// `endpoints` with this address added, or `None` when it is already there.
    /// The address joins the subset with the same ports, or a new subset.
    pub fn add_to(&self, mut endpoints: Endpoints) -> Option<Endpoints> {
        let ip = self.address.to_string();
        let ports = self.ports();
        let subsets = endpoints.subsets.get_or_insert_with(Vec::new);
        if let Some(subset) = subsets.iter_mut().find(|s| same_ports(s, &ports)) {
            let addresses = subset.addresses.get_or_insert_with(Vec::new);
            if addresses.iter().any(|a| a.ip == ip) {
                return None;
            }
            addresses.push(self.endpoint_address());
        } else {
            subsets.push(EndpointSubset {
                addresses: Some(vec![self.endpoint_address()]),
                ports: Some(ports),
                ..Default::default()
            });
        }
        Some(endpoints)
    }

    /// `endpoints` with this address removed (subsets left empty are dropped), or
    /// `None` when it is not there.
    pub fn remove_from(&self, mut endpoints: Endpoints) -> Option<Endpoints> {
        let ip = self.address.to_string();
        let subsets = endpoints.subsets.as_mut()?;
        let mut removed = false;
        for subset in subsets.iter_mut() {
            let lists = [&mut subset.addresses, &mut subset.not_ready_addresses];
            for addresses in lists.into_iter().flatten() {
                let before = addresses.len();
                addresses.retain(|a| a.ip != ip);
                removed |= addresses.len() != before;
            }
        }
        subsets.retain(|s| !is_empty(&s.addresses) || !is_empty(&s.not_ready_addresses));
        removed.then_some(endpoints)
    }

    /// A new kube-dns Endpoints holding only this address.
    pub fn new_endpoints(&self) -> Endpoints {
        let empty = Endpoints {
            metadata: ObjectMeta {
                namespace: Some(KUBE_DNS_NAMESPACE.to_string()),
                name: Some(KUBE_DNS_NAME.to_string()),
                labels: Some(
                    [(
                        minion_api::LABEL_K8S_APP.to_string(),
                        KUBE_DNS_NAME.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            subsets: None,
        };
        self.add_to(empty).unwrap_or_default()
    }
}

fn same_ports(subset: &EndpointSubset, ports: &[EndpointPort]) -> bool {
    let mut have: Vec<_> = subset.ports.iter().flatten().map(port_key).collect();
    let mut want: Vec<_> = ports.iter().map(port_key).collect();
    have.sort();
    want.sort();
    have == want
}

fn port_key(p: &EndpointPort) -> (Option<String>, i32, String) {
    (
        p.name.clone(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
    )
}

fn is_empty(list: &Option<Vec<EndpointAddress>>) -> bool {
    list.as_ref().is_none_or(Vec::is_empty)
}

fn api(client: &Client) -> Api<Endpoints> {
    Api::namespaced(client.clone(), KUBE_DNS_NAMESPACE)
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// What one read-modify-write of the kube-dns Endpoints should do.
enum Edit {
    /// Already as wanted.
    Nothing,
    /// The Endpoints do not exist yet.
    Create(Endpoints),
    /// Replace them (the object carries the resourceVersion that was read).
    Replace(Endpoints),
}

/// Reads the kube-dns Endpoints, applies `edit`, writes the result, and starts over
/// when someone else changed or deleted them in between, up to MAX_ATTEMPTS times.
/// Returns whether it wrote.
async fn edit_kube_dns(client: &Client, edit: impl Fn(Option<Endpoints>) -> Edit) -> Result<bool, RegisterError> {
    let api = api(client);
    for _ in 0..MAX_ATTEMPTS {
        let current = api
            .get_opt(KUBE_DNS_NAME)
            .await
            .map_err(|source| RegisterError::Api { action: "get", source })?;
        let result = match edit(current) {
            Edit::Nothing => return Ok(false),
            Edit::Create(new) => api.create(&PostParams::default(), &new).await.map(drop),
            Edit::Replace(updated) => api.replace(KUBE_DNS_NAME, &PostParams::default(), &updated).await.map(drop),
        };
        match result {
            Ok(()) => return Ok(true),
            // Changed (409) or deleted (404) between the read and the write: read again.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => tokio::time::sleep(RETRY_PAUSE).await,
            Err(source) => return Err(RegisterError::Api { action: "write", source }),
        }
    }
    Err(RegisterError::Conflicts)
}

/// Ensures the address is in the kube-dns Endpoints (creating them if missing).
pub async fn register(client: &Client, reg: &Registration) -> Result<(), RegisterError> {
    let wrote = edit_kube_dns(client, |current| match current {
        None => Edit::Create(reg.new_endpoints()),
        Some(current) => reg.add_to(current).map_or(Edit::Nothing, Edit::Replace),
    })
    .await?;
    if wrote {
        tracing::info!(address = %reg.address, "registered in kube-system/kube-dns Endpoints");
    }
    Ok(())
}

/// Removes the address from the kube-dns Endpoints (nothing to do if absent).
pub async fn deregister(client: &Client, reg: &Registration) -> Result<(), RegisterError> {
    let wrote = edit_kube_dns(client, |current| {
        current.and_then(|c| reg.remove_from(c)).map_or(Edit::Nothing, Edit::Replace)
    })
    .await?;
    if wrote {
        tracing::info!(address = %reg.address, "removed from kube-system/kube-dns Endpoints");
    }
    Ok(())
}

#[cfg(test)]
#[path = "register_tests.rs"]
mod tests;
