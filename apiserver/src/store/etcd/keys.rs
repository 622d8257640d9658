//! Mapping between store keys (`/registry/pods/<ns>/<name>`, as kube-apiserver lays
//! them out in etcd) and etcd keys under the configured `--etcd-prefix`.

/// The store's own root: every key the API server writes starts with it.
const REGISTRY: &str = "/registry";

/// Maps store keys to etcd keys and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    /// The etcd prefix without a trailing slash (`/registry` by default).
    root: String,
}

impl KeyMap {
    /// A mapping under `prefix` (`/registry`, `/cluster-a/registry`, ...).
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        let root = if trimmed.is_empty() || trimmed.starts_with('/') { trimmed.to_string() } else { format!("/{trimmed}") };
        KeyMap { root }
    }

    /// The etcd key for a store key (or key prefix).
    pub fn to_etcd(&self, key: &str) -> String {
        let rest = key.strip_prefix(REGISTRY).filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(key);
        format!("{}{rest}", self.root)
    }

    /// The store key for an etcd key; None for keys outside the prefix or not UTF-8.
    pub fn from_etcd(&self, key: &[u8]) -> Option<String> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.root.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{REGISTRY}{rest}"))
    }

    /// The etcd prefix that covers every key of this API server (`<root>/`).
    pub fn all(&self) -> String {
        format!("{}/", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefix_is_identity() {
        let m = KeyMap::new("/registry");
        assert_eq!(m.to_etcd("/registry/pods/default/a"), "/registry/pods/default/a");
        assert_eq!(m.from_etcd(b"/registry/pods/default/a").as_deref(), Some("/registry/pods/default/a"));
        assert_eq!(m.to_etcd("/registry/pods/"), "/registry/pods/");
        assert_eq!(m.all(), "/registry/");
    }

    #[test]
    fn custom_prefix_round_trips() {
        for prefix in ["/a/b", "/a/b/", "a/b"] {
            let m = KeyMap::new(prefix);
            assert_eq!(m.to_etcd("/registry/services/kube-system/kube-dns"), "/a/b/services/kube-system/kube-dns");
            assert_eq!(
                m.from_etcd(b"/a/b/services/kube-system/kube-dns").as_deref(),
                Some("/registry/services/kube-system/kube-dns")
            );
            assert_eq!(m.all(), "/a/b/");
        }
    }

    #[test]
    fn foreign_keys_are_ignored() {
        let m = KeyMap::new("/registry");
        assert_eq!(m.from_etcd(b"/registryx/pods/a"), None);
        assert_eq!(m.from_etcd(b"/other/pods/a"), None);
        assert_eq!(m.from_etcd(&[0xff, 0xfe]), None);
        // A key that does not start with /registry still maps under the prefix.
        assert_eq!(KeyMap::new("/p").to_etcd("/k/a"), "/p/k/a");
    }
}
