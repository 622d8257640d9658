//! The kubelet's image manager: applies a container's imagePullPolicy (Always,
//! IfNotPresent, Never; defaulted as Kubernetes does: Always for `:latest` or no
//! tag), pulls through the runtime with the pod's imagePullSecrets, and records the
//! `Pulling` / `Pulled` / `Failed` / `ErrImageNeverPull` events.
//!
//! Offline nodes: when a pull fails because the registry cannot be reached at all
//! (connection refused, no route, DNS failure; not when the registry answers with
//! an error) and the image is already in the node's store, the local image is used
//! and a Warning event says so. This keeps labs without registry access (images
//! imported with `minion-runtime image import`) working under `Always`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Secret};
use serde_json::{json, Value};

use crate::config::Config;
use crate::cri::{ImageInfo, RuntimeService};
use crate::podworker::PodWorker;

/// The kubelet's default eviction thresholds behind DiskPressure.
pub const IMAGEFS_MIN_AVAILABLE_PERCENT: f64 = 15.0;
/// nodefs.available threshold.
pub const NODEFS_MIN_AVAILABLE_PERCENT: f64 = 10.0;
/// How often image GC runs (the kubelet's ImageGCPeriod).
pub const IMAGE_GC_PERIOD: std::time::Duration = std::time::Duration::from_secs(300);

/// Percent of a filesystem still available to unprivileged users.
fn available_percent(path: &Path) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let total = st.blocks() as f64;
    (total > 0.0).then(|| 100.0 * st.blocks_available() as f64 / total)
}

/// The DiskPressure message for the given available percentages, if any.
pub fn pressure_message(imagefs: Option<f64>, nodefs: Option<f64>) -> Option<String> {
    match (imagefs, nodefs) {
        (Some(i), _) if i < IMAGEFS_MIN_AVAILABLE_PERCENT => {
            Some(format!("imagefs.available {i:.1}% is below {IMAGEFS_MIN_AVAILABLE_PERCENT}%"))
        }
        (_, Some(n)) if n < NODEFS_MIN_AVAILABLE_PERCENT => {
            Some(format!("nodefs.available {n:.1}% is below {NODEFS_MIN_AVAILABLE_PERCENT}%"))
        }
        _ => None,
    }
}

/// Whether the node is under disk pressure (image store or kubelet root filesystem).
pub fn disk_pressure(config: &Config) -> Option<String> {
    pressure_message(available_percent(&config.image_root), available_percent(&config.root_dir))
}

/// Every image used by a pod bound to this node.
fn images_in_use(pods: &[k8s_openapi::api::core::v1::Pod]) -> Vec<String> {
    let mut out: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .filter_map(|c| c.image.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs image GC every [`IMAGE_GC_PERIOD`], keeping the images of this node's pods.
pub async fn gc_loop(client: kube::Client, config: std::sync::Arc<Config>, runtime: std::sync::Arc<dyn RuntimeService>) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
    let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={}", config.node_name));
    // First run one period after start, once pods have been listed and started.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + IMAGE_GC_PERIOD, IMAGE_GC_PERIOD);
    loop {
        ticker.tick().await;
        let keep = match pods.list(&lp).await {
            Ok(l) => images_in_use(&l.items),
            Err(e) => {
                tracing::warn!(error = %e, "image gc skipped: cannot list pods");
                continue;
            }
        };
        if let Err(e) = runtime.image_gc(&keep).await {
            tracing::warn!(error = %e, "image gc failed");
        }
    }
}

/// Waiting reason of a failed pull.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason while a failed pull backs off.
pub const IMAGE_PULL_BACKOFF: &str = "ImagePullBackOff";
/// Waiting reason when policy Never finds no image.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";

/// The container's pull policy, defaulted like the API server does.
pub fn pull_policy(c: &Container) -> &'static str {
    match c.image_pull_policy.as_deref() {
        Some("Always") => "Always",
        Some("Never") => "Never",
        Some("IfNotPresent") => "IfNotPresent",
        _ => default_policy(c.image.as_deref().unwrap_or_default()),
    }
}

/// Always for `:latest` or an untagged name (a digest pins it: IfNotPresent).
pub fn default_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// How long a registry that could not be reached is not asked again for images
/// the node already has.
pub const UNREACHABLE_HOLD: std::time::Duration = std::time::Duration::from_secs(300);

/// Registries found unreachable recently, shared by all pod workers, so that an
/// offline node pays the connect timeout once, not on every container start.
#[derive(Debug, Default)]
pub struct RegistryHealth {
    down_until: std::sync::Mutex<BTreeMap<String, Instant>>,
}

impl RegistryHealth {
    /// Whether `registry` failed to answer within the last [`UNREACHABLE_HOLD`].
    pub fn is_down(&self, registry: &str) -> bool {
        let map = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(registry).is_some_and(|t| Instant::now() < *t)
    }

    fn set(&self, registry: &str, down: bool) {
        let mut map = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down {
            map.insert(registry.to_string(), Instant::now() + UNREACHABLE_HOLD);
        } else {
            map.remove(registry);
        }
    }
}

/// The registry host of an image reference (docker.io when none is named).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Whether a runtime pull error means the registry never answered.
pub fn registry_unreachable(message: &str) -> bool {
    message.contains(" unreachable while pulling ")
}

/// Merges the docker configs of imagePullSecrets (`kubernetes.io/dockerconfigjson`
/// and the legacy `kubernetes.io/dockercfg`) into one `{"auths":{…}}`.
pub fn merge_pull_secrets(secrets: &[Secret]) -> Option<Value> {
    let mut auths = BTreeMap::new();
    for s in secrets {
        let Some(data) = &s.data else { continue };
        if let Some(b) = data.get(".dockerconfigjson") {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&b.0).map(|v| v.get("auths").cloned().unwrap_or(Value::Null)) {
                auths.extend(m);
            }
        } else if let Some(b) = data.get(".dockercfg") {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&b.0) {
                auths.extend(m);
            }
        }
    }
    (!auths.is_empty()).then(|| json!({ "auths": auths }))
}

/// Removes the temporary auth file when the pull is done.
struct AuthFile(PathBuf);
impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_auth_file(path: &Path, v: &Value) -> Result<AuthFile, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    f.write_all(v.to_string().as_bytes()).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(AuthFile(path.to_path_buf()))
}

impl PodWorker {
    /// Makes sure the container's image is on the node per its pull policy.
    /// Err is (waiting reason, message).
    pub(crate) async fn ensure_image(&self, c: &Container, first: bool) -> Result<ImageInfo, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = pull_policy(c);
        let present = self.deps.runtime.image_status(&image).await.ok();
        match (policy, present) {
            ("Never", None) => {
                let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                self.deps.api.event(&self.pod, true, ERR_IMAGE_NEVER_PULL, &msg).await;
                Err((ERR_IMAGE_NEVER_PULL.into(), msg))
            }
            ("Never" | "IfNotPresent", Some(info)) => {
                if first {
                    let msg = format!("Container image \"{image}\" already present on machine");
                    self.deps.api.event(&self.pod, false, "Pulled", &msg).await;
                }
                Ok(info)
            }
            (_, present) => self.pull(&image, present).await,
        }
    }

    async fn pull(&self, image: &str, present: Option<ImageInfo>) -> Result<ImageInfo, (String, String)> {
        let registry = registry_of(image);
        if let Some(info) = present.as_ref().filter(|_| self.deps.registries.is_down(registry)) {
            let msg = format!(
                "Not pulling image \"{image}\": registry {registry} was unreachable within the last {}s; using the image already present on the node",
                UNREACHABLE_HOLD.as_secs()
            );
            self.deps.api.event(&self.pod, true, "Failed", &msg).await;
            return Ok(info.clone());
        }
        self.deps.api.event(&self.pod, false, "Pulling", &format!("Pulling image \"{image}\"")).await;
        let start = Instant::now();
        let auth = self.pull_auth().await;
        let res = self.deps.runtime.pull_image(image, auth.as_ref().map(|a| a.0.as_path())).await;
        drop(auth);
        let secs = start.elapsed().as_secs_f64();
        match res {
            Ok(info) => {
                self.deps.registries.set(registry, false);
                let msg = format!(
                    "Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting). Image size: {} bytes.",
                    info.size
                );
                self.deps.api.event(&self.pod, false, "Pulled", &msg).await;
                Ok(info)
            }
            Err(e) => {
                let why = e.message();
                self.deps.registries.set(registry, registry_unreachable(&why));
                match present {
                    Some(info) if registry_unreachable(&why) => {
                        let msg = format!("Failed to pull image \"{image}\": {why}; using the image already present on the node");
                        tracing::warn!(image, error = %why, "registry unreachable, using local image");
                        self.deps.api.event(&self.pod, true, "Failed", &msg).await;
                        Ok(info)
                    }
                    _ => Err((ERR_IMAGE_PULL.into(), format!("Failed to pull image \"{image}\": {why}"))),
                }
            }
        }
    }

    /// Writes the pod's imagePullSecrets as a docker config json (mode 0600) for
    /// one pull. Secrets that cannot be read are skipped (the pull then runs with
    /// what is left, or anonymously, like the kubelet).
    async fn pull_auth(&self) -> Option<AuthFile> {
        let names: Vec<String> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return None;
        }
        let mut secrets = Vec::new();
        for n in &names {
            match self.deps.api.secret(&self.namespace(), n).await {
                Ok(s) => secrets.push(s),
                Err(e) => tracing::warn!(secret = %n, error = %e, "imagePullSecret not readable"),
            }
        }
        let merged = merge_pull_secrets(&secrets)?;
        let path = self.deps.config.pod_dir(&self.uid).join("pull-auth.json");
        match write_auth_file(&path, &merged) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "cannot write pull credentials");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn default_policy_like_kubernetes() {
        assert_eq!(default_policy("busybox"), "Always");
        assert_eq!(default_policy("busybox:latest"), "Always");
        assert_eq!(default_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_policy("localhost:5000/x"), "Always");
        assert_eq!(default_policy("localhost:5000/x:y"), "IfNotPresent");
        assert_eq!(default_policy("reg:5000/app@sha256:ab"), "IfNotPresent");
        let c = Container { image: Some("busybox".into()), image_pull_policy: Some("Never".into()), ..Default::default() };
        assert_eq!(pull_policy(&c), "Never");
    }

    #[test]
    fn merges_dockerconfigjson_and_dockercfg() {
        let s1 = Secret {
            data: Some([(".dockerconfigjson".to_string(), ByteString(br#"{"auths":{"a:5000":{"auth":"eDp5"}}}"#.to_vec()))].into()),
            ..Default::default()
        };
        let s2 = Secret {
            data: Some([(".dockercfg".to_string(), ByteString(br#"{"b.io":{"auth":"eDp5"}}"#.to_vec()))].into()),
            ..Default::default()
        };
        let m = merge_pull_secrets(&[s1, s2, Secret::default()]).unwrap();
        assert!(m["auths"]["a:5000"].is_object() && m["auths"]["b.io"].is_object(), "{m}");
        assert!(merge_pull_secrets(&[]).is_none());
    }

    #[test]
    fn disk_pressure_thresholds() {
        assert_eq!(pressure_message(Some(50.0), Some(50.0)), None);
        assert!(pressure_message(Some(14.0), Some(50.0)).unwrap().starts_with("imagefs.available 14.0%"));
        assert!(pressure_message(Some(20.0), Some(9.0)).unwrap().starts_with("nodefs.available 9.0%"));
        assert_eq!(pressure_message(None, None), None);
    }

    #[test]
    fn unreachable_is_told_apart_from_registry_answers() {
        assert!(registry_unreachable("registry docker.io unreachable while pulling docker.io/library/busybox:latest: dns error"));
        assert!(!registry_unreachable("pulling x from y: manifest unknown"));
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("foo/bar:1"), "docker.io");
        assert_eq!(registry_of("localhost:5000/x"), "localhost:5000");
        assert_eq!(registry_of("registry.k8s.io/pause:3.9"), "registry.k8s.io");
        let h = RegistryHealth::default();
        assert!(!h.is_down("docker.io"));
        h.set("docker.io", true);
        assert!(h.is_down("docker.io") && !h.is_down("quay.io"));
        h.set("docker.io", false);
        assert!(!h.is_down("docker.io"));
    }
}
