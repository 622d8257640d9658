//! Node registration and node status (the kubelet's `registerWithAPIServer` and
//! `updateNodeStatus`): the Node object with its labels, podCIDR, addresses,
//! capacity, nodeInfo and the Ready/Pressure conditions, patched every heartbeat.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::config::Config;

/// Version strings the kubelet reports.
pub const KUBELET_VERSION: &str = "v1.33.0-minion";
/// Runtime version reported in nodeInfo.
pub const RUNTIME_VERSION: &str = "minion://0.1.0";

/// A failed Node API call.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API server refused or failed.
    #[error("failed to {action} node {node}: {source}")]
    Api {
        /// create / patch / patch status / get.
        action: &'static str,
        /// Node name.
        node: String,
        /// kube error.
        source: kube::Error,
    },
}

/// Facts about the machine, gathered once at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    /// Logical CPUs.
    pub cpus: usize,
    /// MemTotal in KiB.
    pub memory_ki: u64,
    /// Size of the root-dir filesystem in bytes.
    pub ephemeral_bytes: u64,
    /// uname release.
    pub kernel_version: String,
    /// PRETTY_NAME of /etc/os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// GOARCH-style architecture (amd64, arm64).
    pub arch: String,
}

/// `MemTotal` (KiB) from a /proc/meminfo text.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `PRETTY_NAME` from an /etc/os-release text.
pub fn parse_os_release(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_string())
}

/// Kubernetes' name for the machine architecture.
pub fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" => "arm",
        other => other,
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Reads the machine's facts (missing files give empty/zero values, logged).
pub fn gather_facts(root_dir: &Path) -> NodeFacts {
    let uname = nix::sys::utsname::uname().ok();
    let ephemeral_bytes = nix::sys::statvfs::statvfs(root_dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or_else(|e| {
            tracing::warn!(path = %root_dir.display(), error = %e, "statvfs failed");
            0
        });
    NodeFacts {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        memory_ki: parse_meminfo(&read_trim("/proc/meminfo")).unwrap_or(0),
        ephemeral_bytes,
        kernel_version: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        os_image: parse_os_release(&read_trim("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
        machine_id: read_trim("/etc/machine-id"),
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        arch: uname.map(|u| go_arch(&u.machine().to_string_lossy()).to_string()).unwrap_or_else(|| "amd64".into()),
    }
}

/// The Node object's metadata and spec as registered.
pub fn build_node(config: &Config, facts: &NodeFacts) -> Node {
    let labels = BTreeMap::from([
        (minion_api::LABEL_HOSTNAME.to_string(), config.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), facts.arch.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), facts.arch.clone()),
    ]);
    let cidr = Some(config.pod_cidr.clone()).filter(|c| !c.is_empty());
    Node {
        metadata: ObjectMeta { name: Some(config.node_name.clone()), labels: Some(labels), ..Default::default() },
        spec: Some(NodeSpec { pod_cidr: cidr.clone(), pod_cidrs: cidr.map(|c| vec![c]), ..Default::default() }),
        status: None,
    }
}

/// Remembers when each condition last changed status (`lastTransitionTime`).
#[derive(Debug, Default, Clone)]
pub struct ConditionClock {
    seen: BTreeMap<String, (String, Timestamp)>,
}

impl ConditionClock {
    fn transition(&mut self, kind: &str, status: &str, now: Timestamp) -> Timestamp {
        match self.seen.get(kind) {
            Some((s, t)) if s == status => *t,
            _ => {
                self.seen.insert(kind.to_string(), (status.to_string(), now));
                now
            }
        }
    }
}

/// Whether the node is Ready, and why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// Ready status.
    pub ready: bool,
    /// Message when not ready.
    pub message: String,
    /// Why the node is under disk pressure, if it is (image or node filesystem low).
    pub disk_pressure: Option<String>,
}

fn cond(clock: &mut ConditionClock, now: Timestamp, kind: &str, ok: bool, reason: &str, message: &str) -> NodeCondition {
    let status = if ok { "True" } else { "False" };
    NodeCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(clock.transition(kind, status, now))),
    }
}

/// The node's conditions at `now`.
pub fn conditions(clock: &mut ConditionClock, now: Timestamp, readiness: &Readiness) -> Vec<NodeCondition> {
    let (reason, message) = if readiness.ready {
        ("KubeletReady", "kubelet is posting ready status".to_string())
    } else {
        ("KubeletNotReady", readiness.message.clone())
    };
    vec![
        cond(clock, now, "MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        match &readiness.disk_pressure {
            Some(why) => cond(clock, now, "DiskPressure", true, "KubeletHasDiskPressure", why),
            None => cond(clock, now, "DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        },
        cond(clock, now, "PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond(clock, now, "Ready", readiness.ready, reason, &message),
    ]
}

/// The full node status at `now`.
pub fn build_status(config: &Config, facts: &NodeFacts, conditions: Vec<NodeCondition>) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(facts.cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{}Ki", facts.memory_ki))),
        ("pods".to_string(), Quantity("110".to_string())),
        ("ephemeral-storage".to_string(), Quantity(facts.ephemeral_bytes.to_string())),
    ]);
    NodeStatus {
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: config.node_ip.clone() },
            NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() },
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(config.kubelet_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.arch.clone(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node is Ready once a CNI network config exists (like the kubelet's NetworkReady).
pub fn readiness(config: &Config) -> Readiness {
    let disk_pressure = crate::images::disk_pressure(config);
    match crate::cni::NetworkConfigList::load(&config.cni_conf_dir) {
        Ok(_) => Readiness { ready: true, message: String::new(), disk_pressure },
        Err(e) => Readiness {
            ready: false,
            message: format!("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:{e}"),
            disk_pressure,
        },
    }
}

/// Creates Node N, or patches its labels and spec if it exists; returns its uid.
pub async fn register(api: &Api<Node>, config: &Config, facts: &NodeFacts) -> Result<String, NodeError> {
    let node = build_node(config, facts);
    let name = config.node_name.clone();
    let err = |action, source| NodeError::Api { action, node: name.clone(), source };
    let registered = match api.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": node.metadata.labels}, "spec": node.spec});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| err("patch", e))?
        }
        Err(e) => return Err(err("create", e)),
    };
    Ok(registered.metadata.uid.unwrap_or_default())
}

/// Merge-patches `nodes/N/status` with the current status.
pub async fn patch_status(api: &Api<Node>, config: &Config, status: &NodeStatus) -> Result<(), NodeError> {
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| NodeError::Api { action: "patch status of", node: config.node_name.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn facts() -> NodeFacts {
        NodeFacts {
            cpus: 2,
            memory_ki: 4028440,
            ephemeral_bytes: 1000,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "abc".into(),
            boot_id: "def".into(),
            arch: "amd64".into(),
        }
    }

    fn config() -> Config {
        let mut c = Config::new("node1", PathBuf::from("/tmp/x"));
        c.node_ip = "172.18.0.11".into();
        c.pod_cidr = "10.244.1.0/24".into();
        c
    }

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_meminfo("MemTotal:        4028440 kB\nMemFree: 1 kB\n"), Some(4028440));
        assert_eq!(parse_os_release("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(go_arch("x86_64"), "amd64");
    }

    #[test]
    fn node_has_labels_and_pod_cidr() {
        let n = build_node(&config(), &facts());
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        let spec = n.spec.unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.1.0/24"));
        assert_eq!(spec.pod_cidrs, Some(vec!["10.244.1.0/24".to_string()]));
    }

    #[test]
    fn status_has_addresses_capacity_and_info() {
        let mut clock = ConditionClock::default();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let ready = Readiness { ready: true, message: String::new(), disk_pressure: None };
        let s = build_status(&config(), &facts(), conditions(&mut clock, now, &ready));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["addresses"][0], serde_json::json!({"type": "InternalIP", "address": "172.18.0.11"}));
        assert_eq!(v["addresses"][1], serde_json::json!({"type": "Hostname", "address": "node1"}));
        assert_eq!(v["capacity"]["cpu"], "2");
        assert_eq!(v["capacity"]["memory"], "4028440Ki");
        assert_eq!(v["allocatable"]["pods"], "110");
        assert_eq!(v["nodeInfo"]["kubeletVersion"], "v1.33.0-minion");
        assert_eq!(v["nodeInfo"]["containerRuntimeVersion"], "minion://0.1.0");
        assert_eq!(v["nodeInfo"]["bootID"], "def");
        let ready = v["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        let mem = v["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "MemoryPressure").unwrap().clone();
        assert_eq!(mem["reason"], "KubeletHasSufficientMemory");
        assert_eq!(mem["status"], "False");
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut clock = ConditionClock::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let ready = Readiness { ready: true, message: String::new(), disk_pressure: None };
        let not_ready = Readiness { ready: false, message: "cni".into(), disk_pressure: None };
        let find = |cs: Vec<NodeCondition>| cs.into_iter().find(|c| c.type_ == "Ready").unwrap();
        let a = find(conditions(&mut clock, t0, &not_ready));
        let b = find(conditions(&mut clock, t1, &not_ready));
        let c = find(conditions(&mut clock, t2, &ready));
        assert_eq!(a.last_transition_time, b.last_transition_time);
        assert_eq!(b.last_heartbeat_time, Some(Time(t1)));
        assert_eq!(c.last_transition_time, Some(Time(t2)));
        assert_eq!(c.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(b.reason.as_deref(), Some("KubeletNotReady"));
    }
}
