//! The node's CNI network configuration (`<conf-dir>/10-minion.conflist`): what the
//! kubelet reads to know which plugin wires pods and with which pod CIDR.

use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;

use crate::ipam::{write_atomic, IpamError};

/// File name written in the conf dir.
pub const CONFLIST_NAME: &str = "10-minion.conflist";

/// Errors writing the conflist.
#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    /// The pod CIDR is not an IPv4 CIDR.
    #[error("invalid pod CIDR {0:?}")]
    InvalidCidr(String),
    /// The conf dir could not be created.
    #[error("create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] IpamError),
}

/// Parameters of `minion-netd write-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflistParams {
    /// Network name (names the IPAM directory).
    pub name: String,
    /// Bridge device.
    pub bridge: String,
    /// The node's pod CIDR, e.g. 10.244.1.0/24.
    pub pod_cidr: String,
    /// IPAM data directory.
    pub data_dir: PathBuf,
}

/// Renders the conflist JSON.
pub fn render(p: &ConflistParams) -> Result<serde_json::Value, ConflistError> {
    let net: Ipv4Network = p
        .pod_cidr
        .parse()
        .map_err(|_| ConflistError::InvalidCidr(p.pod_cidr.clone()))?;
    let subnet = Ipv4Network::new(net.network(), net.prefix())
        .map_err(|_| ConflistError::InvalidCidr(p.pod_cidr.clone()))?;
    Ok(serde_json::json!({
        "cniVersion": "1.0.0",
        "name": p.name,
        "plugins": [{
            "type": "minion-netd",
            "bridge": p.bridge,
            "isGateway": true,
            "hairpinMode": true,
            "ipam": { "subnet": subnet.to_string(), "dataDir": p.data_dir.display().to_string() }
        }]
    }))
}

fn render_text(p: &ConflistParams) -> Result<String, ConflistError> {
    let mut text = serde_json::to_string_pretty(&render(p)?).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

/// Writes `<conf_dir>/10-minion.conflist` atomically (temp file + rename); returns its path.
pub fn write_conflist(conf_dir: &Path, p: &ConflistParams) -> Result<PathBuf, ConflistError> {
    let text = render_text(p)?;
    std::fs::create_dir_all(conf_dir).map_err(|source| ConflistError::CreateDir {
        path: conf_dir.to_path_buf(),
        source,
    })?;
    let path = conf_dir.join(CONFLIST_NAME);
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Like [`write_conflist`], but leaves an identical file alone; true when it wrote.
pub fn ensure_conflist(conf_dir: &Path, p: &ConflistParams) -> Result<bool, ConflistError> {
    let text = render_text(p)?;
    if std::fs::read_to_string(conf_dir.join(CONFLIST_NAME)).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    write_conflist(conf_dir, p).map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(cidr: &str) -> ConflistParams {
        ConflistParams {
            name: "minion".into(),
            bridge: "cni0".into(),
            pod_cidr: cidr.into(),
            data_dir: PathBuf::from("/var/lib/cni/networks"),
        }
    }

    #[test]
    fn writes_contract_shape() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_conflist(&tmp.path().join("net.d"), &params("10.244.1.0/24")).unwrap();
        assert!(path.ends_with("net.d/10-minion.conflist"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "minion");
        let p = &v["plugins"][0];
        assert_eq!(p["type"], "minion-netd");
        assert_eq!(p["bridge"], "cni0");
        assert_eq!(p["isGateway"], true);
        assert_eq!(p["hairpinMode"], true);
        assert_eq!(p["ipam"]["subnet"], "10.244.1.0/24");
        assert_eq!(p["ipam"]["dataDir"], "/var/lib/cni/networks");
        assert_eq!(
            std::fs::read_dir(tmp.path().join("net.d")).unwrap().count(),
            1
        );
    }

    #[test]
    fn ensure_writes_only_changes() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(ensure_conflist(tmp.path(), &params("10.244.1.0/24")).unwrap());
        assert!(!ensure_conflist(tmp.path(), &params("10.244.1.0/24")).unwrap());
        assert!(ensure_conflist(tmp.path(), &params("10.244.2.0/24")).unwrap());
    }

    #[test]
    fn rejects_bad_cidr_and_normalises() {
        assert!(matches!(
            render(&params("nope")),
            Err(ConflistError::InvalidCidr(_))
        ));
        assert_eq!(
            render(&params("10.244.3.9/24")).unwrap()["plugins"][0]["ipam"]["subnet"],
            "10.244.3.0/24"
        );
    }
}
