//! OCI bundle generation: a pod's container spec + its image config → the runtime
//! spec (`config.json`), as the kubelet/containerd pair does it. Pure: no IO here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::cri::ImageConfig;
use crate::quantity;

/// Annotation naming the image rootfs the runtime uses as overlay lowerdir.
pub const ANNOTATION_ROOTFS: &str = "io.minion.image.rootfs";
/// Annotation naming the container's CRI-format log file.
pub const ANNOTATION_LOG_PATH: &str = "io.minion.log.path";

/// Why a bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A resource quantity is malformed.
    #[error("container {container}: resources.{field}: {source}")]
    Quantity {
        /// Container name.
        container: String,
        /// limits.memory, limits.cpu, requests.cpu.
        field: String,
        /// Parse error.
        source: quantity::QuantityError,
    },
    /// The container runs nothing (no command and no image Entrypoint/Cmd).
    #[error("container {0}: no command specified and the image has no Entrypoint or Cmd")]
    NoCommand(String),
    /// An oci-spec builder rejected a value.
    #[error("container {container}: building OCI spec: {source}")]
    Spec {
        /// Container name.
        container: String,
        /// Builder error.
        source: oci_spec::OciSpecError,
    },
}

/// Everything besides the pod that goes into one container's bundle.
#[derive(Debug, Clone)]
pub struct BundleParams<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container (one of `pod.spec.containers`).
    pub container: &'a Container,
    /// The image config from `image inspect`.
    pub image: &'a ImageConfig,
    /// The image rootfs directory (annotation for the runtime).
    pub image_rootfs: &'a str,
    /// The pod IP (for `status.podIP` fieldRefs).
    pub pod_ip: &'a str,
    /// The node's IP (for `status.hostIP`).
    pub host_ip: &'a str,
    /// This node's name (for `spec.nodeName`).
    pub node_name: &'a str,
    /// The pod's network namespace path (None: the node's, for hostNetwork pods).
    pub netns_path: Option<&'a Path>,
    /// Directory holding resolv.conf, hosts and hostname.
    pub etc_dir: &'a Path,
    /// The container's log file.
    pub log_path: &'a Path,
    /// cgroup parent name (`minion`).
    pub cgroup_parent: &'a str,
}

/// Kubernetes' rule: command overrides Entrypoint (and drops Cmd), args override Cmd.
pub fn resolve_args(command: &[String], args: &[String], image: &ImageConfig) -> Vec<String> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => entrypoint.into_iter().chain(args.iter().cloned()).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// The value of a `fieldRef` env var, for the fields the kubelet supports.
pub fn field_ref_value(p: &BundleParams, path: &str) -> Option<String> {
    let meta = &p.pod.metadata;
    let spec = p.pod.spec.as_ref();
    let lookup = |map: &Option<std::collections::BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map.as_ref()?.get(key).cloned()
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(p.node_name.to_string()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => Some(p.pod_ip.to_string()),
        "status.podIPs" => Some(p.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(p.host_ip.to_string()),
        _ if path.starts_with("metadata.labels['") => lookup(&meta.labels, "metadata.labels['"),
        _ if path.starts_with("metadata.annotations['") => lookup(&meta.annotations, "metadata.annotations['"),
        _ => None,
    }
}

/// Kubernetes' `$(VAR)` expansion: defined vars are replaced, undefined ones kept
/// verbatim, and `$$` escapes a literal `$`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..close + 1];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[pos..pos + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn env_value(p: &BundleParams, var: &EnvVar, defined: &HashMap<String, String>) -> String {
    if let Some(v) = &var.value {
        return expand(v, &|k| defined.get(k).cloned());
    }
    let field = var.value_from.as_ref().and_then(|f| f.field_ref.as_ref());
    field.and_then(|f| field_ref_value(p, &f.field_path)).unwrap_or_default()
}

fn service_vars() -> Vec<(String, String)> {
    let ip = minion_api::KUBERNETES_SERVICE_IP;
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), ip.into()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{ip}:443")),
    ]
}

/// The variables `$(VAR)` may name in command/args: the service vars and the
/// container's own env (not the image's), as the kubelet does.
pub fn expansion_vars(p: &BundleParams) -> HashMap<String, String> {
    let mut defined: HashMap<String, String> = service_vars().into_iter().collect();
    for var in p.container.env.iter().flatten() {
        let value = env_value(p, var, &defined);
        defined.insert(var.name.clone(), value);
    }
    defined
}

/// Image Env, then the service env vars, then the container's env (later wins per key).
pub fn build_env(p: &BundleParams) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut set = |k: &str, v: String| {
        if values.insert(k.to_string(), v).is_none() {
            order.push(k.to_string());
        }
    };
    set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for kv in p.image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v.to_string());
    }
    set("HOSTNAME", p.pod.metadata.name.clone().unwrap_or_default());
    let mut defined: HashMap<String, String> = HashMap::new();
    for (k, v) in service_vars() {
        set(&k, v.clone());
        defined.insert(k, v);
    }
    for var in p.container.env.iter().flatten() {
        let value = env_value(p, var, &defined);
        defined.insert(var.name.clone(), value.clone());
        set(&var.name, value);
    }
    order.into_iter().map(|k| format!("{k}={}", values[&k])).collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
}

/// The pod's mounts: runc's defaults plus the kubelet-managed files in `/etc`.
pub fn build_mounts(etc_dir: &Path) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ];
    for file in ["resolv.conf", "hosts", "hostname"] {
        let src = etc_dir.join(file);
        mounts.push(mount(&format!("/etc/{file}"), "bind", &src.to_string_lossy(), &["rbind", "rprivate"])?);
    }
    Ok(mounts)
}

/// The default capability set of container runtimes (containerd/Docker).
pub fn default_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown, DacOverride, Fsetid, Fowner, Mknod, NetRaw, Setgid, Setuid, Setfcap, Setpcap,
        NetBindService, SysChroot, Kill, AuditWrite,
    ]
}

fn namespaces(netns: Option<&Path>) -> Result<Vec<LinuxNamespace>, oci_spec::OciSpecError> {
    let mut list = Vec::new();
    for typ in [LinuxNamespaceType::Pid, LinuxNamespaceType::Mount, LinuxNamespaceType::Uts, LinuxNamespaceType::Ipc] {
        list.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    if let Some(path) = netns {
        list.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(path).build()?);
    }
    Ok(list)
}

/// Memory limit (bytes), cpu quota (µs) and cpu shares from the container's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// limits.memory in bytes.
    pub memory: Option<i64>,
    /// limits.cpu as CFS quota.
    pub cpu_quota: Option<i64>,
    /// requests.cpu (or limits.cpu) as shares.
    pub cpu_shares: Option<u64>,
}

/// Parses a container's resources into cgroup values.
pub fn limits(container: &Container) -> Result<Limits, BundleError> {
    let res = container.resources.as_ref();
    let get = |which: &str, key: &str| {
        let map = if which == "limits" { res.and_then(|r| r.limits.as_ref()) } else { res.and_then(|r| r.requests.as_ref()) };
        map.and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    let err = |field: &str| {
        let container = container.name.clone();
        let field = field.to_string();
        move |source| BundleError::Quantity { container, field, source }
    };
    let memory = get("limits", "memory").map(|q| quantity::parse_bytes(&q)).transpose().map_err(err("limits.memory"))?;
    let cpu_limit = get("limits", "cpu").map(|q| quantity::parse_millicores(&q)).transpose().map_err(err("limits.cpu"))?;
    let cpu_request = get("requests", "cpu").map(|q| quantity::parse_millicores(&q)).transpose().map_err(err("requests.cpu"))?;
    Ok(Limits {
        memory,
        cpu_quota: cpu_limit.map(quantity::millicores_to_quota),
        cpu_shares: cpu_request.or(cpu_limit).map(quantity::millicores_to_shares),
    })
}

fn resources(l: Limits) -> Result<oci_spec::runtime::LinuxResources, oci_spec::OciSpecError> {
    let mut b = LinuxResourcesBuilder::default();
    if let Some(limit) = l.memory {
        b = b.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if l.cpu_quota.is_some() || l.cpu_shares.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(q) = l.cpu_quota {
            cpu = cpu.quota(q).period(quantity::CPU_PERIOD);
        }
        if let Some(s) = l.cpu_shares {
            cpu = cpu.shares(s);
        }
        b = b.cpu(cpu.build()?);
    }
    b.build()
}

/// `/<parent>/pod<uid>/<container>`.
pub fn cgroups_path(parent: &str, uid: &str, container: &str) -> PathBuf {
    PathBuf::from(format!("/{parent}/pod{uid}/{container}"))
}

/// Builds the whole OCI runtime spec for one container of a pod.
pub fn build_spec(p: &BundleParams) -> Result<Spec, BundleError> {
    let name = p.container.name.clone();
    let spec_err = |source| BundleError::Spec { container: name.clone(), source };
    let env = build_env(p);
    let vars = expansion_vars(p);
    let lookup = |k: &str| vars.get(k).cloned();
    let expand_all = |list: Option<&Vec<String>>| -> Vec<String> {
        list.map(|l| l.iter().map(|s| expand(s, &lookup)).collect()).unwrap_or_default()
    };
    let args = resolve_args(&expand_all(p.container.command.as_ref()), &expand_all(p.container.args.as_ref()), p.image);
    if args.is_empty() {
        return Err(BundleError::NoCommand(name));
    }
    let limits = limits(p.container)?;
    let uid = p.pod.metadata.uid.clone().unwrap_or_default();
    let process = build_process(p, args, env).map_err(spec_err)?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces(p.netns_path).map_err(spec_err)?)
        .cgroups_path(cgroups_path(p.cgroup_parent, &uid, &name))
        .resources(resources(limits).map_err(spec_err)?)
        .masked_paths(masked_paths())
        .readonly_paths(readonly_paths())
        .build()
        .map_err(spec_err)?;
    let read_only = security(p.container).and_then(|s| s.read_only_root_filesystem).unwrap_or(false);
    let annotations = HashMap::from([
        (ANNOTATION_ROOTFS.to_string(), p.image_rootfs.to_string()),
        (ANNOTATION_LOG_PATH.to_string(), p.log_path.to_string_lossy().into_owned()),
        ("io.kubernetes.pod.uid".to_string(), uid.clone()),
        ("io.kubernetes.pod.name".to_string(), p.pod.metadata.name.clone().unwrap_or_default()),
        ("io.kubernetes.pod.namespace".to_string(), p.pod.metadata.namespace.clone().unwrap_or_default()),
        ("io.kubernetes.container.name".to_string(), name.clone()),
    ]);
    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path("rootfs").readonly(read_only).build().map_err(spec_err)?)
        .hostname(p.pod.metadata.name.clone().unwrap_or_default())
        .mounts(build_mounts(p.etc_dir).map_err(spec_err)?)
        .process(process)
        .annotations(annotations)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

fn security(c: &Container) -> Option<&k8s_openapi::api::core::v1::SecurityContext> {
    c.security_context.as_ref()
}

fn build_process(p: &BundleParams, args: Vec<String>, env: Vec<String>) -> Result<oci_spec::runtime::Process, oci_spec::OciSpecError> {
    let sc = security(p.container);
    let pod_sc = p.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let uid = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user)).unwrap_or(0);
    let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group)).unwrap_or(0);
    let caps: oci_spec::runtime::Capabilities = default_capabilities().into_iter().collect();
    let cwd = p
        .container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| p.image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(uid as u32).gid(gid as u32).build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()?,
        )
        .no_new_privileges(false)
        .build()
}

fn masked_paths() -> Vec<String> {
    ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
     "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
        .map(String::from)
        .to_vec()
}

fn readonly_paths() -> Vec<String> {
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"].map(String::from).to_vec()
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
