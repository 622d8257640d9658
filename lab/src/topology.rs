//! The lab's addressing plan: pure, so it can be unit-tested and printed.

use std::path::{Path, PathBuf};

use crate::LabError;

/// The lab LAN's prefix; the control plane is `.1`, node i is `.(10+i)`.
pub const LAN_PREFIX: &str = "172.18.0";
/// The bridge in the control-plane namespace that every node's eth0 plugs into.
pub const LAN_BRIDGE: &str = "labbr0";

/// Names and addresses of everything one lab makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    pub nodes: usize,
    pub state_dir: PathBuf,
}

impl Topology {
    /// Checks the lab name and builds the plan.
    pub fn new(name: &str, nodes: usize, state_root: &Path) -> Result<Topology, LabError> {
        let ok = !name.is_empty()
            && name.len() <= 20
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok || nodes == 0 || nodes > 50 {
            return Err(LabError::BadName(name.to_string()));
        }
        Ok(Topology { name: name.to_string(), nodes, state_dir: state_root.join(name) })
    }

    /// The control plane's network namespace.
    pub fn cp_netns(&self) -> String {
        format!("{}-cp", self.name)
    }

    /// Node names, `node-1`... as in the lesson.
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("node-{i}")).collect()
    }

    /// A node's network namespace.
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// The 1-based index of a node name.
    pub fn node_index(&self, node: &str) -> Result<usize, LabError> {
        self.node_names().iter().position(|n| n == node).map(|i| i + 1).ok_or_else(|| {
            LabError::NoSuchNode {
                lab: self.name.clone(),
                node: node.to_string(),
                known: self.node_names().join(", "),
            }
        })
    }

    /// The API server's address on the lab LAN.
    pub fn api_ip(&self) -> String {
        format!("{LAN_PREFIX}.1")
    }

    /// Node i's address on the lab LAN.
    pub fn node_ip(&self, index: usize) -> String {
        format!("{LAN_PREFIX}.{}", 10 + index)
    }

    /// Node i's pod CIDR, a /24 of the cluster CIDR as kind hands them out.
    pub fn pod_cidr(&self, index: usize) -> String {
        format!("10.244.{index}.0/24")
    }

    /// The cgroup parent under which node i's pods live.
    pub fn cgroup_parent(&self, node: &str) -> String {
        format!("minion-{}-{node}", self.name)
    }

    /// The veth end of node i that sits in the control-plane namespace.
    pub fn lan_port(&self, index: usize) -> String {
        format!("lan-n{index}")
    }

    /// The state directory of one node.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("nodes").join(node)
    }

    /// The kubeconfig the lab writes for kubectl.
    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }

    /// A node's kubeconfig (its `system:node:<name>` token), used by all its daemons.
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("kubeconfig")
    }

    /// The API server's data dir.
    pub fn apiserver_dir(&self) -> PathBuf {
        self.state_dir.join("apiserver")
    }

    /// The cluster CA the API server generates on first start.
    pub fn ca_file(&self) -> PathBuf {
        self.apiserver_dir().join("pki/ca.crt")
    }

    /// The token the API server presents to every kubelet (`pods/log`), and which each
    /// agent requires: `--kubelet-client-token-file` of both.
    pub fn kubelet_client_token_file(&self) -> PathBuf {
        self.state_dir.join("kubelet-client.token")
    }

    /// The API server's `--token-auth-file`: the admin's and each node's token.
    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join("tokens.csv")
    }

    /// The API server's URL on the lab LAN.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_ip(), minion_api::API_PORT)
    }

    /// A kubeconfig's text for one token user, trusting the lab's CA.
    pub fn kubeconfig_yaml(&self, user: &str, token: &str) -> String {
        let (name, url, ca) = (&self.name, self.api_url(), self.ca_file());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {user}\n\
             current-context: {name}\nusers:\n- name: {user}\n  user:\n    token: {token}\n",
            ca = ca.display()
        )
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_and_addresses() {
        let t = Topology::new("demo", 2, Path::new("/run/minion-lab")).unwrap();
        assert_eq!(t.cp_netns(), "demo-cp");
        assert_eq!(t.node_names(), vec!["node-1", "node-2"]);
        assert_eq!(t.node_netns("node-2"), "demo-node-2");
        assert_eq!(t.node_ip(2), "172.18.0.12");
        assert_eq!(t.pod_cidr(1), "10.244.1.0/24");
        assert_eq!(t.node_index("node-2").unwrap(), 2);
        assert!(t.node_index("node-3").is_err());
        let k = t.kubeconfig_yaml("admin", "tok");
        assert!(k.contains("server: https://172.18.0.1:6443"), "{k}");
        assert!(k.contains("certificate-authority: /run/minion-lab/demo/apiserver/pki/ca.crt"), "{k}");
        assert!(k.contains("    token: tok\n"), "{k}");
        assert_eq!(t.node_kubeconfig("node-1"), Path::new("/run/minion-lab/demo/nodes/node-1/kubeconfig"));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "Demo", "1lab", "a_b", "averyveryverylongname12"] {
            assert!(Topology::new(bad, 1, Path::new("/tmp")).is_err(), "{bad}");
        }
        assert!(Topology::new("ok", 0, Path::new("/tmp")).is_err());
    }
}
