//! CNI wire types: the result a plugin prints after ADD, the error object it prints on
//! failure, and the version negotiation (CNI spec 1.0/1.1, "Result" and "Error" sections).
//!
//! The kubelet-side runtime (our agent, containerd, CRI-O) parses exactly these shapes.

use serde::{Deserialize, Serialize};

/// CNI spec versions this plugin accepts in `cniVersion`.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// Well-known CNI error codes (spec "Error" section) plus this plugin's own (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (reading stdin).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not JSON of the right shape).
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config (missing subnet, gateway outside it, ...).
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// minion-netd: a netlink/kernel operation failed (link, address, route, sysctl).
    pub const KERNEL: u32 = 100;
    /// minion-netd: the IPAM store (files under dataDir) could not be read or written.
    pub const IPAM_STORE: u32 = 101;
    /// minion-netd: no free address left in the range (host-local's "no IP addresses
    /// available in range set").
    pub const IPAM_EXHAUSTED: u32 = 102;
    /// minion-netd: the pod's network namespace (CNI_NETNS) cannot be opened.
    pub const NETNS: u32 = 103;
    /// minion-netd: CHECK found the pod's network state different from what it should be.
    pub const CHECK_FAILED: u32 = 104;
}

/// The error object printed on stdout when a verb fails (exit status 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg} (code {code}){}", details_suffix(.details))]
pub struct CniError {
    /// Version of the config that was being processed.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Spec error code (see [`code`]).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation (the underlying cause).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

impl CniError {
    /// An error with the given code, message and details, version filled in later.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: "1.0.0".to_string(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Sets the cniVersion reported in the error.
    pub fn with_version(mut self, version: &str) -> Self {
        self.cni_version = version.to_string();
        self
    }
}

/// One interface in a result (`interfaces[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name (in the sandbox when `sandbox` is set).
    pub name: String,
    /// MAC address, lowercase colon-separated hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Network namespace path for container-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address in a result (`ips[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in 0.4.0 results: "4".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix, e.g. "10.244.1.5/24".
    pub address: String,
    /// Default gateway of that subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces[]` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route in a result (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination, e.g. "0.0.0.0/0".
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The success result of ADD (spec "Success" result type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// Same as the config's cniVersion.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// [bridge, host veth, container interface].
    pub interfaces: Vec<Interface>,
    /// The pod's address.
    pub ips: Vec<IpConfig>,
    /// Routes set in the pod (the default route via the bridge).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings: always empty, the kubelet writes resolv.conf.
    #[serde(default)]
    pub dns: serde_json::Value,
}

/// The answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version of this answer.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Versions accepted in configs.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// VERSION's answer, in the version asked for when we support it.
pub fn version_info(asked: Option<&str>) -> VersionInfo {
    let version = asked
        .filter(|v| is_supported(v))
        .unwrap_or("1.0.0")
        .to_string();
    VersionInfo {
        cni_version: version,
        supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
    }
}

/// True when `version` is one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields() {
        let e = CniError::new(code::INVALID_ENV, "missing CNI_NETNS", "").with_version("1.0.0");
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "missing CNI_NETNS");
        assert!(v.get("details").is_none());
    }

    #[test]
    fn version_echoes_supported_version() {
        assert_eq!(version_info(Some("1.1.0")).cni_version, "1.1.0");
        assert_eq!(version_info(Some("9.9.9")).cni_version, "1.0.0");
        assert_eq!(version_info(None).supported_versions.len(), 3);
    }

    #[test]
    fn mac_is_lowercase_colon_hex() {
        assert_eq!(format_mac(&[0xAA, 1, 2, 3, 4, 0xff]), "aa:01:02:03:04:ff");
    }
}
