//! Shared test helpers: an in-process server on 127.0.0.1:0, the real kubectl, and
//! a tiny HTTP/1.1 client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running in-process API server.
pub struct Server {
    pub port: u16,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), minion_apiserver::Error>>>,
}

impl Server {
    /// Starts a server on 127.0.0.1:0 over `data_dir`.
    pub async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, minion_apiserver::Security::insecure()).await
    }

    /// Like [`Server::start`], with the given security settings (kept on loopback).
    #[allow(dead_code)]
    pub async fn start_with(data_dir: &Path, security: minion_apiserver::Security) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let config = minion_apiserver::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: data_dir.to_path_buf(),
            advertise_address: None,
            security,
            storage: Default::default(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(minion_apiserver::run_with_listener(listener, config, async move {
            let _ = rx.await;
        }));
        let server = Server { port, data_dir: data_dir.to_path_buf(), stop: Some(tx), handle: Some(handle) };
        for _ in 0..100 {
            if let Ok((200, _)) = server.http("GET", "/healthz", None).await {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server on port {port} did not become healthy");
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let res = tokio::time::timeout(Duration::from_secs(10), h).await.expect("server did not stop in time");
            res.expect("join").expect("server error");
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP request; returns (status, body).
    pub async fn http(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> std::io::Result<(u16, String)> {
        http(self.port, method, path, body).await
    }
}

/// A minimal HTTP/1.1 request with `Connection: close`.
pub async fn http(port: u16, method: &str, path: &str, body: Option<(&str, &str)>) -> std::io::Result<(u16, String)> {
    http_full(port, method, path, body).await.map(|(status, _, body)| (status, body))
}

/// Like [`http`], also returning the response head (status line and headers).
pub async fn http_full(port: u16, method: &str, path: &str, body: Option<(&str, &str)>) -> std::io::Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (ct, data) = body.unwrap_or(("application/json", ""));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{data}",
        data.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    Ok((status, head.to_string(), body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// True when the real kubectl is available; with `CI` set, its absence fails.
pub fn have_kubectl() -> bool {
    if Path::new("/usr/bin/kubectl").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("/usr/bin/kubectl is required in CI");
    }
    eprintln!("skipping: /usr/bin/kubectl not installed");
    false
}

/// Output of one kubectl run.
#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl --server URL --cache-dir DIR ARGS...` (60s limit).
/// Starts `kubectl ARGS` (a `get -w` with a `--request-timeout`) in the background;
/// the task yields its stdout once kubectl exits.
#[allow(dead_code)]
pub fn kubectl_background(server: &Server, cache: &Path, args: &[&str]) -> tokio::task::JoinHandle<String> {
    let mut cmd = tokio::process::Command::new("/usr/bin/kubectl");
    cmd.arg("--server").arg(server.url()).arg("--cache-dir").arg(cache).args(args);
    cmd.env("KUBECONFIG", cache.join("no-kubeconfig")).kill_on_drop(true);
    tokio::spawn(async move {
        let out = cmd.output().await.expect("run kubectl in the background");
        String::from_utf8_lossy(&out.stdout).to_string()
    })
}

pub async fn kubectl(server: &Server, cache: &Path, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new("/usr/bin/kubectl");
    cmd.arg("--server").arg(server.url()).arg("--cache-dir").arg(cache).args(args);
    cmd.env("KUBECONFIG", cache.join("no-kubeconfig"));
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kubectl timed out")
        .expect("run kubectl");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Like [`kubectl`] but panics on failure and returns stdout.
pub async fn kubectl_ok(server: &Server, cache: &Path, args: &[&str]) -> String {
    let out = kubectl(server, cache, args).await;
    assert!(out.ok, "kubectl {args:?} failed: {}\n{}", out.stderr, out.stdout);
    out.stdout
}

/// Polls `f` until it returns Some (bounded: 100 tries, 100ms apart).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
