//! minion-netd: the pod network of a minion node. As a CNI plugin (bridge + host-local
//! style IPAM) it gives each pod sandbox a veth on the node bridge and an address from
//! the node's pod CIDR; `write-config` writes the conflist the kubelet reads; `daemon`
//! is the per-node network daemon (host-gw routes to other nodes' pod CIDRs).

pub mod cni;
pub mod config;
pub mod conflist;
pub mod daemon;
pub mod ipam;
pub mod netlink;
pub mod netops;
pub mod plugin;

pub use plugin::{run_plugin, stdin_failure, Outcome};
