//! Local image store: the node's container images (what `crictl images` lists).
//! An image is a rootfs directory plus `image.json` under
//! `<image-root>/<sanitised-name>/`. Names are normalised the way Kubernetes and
//! docker do (`busybox` → `docker.io/library/busybox:latest`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Default PATH given to images imported without a config.
pub const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("image {name:?} not found in store {}", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("bad image metadata {}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("import of {} failed: {msg}", path.display())]
    Import { path: PathBuf, msg: String },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// The runtime part of an image config (the OCI image config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Cmd", default)]
    pub cmd: Vec<String>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Env", default)]
    pub env: Vec<String>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
}

/// One stored image, as printed by `image inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

/// Normalises an image reference like docker/Kubernetes do.
pub fn normalize_image_name(name: &str) -> Result<String, Error> {
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
            (r, Some(d))
        }
        None => (name_t, None),
    };
    let (domain, path) = match rest.split_once('/') {
        Some((first, p)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), p.to_string())
        }
        Some(_) => ("docker.io".to_string(), rest.to_string()),
        None => ("docker.io".to_string(), format!("library/{rest}")),
    };
    let (repo, tag) = match path.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
        _ => (path.clone(), None),
    };
    validate_repo(&repo).map_err(|r| bad(&r))?;
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            return Err(bad("bad tag"));
        }
    }
    let mut out = format!("{domain}/{repo}");
    match (tag, digest) {
        (Some(t), _) => out.push_str(&format!(":{t}")),
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push_str(&format!("@{d}"));
    }
    Ok(out)
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

/// Directory name of an image in the store.
fn sanitise(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-".contains(c) { c } else { '_' }).collect()
}

/// The image store rooted at a directory (`--image-root`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, Error> {
        fs::create_dir_all(root).map_err(io("create image root", root))?;
        Ok(Self { root: root.to_path_buf() })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports a rootfs directory or a (gzipped) tar under `name`, atomically.
    pub fn import(&self, name: &str, src: &Path, config: Option<ImageConfig>) -> Result<Image, Error> {
        let name = normalize_image_name(name)?;
        let final_dir = self.root.join(sanitise(&name));
        let tmp = self.root.join(format!(".tmp-{}-{}", std::process::id(), sanitise(&name)));
        let _ = fs::remove_dir_all(&tmp);
        let rootfs = tmp.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(io("create", &rootfs))?;
        let res = self.fill(&name, src, &tmp, config);
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let old = self.root.join(format!(".old-{}-{}", std::process::id(), sanitise(&name)));
        if final_dir.exists() {
            fs::rename(&final_dir, &old).map_err(io("rename", &final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(io("rename", &tmp))?;
        let _ = fs::remove_dir_all(&old);
        self.get(&name)
    }

    fn fill(&self, name: &str, src: &Path, tmp: &Path, config: Option<ImageConfig>) -> Result<(), Error> {
        let rootfs = tmp.join("rootfs");
        let meta = fs::metadata(src).map_err(io("stat", src))?;
        let mut cmd = if meta.is_dir() {
            let mut c = Command::new("cp");
            c.arg("-a").arg(format!("{}/.", src.display())).arg(&rootfs);
            c
        } else {
            let mut c = Command::new("tar");
            c.args(["--numeric-owner", "-xpf"]).arg(src).arg("-C").arg(&rootfs);
            c
        };
        let out = cmd.output().map_err(io("run cp/tar for", src))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(Error::Import { path: src.to_path_buf(), msg });
        }
        let mut config = config.unwrap_or_default();
        if config.env.is_empty() {
            config.env.push(DEFAULT_PATH_ENV.to_string());
        }
        let meta_path = tmp.join("image.json");
        let img = Image { name: name.to_string(), rootfs: PathBuf::new(), config };
        let data = serde_json::to_vec_pretty(&img).map_err(|source| Error::Json { path: meta_path.clone(), source })?;
        fs::write(&meta_path, data).map_err(io("write", &meta_path))
    }

    /// Looks an image up by (not yet normalised) name.
    pub fn get(&self, name: &str) -> Result<Image, Error> {
        let name = normalize_image_name(name)?;
        let dir = self.root.join(sanitise(&name));
        if !dir.join("image.json").exists() {
            return Err(Error::NotFound { name, dir: self.root.clone() });
        }
        self.load(&dir)
    }

    fn load(&self, dir: &Path) -> Result<Image, Error> {
        let p = dir.join("image.json");
        let data = fs::read(&p).map_err(io("read", &p))?;
        let mut img: Image = serde_json::from_slice(&data).map_err(|source| Error::Json { path: p, source })?;
        img.rootfs = dir.join("rootfs");
        Ok(img)
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        let mut out = Vec::new();
        for ent in fs::read_dir(&self.root).map_err(io("read dir", &self.root))? {
            let ent = ent.map_err(io("read dir", &self.root))?;
            let fname = ent.file_name();
            if fname.to_string_lossy().starts_with('.') || !ent.path().join("image.json").exists() {
                continue;
            }
            out.push(self.load(&ent.path())?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes an image; a missing image is an error.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let img = self.get(name)?;
        let dir = self.root.join(sanitise(&img.name));
        fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
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
        assert_eq!(n("localhost/x:2"), "localhost/x:2");
        assert_eq!(n("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(n("docker.io/library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(n("busybox@sha256:abcd"), "docker.io/library/busybox@sha256:abcd");
        assert_eq!(n("busybox:1@sha256:abcd"), "docker.io/library/busybox:1@sha256:abcd");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(normalize_image_name("").is_err());
        assert!(normalize_image_name("BusyBox").is_err());
        assert!(normalize_image_name("foo//bar").is_err());
        assert!(normalize_image_name("foo@sha256").is_err());
    }

    #[test]
    fn import_get_list_remove_dir() {
        let store_dir = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("bin")).unwrap();
        fs::write(src.path().join("bin/hello"), "hi").unwrap();
        std::os::unix::fs::symlink("hello", src.path().join("bin/link")).unwrap();
        let store = ImageStore::open(store_dir.path()).unwrap();
        let img = store.import("busybox", src.path(), None).unwrap();
        assert_eq!(img.name, "docker.io/library/busybox:latest");
        assert_eq!(img.config.env, vec![DEFAULT_PATH_ENV.to_string()]);
        assert!(img.rootfs.join("bin/hello").exists());
        assert!(fs::symlink_metadata(img.rootfs.join("bin/link")).unwrap().file_type().is_symlink());
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(store.get("docker.io/library/busybox").unwrap().name, img.name);
        store.remove("busybox").unwrap();
        let tarball = store_dir.path().join("img.tar.gz");
        let st = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(src.path()).arg(".").status().unwrap();
        assert!(st.success());
        let cfg = ImageConfig { cmd: vec!["sh".into()], working_dir: "/w".into(), ..Default::default() };
        let img = store.import("foo/bar:1", &tarball, Some(cfg)).unwrap();
        assert_eq!(img.name, "docker.io/foo/bar:1");
        assert_eq!(img.config.cmd, vec!["sh".to_string()]);
        assert!(img.rootfs.join("bin/hello").exists());
        store.remove("foo/bar:1").unwrap();
        let err = store.get("busybox").unwrap_err().to_string();
        assert!(err.contains("image \"docker.io/library/busybox:latest\" not found in store"), "{err}");
    }
}
