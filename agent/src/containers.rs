//! Container lifecycle inside a pod worker: start (image check, OCI bundle, create,
//! start), adopt what already runs, restart exited containers per restartPolicy with
//! the kubelet's CrashLoopBackOff (10s doubling to 5 min).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated};

use crate::bundle::{self, BundleParams};
use crate::cri::{ContainerState, RuntimeStatus};
use crate::podworker::{container_id, PodWorker};
use crate::status::{self, ContainerView};

/// First CrashLoopBackOff delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Maximum CrashLoopBackOff / ImagePullBackOff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What the worker remembers about one container between syncs.
#[derive(Debug, Clone, Default)]
pub struct ContainerRecord {
    /// Resolved image id/name.
    pub image_id: String,
    /// Restarts so far.
    pub restart_count: i32,
    /// Termination of the previous run.
    pub last_terminated: Option<ContainerStateTerminated>,
    /// Waiting reason/message shown instead of the runtime state.
    pub waiting: Option<(String, String)>,
    /// Next backoff delay to apply.
    pub backoff: Duration,
    /// The delay currently being waited.
    pub delay: Duration,
    /// Not before this instant will the worker try again.
    pub next_attempt: Option<Instant>,
    /// Latest runtime state.
    pub state: Option<ContainerState>,
    /// Hash of the container spec the running container was made from.
    pub spec_hash: Option<[u8; 32]>,
    /// Whether restart count was recovered from disk already.
    pub recovered: bool,
}

impl ContainerRecord {
    /// The status-computation view of this record.
    pub fn view(&self, c: &Container) -> ContainerView {
        ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.state.as_ref().map(|s| s.id.clone()),
            state: self.state.clone(),
            waiting: self.waiting.clone(),
            restart_count: self.restart_count,
            last_terminated: self.last_terminated.clone(),
        }
    }

    fn bump_backoff(&mut self) -> Duration {
        let delay = self.backoff;
        self.backoff = if self.backoff.is_zero() { BACKOFF_INITIAL } else { (self.backoff * 2).min(BACKOFF_MAX) };
        delay
    }
}

/// The status' imageID: the repo digest of a pulled image, else the image id.
fn image_id(info: &crate::cri::ImageInfo) -> String {
    info.repo_digest.clone().or_else(|| info.id.clone()).unwrap_or_else(|| info.name.clone())
}

/// A digest of a container's spec, to notice changes (an updated image).
pub fn spec_hash(c: &Container) -> [u8; 32] {
    use sha2::Digest;
    // Only what shapes the process: defaulting quirks elsewhere must not restart it.
    let key = serde_json::json!([c.image, c.command, c.args, c.env, c.working_dir]);
    sha2::Sha256::digest(key.to_string().as_bytes()).into()
}

/// Restart count recovered from the log files `<logs>/<n>.log` (highest n).
pub fn restart_count_from_logs(dir: &Path) -> i32 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse::<i32>().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Seconds a stopped container ran, if known.
fn ran_for(state: &ContainerState) -> Option<Duration> {
    let start = status::parse_time(state.started_at.as_deref())?.0;
    let end = status::parse_time(state.finished_at.as_deref())?.0;
    let secs = end.as_second().checked_sub(start.as_second())?;
    u64::try_from(secs).ok().map(Duration::from_secs)
}

impl PodWorker {
    fn logs_dir(&self, name: &str) -> PathBuf {
        self.deps.config.pod_dir(&self.uid).join("logs").join(name)
    }

    /// Converges one container; init containers are restarted only on failure (and
    /// never under restartPolicy Never).
    pub(crate) async fn sync_container(&mut self, c: &Container, init: bool) {
        let id = container_id(&self.uid, &c.name);
        let mut rec = self.containers.remove(&c.name).unwrap_or_default();
        if !rec.recovered {
            rec.restart_count = restart_count_from_logs(&self.logs_dir(&c.name));
            rec.recovered = true;
        }
        rec.state = match self.deps.runtime.container_status(&id).await {
            Ok(s) => Some(s),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "container state failed");
                rec.state.clone()
            }
        };
        let hash = spec_hash(c);
        match rec.spec_hash {
            Some(h) if h != hash && rec.state.is_some() => self.restart_changed(c, &id, &mut rec).await,
            _ => {}
        }
        rec.spec_hash = Some(hash);
        match rec.state.as_ref().map(|s| s.status) {
            None => self.start_when_due(c, &mut rec).await,
            Some(RuntimeStatus::Created) => self.start_created(c, &id, &mut rec).await,
            Some(RuntimeStatus::Stopped) => self.handle_exit(c, &id, &mut rec, init).await,
            Some(RuntimeStatus::Running) if rec.waiting.take().is_some() || rec.image_id.is_empty() => {
                self.fill_image_id(c, &mut rec).await;
            }
            _ => {}
        }
        self.containers.insert(c.name.clone(), rec);
    }

    /// The container's definition (e.g. its image) changed: kill it and start anew.
    async fn restart_changed(&mut self, c: &Container, id: &str, rec: &mut ContainerRecord) {
        tracing::info!(container = %c.name, "container definition changed, restarting");
        let msg = format!("Container {} definition changed, will be restarted", c.name);
        self.deps.api.event(&self.pod, false, "Killing", &msg).await;
        let rt = self.deps.runtime.clone();
        crate::termination::stop_containers(rt.as_ref(), &[id.to_string()], self.grace_period()).await;
        if let Ok(s) = rt.container_status(id).await {
            rec.last_terminated = Some(status::terminated(&s, Some(id)));
        }
        rec.restart_count += 1;
        rec.state = None;
        rec.next_attempt = None;
        rec.image_id.clear();
    }

    async fn fill_image_id(&self, c: &Container, rec: &mut ContainerRecord) {
        if let Ok(info) = self.deps.runtime.image_status(c.image.as_deref().unwrap_or_default()).await {
            rec.image_id = image_id(&info);
        }
    }

    async fn start_when_due(&mut self, c: &Container, rec: &mut ContainerRecord) {
        if rec.next_attempt.is_some_and(|t| Instant::now() < t) {
            if let Some((reason, msg)) = rec.waiting.clone() {
                if reason == crate::images::ERR_IMAGE_PULL {
                    let image = c.image.clone().unwrap_or_default();
                    self.deps.api.event(&self.pod, false, "BackOff", &format!("Back-off pulling image \"{image}\"")).await;
                    rec.waiting = Some((crate::images::IMAGE_PULL_BACKOFF.into(), msg));
                }
            }
            return;
        }
        if let Err((reason, message)) = self.start_new(c, rec).await {
            let delay = rec.bump_backoff().max(Duration::from_secs(1));
            tracing::warn!(container = %c.name, %reason, %message, "container start failed");
            self.deps.api.event(&self.pod, true, "Failed", &message).await;
            rec.waiting = Some((reason, message));
            rec.next_attempt = Some(Instant::now() + delay);
        }
    }

    async fn start_created(&mut self, c: &Container, id: &str, rec: &mut ContainerRecord) {
        match self.deps.runtime.start_container(id).await {
            Ok(()) => rec.state = self.deps.runtime.container_status(id).await.ok(),
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "start of created container failed");
                let _ = self.deps.runtime.remove_container(id).await;
                rec.state = None;
                rec.waiting = Some(("RunContainerError".into(), e.message()));
            }
        }
    }

    async fn handle_exit(&mut self, c: &Container, id: &str, rec: &mut ContainerRecord, init: bool) {
        let Some(state) = rec.state.clone() else { return };
        let exit = state.exit_code.unwrap_or(0);
        let policy = match status::restart_policy(&self.pod) {
            "Always" if init => "OnFailure",
            other => other,
        };
        if !status::should_restart(policy, exit) {
            rec.waiting = None;
            return;
        }
        if ran_for(&state).is_some_and(|d| d >= BACKOFF_RESET) {
            rec.backoff = Duration::ZERO;
        }
        let now = Instant::now();
        let due = match rec.next_attempt {
            Some(t) => t,
            None => {
                rec.delay = rec.bump_backoff();
                let t = now + rec.delay;
                rec.next_attempt = Some(t);
                t
            }
        };
        rec.last_terminated = Some(status::terminated(&state, Some(id)));
        if now < due {
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                rec.delay.as_secs(), c.name, self.name(), self.namespace(), self.uid
            );
            if rec.waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                self.deps.api.event(&self.pod, true, "BackOff", "Back-off restarting failed container").await;
            }
            rec.waiting = Some(("CrashLoopBackOff".into(), msg));
            return;
        }
        if let Err(e) = self.deps.runtime.remove_container(id).await {
            tracing::warn!(container = %c.name, error = %e, "delete of exited container failed");
            return;
        }
        rec.restart_count += 1;
        rec.next_attempt = None;
        rec.state = None;
        if let Err((reason, message)) = self.start_new(c, rec).await {
            rec.waiting = Some((reason, message));
        }
    }

    /// image (pull policy) → bundle → create → start. Err is (waiting reason, message).
    async fn start_new(&mut self, c: &Container, rec: &mut ContainerRecord) -> Result<(), (String, String)> {
        let id = container_id(&self.uid, &c.name);
        let info = self.ensure_image(c, rec.image_id.is_empty()).await?;
        rec.image_id = image_id(&info);
        let bundle_dir = self.write_bundle(c, &info, rec.restart_count).map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let rt = self.deps.runtime.clone();
        if let Err(e) = rt.create_container(&id, &bundle_dir).await {
            let _ = rt.remove_container(&id).await;
            return Err(("CreateContainerError".into(), e.message()));
        }
        self.deps.api.event(&self.pod, false, "Created", &format!("Created container: {}", c.name)).await;
        if let Err(e) = rt.start_container(&id).await {
            let _ = rt.remove_container(&id).await;
            return Err(("RunContainerError".into(), e.message()));
        }
        tracing::info!(container = %c.name, id = %id, restarts = rec.restart_count, "container started");
        self.deps.api.event(&self.pod, false, "Started", &format!("Started container {}", c.name)).await;
        rec.waiting = None;
        rec.state = rt.container_status(&id).await.ok();
        Ok(())
    }

    fn write_bundle(&self, c: &Container, info: &crate::cri::ImageInfo, restarts: i32) -> Result<PathBuf, String> {
        let cfg = &self.deps.config;
        let pod_dir = cfg.pod_dir(&self.uid);
        let bundle_dir = pod_dir.join("containers").join(&c.name);
        let logs = self.logs_dir(&c.name);
        let log_path = logs.join(format!("{restarts}.log"));
        let pod_ip = self.sandbox.as_ref().map(|s| s.pod_ip.clone()).unwrap_or_default();
        let netns = self.sandbox.as_ref().and_then(|s| s.netns.clone());
        let etc = pod_dir.join("etc");
        let params = BundleParams {
            pod: &self.pod,
            container: c,
            image: &info.config,
            image_rootfs: &info.rootfs,
            pod_ip: &pod_ip,
            host_ip: &cfg.node_ip,
            node_name: &cfg.node_name,
            netns_path: netns.as_deref(),
            etc_dir: &etc,
            log_path: &log_path,
            cgroup_parent: &cfg.cgroup_parent,
        };
        let spec = bundle::build_spec(&params).map_err(|e| e.to_string())?;
        for dir in [bundle_dir.join("rootfs"), logs] {
            std::fs::create_dir_all(&dir).map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
        }
        let file = bundle_dir.join("config.json");
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
        std::fs::write(&file, json).map_err(|e| format!("failed to write {}: {e}", file.display()))?;
        Ok(bundle_dir)
    }
}
