//! minion-lab: a whole minion cluster on one Linux host, in network namespaces.
//!
//! Where kind runs each node as a Docker container, the lab runs each node as a network
//! namespace: `<lab>-cp` holds the lab's switch (bridge `labbr0`, 172.18.0.1/24) and the
//! control plane (minion-apiserver), and `<lab>-node-<i>` holds one node's agent
//! (kubelet), proxy, DNS daemon and pods. The API server serves TLS with a CA it
//! generates on first start; the admin and each node authenticate with their own bearer
//! token (see [`credentials`]). Nothing the lab makes has a route out of its
//! namespaces, so no packet ever reaches the host's own network.
//!
//! The lab keeps what it made under `<state-dir>/<lab>/` so that `down` can remove all
//! of it, even after a half-finished `up`.

pub mod cluster;
pub mod credentials;
pub mod error;
pub mod image;
pub mod net;
pub mod node;
pub mod process;
pub mod topology;

pub use cluster::{down, up, UpOptions};
pub use error::LabError;
pub use topology::Topology;
