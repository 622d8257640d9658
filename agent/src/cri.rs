//! The container runtime seam (CRI-shaped): the kubelet asks for containers, images and
//! pod network namespaces through [`RuntimeService`]; [`RuntimeCli`] implements it by
//! running the runc-compatible `minion-runtime` binary, so the agent itself never
//! clones, unshares or setns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::process::Command;

/// A runtime call that failed; carries the runtime's own error line.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The runtime binary could not be executed at all.
    #[error("failed to run {bin} {verb}: {source}")]
    Spawn {
        /// The runtime binary.
        bin: PathBuf,
        /// The command verb (create, start, ...).
        verb: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The runtime exited non-zero.
    #[error("{verb} {target}: {message}")]
    Failed {
        /// The command verb.
        verb: String,
        /// What it acted on (container id, image, path).
        target: String,
        /// The runtime's stderr (last non-empty line).
        message: String,
    },
    /// The runtime printed something that is not the expected JSON.
    #[error("{verb} {target}: unparseable output: {source}")]
    Parse {
        /// The command verb.
        verb: String,
        /// What it acted on.
        target: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl CriError {
    /// The runtime's own message (without our prefix), for pod status messages.
    pub fn message(&self) -> String {
        match self {
            CriError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when the runtime says the container or image does not exist.
    pub fn is_not_found(&self) -> bool {
        let m = self.message().to_ascii_lowercase();
        m.contains("not found") || m.contains("does not exist") || m.contains("no such")
    }
}

/// Lifecycle status of a container as reported by `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    /// Being created.
    Creating,
    /// Created, not started.
    Created,
    /// Process running.
    Running,
    /// Process exited.
    Stopped,
    /// Paused (not used by the kubelet).
    Paused,
    /// Anything else.
    #[serde(other)]
    Unknown,
}

/// A container's state: runc's state JSON plus the minion extensions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Lifecycle status.
    pub status: RuntimeStatus,
    /// Pid of the container's init (0 when not running).
    #[serde(default)]
    pub pid: i64,
    /// Bundle directory.
    #[serde(default)]
    pub bundle: Option<String>,
    /// Bundle annotations.
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    /// Exit code once stopped (code, or 128+signal).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Completed / Error / OOMKilled once stopped.
    #[serde(default)]
    pub reason: Option<String>,
    /// RFC 3339 start time.
    #[serde(default)]
    pub started_at: Option<String>,
    /// RFC 3339 finish time.
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// The image config fields the kubelet uses (Docker image config names).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ImageConfig {
    /// Default arguments.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// Default entrypoint.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` environment.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// Default working directory.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

/// `image inspect` output.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ImageInfo {
    /// Normalised image name.
    #[serde(default)]
    pub name: String,
    /// Overlay lowerdir list of the image's layer snapshots (top first, `:`-separated).
    #[serde(default)]
    pub rootfs: String,
    /// Image config.
    #[serde(default)]
    pub config: ImageConfig,
    /// Digest / id if the runtime reports one.
    #[serde(default)]
    pub id: Option<String>,
    /// `repo@sha256:…` of a pulled image (the status' imageID).
    #[serde(default, rename = "repoDigest")]
    pub repo_digest: Option<String>,
    /// Sum of the layer sizes in bytes.
    #[serde(default)]
    pub size: u64,
    /// `pull` or `import`.
    #[serde(default)]
    pub source: Option<String>,
}

/// What the kubelet needs from a container runtime.
#[async_trait]
pub trait RuntimeService: Send + Sync {
    /// `create ID --bundle DIR`.
    async fn create_container(&self, id: &str, bundle: &Path) -> Result<(), CriError>;
    /// `start ID`.
    async fn start_container(&self, id: &str) -> Result<(), CriError>;
    /// `kill ID SIGNAL`.
    async fn stop_container(&self, id: &str, signal: &str) -> Result<(), CriError>;
    /// `delete --force ID`.
    async fn remove_container(&self, id: &str) -> Result<(), CriError>;
    /// `state ID`.
    async fn container_status(&self, id: &str) -> Result<ContainerState, CriError>;
    /// `list`: ids of all containers the runtime knows.
    async fn list_containers(&self) -> Result<Vec<String>, CriError>;
    /// `image inspect NAME`.
    async fn image_status(&self, image: &str) -> Result<ImageInfo, CriError>;
    /// `image pull NAME [--auth-file F]`: fetch from the registry, return the stored image.
    /// Runtimes without a registry client report the local image.
    async fn pull_image(&self, image: &str, auth_file: Option<&Path>) -> Result<ImageInfo, CriError> {
        let _ = auth_file;
        self.image_status(image).await
    }
    /// `image gc --keep …`: remove least recently used images while the image
    /// filesystem is above the GC threshold. Runtimes without GC do nothing.
    async fn image_gc(&self, keep: &[String]) -> Result<(), CriError> {
        let _ = keep;
        Ok(())
    }
    /// `netns add PATH`: make a bind-mounted network namespace (the pod sandbox).
    async fn create_netns(&self, path: &Path) -> Result<(), CriError>;
    /// `netns del PATH`.
    async fn remove_netns(&self, path: &Path) -> Result<(), CriError>;
}

/// [`RuntimeService`] over the `minion-runtime` CLI.
#[derive(Debug, Clone)]
pub struct RuntimeCli {
    bin: PathBuf,
    root: PathBuf,
    image_root: PathBuf,
    cgroup_root: Option<PathBuf>,
    insecure_registries: Vec<String>,
}

impl RuntimeCli {
    /// A client running `bin --root ROOT --image-root IMAGE_ROOT <verb>`.
    pub fn new(bin: PathBuf, root: PathBuf, image_root: PathBuf) -> RuntimeCli {
        RuntimeCli { bin, root, image_root, cgroup_root: None, insecure_registries: Vec::new() }
    }

    /// Also pass `--cgroup-root DIR` (a minion-runtime extension; only when not the default).
    pub fn with_cgroup_root(mut self, dir: PathBuf) -> RuntimeCli {
        self.cgroup_root = Some(dir).filter(|d| d != Path::new("/sys/fs/cgroup"));
        self
    }

    /// Registries (`host:port`) the runtime may reach over plain HTTP when pulling.
    pub fn with_insecure_registries(mut self, registries: Vec<String>) -> RuntimeCli {
        self.insecure_registries = registries;
        self
    }

    async fn run(&self, verb: &str, target: &str, args: &[&str]) -> Result<Vec<u8>, CriError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.root).arg("--image-root").arg(&self.image_root);
        if let Some(dir) = &self.cgroup_root {
            cmd.arg("--cgroup-root").arg(dir);
        }
        let out = cmd
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| CriError::Spawn { bin: self.bin.clone(), verb: verb.into(), source })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(CriError::Failed {
            verb: verb.into(),
            target: target.into(),
            message: last_line(&out.stderr, out.status),
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(verb: &str, target: &str, out: &[u8]) -> Result<T, CriError> {
        serde_json::from_slice(out).map_err(|source| CriError::Parse {
            verb: verb.into(),
            target: target.into(),
            source,
        })
    }
}

fn last_line(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| match l.split_once(": error: ") {
            Some((prog, rest)) if !prog.contains(' ') => rest.to_string(),
            _ => l.to_string(),
        })
        .unwrap_or_else(|| format!("exited with {status}"))
}

/// Parses `list` output: a JSON array of states/ids, or runc's table (first column ID).
pub fn parse_list(out: &[u8]) -> Vec<String> {
    if let Ok(values) = serde_json::from_slice::<Vec<serde_json::Value>>(out) {
        return values
            .iter()
            .filter_map(|v| v.get("id").and_then(|i| i.as_str()).or(v.as_str()).map(String::from))
            .collect();
    }
    if let Ok(serde_json::Value::Null) = serde_json::from_slice(out) {
        return Vec::new();
    }
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| *id != "ID")
        .map(String::from)
        .collect()
}

#[async_trait]
impl RuntimeService for RuntimeCli {
    async fn create_container(&self, id: &str, bundle: &Path) -> Result<(), CriError> {
        let b = bundle.to_string_lossy();
        self.run("create", id, &["create", id, "--bundle", &b]).await.map(drop)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.run("start", id, &["start", id]).await.map(drop)
    }

    async fn stop_container(&self, id: &str, signal: &str) -> Result<(), CriError> {
        self.run("kill", id, &["kill", id, signal]).await.map(drop)
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.run("delete", id, &["delete", "--force", id]).await.map(drop)
    }

    async fn container_status(&self, id: &str) -> Result<ContainerState, CriError> {
        let out = self.run("state", id, &["state", id]).await?;
        Self::parse("state", id, &out)
    }

    async fn list_containers(&self) -> Result<Vec<String>, CriError> {
        let out = self.run("list", "", &["list"]).await?;
        Ok(parse_list(&out))
    }

    async fn image_status(&self, image: &str) -> Result<ImageInfo, CriError> {
        let out = self.run("image inspect", image, &["image", "inspect", image]).await?;
        Self::parse("image inspect", image, &out)
    }

    async fn pull_image(&self, image: &str, auth_file: Option<&Path>) -> Result<ImageInfo, CriError> {
        let mut args = vec!["image".to_string(), "pull".into(), image.into(), "--quiet".into()];
        for r in &self.insecure_registries {
            args.extend(["--insecure-registry".to_string(), r.clone()]);
        }
        if let Some(f) = auth_file {
            args.extend(["--auth-file".to_string(), f.to_string_lossy().into_owned()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run("image pull", image, &argv).await?;
        Self::parse("image pull", image, &out)
    }

    async fn image_gc(&self, keep: &[String]) -> Result<(), CriError> {
        let mut args = vec!["image".to_string(), "gc".into()];
        for k in keep {
            args.extend(["--keep".to_string(), k.clone()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run("image gc", "", &argv).await?;
        tracing::debug!(report = %String::from_utf8_lossy(&out), "image gc");
        Ok(())
    }

    async fn create_netns(&self, path: &Path) -> Result<(), CriError> {
        let p = path.to_string_lossy();
        self.run("netns add", &p, &["netns", "add", &p]).await.map(drop)
    }

    async fn remove_netns(&self, path: &Path) -> Result<(), CriError> {
        let p = path.to_string_lossy();
        self.run("netns del", &p, &["netns", "del", &p]).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_json() {
        let json = br#"{"ociVersion":"1.0.2","id":"u-c","pid":0,"status":"stopped","bundle":"/b",
            "created":"2026-01-01T00:00:00Z","exitCode":137,"reason":"OOMKilled",
            "startedAt":"2026-01-01T00:00:01Z","finishedAt":"2026-01-01T00:00:02Z"}"#;
        let s: ContainerState = serde_json::from_slice(json).unwrap();
        assert_eq!(s.status, RuntimeStatus::Stopped);
        assert_eq!(s.exit_code, Some(137));
        assert_eq!(s.reason.as_deref(), Some("OOMKilled"));
    }

    #[test]
    fn error_line_drops_program_prefix() {
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw(256);
        assert_eq!(last_line(b"warn\nminion-runtime: error: image \"x\" not found\n\n", st), "image \"x\" not found");
        assert_eq!(last_line(b"", st), "exited with exit status: 1");
    }

    #[test]
    fn parses_list_forms() {
        assert_eq!(parse_list(br#"[{"id":"a","status":"running"},{"id":"b"}]"#), vec!["a", "b"]);
        assert_eq!(parse_list(b"null"), Vec::<String>::new());
        assert_eq!(parse_list(b"ID   PID STATUS\nabc 12 running\n"), vec!["abc"]);
    }

    #[test]
    fn parses_image_inspect() {
        let json = br#"{"name":"docker.io/library/busybox:latest","rootfs":"/img/x",
            "config":{"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":"","Entrypoint":null}}"#;
        let i: ImageInfo = serde_json::from_slice(json).unwrap();
        assert_eq!(i.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(i.config.entrypoint, None);
    }
}
