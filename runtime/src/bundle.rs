//! OCI bundle loading and validation: the `config.json` the kubelet's CRI runtime
//! writes for each container, plus minion's annotations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// Annotation naming a directory to use as the overlayfs lowerdir (image rootfs).
pub const ANN_IMAGE_ROOTFS: &str = "io.minion.image.rootfs";
/// Annotation naming the CRI log file the monitor writes.
pub const ANN_LOG_PATH: &str = "io.minion.log.path";

/// Annotation: size in bytes at which the monitor rotates the CRI log.
pub const ANN_LOG_MAX_SIZE: &str = "io.minion.log.max-size";
/// Annotation: how many log files to keep, the live one included.
pub const ANN_LOG_MAX_FILES: &str = "io.minion.log.max-files";

/// Errors of bundle validation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bundle {}: cannot load config.json: {msg}", dir.display())]
    Load { dir: PathBuf, msg: String },
    #[error("bundle {}: {msg}", dir.display())]
    Invalid { dir: PathBuf, msg: String },
}

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute rootfs path (bundle-relative `root.path` resolved).
    pub rootfs: PathBuf,
    pub annotations: BTreeMap<String, String>,
    /// `linux.seccomp` compiled once here, at load: a profile that cannot be
    /// compiled fails before anything is made, and the init (or `exec`)
    /// loads this same program.
    pub seccomp: Option<crate::seccomp::Filter>,
}

impl Bundle {
    /// Loads `<dir>/config.json` and validates what the runtime relies on.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let cfg = dir.join("config.json");
        if !cfg.is_file() {
            return Err(Error::Load { dir, msg: format!("{} not found", cfg.display()) });
        }
        let spec = Spec::load(&cfg).map_err(|e| Error::Load { dir: dir.clone(), msg: e.to_string() })?;
        Self::from_spec(&dir, spec)
    }

    /// Validates a parsed spec for bundle `dir`.
    pub fn from_spec(dir: &Path, spec: Spec) -> Result<Self, Error> {
        let bad = |msg: String| Error::Invalid { dir: dir.to_path_buf(), msg };
        let root = spec.root().as_ref().ok_or_else(|| bad("root is missing".into()))?;
        let rootfs = if root.path().is_absolute() { root.path().clone() } else { dir.join(root.path()) };
        let process = spec.process().as_ref().ok_or_else(|| bad("process is missing".into()))?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() || args[0].is_empty() {
            return Err(bad("process.args is empty".into()));
        }
        // A profile that cannot be compiled fails here, before anything is made.
        let seccomp = crate::seccomp::from_spec(&spec).map_err(|e| bad(e.to_string()))?;
        for key in [ANN_LOG_MAX_SIZE, ANN_LOG_MAX_FILES] {
            if let Some(v) = spec.annotations().as_ref().and_then(|a| a.get(key)) {
                if v.parse::<u64>().is_err() {
                    return Err(bad(format!("annotation {key}={v:?} is not a number")));
                }
            }
        }
        if !process.cwd().is_absolute() {
            return Err(bad(format!("process.cwd {:?} is not absolute", process.cwd())));
        }
        if spec.linux().is_none() {
            return Err(bad("linux section is missing".into()));
        }
        let annotations: BTreeMap<String, String> =
            spec.annotations().clone().unwrap_or_default().into_iter().collect();
        match annotations.get(ANN_IMAGE_ROOTFS) {
            Some(lower) => {
                // A `:`-separated overlay lowerdir list, top layer first.
                if let Some(l) = lower.split(':').find(|l| !Path::new(l).is_dir()) {
                    return Err(bad(format!("image rootfs {l} ({ANN_IMAGE_ROOTFS}) does not exist")));
                }
            }
            None => {
                if !rootfs.is_dir() {
                    return Err(bad(format!("rootfs {} does not exist", rootfs.display())));
                }
            }
        }
        for m in spec.mounts().clone().unwrap_or_default() {
            if !m.destination().is_absolute() {
                return Err(bad(format!("mount destination {:?} is not absolute", m.destination())));
            }
        }
        Ok(Self { dir: dir.to_path_buf(), spec, rootfs, annotations, seccomp })
    }

    /// The overlay lowerdir, when the rootfs comes from the image store.
    pub fn image_rootfs(&self) -> Option<PathBuf> {
        self.annotations.get(ANN_IMAGE_ROOTFS).map(PathBuf::from)
    }

    /// The CRI log file requested by annotation.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.annotations.get(ANN_LOG_PATH).map(PathBuf::from)
    }

    /// Log rotation size (annotation, else 10 MiB).
    pub fn log_max_size(&self) -> u64 {
        self.annotations.get(ANN_LOG_MAX_SIZE).and_then(|v| v.parse().ok()).unwrap_or(crate::monitor::log::DEFAULT_MAX_SIZE)
    }

    /// Log files kept (annotation, else 5).
    pub fn log_max_files(&self) -> u32 {
        self.annotations.get(ANN_LOG_MAX_FILES).and_then(|v| v.parse().ok()).unwrap_or(crate::monitor::log::DEFAULT_MAX_FILES)
    }

    /// `linux.cgroupsPath`, if any.
    pub fn cgroups_path(&self) -> Option<String> {
        self.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).map(|p| p.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_cfg(dir: &Path, v: serde_json::Value) {
        fs::write(dir.join("config.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "pid"}]}
        })
    }

    #[test]
    fn missing_config() {
        let d = tempfile::tempdir().unwrap();
        let e = Bundle::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("config.json not found"), "{e}");
    }

    #[test]
    fn missing_rootfs_and_image() {
        let d = tempfile::tempdir().unwrap();
        write_cfg(d.path(), base());
        let e = Bundle::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("rootfs") && e.contains("does not exist"), "{e}");
        let mut v = base();
        v["annotations"] = serde_json::json!({ANN_IMAGE_ROOTFS: "/nonexistent/img"});
        write_cfg(d.path(), v);
        let e = Bundle::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("image rootfs /nonexistent/img"), "{e}");
    }

    #[test]
    fn empty_args_and_ok() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("rootfs")).unwrap();
        let mut v = base();
        v["process"]["args"] = serde_json::json!([]);
        write_cfg(d.path(), v);
        assert!(Bundle::load(d.path()).unwrap_err().to_string().contains("process.args is empty"));
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"});
        write_cfg(d.path(), v);
        assert!(Bundle::load(d.path()).unwrap_err().to_string().contains("SCMP_ACT_NOTIFY"));
        write_cfg(d.path(), base());
        let b = Bundle::load(d.path()).unwrap();
        assert_eq!(b.rootfs, d.path().join("rootfs"));
        assert!(b.image_rootfs().is_none());
    }
}
