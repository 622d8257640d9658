//! Registry credentials from a docker config json (`~/.docker/config.json`, or a
//! Kubernetes `kubernetes.io/dockerconfigjson` imagePullSecret), looked up by
//! registry host the way docker and the kubelet match them.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::Error;

/// One registry's credentials.
#[derive(Debug, Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

/// Username and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// The host part of an `auths` key (`https://index.docker.io/v1/` → `index.docker.io`).
fn key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Docker Hub answers under several names.
fn same_registry(a: &str, b: &str) -> bool {
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    a == b || (hub(a) && hub(b))
}

/// Credentials for `registry` in the docker config json bytes, if any.
pub fn lookup(data: &[u8], registry: &str, path: &Path) -> Result<Option<Credentials>, Error> {
    let bad = |msg: String| Error::Auth { path: path.to_path_buf(), msg };
    let cfg: DockerConfig = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
    let Some((_, e)) = cfg.auths.iter().find(|(k, _)| same_registry(key_host(k), registry)) else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
    }
    if let Some(a) = &e.auth {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|e| bad(format!("auth for {registry} is not base64: {e}")))?;
        let s = String::from_utf8(raw).map_err(|_| bad(format!("auth for {registry} is not UTF-8")))?;
        let (u, p) = s.split_once(':').ok_or_else(|| bad(format!("auth for {registry} is not user:password")))?;
        return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
    }
    if e.identity_token.is_some() {
        return Err(bad(format!("identity tokens for {registry} are not supported")));
    }
    Ok(None)
}

/// Credentials for `registry` from a docker config json file.
pub fn lookup_file(path: &Path, registry: &str) -> Result<Option<Credentials>, Error> {
    let data = std::fs::read(path).map_err(super::io("read auth file", path))?;
    lookup(&data, registry, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_by_host() {
        let j = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
            "localhost:5000":{"username":"a","password":"b"}}}"#;
        let p = Path::new("cfg.json");
        let c = lookup(j, "docker.io", p).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let c = lookup(j, "localhost:5000", p).unwrap().unwrap();
        assert_eq!(c.username, "a");
        assert!(lookup(j, "quay.io", p).unwrap().is_none());
        assert!(lookup(b"{", "x", p).is_err());
    }
}
