//! `cargo bench -p minion-apiserver --bench etcd`: durable creates/s through the HTTP
//! API with the SQLite store and with the etcd store (Debian's etcd on loopback, which
//! fsyncs before it acknowledges), side by side in one run: the median of a few rounds.

#[path = "../tests/common/etcd.rs"]
mod etcd_common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ROUNDS: usize = 3;
const CREATES: usize = 2_048;
const CLIENTS: usize = 32;

/// Used by the shared helper's health check.
async fn http(port: u16, method: &str, path: &str, _body: Option<(&str, &str)>) -> std::io::Result<(u16, String)> {
    let mut c = Conn::open(port).await;
    let (status, body) = c.request(method, path, "").await;
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

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

    async fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.wr.write_all(req.as_bytes()).await.expect("write");
        let mut line = String::new();
        self.rd.read_line(&mut line).await.expect("status line");
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            self.rd.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut out = vec![0; len];
        self.rd.read_exact(&mut out).await.expect("body");
        (status, out)
    }
}

fn pod(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox:1.36","command":["sleep","3600"]}}]}}}}"#
    )
}

async fn creates(port: u16, ns: &str) -> f64 {
    let mut c = Conn::open(port).await;
    let (s, body) = c.request("POST", "/api/v1/namespaces", &format!(r#"{{"metadata":{{"name":"{ns}"}}}}"#)).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let started = Instant::now();
    let per = CREATES / CLIENTS;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let path = format!("/api/v1/namespaces/{ns}/pods");
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await;
            for i in 0..per {
                let (status, body) = c.request("POST", &path, &pod(&format!("p-{client}-{i}"))).await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    (per * CLIENTS) as f64 / started.elapsed().as_secs_f64()
}

async fn median_rate(port: u16, tag: &str) -> f64 {
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        rates.push(creates(port, &format!("{tag}-{round}")).await);
    }
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !etcd_common::have_etcd() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let sqlite = etcd_common::ApiServer::start(&tmp.path().join("sqlite"), Default::default()).await;
    let sqlite_rate = median_rate(sqlite.port, "sqlite").await;
    sqlite.stop().await;

    let etcd = etcd_common::Etcd::start().await;
    let on_etcd = etcd_common::ApiServer::start(&tmp.path().join("etcd"), etcd.storage("/registry")).await;
    let etcd_rate = median_rate(on_etcd.port, "etcd").await;
    on_etcd.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    println!("durable pod creates/s over HTTP, {CLIENTS} clients, {CREATES} per round, median of {ROUNDS}:");
    println!("  sqlite (group commit)  {sqlite_rate:>8.0}/s");
    println!("  etcd 3.4 (loopback)    {etcd_rate:>8.0}/s");
    println!("  etcd / sqlite          {:>8.2}", etcd_rate / sqlite_rate);
}
