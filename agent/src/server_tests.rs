use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::cri::{ContainerState, CriError, ImageInfo};

const TS: &str = "2026-01-02T03:04:05.000000001Z";

struct FakePods(Pod);

#[async_trait]
impl PodSource for FakePods {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Pod>, String> {
        let p = &self.0;
        Ok((p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(name)).then(|| p.clone()))
    }
}

/// Every container runs until `stopped` is set.
#[derive(Default)]
struct FakeRuntime {
    stopped: AtomicBool,
}

fn unsupported(verb: &str) -> CriError {
    CriError::Failed { verb: verb.into(), target: String::new(), message: "unsupported".into() }
}

#[async_trait]
impl RuntimeService for FakeRuntime {
    async fn create_container(&self, _: &str, _: &Path) -> Result<(), CriError> {
        Err(unsupported("create"))
    }
    async fn start_container(&self, _: &str) -> Result<(), CriError> {
        Err(unsupported("start"))
    }
    async fn stop_container(&self, _: &str, _: &str) -> Result<(), CriError> {
        Err(unsupported("kill"))
    }
    async fn remove_container(&self, _: &str) -> Result<(), CriError> {
        Err(unsupported("delete"))
    }
    async fn container_status(&self, id: &str) -> Result<ContainerState, CriError> {
        let status = if self.stopped.load(Ordering::SeqCst) { RuntimeStatus::Stopped } else { RuntimeStatus::Running };
        Ok(ContainerState {
            id: id.into(),
            status,
            pid: 1,
            bundle: None,
            annotations: None,
            exit_code: None,
            reason: None,
            started_at: None,
            finished_at: None,
        })
    }
    async fn list_containers(&self) -> Result<Vec<String>, CriError> {
        Ok(Vec::new())
    }
    async fn image_status(&self, _: &str) -> Result<ImageInfo, CriError> {
        Err(unsupported("image inspect"))
    }
    async fn create_netns(&self, _: &Path) -> Result<(), CriError> {
        Err(unsupported("netns add"))
    }
    async fn remove_netns(&self, _: &Path) -> Result<(), CriError> {
        Err(unsupported("netns del"))
    }
}

fn pod() -> Pod {
    let c = |n: &str| Container { name: n.into(), ..Default::default() };
    let mut p = Pod {
        spec: Some(PodSpec { node_name: Some("node1".into()), containers: vec![c("c"), c("d"), c("w")], ..Default::default() }),
        ..Default::default()
    };
    p.metadata.name = Some("p".into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("u1".into());
    p
}

struct Harness {
    port: u16,
    runtime: Arc<FakeRuntime>,
    live: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    start_with_token(None).await
}

async fn start_with_token(token: Option<&str>) -> Harness {
    start_with(token, MAX_FOLLOWS).await
}

async fn start_with(token: Option<&str>, follows: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new("node1", dir.path().to_path_buf());
    config.kubelet_client_token = token.map(str::to_string);
    let logs = |c: &str| {
        let d = logs::container_log_dir(dir.path(), "u1", c);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let c = logs("c");
    std::fs::write(c.join("0.log"), format!("{TS} stdout F first run\n")).unwrap();
    let live = c.join("1.log");
    std::fs::write(&live, format!("{TS} stdout F a\n{TS} stderr F b\n")).unwrap();
    std::fs::write(logs("d").join("0.log"), format!("{TS} stdout F only\n")).unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let follows = Arc::new(tokio::sync::Semaphore::new(follows));
    let server = KubeletServer { config: Arc::new(config), pods: Arc::new(FakePods(pod())), runtime: runtime.clone(), follows };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener, server, std::future::pending()));
    Harness { port, runtime, live, _dir: dir }
}

/// GET `path`; returns (status, body) once the server closes the response (10 s bound).
async fn get(port: u16, path: &str) -> (u16, String) {
    get_with(port, path, "").await
}

/// GET `path` with extra header lines (each ending in CRLF).
async fn get_with(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.expect("response did not end").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2.min(rest.len() - n)..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_logs_and_kubelet_errors() {
    let h = start().await;
    assert_eq!(get(h.port, "/healthz").await, (200, "ok".into()));
    assert_eq!(get(h.port, "/containerLogs/default/p/c").await, (200, "a\nb\n".into()));
    assert_eq!(get(h.port, "/containerLogs/default/p/c?previous=true").await, (200, "first run\n".into()));
    assert_eq!(get(h.port, "/containerLogs/default/p/c?tailLines=1&timestamps=true").await, (200, format!("{TS} b\n")));
    let (code, body) = get(h.port, "/containerLogs/default/nope/c").await;
    assert_eq!((code, body.trim()), (404, "pod \"default/nope\" does not exist"));
    let (code, body) = get(h.port, "/containerLogs/default/p/zz").await;
    assert_eq!((code, body.trim()), (404, "container \"zz\" not found in pod \"default/p\""));
    let (code, body) = get(h.port, "/containerLogs/default/p/d?previous=true").await;
    assert_eq!((code, body.trim()), (400, "previous terminated container \"d\" in pod \"p\" not found"));
    let (code, body) = get(h.port, "/containerLogs/default/p/w").await;
    assert_eq!((code, body.trim()), (400, "container \"w\" in pod \"p\" is waiting to start: ContainerCreating"));
    let (code, _) = get(h.port, "/containerLogs/default/p/c?tailLines=-1").await;
    assert_eq!(code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_until_the_container_stops() {
    let h = start().await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", h.port)).await.unwrap();
    s.write_all(b"GET /containerLogs/default/p/c?follow=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until = async |want: &str, seen: &mut String| {
        while !seen.contains(want) {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("no data").unwrap();
            assert!(n > 0, "closed before {want:?}: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until("b\n", &mut seen).await;
    let mut f = std::fs::OpenOptions::new().append(true).open(&h.live).unwrap();
    f.write_all(format!("{TS} stdout F later\n").as_bytes()).unwrap();
    read_until("later\n", &mut seen).await;
    h.runtime.stopped.store(true, Ordering::SeqCst);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.expect("follow did not end").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_token_only_its_bearer_reads_logs() {
    let h = start_with_token(Some("s3cret")).await;
    assert_eq!(get(h.port, "/healthz").await, (200, "ok".into()), "health stays open");
    assert_eq!(get(h.port, "/containerLogs/default/p/c").await, (401, "Unauthorized\n".into()));
    let wrong = get_with(h.port, "/containerLogs/default/p/c", "Authorization: Bearer s3creT\r\n").await;
    assert_eq!(wrong.0, 401);
    let basic = get_with(h.port, "/containerLogs/default/p/c", "Authorization: Basic s3cret\r\n").await;
    assert_eq!(basic.0, 401);
    let right = get_with(h.port, "/containerLogs/default/p/c", "Authorization: Bearer s3cret\r\n").await;
    assert_eq!(right, (200, "a\nb\n".into()));
}

#[test]
fn bearer_tokens_must_match_exactly() {
    let h = |v: &'static str| header::HeaderValue::from_static(v);
    assert!(authorized(None, None));
    assert!(!authorized(Some("abc"), None));
    assert!(authorized(Some("abc"), Some(&h("Bearer abc"))));
    assert!(!authorized(Some("abc"), Some(&h("Bearer abcd"))));
    assert!(!authorized(Some("abc"), Some(&h("Bearer ab"))));
    assert!(!authorized(Some("abc"), Some(&h("bearer abc"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_past_the_cap_get_429_but_plain_reads_still_work() {
    let h = start_with(None, 0).await;
    let (code, body) = get(h.port, "/containerLogs/default/p/c?follow=true").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(get(h.port, "/containerLogs/default/p/c").await, (200, "a\nb\n".into()));
}

