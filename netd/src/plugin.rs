//! The CNI bridge plugin's verbs (ADD, DEL, CHECK, VERSION, STATUS, GC): what the kubelet
//! runs to give a pod sandbox its network. Orchestration only; the kernel work goes through
//! [`NetOps`] and the address bookkeeping through [`crate::ipam`].

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnetwork::Ipv4Network;
use sha2::{Digest, Sha256};

use crate::cni::{self, code, CniError, CniResult, Interface, IpConfig, Route};
use crate::config::{parse_env, parse_netconf, peek_version, CniEnv, NetConf};
use crate::ipam::{AddressRange, IpamError, IpamStore, Owner};
use crate::netlink::NetlinkOps;
use crate::netops::{pod_mac, NetError, NetOps, PodAddress, VethSpec};

/// Host-side veth name: `veth` + first 8 hex digits of sha256(containerid + ifname).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}{ifname}").as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("veth{hex}")
}

/// Host-side veth MAC: `02:` (locally administered, unicast) + the next five bytes of
/// the digest that names it ([`host_veth_name`]), stable across re-ADDs.
pub fn host_veth_mac(container_id: &str, ifname: &str) -> [u8; 6] {
    let d = Sha256::digest(format!("{container_id}{ifname}").as_bytes());
    [0x02, d[4], d[5], d[6], d[7], d[8]]
}

impl From<NetError> for CniError {
    fn from(e: NetError) -> Self {
        let c = if matches!(e, NetError::Netns { .. }) {
            code::NETNS
        } else {
            code::KERNEL
        };
        CniError::new(c, e.to_string(), "")
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        let c = if matches!(e, IpamError::Exhausted { .. }) {
            code::IPAM_EXHAUSTED
        } else {
            code::IPAM_STORE
        };
        CniError::new(c, e.to_string(), "")
    }
}

fn owner(env: &CniEnv) -> Owner {
    Owner::new(&env.container_id, &env.ifname)
}

fn allocate(conf: &NetConf, env: &CniEnv) -> Result<Ipv4Addr, IpamError> {
    let store = IpamStore::open(&conf.ipam.network_dir(&conf.name))?;
    store.allocate(&AddressRange::from_conf(&conf.ipam), &owner(env))
}

fn release(conf: &NetConf, env: &CniEnv) -> Result<Vec<Ipv4Addr>, IpamError> {
    let store = IpamStore::open(&conf.ipam.network_dir(&conf.name))?;
    store.release(&owner(env))
}

fn with_prefix(ip: Ipv4Addr, conf: &NetConf) -> Result<Ipv4Network, CniError> {
    Ipv4Network::new(ip, conf.ipam.subnet.prefix())
        .map_err(|e| CniError::new(code::INVALID_NETWORK_CONFIG, format!("{ip}: {e}"), ""))
}

/// ADD: allocate the pod's address, then bridge, veth and pod-side configuration.
/// On a failure after allocation, the address and the veth are released again.
pub async fn cmd_add<O: NetOps>(
    ops: &mut O,
    env: &CniEnv,
    conf: &NetConf,
) -> Result<CniResult, CniError> {
    let ip = allocate(conf, env)?;
    let host = host_veth_name(&env.container_id, &env.ifname);
    match wire_pod(ops, env, conf, ip, &host).await {
        Ok(result) => Ok(result),
        Err(e) => {
            tracing::warn!(container_id = %env.container_id, error = %e, "ADD failed, rolling back");
            let _ = ops.delete_link(&host).await;
            let _ = release(conf, env);
            Err(e)
        }
    }
}

/// Creates the veth pair; a leftover of ours in the way is removed first and the
/// create tried again: the host side of an earlier ADD of the same container, or the
/// pod side an earlier sandbox in this netns kept after its DEL (DEL leaves the link to
/// the namespace's destruction). A pod-side interface that is not ours is an error.
async fn create_veth_replacing<O: NetOps>(
    ops: &mut O,
    spec: &VethSpec,
) -> Result<crate::netops::LinkInfo, CniError> {
    // Host side, pod side, then the create that must work: at most three attempts.
    for _ in 0..2 {
        match ops.create_veth(spec).await {
            Err(NetError::LinkExists(_)) => {
                if ops.delete_link(&spec.host_name).await? {
                    continue;
                }
                if ops
                    .remove_stale_pod_link(&spec.netns, &spec.container_ifname)
                    .await?
                {
                    continue;
                }
                return Err(CniError::new(
                    code::KERNEL,
                    format!(
                        "interface {} already exists in {} and was not made by this plugin",
                        spec.container_ifname,
                        spec.netns.display()
                    ),
                    "",
                ));
            }
            other => return Ok(other?),
        }
    }
    Ok(ops.create_veth(spec).await?)
}

async fn wire_pod<O: NetOps>(
    ops: &mut O,
    env: &CniEnv,
    conf: &NetConf,
    ip: Ipv4Addr,
    host: &str,
) -> Result<CniResult, CniError> {
    let gw_addr = with_prefix(conf.ipam.gateway, conf)?;
    let bridge = ops
        .ensure_bridge(&conf.bridge, conf.mtu, conf.is_gateway.then_some(gw_addr))
        .await?;
    ops.enable_ip_forward().await?;
    let netns = Path::new(&env.netns);
    let spec = VethSpec {
        host_name: host.to_string(),
        container_ifname: env.ifname.clone(),
        netns: netns.to_path_buf(),
        mtu: conf.mtu,
        master: bridge.index,
        hairpin: conf.hairpin_mode,
        container_mac: pod_mac(ip),
        host_mac: host_veth_mac(&env.container_id, &env.ifname),
    };
    let host_link = create_veth_replacing(ops, &spec).await?;
    let pod_addr = PodAddress {
        address: with_prefix(ip, conf)?,
        gateway: conf.ipam.gateway,
    };
    let pod_link = ops.configure_pod(netns, &env.ifname, &pod_addr).await?;
    tracing::info!(container_id = %env.container_id, %ip, veth = %host, "pod network added");
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: cni::format_mac(&bridge.mac),
                sandbox: None,
            },
            Interface {
                name: host.to_string(),
                mac: cni::format_mac(&host_link.mac),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: cni::format_mac(&pod_link.mac),
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: vec![IpConfig {
            version: (conf.cni_version == "0.4.0").then(|| "4".to_string()),
            address: pod_addr.address.to_string(),
            gateway: Some(conf.ipam.gateway.to_string()),
            interface: Some(2),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".to_string(),
            gw: Some(conf.ipam.gateway.to_string()),
        }],
        dns: serde_json::json!({}),
    })
}

/// DEL: release the address, set the host veth down (off the bridge's forwarding) and
/// remove the pod's addresses (and with them its routes). The veth pair itself is left
/// to the pod namespace's destruction, which the runtime does right after DEL: the
/// kernel then removes both ends in its batched namespace cleanup, whereas deleting a
/// veth here would wait ~20 ms for RCU grace periods. A later ADD replaces a leftover
/// of ours ([`create_veth_replacing`]). Anything already gone (allocation, link,
/// namespace) counts as done, so DEL can be repeated.
pub async fn cmd_del<O: NetOps>(ops: &mut O, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let released = release(conf, env)?;
    let host = host_veth_name(&env.container_id, &env.ifname);
    let isolated = ops.isolate_link(&host).await?;
    let mut removed = Vec::new();
    if !env.netns.is_empty() {
        match ops
            .unconfigure_pod(Path::new(&env.netns), &env.ifname)
            .await
        {
            Ok(addrs) => removed = addrs,
            // The namespace is gone (or is no namespace any more): nothing left in it.
            Err(e @ NetError::Netns { .. }) => {
                tracing::debug!(container_id = %env.container_id, error = %e, "pod netns gone");
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(container_id = %env.container_id, ?released, veth = %host, isolated, ?removed, "pod network deleted");
    Ok(())
}

fn check_failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg, "")
}

/// The `prevResult` of a CHECK/DEL config, if any (decoded as our result type).
pub fn prev_result(stdin: &[u8]) -> Result<Option<CniResult>, CniError> {
    let v: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            "failed to decode network config",
            e.to_string(),
        )
    })?;
    match v.get("prevResult") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(p) => serde_json::from_value(p.clone()).map(Some).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "failed to decode prevResult",
                e.to_string(),
            )
        }),
    }
}

/// CHECK against prevResult: the address in prevResult is ours (allocated to this
/// container and interface) and the host veth it names matches ours.
fn check_prev(
    prev: &CniResult,
    env: &CniEnv,
    want: Ipv4Network,
    host: &str,
) -> Result<(), CniError> {
    let sandbox_if = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.is_some());
    let ip = prev
        .ips
        .iter()
        .find(|ip| ip.interface.is_none() || ip.interface == sandbox_if)
        .ok_or_else(|| check_failed(format!("prevResult has no address for {}", env.ifname)))?;
    if ip.address != want.to_string() {
        return Err(check_failed(format!(
            "prevResult address {} differs from the allocation {want}",
            ip.address
        )));
    }
    if let Some(i) = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name.starts_with("veth"))
    {
        if i.name != host {
            return Err(check_failed(format!(
                "prevResult names host veth {}, expected {host}",
                i.name
            )));
        }
    }
    Ok(())
}

/// CHECK: the allocation exists (and matches prevResult when given), the host veth
/// exists, and the pod interface holds the allocated address.
pub async fn cmd_check<O: NetOps>(
    ops: &mut O,
    env: &CniEnv,
    conf: &NetConf,
    prev: Option<&CniResult>,
) -> Result<(), CniError> {
    let store = IpamStore::open(&conf.ipam.network_dir(&conf.name))?;
    let ip = store.find(&owner(env))?.ok_or_else(|| {
        check_failed(format!(
            "no address allocated to container {} ifname {}",
            env.container_id, env.ifname
        ))
    })?;
    drop(store);
    let host = host_veth_name(&env.container_id, &env.ifname);
    let want = with_prefix(ip, conf)?;
    if let Some(p) = prev {
        check_prev(p, env, want, &host)?;
    }
    if !ops.link_exists(&host).await? {
        return Err(check_failed(format!("host veth {host} is missing")));
    }
    let have = ops
        .pod_addresses(Path::new(&env.netns), &env.ifname)
        .await?;
    if !have.contains(&want) {
        return Err(check_failed(format!(
            "{} in {} does not have address {want} (has {have:?})",
            env.ifname, env.netns
        )));
    }
    Ok(())
}

/// GC (CNI 1.1): releases every allocation not listed in `cni.dev/valid-attachments`.
pub fn cmd_gc(stdin: &[u8], conf: &NetConf) -> Result<Vec<Ipv4Addr>, CniError> {
    let v: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            "failed to decode network config",
            e.to_string(),
        )
    })?;
    let valid: HashSet<(String, String)> = v
        .get("cni.dev/valid-attachments")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a.get("containerID")?.as_str()?.to_string(),
                a.get("ifname")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let store = IpamStore::open(&conf.ipam.network_dir(&conf.name))?;
    let mut released = Vec::new();
    for (ip, o) in store.list()? {
        if !valid.contains(&(o.container_id.clone(), o.ifname.clone())) {
            store.remove(ip, &o)?;
            released.push(ip);
        }
    }
    Ok(released)
}

/// Runs one verb with `ops`; returns what to print on stdout (None: nothing).
pub async fn dispatch<O: NetOps>(
    ops: &mut O,
    env: &CniEnv,
    stdin: &[u8],
) -> Result<Option<String>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(version_json(stdin)));
    }
    let conf = parse_netconf(stdin)?;
    let out = match env.command.as_str() {
        "ADD" => {
            let result = cmd_add(ops, env, &conf).await?;
            Some(
                serde_json::to_string_pretty(&result)
                    .map_err(|e| CniError::new(code::KERNEL, "encode result", e.to_string()))?,
            )
        }
        "DEL" => cmd_del(ops, env, &conf).await.map(|_| None)?,
        "CHECK" => {
            let prev = prev_result(stdin)?;
            cmd_check(ops, env, &conf, prev.as_ref())
                .await
                .map(|_| None)?
        }
        "GC" => cmd_gc(stdin, &conf).map(|_| None)?,
        "STATUS" => None,
        other => {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}"),
                "",
            ))
        }
    };
    Ok(out)
}

fn version_json(stdin: &[u8]) -> String {
    let info = cni::version_info(peek_version(stdin).as_deref());
    serde_json::to_string(&info).unwrap_or_default()
}

/// What the process prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout (result or error JSON; may be empty).
    pub stdout: String,
    /// 0 on success, 1 on a CNI error.
    pub exit_code: i32,
    /// The error's message (for one stderr line), None on success.
    pub error: Option<String>,
}

fn error_outcome(e: CniError, stdin: &[u8]) -> Outcome {
    let version = peek_version(stdin)
        .filter(|v| cni::is_supported(v))
        .unwrap_or_else(|| "1.0.0".to_string());
    let e = e.with_version(&version);
    tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "CNI error");
    let error = if e.details.is_empty() {
        format!("{} (CNI code {})", e.msg, e.code)
    } else {
        format!("{}: {} (CNI code {})", e.msg, e.details, e.code)
    };
    Outcome {
        stdout: serde_json::to_string_pretty(&e).unwrap_or_default(),
        exit_code: 1,
        error: Some(error),
    }
}

/// The outcome when stdin itself could not be read (CNI code 5, I/O failure).
pub fn stdin_failure(e: &std::io::Error) -> Outcome {
    error_outcome(
        CniError::new(
            code::IO_FAILURE,
            "failed to read network config from stdin",
            e.to_string(),
        ),
        b"",
    )
}

/// Plugin mode entry: reads the CNI_* environment through `get_env`, runs the verb
/// against the real kernel (netlink in the current network namespace, sysctls under
/// `proc_sys`) and returns what to print.
pub fn run_plugin(
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    proc_sys: &Path,
) -> Outcome {
    let result = parse_env(get_env).and_then(|env| {
        if env.command == "VERSION" {
            return Ok(Some(version_json(stdin)));
        }
        // I/O only (the netlink sockets): no timer or signal driver to set up.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| CniError::new(code::KERNEL, "failed to start runtime", e.to_string()))?;
        rt.block_on(async {
            let mut ops = NetlinkOps::connect(proc_sys)?;
            dispatch(&mut ops, &env, stdin).await
        })
    });
    match result {
        Ok(out) => Outcome {
            stdout: out.unwrap_or_default(),
            exit_code: 0,
            error: None,
        },
        Err(e) => error_outcome(e, stdin),
    }
}

#[cfg(test)]
#[path = "plugin_tests.rs"]
mod tests;
