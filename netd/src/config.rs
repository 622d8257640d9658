//! The pod network's configuration as the container runtime hands it to a CNI plugin:
//! the per-plugin object of a conflist with `name` and `cniVersion` injected, plus the
//! CNI_* environment (CNI spec "Parameters" and "Network configuration" sections).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use crate::cni::{code, is_supported, CniError, SUPPORTED_VERSIONS};

/// Default bridge name, as in the reference bridge plugin and kubenet.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Default IPAM directory, as host-local's.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The JSON on stdin, as written (before defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    bridge: Option<String>,
    is_gateway: Option<bool>,
    hairpin_mode: Option<bool>,
    mtu: Option<u32>,
    ipam: Option<RawIpam>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    subnet: Option<String>,
    gateway: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    data_dir: Option<String>,
}

/// Validated network configuration with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// cniVersion of the config (echoed in results and errors).
    pub cni_version: String,
    /// Network name (the conflist's `name`); names the IPAM directory.
    pub name: String,
    /// Bridge device on the node, default `cni0`.
    pub bridge: String,
    /// Whether the bridge carries the gateway address (default true).
    pub is_gateway: bool,
    /// Hairpin mode on the bridge port, so a pod can reach itself via a Service (default true).
    pub hairpin_mode: bool,
    /// MTU of the veth pair (kernel default when unset).
    pub mtu: Option<u32>,
    /// Address management.
    pub ipam: IpamConf,
}

/// The `ipam` object: which addresses pods get and where allocations are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    /// The node's pod CIDR (normalised to its network address).
    pub subnet: Ipv4Network,
    /// Gateway, default the subnet's first host address.
    pub gateway: Ipv4Addr,
    /// First address handed out (default: first host).
    pub range_start: Ipv4Addr,
    /// Last address handed out (default: last host before broadcast).
    pub range_end: Ipv4Addr,
    /// Root of the allocation store; files live in `<data_dir>/<network name>/`.
    pub data_dir: PathBuf,
}

impl IpamConf {
    /// Directory holding this network's allocation files.
    pub fn network_dir(&self, network: &str) -> PathBuf {
        self.data_dir.join(network)
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg, "")
}

/// Reads just `cniVersion` from a config, for error reporting before full parsing.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parses and validates the network config from stdin.
pub fn parse_netconf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let raw: RawNetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            "failed to decode network config",
            e.to_string(),
        )
    })?;
    let version = raw.cni_version.clone().unwrap_or_default();
    if !is_supported(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!("config is {version:?}, plugin supports {SUPPORTED_VERSIONS:?}"),
        ));
    }
    build(raw, version)
}

fn build(raw: RawNetConf, cni_version: String) -> Result<NetConf, CniError> {
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("missing network name"))?;
    if name.contains('/') || name == "." || name == ".." {
        return Err(invalid(format!("invalid network name {name:?}")));
    }
    if let Some(t) = &raw.plugin_type {
        tracing::debug!(plugin_type = %t, "plugin type");
    }
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    if bridge.is_empty() || bridge.len() > 15 || bridge.contains('/') {
        return Err(invalid(format!("invalid bridge name {bridge:?}")));
    }
    let ipam = raw.ipam.ok_or_else(|| invalid("missing ipam section"))?;
    Ok(NetConf {
        cni_version,
        name,
        bridge,
        is_gateway: raw.is_gateway.unwrap_or(true),
        hairpin_mode: raw.hairpin_mode.unwrap_or(true),
        mtu: raw.mtu,
        ipam: build_ipam(ipam)?,
    })
}

fn parse_addr(field: &str, value: &str) -> Result<Ipv4Addr, CniError> {
    value
        .parse()
        .map_err(|_| invalid(format!("ipam.{field} {value:?} is not an IPv4 address")))
}

fn build_ipam(raw: RawIpam) -> Result<IpamConf, CniError> {
    let subnet_str = raw.subnet.ok_or_else(|| invalid("missing ipam.subnet"))?;
    let parsed: Ipv4Network = subnet_str
        .parse()
        .map_err(|_| invalid(format!("ipam.subnet {subnet_str:?} is not an IPv4 CIDR")))?;
    if parsed.prefix() > 30 {
        return Err(invalid(format!(
            "ipam.subnet {subnet_str} is too small (need /30 or larger)"
        )));
    }
    let subnet = Ipv4Network::new(parsed.network(), parsed.prefix())
        .map_err(|e| invalid(format!("ipam.subnet {subnet_str}: {e}")))?;
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let in_hosts = |a: Ipv4Addr| (first..=last).contains(&u32::from(a));
    let gateway = match raw.gateway {
        Some(g) => parse_addr("gateway", &g)?,
        None => Ipv4Addr::from(first),
    };
    if !in_hosts(gateway) {
        return Err(invalid(format!(
            "ipam.gateway {gateway} is not a host address of {subnet}"
        )));
    }
    let range_start = match raw.range_start {
        Some(s) => parse_addr("rangeStart", &s)?,
        None => Ipv4Addr::from(first),
    };
    let range_end = match raw.range_end {
        Some(s) => parse_addr("rangeEnd", &s)?,
        None => Ipv4Addr::from(last),
    };
    for (field, a) in [("rangeStart", range_start), ("rangeEnd", range_end)] {
        if !in_hosts(a) {
            return Err(invalid(format!(
                "ipam.{field} {a} is not a host address of {subnet}"
            )));
        }
    }
    if range_start > range_end {
        return Err(invalid(format!(
            "ipam.rangeStart {range_start} is after rangeEnd {range_end}"
        )));
    }
    let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()));
    Ok(IpamConf {
        subnet,
        gateway,
        range_start,
        range_end,
        data_dir,
    })
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// CNI_COMMAND: ADD, DEL, CHECK, VERSION, STATUS, GC.
    pub command: String,
    /// CNI_CONTAINERID (the pod uid for minion-agent).
    pub container_id: String,
    /// CNI_NETNS: path of the pod's network namespace (may be empty on DEL).
    pub netns: String,
    /// CNI_IFNAME: interface name inside the pod, usually eth0.
    pub ifname: String,
}

/// Reads the CNI_* variables through `get`, checking the ones `command` requires.
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
    let command = get("CNI_COMMAND").unwrap_or_default();
    let var = |k: &str| get(k).unwrap_or_default();
    let env = CniEnv {
        command: command.clone(),
        container_id: var("CNI_CONTAINERID"),
        netns: var("CNI_NETNS"),
        ifname: var("CNI_IFNAME"),
    };
    let required: &[&str] = match command.as_str() {
        "ADD" | "CHECK" => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
        "DEL" => &["CNI_CONTAINERID", "CNI_IFNAME"],
        "VERSION" | "STATUS" | "GC" => &[],
        other => {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}"),
                "",
            ))
        }
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| var(k).is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("required env variables {missing:?} missing"),
            "",
        ));
    }
    if env.ifname.len() > 15 || env.ifname.contains('/') {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("invalid CNI_IFNAME {:?}", env.ifname),
            "",
        ));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"minion","type":"minion-netd",
        "ipam":{"subnet":"10.244.1.0/24"}}"#;

    #[test]
    fn defaults_are_applied() {
        let c = parse_netconf(GOOD.as_bytes()).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(c.is_gateway && c.hairpin_mode);
        assert_eq!(c.mtu, None);
        assert_eq!(c.ipam.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(c.ipam.range_start, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(c.ipam.range_end, Ipv4Addr::new(10, 244, 1, 254));
        assert_eq!(c.ipam.data_dir, PathBuf::from("/var/lib/cni/networks"));
        assert_eq!(
            c.ipam.network_dir("minion"),
            PathBuf::from("/var/lib/cni/networks/minion")
        );
    }

    #[test]
    fn subnet_is_normalised_and_fields_read() {
        let c = parse_netconf(
            br#"{"cniVersion":"0.4.0","name":"n","bridge":"br9","isGateway":false,"hairpinMode":false,
            "mtu":1400,"ipam":{"subnet":"10.244.2.7/24","gateway":"10.244.2.254",
            "rangeStart":"10.244.2.10","rangeEnd":"10.244.2.20","dataDir":"/tmp/x"}}"#,
        )
        .unwrap();
        assert_eq!(c.ipam.subnet.to_string(), "10.244.2.0/24");
        assert_eq!(
            (c.bridge.as_str(), c.is_gateway, c.hairpin_mode, c.mtu),
            ("br9", false, false, Some(1400))
        );
        assert_eq!(c.ipam.gateway, Ipv4Addr::new(10, 244, 2, 254));
        assert_eq!(c.ipam.range_start, Ipv4Addr::new(10, 244, 2, 10));
        assert_eq!(c.ipam.range_end, Ipv4Addr::new(10, 244, 2, 20));
    }

    #[test]
    fn errors_carry_spec_codes() {
        let code_of = |s: &str| parse_netconf(s.as_bytes()).unwrap_err().code;
        assert_eq!(code_of("not json"), code::DECODING_FAILURE);
        assert_eq!(
            code_of(r#"{"cniVersion":"0.3.1","name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#),
            1
        );
        assert_eq!(code_of(r#"{"cniVersion":"1.0.0","name":"n","ipam":{}}"#), 7);
        assert_eq!(code_of(r#"{"cniVersion":"1.0.0","name":"n"}"#), 7);
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"bogus"}}"#),
            7
        );
        assert_eq!(
            code_of(
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}}"#
            ),
            7
        );
        assert_eq!(
            code_of(
                r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.3"}}"#
            ),
            7
        );
    }

    #[test]
    fn env_requirements_depend_on_verb() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(parse_env(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
        let e = parse_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID") && e.msg.contains("CNI_NETNS"));
        let del = parse_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ]));
        assert_eq!(del.unwrap().netns, "");
        assert_eq!(
            parse_env(env(&[("CNI_COMMAND", "FOO")])).unwrap_err().code,
            code::INVALID_ENV
        );
    }
}
