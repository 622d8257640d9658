//! The pod sandbox: no pause container, but a network namespace bind-mounted at
//! `<netns-dir>/minion-<uid>` (made by the runtime), wired by CNI, plus the
//! kubelet-managed `/etc/{resolv.conf,hosts,hostname}` of the pod. Teardown undoes all
//! of it, including the pod cgroup directories the runtime leaves behind.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::cni::{self, Attachment, CniExec, NetworkConfigList};
use crate::config::Config;
use crate::cri::{CriError, RuntimeService};

/// A sandbox step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `netns add` failed.
    #[error("failed to create network namespace {path}: {source}")]
    Netns {
        /// Netns path.
        path: PathBuf,
        /// Runtime error.
        source: CriError,
    },
    /// CNI ADD failed (names the plugin and its message).
    #[error("failed to set up pod network: {0}")]
    Cni(#[from] cni::CniError),
    /// CNI gave no IP.
    #[error("CNI network {0} returned no pod IP")]
    NoIp(String),
    /// Writing a pod file failed.
    #[error("failed to write {path}: {source}")]
    Io {
        /// File or dir.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
}

/// A ready sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// The pod IP.
    pub pod_ip: String,
    /// Its network namespace (None for hostNetwork pods).
    pub netns: Option<PathBuf>,
}

/// Whether the pod uses the node's network namespace.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io { path: path.to_path_buf(), source }
}

fn network_file(config: &Config, uid: &str) -> PathBuf {
    config.pod_dir(uid).join("network.json")
}

/// The sandbox recorded on disk by an earlier run (agent restart), if any.
pub fn load(config: &Config, pod: &Pod) -> Option<Sandbox> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if host_network(pod) {
        let etc = config.pod_dir(uid).join("etc/hosts");
        return etc.exists().then(|| Sandbox { pod_ip: config.node_ip.clone(), netns: None });
    }
    let netns = config.netns_path(uid);
    let text = std::fs::read_to_string(network_file(config, uid)).ok()?;
    let result: Value = serde_json::from_str(&text).ok()?;
    let pod_ip = cni::result_ips(&result).into_iter().next()?;
    netns.exists().then_some(Sandbox { pod_ip, netns: Some(netns) })
}

fn attachment(config: &Config, uid: &str, namespace: &str, name: &str) -> Attachment {
    Attachment {
        container_id: uid.to_string(),
        netns: config.netns_path(uid),
        ifname: "eth0".into(),
        bin_dir: config.cni_bin_dir.clone(),
        args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={uid}"),
    }
}

/// Creates the netns, runs CNI ADD and writes the pod's /etc files.
pub async fn setup(
    runtime: &dyn RuntimeService,
    exec: &dyn CniExec,
    config: &Config,
    pod: &Pod,
) -> Result<Sandbox, SandboxError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pod_dir = config.pod_dir(&uid);
    std::fs::create_dir_all(&pod_dir).map_err(io(&pod_dir))?;
    if host_network(pod) {
        write_etc_files(&pod_dir.join("etc"), pod, &config.node_ip)?;
        return Ok(Sandbox { pod_ip: config.node_ip.clone(), netns: None });
    }
    let netns = config.netns_path(&uid);
    if !netns.exists() {
        runtime.create_netns(&netns).await.map_err(|source| SandboxError::Netns { path: netns.clone(), source })?;
    }
    let net = NetworkConfigList::load(&config.cni_conf_dir)?;
    let at = attachment(config, &uid, &ns, &name);
    let result = match cni::add(exec, &net, &at).await {
        Ok(r) => r,
        Err(e) => {
            // Undo a half-done ADD (IPAM allocation, veth) before the next attempt.
            for del_err in cni::del(exec, &net, &at, None).await {
                tracing::debug!(error = %del_err, "CNI DEL after failed ADD");
            }
            return Err(e.into());
        }
    };
    let pod_ip = cni::result_ips(&result).into_iter().next().ok_or_else(|| SandboxError::NoIp(net.name.clone()))?;
    let file = network_file(config, &uid);
    std::fs::write(&file, result.to_string()).map_err(io(&file))?;
    write_etc_files(&pod_dir.join("etc"), pod, &pod_ip)?;
    Ok(Sandbox { pod_ip, netns: Some(netns) })
}

/// The pod's hostname (spec.hostname or its name).
pub fn hostname(pod: &Pod) -> String {
    let spec_host = pod.spec.as_ref().and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty());
    spec_host.or_else(|| pod.metadata.name.clone()).unwrap_or_default()
}

/// The kubelet-managed /etc/hosts of a pod.
pub fn hosts_file(pod: &Pod, pod_ip: &str) -> String {
    let host = hostname(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let names = match pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(sub) => format!("{host}.{sub}.{ns}.svc.{} {host}", minion_api::CLUSTER_DOMAIN),
        None => host,
    };
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
         {pod_ip}\t{names}\n"
    )
}

/// The pod's resolv.conf per its dnsPolicy (ClusterFirst by default).
pub fn resolv_conf(pod: &Pod, host_resolv: &str) -> String {
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    match spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst") {
        "Default" => host_resolv.to_string(),
        "ClusterFirst" if host_network(pod) => host_resolv.to_string(),
        "None" => {
            let cfg = spec.and_then(|s| s.dns_config.clone()).unwrap_or_default();
            let mut out = String::new();
            if let Some(search) = cfg.searches.filter(|s| !s.is_empty()) {
                out.push_str(&format!("search {}\n", search.join(" ")));
            }
            for ns in cfg.nameservers.unwrap_or_default() {
                out.push_str(&format!("nameserver {ns}\n"));
            }
            out
        }
        _ => minion_api::pod_resolv_conf(ns),
    }
}

fn write_etc_files(etc: &Path, pod: &Pod, pod_ip: &str) -> Result<(), SandboxError> {
    std::fs::create_dir_all(etc).map_err(io(etc))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let hosts = if host_network(pod) {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts_file(pod, pod_ip))
    } else {
        hosts_file(pod, pod_ip)
    };
    let files = [
        ("resolv.conf", resolv_conf(pod, &host_resolv)),
        ("hosts", hosts),
        ("hostname", format!("{}\n", hostname(pod))),
    ];
    for (name, content) in files {
        let path = etc.join(name);
        std::fs::write(&path, content).map_err(io(&path))?;
    }
    Ok(())
}

/// Tears the sandbox down: CNI DEL (errors logged), netns del, pod cgroups, pod dir.
/// Best effort: every step runs; the first failure of netns removal is returned.
pub async fn teardown(
    runtime: &dyn RuntimeService,
    exec: &dyn CniExec,
    config: &Config,
    uid: &str,
    namespace: &str,
    name: &str,
) -> Result<(), SandboxError> {
    let netns = config.netns_path(uid);
    let prev: Option<Value> =
        std::fs::read_to_string(network_file(config, uid)).ok().and_then(|t| serde_json::from_str(&t).ok());
    match NetworkConfigList::load(&config.cni_conf_dir) {
        Ok(net) if netns.exists() || prev.is_some() => {
            for e in cni::del(exec, &net, &attachment(config, uid, namespace, name), prev.as_ref()).await {
                tracing::warn!(error = %e, "CNI DEL failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "no CNI config for teardown"),
    }
    let mut result = Ok(());
    if netns.exists() {
        if let Err(source) = runtime.remove_netns(&netns).await {
            tracing::warn!(error = %source, "netns del failed");
            result = Err(SandboxError::Netns { path: netns.clone(), source });
        }
    }
    remove_pod_cgroups(&config.cgroup_root, &config.cgroup_parent, uid);
    let dir = config.pod_dir(uid);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove pod dir");
        }
    }
    result
}

/// Directories `<root>/<ctrl>/<parent>/pod<uid>` (v1) and `<root>/<parent>/pod<uid>` (v2).
pub fn pod_cgroup_dirs(cgroup_root: &Path, parent: &str, uid: &str) -> Vec<PathBuf> {
    let leaf = format!("pod{uid}");
    let mut dirs = vec![cgroup_root.join(parent).join(&leaf)];
    if let Ok(entries) = std::fs::read_dir(cgroup_root) {
        for e in entries.flatten() {
            let dir = e.path().join(parent).join(&leaf);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Removes the pod's cgroup dirs (children first; cgroupfs dirs are removed with rmdir).
pub fn remove_pod_cgroups(cgroup_root: &Path, parent: &str, uid: &str) {
    for dir in pod_cgroup_dirs(cgroup_root, parent, uid) {
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                if let Err(e) = std::fs::remove_dir(child.path()) {
                    tracing::warn!(path = %child.path().display(), error = %e, "failed to remove container cgroup");
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove pod cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: Value) -> Pod {
        let mut v = json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"containers": [{"name": "a"}]}});
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hosts_and_hostname() {
        let p = pod(json!({}));
        let hosts = hosts_file(&p, "10.244.1.5");
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("::1\tlocalhost"));
        assert!(hosts.ends_with("10.244.1.5\tweb\n"));
        let p = pod(json!({"hostname": "db-0", "subdomain": "db"}));
        assert!(hosts_file(&p, "10.0.0.1").ends_with("10.0.0.1\tdb-0.db.shop.svc.cluster.local db-0\n"));
    }

    #[test]
    fn resolv_conf_follows_dns_policy() {
        let p = pod(json!({}));
        assert_eq!(resolv_conf(&p, "nameserver 1.1.1.1\n"), minion_api::pod_resolv_conf("shop"));
        let p = pod(json!({"dnsPolicy": "Default"}));
        assert_eq!(resolv_conf(&p, "nameserver 1.1.1.1\n"), "nameserver 1.1.1.1\n");
        let p = pod(json!({"hostNetwork": true}));
        assert_eq!(resolv_conf(&p, "nameserver 1.1.1.1\n"), "nameserver 1.1.1.1\n");
        let p = pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert_eq!(resolv_conf(&p, "nameserver 1.1.1.1\n"), minion_api::pod_resolv_conf("shop"));
        let p = pod(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["a.b"]}}));
        assert_eq!(resolv_conf(&p, ""), "search a.b\nnameserver 9.9.9.9\n");
    }

    #[test]
    fn finds_and_removes_pod_cgroups_in_fixture() {
        let root = tempfile::tempdir().unwrap();
        for ctrl in ["memory", "cpu", "pids"] {
            std::fs::create_dir_all(root.path().join(ctrl).join("minion/podu1/app")).unwrap();
        }
        std::fs::create_dir_all(root.path().join("minion/podu1")).unwrap();
        std::fs::create_dir_all(root.path().join("memory/minion/podu2")).unwrap();
        assert_eq!(pod_cgroup_dirs(root.path(), "minion", "u1").len(), 4);
        remove_pod_cgroups(root.path(), "minion", "u1");
        assert!(pod_cgroup_dirs(root.path(), "minion", "u1").is_empty());
        assert!(root.path().join("memory/minion/podu2").exists());
    }
}
