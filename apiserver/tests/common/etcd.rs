//! Test helpers for the etcd backend: a real etcd (Debian's /usr/bin/etcd) on loopback
//! with free ports and a temp data dir, killed by pid and removed on drop, and
//! in-process API servers on it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ETCD: &str = "/usr/bin/etcd";

/// A running etcd; killed (by pid) and its data removed on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub client_port: u16,
    dir: tempfile::TempDir,
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// True when etcd is installed; with `CI` set its absence fails the test.
pub fn have_etcd() -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{ETCD} is required in CI (Debian package etcd-server)");
    }
    eprintln!("skipping: {ETCD} not installed");
    false
}

impl Etcd {
    /// Starts etcd on 127.0.0.1 and waits until it answers /health (bounded). The
    /// ports are picked free but released before etcd binds them, so a port taken in
    /// between (a parallel test) gets up to two more tries on fresh ports.
    pub async fn start() -> Etcd {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut etcd = Etcd::spawn();
            if etcd.wait_healthy().await {
                return etcd;
            }
            let log = std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default();
            if attempt < 3 && log.contains("address already in use") {
                eprintln!("etcd port {} was taken, retrying on fresh ports", etcd.client_port);
                continue;
            }
            panic!("etcd on port {} did not become healthy:\n{log}", etcd.client_port);
        }
    }

    fn spawn() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
        let child = Command::new(ETCD)
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        Etcd { child, endpoint: client, client_port, dir }
    }

    async fn wait_healthy(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(body) = get(self.client_port, "/health").await {
                if body.contains("\"health\":\"true\"") {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The storage config of an API server on this etcd under `prefix`.
    pub fn storage(&self, prefix: &str) -> minion_apiserver::StorageConfig {
        minion_apiserver::StorageConfig::Etcd { endpoints: vec![self.endpoint.clone()], prefix: prefix.into() }
    }

    /// Stops etcd now (kill by pid).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await.map_err(|_| std::io::Error::other("timeout"))??;
    Ok(String::from_utf8_lossy(&out).to_string())
}

/// An in-process API server on etcd.
pub struct ApiServer {
    pub port: u16,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), minion_apiserver::Error>>>,
}

impl ApiServer {
    /// Starts a server on 127.0.0.1:0 with `storage`, state files under `data_dir`.
    pub async fn start(data_dir: &Path, storage: minion_apiserver::StorageConfig) -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let config = minion_apiserver::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: data_dir.to_path_buf(),
            advertise_address: None,
            security: minion_apiserver::Security::insecure(),
            storage,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(minion_apiserver::run_with_listener(listener, config, async move {
            let _ = rx.await;
        }));
        let server = ApiServer { port, data_dir: data_dir.to_path_buf(), stop: Some(tx), handle: Some(handle) };
        for _ in 0..200 {
            // `http` is the including crate's (tests/common or the bench).
            if let Ok((200, _)) = super::http(port, "GET", "/healthz", None).await {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server on port {port} did not become healthy");
    }

    /// Stops the server and waits for it (bounded).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let res = tokio::time::timeout(Duration::from_secs(10), h).await.expect("server did not stop in time");
            res.expect("join").expect("server error");
        }
    }

    /// One HTTP request; (status, body).
    pub async fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        super::http(self.port, method, path, body.map(|b| ("application/json", b))).await.expect("http")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
