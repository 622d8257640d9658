//! `cargo bench -p minion-apiserver --bench store`: durable creates/s through the
//! HTTP API (SQLite, group commit), a list of 10k pods, and watch delivery latency
//! with 100 watchers. The peer is the same SQLite file written the plain way, one
//! fsync'd transaction per write (what the store did before group commit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CREATES: usize = 10_000;
const CLIENTS: usize = 64;
const WATCHERS: usize = 100;
const WATCH_EVENTS: usize = 200;
const PEER_WRITES: usize = 500;

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (r, w) = s.into_split();
        Conn { rd: BufReader::new(r), wr: w }
    }

    async fn send(&mut self, method: &str, path: &str, body: &str) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.wr.write_all(req.as_bytes()).await.expect("write");
    }

    /// Reads the status line and headers; returns (status, content-length or None when chunked).
    async fn head(&mut self) -> (u16, Option<usize>) {
        let mut line = String::new();
        self.rd.read_line(&mut line).await.expect("status line");
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut len = None;
        loop {
            line.clear();
            self.rd.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().ok();
            }
        }
        (status, len)
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
        self.send(method, path, body).await;
        let (status, len) = self.head().await;
        let mut out = Vec::new();
        match len {
            Some(n) => {
                out.resize(n, 0);
                self.rd.read_exact(&mut out).await.expect("body");
            }
            None => loop {
                let size = self.chunk_size().await;
                if size == 0 {
                    let mut crlf = String::new();
                    self.rd.read_line(&mut crlf).await.expect("end");
                    break;
                }
                let start = out.len();
                out.resize(start + size, 0);
                self.rd.read_exact(&mut out[start..]).await.expect("chunk");
                let mut crlf = [0u8; 2];
                self.rd.read_exact(&mut crlf).await.expect("crlf");
            },
        }
        (status, out)
    }

    async fn chunk_size(&mut self) -> usize {
        let mut line = String::new();
        self.rd.read_line(&mut line).await.expect("chunk size");
        usize::from_str_radix(line.trim(), 16).unwrap_or(0)
    }
}

fn pod(name: &str, sent_ns: u128) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}},"annotations":{{"sent":"{sent_ns}"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox:1.36","command":["sleep","3600"]}}]}}}}"#
    )
}

fn epoch_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn start_server(dir: &std::path::Path) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = minion_apiserver::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        data_dir: dir.to_path_buf(),
        advertise_address: None,
        security: minion_apiserver::Security::insecure(),
        storage: Default::default(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(minion_apiserver::run_with_listener(listener, config, async move {
        let _ = rx.await;
    }));
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            let mut c = Conn::open(port).await;
            if c.request("GET", "/healthz", "").await.0 == 200 {
                return (port, tx);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start");
}

async fn creates(port: u16, ns: &str, total: usize) -> f64 {
    let started = Instant::now();
    let per = total / CLIENTS;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let ns = ns.to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await;
            let path = format!("/api/v1/namespaces/{ns}/pods");
            for i in 0..per {
                let (status, body) = c.request("POST", &path, &pod(&format!("p-{client}-{i}"), 0)).await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    (per * CLIENTS) as f64 / started.elapsed().as_secs_f64()
}

/// The peer: one fsync'd transaction per write on a WAL SQLite file.
fn peer_creates(dir: &std::path::Path) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("peer.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("sync");
    conn.execute_batch("CREATE TABLE objects (key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL)")
        .expect("schema");
    let started = Instant::now();
    for i in 0..PEER_WRITES {
        let body = pod(&format!("p-{i}"), 0);
        conn.execute(
            "INSERT INTO objects (key, value, rev) VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("/registry/pods/x/p-{i}"), body, i as i64],
        )
        .expect("insert");
    }
    PEER_WRITES as f64 / started.elapsed().as_secs_f64()
}

async fn list_times(port: u16, path: &str) -> (f64, usize) {
    let mut c = Conn::open(port).await;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = c.request("GET", path, "").await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200);
        size = body.len();
    }
    times.sort_by(f64::total_cmp);
    (times[2], size)
}

/// (p50, p99 from POST sent; p50, p99 after the first watcher got it; ack p50), ms.
async fn watch_latency(port: u16) -> (f64, f64, f64, f64, f64) {
    let mut c = Conn::open(port).await;
    let (s, _) = c.request("POST", "/api/v1/namespaces", r#"{"metadata":{"name":"bench-watch"}}"#).await;
    assert_eq!(s, 201);
    let (_, body) = c.request("GET", "/api/v1/namespaces/bench-watch/pods", "").await;
    let list: serde_json::Value = serde_json::from_slice(&body).expect("list");
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    for _ in 0..WATCHERS {
        let (lat, rv, ready) = (lat.clone(), rv.clone(), ready_tx.clone());
        watchers.push(tokio::spawn(async move {
            let mut w = Conn::open(port).await;
            w.send("GET", &format!("/api/v1/namespaces/bench-watch/pods?watch=true&resourceVersion={rv}"), "").await;
            let (status, _) = w.head().await;
            assert_eq!(status, 200);
            let _ = ready.send(()).await;
            let mut seen = 0;
            let mut buf = Vec::new();
            while seen < WATCH_EVENTS {
                let size = w.chunk_size().await;
                let start = buf.len();
                buf.resize(start + size, 0);
                w.rd.read_exact(&mut buf[start..]).await.expect("chunk");
                let mut crlf = [0u8; 2];
                w.rd.read_exact(&mut crlf).await.expect("crlf");
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let now = epoch_ns();
                    let ev: serde_json::Value = serde_json::from_slice(&line).expect("event");
                    // Only the creation counts: a later MODIFIED (the scheduler marking the
                    // pod Unschedulable) carries the same `sent` stamp but is not the POST's event.
                    if ev["type"] != "ADDED" {
                        continue;
                    }
                    let sent: u128 =
                        ev["object"]["metadata"]["annotations"]["sent"].as_str().and_then(|s| s.parse().ok()).unwrap_or(now);
                    lat.lock().expect("lat").push((sent, now));
                    seen += 1;
                }
            }
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await.expect("watcher ready");
    }
    let mut acks = Vec::new();
    for i in 0..WATCH_EVENTS {
        let t = Instant::now();
        let (s, _) = c.request("POST", "/api/v1/namespaces/bench-watch/pods", &pod(&format!("w-{i}"), epoch_ns())).await;
        acks.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(s, 201);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(30), w).await.expect("watchers done").expect("watcher");
    }
    let raw: Vec<(u128, u128)> = lat.lock().expect("lat").clone();
    let mut first: std::collections::HashMap<u128, u128> = std::collections::HashMap::new();
    for (sent, at) in &raw {
        let e = first.entry(*sent).or_insert(*at);
        *e = (*e).min(*at);
    }
    let mut v: Vec<f64> = raw.iter().map(|(s, a)| a.saturating_sub(*s) as f64 / 1e6).collect();
    let mut spread: Vec<f64> = raw.iter().map(|(s, a)| a.saturating_sub(first[s]) as f64 / 1e6).collect();
    v.sort_by(f64::total_cmp);
    spread.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    (pct(&v, 0.5), pct(&v, 0.99), pct(&spread, 0.5), pct(&spread, 0.99), pct(&acks, 0.5))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load before: {}", load.trim());
    let peer = peer_creates(dir.path());
    println!("peer  durable writes/s (one fsync per write, sequential): {peer:.0}");
    rt.block_on(async {
        let (port, stop) = start_server(&dir.path().join("ours")).await;
        let mut c = Conn::open(port).await;
        assert_eq!(c.request("POST", "/api/v1/namespaces", r#"{"metadata":{"name":"bench"}}"#).await.0, 201);
        let rate = creates(port, "bench", CREATES).await;
        println!("ours  durable creates/s through HTTP ({CLIENTS} clients, {CREATES} pods): {rate:.0}  (ratio ours/peer {:.1}x)", rate / peer);
        let (ms, size) = list_times(port, "/api/v1/namespaces/bench/pods").await;
        println!("ours  list 10k pods JSON: median {ms:.1} ms ({:.1} MiB)", size as f64 / 1048576.0);
        let (ms, size) = list_times(port, "/api/v1/namespaces/bench/pods?limit=500").await;
        println!("ours  list 500 of 10k pods (limit=500): median {ms:.1} ms ({} KiB)", size / 1024);
        let (p50, p99, f50, f99, ack) = watch_latency(port).await;
        println!("ours  watch delivery latency, {WATCHERS} watchers x {WATCH_EVENTS} events, from POST sent (includes the fsync'd commit): p50 {p50:.2} ms, p99 {p99:.2} ms");
        println!("ours  watch fan-out after the first watcher received it: p50 {f50:.2} ms, p99 {f99:.2} ms; create ack p50 {ack:.2} ms");
        let _ = stop.send(());
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
}
