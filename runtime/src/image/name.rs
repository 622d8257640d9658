//! Image references as Kubernetes users write them (`busybox`,
//! `docker.io/library/busybox:1.36`, `localhost:5000/x:y`, `reg:5000/app@sha256:…`),
//! normalised the way docker and the kubelet do: docker.io default registry,
//! `library/` prefix for official images, `latest` tag when neither tag nor digest.

use super::Error;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host[:port], e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (always set when there is no digest).
    pub tag: Option<String>,
    /// `sha256:…` digest, if pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `name`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidName { name: name.to_string(), reason: reason.to_string() };
        let name_t = name.trim();
        if name_t.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match name_t.split_once('@') {
            Some((r, d)) => {
                if !d.contains(':') || d.split(':').any(str::is_empty) {
                    return Err(bad("bad digest"));
                }
                (r, Some(d.to_string()))
            }
            None => (name_t, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), p.to_string())
            }
            Some(_) => ("docker.io".to_string(), rest.to_string()),
            None => ("docker.io".to_string(), format!("library/{rest}")),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path.clone(), None),
        };
        validate_repo(&repository).map_err(|r| bad(&r))?;
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(bad("bad tag"));
            }
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(Self { registry, repository, tag, digest })
    }

    /// `registry/repository` without tag or digest.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalises an image reference like docker/Kubernetes do.
pub fn normalize_image_name(name: &str) -> Result<String, Error> {
    Ok(ImageRef::parse(name)?.to_string())
}

fn validate_repo(repo: &str) -> Result<(), String> {
    for comp in repo.split('/') {
        if comp.is_empty() {
            return Err("empty path component".into());
        }
        if !comp.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)) {
            return Err("repository name must be lowercase letters, digits and . _ -".into());
        }
    }
    Ok(())
}

/// File name of an image record in the store.
pub fn sanitise(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let n = |s| normalize_image_name(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("localhost:5000/x:y"), "localhost:5000/x:y");
        assert_eq!(n("localhost/x:2"), "localhost/x:2");
        assert_eq!(n("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(n("docker.io/library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(n("busybox@sha256:abcd"), "docker.io/library/busybox@sha256:abcd");
        assert_eq!(n("busybox:1@sha256:abcd"), "docker.io/library/busybox:1@sha256:abcd");
        assert_eq!(n("registry:5000/app@sha256:ab"), "registry:5000/app@sha256:ab");
        let r = ImageRef::parse("localhost:5000/a/b:c").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("localhost:5000", "a/b", Some("c")));
    }

    #[test]
    fn rejects_bad_names() {
        assert!(normalize_image_name("").is_err());
        assert!(normalize_image_name("BusyBox").is_err());
        assert!(normalize_image_name("foo//bar").is_err());
        assert!(normalize_image_name("foo@sha256").is_err());
    }
}
