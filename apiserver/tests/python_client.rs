//! The Python `kubernetes` client (from PyPI) against the server: list, create,
//! patch status (strategic merge patch) and watch. The interpreter is `$MINION_PYTHON`
//! or `<workspace>/target/pyk8s/bin/python` (a venv with `pip install kubernetes`);
//! without one the test prints a skip message, or fails when `CI` is set
//! (scripts/test.sh makes the venv).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Server;

const SCRIPT: &str = r#"
import sys, threading
from kubernetes import client, watch
cfg = client.Configuration()
cfg.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(cfg))
names = [n.metadata.name for n in api.list_namespace().items]
assert "default" in names and "kube-system" in names, names
pod = client.V1Pod(metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}),
                   spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]))
created = api.create_namespaced_pod("default", pod)
assert created.metadata.uid and created.spec.service_account_name == "default"
rv = api.list_namespaced_pod("default").metadata.resource_version
api.patch_namespaced_pod_status("py", "default", {"status": {"phase": "Running", "podIP": "10.244.1.9"}})
got = api.read_namespaced_pod("py", "default")
assert got.status.phase == "Running" and got.status.pod_ip == "10.244.1.9", got.status
seen = []
for ev in watch.Watch().stream(api.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5):
    seen.append((ev["type"], ev["object"].status.phase))
    # The scheduler may mark the pod Unschedulable (still Pending) first: wait for ours.
    if ev["type"] == "MODIFIED" and ev["object"].status.phase == "Running":
        break
assert ("MODIFIED", "Running") in seen, seen
print("python client ok", seen)
"#;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MINION_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyk8s/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kubernetes_client_lists_creates_patches_status_and_watches() {
    let Some(py) = python() else {
        let why = "no python with the kubernetes package (set MINION_PYTHON or make target/pyk8s)";
        assert!(std::env::var_os("CI").is_none(), "CI is set and {why}: refusing to skip");
        eprintln!("skipping: {why}");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path()).await;
    let script = tmp.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut cmd = tokio::process::Command::new(&py);
    cmd.arg(&script).arg(s.url()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("python timed out").expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python client ok"), "{stdout}");
    s.stop().await;
}
