//! Pod worker orchestration against a fake runtime, a fake CNI and a recording API.

use super::*;
use crate::cni::CniError;
use crate::cri::{ContainerState, CriError, ImageConfig, ImageInfo, RuntimeStatus};
use crate::podapi::PodApiError;
use async_trait::async_trait;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Default)]
struct FakeRuntime {
    containers: Mutex<HashMap<String, ContainerState>>,
    calls: Mutex<Vec<String>>,
    /// When set, `image pull` fails with this message.
    pull_error: Mutex<Option<String>>,
}

impl FakeRuntime {
    fn call(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn exit(&self, id: &str, code: i32) {
        let mut map = self.containers.lock().unwrap();
        let c = map.get_mut(id).unwrap();
        c.status = RuntimeStatus::Stopped;
        c.exit_code = Some(code);
        c.finished_at = Some("2026-01-01T00:00:05Z".into());
    }
    fn put_running(&self, id: &str) {
        self.containers.lock().unwrap().insert(id.into(), state(id, RuntimeStatus::Running));
    }
}

fn state(id: &str, status: RuntimeStatus) -> ContainerState {
    ContainerState {
        id: id.into(),
        status,
        pid: 1,
        bundle: None,
        annotations: Some(HashMap::from([("io.kubernetes.pod.uid".to_string(), "uid-1".to_string())])),
        exit_code: None,
        reason: None,
        started_at: Some("2026-01-01T00:00:01Z".into()),
        finished_at: None,
    }
}

fn not_found(verb: &str, id: &str) -> CriError {
    CriError::Failed { verb: verb.into(), target: id.into(), message: format!("container {id} not found") }
}

#[async_trait]
impl RuntimeService for FakeRuntime {
    async fn create_container(&self, id: &str, bundle: &Path) -> Result<(), CriError> {
        self.call(format!("create {id} {}", bundle.display()));
        self.containers.lock().unwrap().insert(id.into(), state(id, RuntimeStatus::Created));
        Ok(())
    }
    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.call(format!("start {id}"));
        let mut map = self.containers.lock().unwrap();
        map.get_mut(id).ok_or_else(|| not_found("start", id))?.status = RuntimeStatus::Running;
        Ok(())
    }
    async fn stop_container(&self, id: &str, signal: &str) -> Result<(), CriError> {
        self.call(format!("kill {id} {signal}"));
        if signal == "SIGTERM" {
            self.exit(id, 143);
        }
        Ok(())
    }
    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.call(format!("delete {id}"));
        self.containers.lock().unwrap().remove(id).map(drop).ok_or_else(|| not_found("delete", id))
    }
    async fn container_status(&self, id: &str) -> Result<ContainerState, CriError> {
        self.containers.lock().unwrap().get(id).cloned().ok_or_else(|| not_found("state", id))
    }
    async fn list_containers(&self) -> Result<Vec<String>, CriError> {
        Ok(self.containers.lock().unwrap().keys().cloned().collect())
    }
    async fn image_status(&self, image: &str) -> Result<ImageInfo, CriError> {
        if image != "busybox" {
            return Err(CriError::Failed {
                verb: "image inspect".into(),
                target: image.into(),
                message: format!("image \"{image}\" not found in store /images"),
            });
        }
        Ok(ImageInfo {
            name: "docker.io/library/busybox:latest".into(),
            rootfs: "/images/busybox/rootfs".into(),
            config: ImageConfig { cmd: Some(vec!["sh".into()]), ..Default::default() },
            ..Default::default()
        })
    }
    async fn pull_image(&self, image: &str, _auth: Option<&Path>) -> Result<ImageInfo, CriError> {
        self.call(format!("pull {image}"));
        let err = self.pull_error.lock().unwrap().clone();
        match err {
            Some(message) => Err(CriError::Failed { verb: "image pull".into(), target: image.into(), message }),
            None => self.image_status(image).await,
        }
    }
    async fn create_netns(&self, path: &Path) -> Result<(), CriError> {
        self.call(format!("netns add {}", path.display()));
        std::fs::write(path, b"").unwrap();
        Ok(())
    }
    async fn remove_netns(&self, path: &Path) -> Result<(), CriError> {
        self.call(format!("netns del {}", path.display()));
        std::fs::remove_file(path).unwrap();
        Ok(())
    }
}

#[derive(Default)]
struct FakeCni {
    commands: Mutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CniExec for FakeCni {
    async fn exec(&self, plugin: &Path, env: &[(String, String)], _stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let cmd = env.iter().find(|(k, _)| k == "CNI_COMMAND").unwrap().1.clone();
        self.commands.lock().unwrap().push(format!("{cmd} {}", plugin.display()));
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CniError::Plugin { plugin: "minion-netd".into(), message: "no free IP in 10.244.1.0/24 (code 11)".into() });
        }
        Ok(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.9/24"}]}).to_string().into_bytes())
    }
}

#[derive(Default)]
struct FakeApi {
    statuses: Mutex<Vec<Value>>,
    deletes: Mutex<Vec<String>>,
    events: Mutex<Vec<String>>,
}

#[async_trait]
impl PodApi for FakeApi {
    async fn patch_status(&self, _ns: &str, _name: &str, status: &Value) -> Result<(), PodApiError> {
        self.statuses.lock().unwrap().push(status.clone());
        Ok(())
    }
    async fn finalize_delete(&self, ns: &str, name: &str, uid: &str) -> Result<(), PodApiError> {
        self.deletes.lock().unwrap().push(format!("{ns}/{name} {uid}"));
        Ok(())
    }
    async fn event(&self, _pod: &Pod, _warning: bool, reason: &str, _message: &str) {
        self.events.lock().unwrap().push(reason.into());
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    runtime: Arc<FakeRuntime>,
    cni: Arc<FakeCni>,
    api: Arc<FakeApi>,
    deps: Deps,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut config = Config::new("node1", root.join("kubelet"));
    config.node_ip = "172.18.0.11".into();
    config.netns_dir = root.join("netns");
    config.cni_conf_dir = root.join("cni");
    config.cni_bin_dir = root.join("bin");
    config.cgroup_root = root.join("cgroup");
    config.max_grace_period = Duration::from_millis(300);
    for d in [&config.netns_dir, &config.cni_conf_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        config.cni_conf_dir.join("10-minion.conflist"),
        r#"{"cniVersion":"1.0.0","name":"minion","plugins":[{"type":"minion-netd"}]}"#,
    )
    .unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let cni = Arc::new(FakeCni::default());
    let api = Arc::new(FakeApi::default());
    let deps = Deps { config: Arc::new(config), runtime: runtime.clone(), cni: cni.clone(), api: api.clone(), registries: Default::default() };
    Harness { _dir: dir, root, runtime, cni, api, deps }
}

fn pod(image: &str, policy: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": {"nodeName": "node1", "restartPolicy": policy,
                 "containers": [{"name": "app", "image": image, "command": ["sleep", "60"]}]}
    }))
    .unwrap()
}

impl Harness {
    fn last_status(&self) -> Value {
        self.api.statuses.lock().unwrap().last().cloned().unwrap()
    }
    fn pod_dir(&self) -> PathBuf {
        self.root.join("kubelet/pods/uid-1")
    }
}

#[tokio::test]
async fn new_pod_gets_sandbox_files_bundle_and_running_status() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    let netns = h.root.join("netns/minion-uid-1");
    let calls: Vec<String> = h.runtime.calls().into_iter().filter(|c| !c.starts_with("pull ")).collect();
    assert_eq!(calls[0], format!("netns add {}", netns.display()));
    assert!(calls[1].starts_with("create uid-1-app "), "{calls:?}");
    assert_eq!(calls[2], "start uid-1-app");
    assert_eq!(h.cni.commands.lock().unwrap()[0], format!("ADD {}", h.root.join("bin/minion-netd").display()));
    let hosts = std::fs::read_to_string(h.pod_dir().join("etc/hosts")).unwrap();
    assert!(hosts.contains("10.244.1.9\tweb"));
    assert_eq!(std::fs::read_to_string(h.pod_dir().join("etc/hostname")).unwrap(), "web\n");
    let spec: Value =
        serde_json::from_slice(&std::fs::read(h.pod_dir().join("containers/app/config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], json!(["sleep", "60"]));
    assert_eq!(spec["annotations"]["io.minion.log.path"], h.pod_dir().join("logs/app/0.log").to_string_lossy().as_ref());
    assert!(h.pod_dir().join("containers/app/rootfs").is_dir());
    let s = h.last_status();
    assert_eq!(s["phase"], "Running");
    assert_eq!(s["podIP"], "10.244.1.9");
    assert_eq!(s["hostIP"], "172.18.0.11");
    assert_eq!(s["containerStatuses"][0]["ready"], true);
    assert_eq!(s["containerStatuses"][0]["containerID"], "minion://uid-1-app");
    assert_eq!(s["containerStatuses"][0]["imageID"], "docker.io/library/busybox:latest");
    // unchanged state → no second write
    w.sync().await;
    assert_eq!(h.api.statuses.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn missing_image_is_err_image_pull_then_back_off() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("nope", "Always"));
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["phase"], "Pending");
    let waiting = &s["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "ErrImagePull");
    assert!(waiting["message"].as_str().unwrap().contains("not found in store"));
    w.sync().await;
    assert_eq!(h.last_status()["containerStatuses"][0]["state"]["waiting"]["reason"], "ImagePullBackOff");
    assert!(!h.runtime.calls().iter().any(|c| c.starts_with("create")));
}

#[tokio::test]
async fn exited_container_restarts_then_crash_loops() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    h.runtime.exit("uid-1-app", 1);
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    assert!(s["containerStatuses"][0]["state"]["running"].is_object());
    let spec: Value =
        serde_json::from_slice(&std::fs::read(h.pod_dir().join("containers/app/config.json")).unwrap()).unwrap();
    assert!(spec["annotations"]["io.minion.log.path"].as_str().unwrap().ends_with("logs/app/1.log"));
    h.runtime.exit("uid-1-app", 2);
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["phase"], "Running");
    assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(s["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 2);
    assert_eq!(h.api.statuses.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn never_policy_completes() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Never"));
    w.sync().await;
    h.runtime.exit("uid-1-app", 0);
    w.sync().await;
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["phase"], "Succeeded");
    assert_eq!(s["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(h.runtime.calls().iter().filter(|c| c.starts_with("start")).count(), 1);
}

#[tokio::test]
async fn deletion_kills_tears_down_and_finalizes() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    std::fs::create_dir_all(h.root.join("cgroup/memory/minion/poduid-1/app")).unwrap();
    w.terminate(true).await;
    let calls = h.runtime.calls();
    assert!(calls.contains(&"kill uid-1-app SIGTERM".to_string()), "{calls:?}");
    assert!(!calls.contains(&"kill uid-1-app SIGKILL".to_string()), "{calls:?}");
    assert!(calls.contains(&"delete uid-1-app".to_string()));
    assert!(calls.last().unwrap().starts_with("netns del"));
    assert!(h.cni.commands.lock().unwrap().last().unwrap().starts_with("DEL "));
    assert!(!h.pod_dir().exists());
    assert!(!h.root.join("cgroup/memory/minion/poduid-1").exists());
    assert_eq!(*h.api.deletes.lock().unwrap(), vec!["default/web uid-1".to_string()]);
}

#[tokio::test]
async fn restart_adopts_running_containers() {
    let h = harness();
    let mut first = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    first.sync().await;
    let creates = h.runtime.calls().iter().filter(|c| c.starts_with("create")).count();
    // a new agent process: fresh worker, same runtime and disk
    let mut second = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    second.sync().await;
    assert_eq!(h.runtime.calls().iter().filter(|c| c.starts_with("create")).count(), creates);
    assert_eq!(h.cni.commands.lock().unwrap().len(), 1);
    assert_eq!(h.last_status()["podIP"], "10.244.1.9");
    assert_eq!(h.last_status()["phase"], "Running");
}

#[tokio::test]
async fn manager_cleans_up_orphans_on_first_list() {
    let h = harness();
    h.runtime.put_running("uid-1-app");
    std::fs::create_dir_all(h.pod_dir()).unwrap();
    let mut m = crate::manager::PodManager::new(h.deps.clone());
    m.handle(kube::runtime::watcher::Event::Init).await;
    m.handle(kube::runtime::watcher::Event::InitDone).await;
    for _ in 0..50 {
        if !h.pod_dir().exists() && h.runtime.containers.lock().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("orphan not cleaned: {:?}", h.runtime.calls());
}

#[tokio::test]
async fn cni_failure_is_reported_and_retried() {
    let h = harness();
    h.cni.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["phase"], "Pending");
    let waiting = &s["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "ContainerCreating");
    let msg = waiting["message"].as_str().unwrap();
    assert!(msg.contains("minion-netd") && msg.contains("no free IP"), "{msg}");
    assert_eq!(*h.api.events.lock().unwrap(), vec!["FailedCreatePodSandBox".to_string()]);
    h.cni.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    w.sync().await;
    assert_eq!(h.last_status()["phase"], "Running");
}

#[tokio::test]
async fn init_containers_run_to_completion_first() {
    let h = harness();
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": {"nodeName": "node1",
                 "initContainers": [{"name": "setup", "image": "busybox", "command": ["true"]}],
                 "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "60"]}]}
    }))
    .unwrap();
    let mut w = PodWorker::new(h.deps.clone(), p);
    w.sync().await;
    assert!(h.runtime.calls().contains(&"start uid-1-setup".to_string()));
    assert!(!h.runtime.calls().iter().any(|c| c.contains("uid-1-app")));
    assert_eq!(h.last_status()["phase"], "Pending");
    h.runtime.exit("uid-1-setup", 0);
    w.sync().await;
    assert!(h.runtime.calls().contains(&"start uid-1-app".to_string()));
    let s = h.last_status();
    assert_eq!(s["phase"], "Running");
    assert_eq!(s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    w.sync().await;
    assert_eq!(h.runtime.calls().iter().filter(|c| *c == "start uid-1-setup").count(), 1);
}

#[tokio::test]
async fn changed_image_restarts_the_container() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    let mut p = pod("busybox", "Always");
    p.spec.as_mut().unwrap().containers[0].command = Some(vec!["sleep".into(), "99".into()]);
    w.pod = p;
    w.sync().await;
    let calls = h.runtime.calls();
    assert!(calls.contains(&"kill uid-1-app SIGTERM".to_string()), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "start uid-1-app").count(), 2);
    let s = h.last_status();
    assert_eq!(s["containerStatuses"][0]["restartCount"], 1);
    assert!(s["containerStatuses"][0]["state"]["running"].is_object());
}

#[tokio::test]
async fn host_network_pod_skips_netns_and_cni() {
    let h = harness();
    let mut p = pod("busybox", "Always");
    p.spec.as_mut().unwrap().host_network = Some(true);
    let mut w = PodWorker::new(h.deps.clone(), p);
    w.sync().await;
    assert!(h.cni.commands.lock().unwrap().is_empty());
    assert!(!h.runtime.calls().iter().any(|c| c.starts_with("netns")));
    let spec: Value =
        serde_json::from_slice(&std::fs::read(h.pod_dir().join("containers/app/config.json")).unwrap()).unwrap();
    assert!(!spec["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "network"));
    assert_eq!(h.last_status()["podIP"], "172.18.0.11");
    w.terminate(true).await;
    assert!(h.cni.commands.lock().unwrap().is_empty());
    assert!(!h.pod_dir().exists());
}

fn pod_with_pull_policy(image: &str, pull: &str) -> Pod {
    let mut p = pod(image, "Always");
    p.spec.as_mut().unwrap().containers[0].image_pull_policy = Some(pull.into());
    p
}

fn pulls(h: &Harness) -> usize {
    h.runtime.calls().iter().filter(|c| c.starts_with("pull ")).count()
}

#[tokio::test]
async fn pull_policy_never_and_if_not_present() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod_with_pull_policy("nope", "Never"));
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImageNeverPull");
    assert!(s["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap().contains("pull policy of Never"));
    assert_eq!(pulls(&h), 0);

    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod_with_pull_policy("busybox", "IfNotPresent"));
    w.sync().await;
    assert_eq!(h.last_status()["containerStatuses"][0]["ready"], true);
    assert_eq!(pulls(&h), 0);
    assert!(h.api.events.lock().unwrap().contains(&"Pulled".to_string()));
}

#[tokio::test]
async fn pull_policy_always_pulls_and_reports_registry_errors() {
    let h = harness();
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    assert_eq!(pulls(&h), 1, "latest defaults to Always");
    let ev = h.api.events.lock().unwrap().clone();
    assert!(ev.starts_with(&["Pulling".to_string(), "Pulled".to_string()]), "{ev:?}");

    let h = harness();
    *h.runtime.pull_error.lock().unwrap() = Some("pulling docker.io/library/busybox:latest from docker.io: manifest unknown".into());
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    let s = h.last_status();
    assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImagePull");
    assert!(s["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap().contains("manifest unknown"));
    w.sync().await;
    assert_eq!(h.last_status()["containerStatuses"][0]["state"]["waiting"]["reason"], "ImagePullBackOff");
    assert!(h.api.events.lock().unwrap().contains(&"BackOff".to_string()));
}

#[tokio::test]
async fn unreachable_registry_falls_back_to_local_image() {
    let h = harness();
    *h.runtime.pull_error.lock().unwrap() =
        Some("registry docker.io unreachable while pulling docker.io/library/busybox:latest: dns error".into());
    let mut w = PodWorker::new(h.deps.clone(), pod("busybox", "Always"));
    w.sync().await;
    assert_eq!(h.last_status()["containerStatuses"][0]["ready"], true);
    assert!(h.api.events.lock().unwrap().contains(&"Failed".to_string()), "a Warning tells the fallback");
    assert_eq!(pulls(&h), 1);
    // A second pod's container does not wait on the dead registry again.
    let mut p2 = pod("busybox", "Always");
    p2.metadata.uid = Some("uid-2".into());
    p2.metadata.name = Some("web2".into());
    let mut w2 = PodWorker::new(h.deps.clone(), p2);
    w2.sync().await;
    assert_eq!(pulls(&h), 1, "registry known down: no second pull");

    let h = harness();
    *h.runtime.pull_error.lock().unwrap() = Some("registry r:5000 unreachable while pulling r:5000/x:latest: refused".into());
    let mut w = PodWorker::new(h.deps.clone(), pod("r:5000/x", "Always"));
    w.sync().await;
    assert_eq!(h.last_status()["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImagePull");
}
