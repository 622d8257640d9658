//! `pods/log`: kube-apiserver's validation errors, and the proxy to the node's kubelet
//! (a fake one on 127.0.0.1 serving known bodies), follow streaming chunk by chunk.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A fake kubelet: records request paths; `follow=true` sends `first\n`, waits for
/// `release`, then `second\n`; container `b` answers 400; anything else a fixed body.
struct FakeKubelet {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
}

async fn fake_kubelet() -> FakeKubelet {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Notify::new());
    let (p, r) = (paths.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(kubelet_conn(conn, p.clone(), r.clone()));
        }
    });
    FakeKubelet { port, paths, release }
}

async fn kubelet_conn(conn: TcpStream, paths: Arc<Mutex<Vec<String>>>, release: Arc<Notify>) {
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        if conn.read_line(&mut h).await.unwrap() == 0 || h == "\r\n" {
            break;
        }
    }
    paths.lock().unwrap().push(path.clone());
    let conn = conn.get_mut();
    if path.contains("follow=true") {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
        conn.write_all(format!("{head}6\r\nfirst\n\r\n").as_bytes()).await.unwrap();
        conn.flush().await.unwrap();
        release.notified().await;
        let _ = conn.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").await;
    } else if path.starts_with("/containerLogs/default/two/b") {
        let body = "container \"b\" in pod \"two\" is waiting to start: ContainerCreating\n";
        let _ = conn.write_all(format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
    } else {
        let body = "hello from kubelet\n";
        let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
    }
}

async fn create(server: &Server, path: &str, obj: Value) {
    let (code, body) = server.http("POST", path, Some(("application/json", &obj.to_string()))).await.unwrap();
    assert_eq!(code, 201, "POST {path}: {body}");
}

async fn add_node(server: &Server, name: &str, port: u16) {
    create(server, "/api/v1/nodes", json!({"apiVersion":"v1","kind":"Node","metadata":{"name":name}})).await;
    let status = json!({"status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"},{"type":"Hostname","address":name}],
        "daemonEndpoints":{"kubeletEndpoint":{"Port":port}}}});
    let path = format!("/api/v1/nodes/{name}/status");
    let (code, body) = server.http("PATCH", &path, Some(("application/merge-patch+json", &status.to_string()))).await.unwrap();
    assert_eq!(code, 200, "{body}");
}

async fn add_pod(server: &Server, name: &str, containers: &[&str], node: Option<&str>) {
    let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect();
    let mut spec = json!({"containers": containers, "nodeSelector": {"never": "scheduled"}});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    create(server, "/api/v1/namespaces/default/pods", json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name},"spec":spec})).await;
}

async fn status_of(server: &Server, path: &str) -> (u16, Value) {
    let (code, body) = server.http("GET", path, None).await.unwrap();
    (code, serde_json::from_str(&body).unwrap_or_else(|_| panic!("GET {path} answered {code} non-JSON: {body}")))
}

/// Reads `stream` until `want` shows up in what came so far (5 s bound).
async fn read_until(stream: &mut TcpStream, seen: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await.expect("timed out").unwrap();
        assert!(n > 0, "connection closed before {want:?}; got {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn pod_log_validation_and_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let kubelet = fake_kubelet().await;
    add_node(&server, "n1", kubelet.port).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    add_node(&server, "gone", dead_port).await;
    add_pod(&server, "one", &["c"], Some("n1")).await;
    add_pod(&server, "two", &["a", "b"], Some("n1")).await;
    add_pod(&server, "pending", &["c"], None).await;
    add_pod(&server, "orphan", &["c"], Some("gone")).await;
    let base = "/api/v1/namespaces/default/pods";

    let (code, s) = status_of(&server, &format!("{base}/nope/log")).await;
    assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")), "{s}");
    assert_eq!(s["message"], "pods \"nope\" not found");

    let (code, s) = status_of(&server, &format!("{base}/two/log")).await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")), "{s}");
    assert_eq!(s["message"], "a container name must be specified for pod two, choose one of: [a b]");

    let (code, s) = status_of(&server, &format!("{base}/two/log?container=zz")).await;
    assert_eq!((code, s["message"].as_str()), (400, Some("container zz is not valid for pod two")), "{s}");

    let (code, s) = status_of(&server, &format!("{base}/pending/log")).await;
    assert_eq!((code, s["message"].as_str()), (400, Some("pod pending does not have a host assigned")), "{s}");

    let (code, s) = status_of(&server, &format!("{base}/orphan/log")).await;
    assert_eq!(code, 503, "{s}");
    let msg = s["message"].as_str().unwrap();
    assert!(msg.contains(&format!("127.0.0.1:{dead_port}")), "{msg}");

    // The kubelet's own error comes back as a Status carrying its text.
    let (code, s) = status_of(&server, &format!("{base}/two/log?container=b")).await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")), "{s}");
    assert_eq!(s["message"], "container \"b\" in pod \"two\" is waiting to start: ContainerCreating");

    // Proxied: the body, and the options passed on (the container defaulted).
    let (code, head, body) = common::http_full(
        server.port,
        "GET",
        &format!("{base}/one/log?tailLines=2&timestamps=true&sinceTime=2026-01-02T03:04:05Z&limitBytes=100"),
        None,
    )
    .await
    .unwrap();
    assert_eq!((code, body.as_str()), (200, "hello from kubelet\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    let (code, body) = server.http("GET", &format!("{base}/two/log?container=a"), None).await.unwrap();
    assert_eq!((code, body.as_str()), (200, "hello from kubelet\n"));
    let paths = kubelet.paths.lock().unwrap().clone();
    assert!(
        paths.contains(&"/containerLogs/default/one/c?tailLines=2&timestamps=true&sinceTime=2026-01-02T03%3A04%3A05Z&limitBytes=100".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/containerLogs/default/two/a".to_string()), "{paths:?}");

    // follow: the first chunk arrives while the kubelet still holds the second.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let req = format!("GET {base}/one/log?follow=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "first\n").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(!seen.contains("second"), "{seen}");
    kubelet.release.notify_one();
    read_until(&mut stream, &mut seen, "second\n").await;
    server.stop().await;
}

/// A kubelet that answers only the bearer of `token` (401 otherwise), like the agent's.
async fn guarded_kubelet(token: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if conn.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    authorized |= h.trim_end().to_ascii_lowercase() == format!("authorization: bearer {token}");
                }
                let (status, body) = if authorized { ("200 OK", "secret logs\n") } else { ("401 Unauthorized", "Unauthorized\n") };
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = conn.get_mut().write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn kubelet_client_token_is_presented_to_the_kubelet() {
    let port = guarded_kubelet("kubelet-tok").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("kubelet-client.token");
    std::fs::write(&token_file, "kubelet-tok\n").unwrap();
    let security = minion_apiserver::Security { kubelet_client_token_file: Some(token_file), ..minion_apiserver::Security::insecure() };
    for d in ["with", "without"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let with = Server::start_with(&dir.path().join("with"), security).await;
    add_node(&with, "n1", port).await;
    add_pod(&with, "one", &["c"], Some("n1")).await;
    let (code, body) = with.http("GET", "/api/v1/namespaces/default/pods/one/log", None).await.unwrap();
    assert_eq!((code, body.as_str()), (200, "secret logs\n"));
    with.stop().await;

    let without = Server::start(&dir.path().join("without")).await;
    add_node(&without, "n1", port).await;
    add_pod(&without, "one", &["c"], Some("n1")).await;
    let (code, s) = status_of(&without, "/api/v1/namespaces/default/pods/one/log").await;
    assert_eq!((code, s["message"].as_str()), (401, Some("Unauthorized")), "{s}");
    without.stop().await;
}

