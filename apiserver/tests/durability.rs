//! Crash durability (kill -9 during a stream of creates, then reopen) and optimistic
//! concurrency (racing writers get 409 Conflict, no update is lost).

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http, Server};
use serde_json::{json, Value};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_minion-apiserver"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--insecure")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn minion-apiserver");
    Child(child)
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        if let Ok((200, _)) = http(port, "GET", "/healthz", None).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("apiserver on {port} did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = spawn(port, dir.path());
    wait_healthy(port).await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..16 {
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let name = format!("p-{w}-{i}");
                let body = json!({"metadata":{"name": name},"spec":{"containers":[{"name":"c","image":"busybox"}]}});
                match http(port, "POST", "/api/v1/namespaces/default/pods", Some(("application/json", &body.to_string()))).await {
                    Ok((201, _)) => acked.lock().expect("acked").push(name),
                    _ => return,
                }
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().expect("acked").len() < 300 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.0.kill().expect("kill -9");
    let _ = child.0.wait();
    let acked: Vec<String> = acked.lock().expect("acked").clone();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(20), w).await;
    }
    assert!(acked.len() >= 300, "only {} creates acknowledged", acked.len());

    let db = rusqlite::Connection::open(dir.path().join("minion.db")).expect("open after kill");
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
    drop(db);

    let port = free_port();
    let _restarted = spawn(port, dir.path());
    wait_healthy(port).await;
    let (status, body) = http(port, "GET", "/api/v1/namespaces/default/pods", None).await.expect("list");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).expect("json");
    let names: std::collections::HashSet<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !names.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged creates lost: {:?}", missing.len(), acked.len(), &missing[..missing.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_get_409_and_lose_no_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let lease = json!({"metadata":{"name":"race","annotations":{"count":"0"}},"spec":{}});
    let (s, _) = server.http("POST", path, Some(("application/json", &lease.to_string()))).await.expect("create");
    assert_eq!(s, 201);
    let port = server.port;
    const WRITERS: usize = 8;
    const EACH: usize = 10;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        tasks.push(tokio::spawn(async move {
            let item = format!("{path}/race");
            let mut conflicts = 0;
            let mut done = 0;
            for _ in 0..EACH * 50 {
                if done == EACH {
                    break;
                }
                let (_, body) = http(port, "GET", &item, None).await.expect("get");
                let mut obj: Value = serde_json::from_str(&body).expect("json");
                let n: u64 = obj["metadata"]["annotations"]["count"].as_str().and_then(|s| s.parse().ok()).expect("count");
                obj["metadata"]["annotations"]["count"] = json!((n + 1).to_string());
                let (s, _) = http(port, "PUT", &item, Some(("application/json", &obj.to_string()))).await.expect("put");
                match s {
                    200 => done += 1,
                    409 => conflicts += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            assert_eq!(done, EACH);
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.expect("writer");
    }
    let (_, body) = server.http("GET", &format!("{path}/race"), None).await.expect("get");
    let obj: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(obj["metadata"]["annotations"]["count"], json!((WRITERS * EACH).to_string()));
    assert!(conflicts > 0, "racing writers never conflicted");
    server.stop().await;
}
