//! `cargo bench -p minion-apiserver --bench store`: durable creates/s through the
//! HTTP API (SQLite, group commit), a list of 10k pods, and watch delivery latency
//! with 100 watchers. The peer is the same SQLite file written the plain way, one
//! fsync'd transaction per write (what the store did before group commit).
//!
//! Watch latency is reported three ways, so a reader sees what bounds it:
//! - POST sent -> event received by each watcher (the issue's number: it includes the
//!   durable commit);
//! - commit -> event received (kube-apiserver's watch-latency SLI: from the moment the
//!   write is durable in the store), from the committer's `trace` events;
//! - the disk's own fsync latency, measured in the same run, and the committer's
//!   per-batch split into queueing, SQL, COMMIT (WAL write + fsync) and publish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

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

/// One committed batch or checkpoint, as the store's `trace` events report it.
#[derive(Debug, Default, Clone)]
struct Record {
    message: String,
    mode: String,
    fields: std::collections::HashMap<&'static str, u64>,
}

impl Record {
    fn get(&self, name: &str) -> u64 {
        self.fields.get(name).copied().unwrap_or(0)
    }
}

impl tracing::field::Visit for Record {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.fields.insert(field.name(), value);
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.fields.insert(field.name(), value.max(0) as u64);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "mode" {
            self.mode = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// Collects the SQLite store's trace events.
struct Collect(Arc<std::sync::Mutex<Vec<Record>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut r = Record::default();
        event.record(&mut r);
        self.0.lock().expect("records").push(r);
    }
}

/// Raw fsync latency of this disk: 4 KiB appended then fsync'd, `n` times, `gap` apart.
fn fsync_times(dir: &std::path::Path, n: usize, gap: Duration) -> Vec<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let block = [7u8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&block).expect("probe write");
        let t = Instant::now();
        f.sync_all().expect("fsync");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(gap);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    times
}

/// "p50 a, p99 b, max c ms" of sorted values.
fn dist(sorted: &[f64]) -> String {
    format!("p50 {:.2}, p99 {:.2}, max {:.2} ms", pct(sorted, 0.5), pct(sorted, 0.99), sorted.last().copied().unwrap_or(f64::NAN))
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The text after `"<name>":"` up to the next quote.
fn field<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let pat = format!("\"{name}\":\"");
    let at = line.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let end = line[at..].iter().position(|b| *b == b'"')? + at;
    std::str::from_utf8(&line[at..end]).ok()
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

/// Waits until the store's revision stops moving (the controllers have worked through
/// the pods created so far: the scheduler marks each one Unschedulable, as there is no
/// node), so the watch phase measures a server at rest, not its backlog. Returns the
/// seconds waited; gives up after 120 s.
async fn settle(port: u16) -> f64 {
    let started = Instant::now();
    let mut c = Conn::open(port).await;
    let mut last = String::new();
    let mut still = 0;
    while still < 3 && started.elapsed() < Duration::from_secs(120) {
        let (_, body) = c.request("GET", "/api/v1/namespaces/bench/pods?limit=1", "").await;
        let rv = field(&body, "resourceVersion").unwrap_or("").to_string();
        still = if rv == last { still + 1 } else { 0 };
        last = rv;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    started.elapsed().as_secs_f64()
}

/// What the watch phase measured.
struct WatchRun {
    /// (rv, POST sent epoch ns, received epoch ns), one per watcher per event.
    seen: Vec<(u64, u128, u128)>,
    /// Create round trips, ms.
    acks: Vec<f64>,
}

async fn watch_latency(port: u16) -> WatchRun {
    let mut c = Conn::open(port).await;
    let (s, _) = c.request("POST", "/api/v1/namespaces", r#"{"metadata":{"name":"bench-watch"}}"#).await;
    assert_eq!(s, 201);
    let (_, body) = c.request("GET", "/api/v1/namespaces/bench-watch/pods", "").await;
    let list: serde_json::Value = serde_json::from_slice(&body).expect("list");
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    for _ in 0..WATCHERS {
        let (seen, rv, ready) = (seen.clone(), rv.clone(), ready_tx.clone());
        watchers.push(tokio::spawn(async move {
            let mut w = Conn::open(port).await;
            w.send("GET", &format!("/api/v1/namespaces/bench-watch/pods?watch=true&resourceVersion={rv}"), "").await;
            let (status, _) = w.head().await;
            assert_eq!(status, 200);
            let _ = ready.send(()).await;
            let mut count = 0;
            let mut buf = Vec::new();
            let mut mine = Vec::with_capacity(WATCH_EVENTS);
            while count < WATCH_EVENTS {
                let size = w.chunk_size().await;
                let start = buf.len();
                buf.resize(start + size, 0);
                w.rd.read_exact(&mut buf[start..]).await.expect("chunk");
                let mut crlf = [0u8; 2];
                w.rd.read_exact(&mut crlf).await.expect("crlf");
                let now = epoch_ns();
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    // Only the creation counts: a later MODIFIED (the scheduler marking the
                    // pod Unschedulable) carries the same `sent` stamp but is not the POST's
                    // event. The line is scanned, not parsed: the watchers share the 2 cores
                    // with the server, and parsing 100 copies would be the harness's cost.
                    if !line.starts_with(br#"{"type":"ADDED""#) {
                        continue;
                    }
                    let sent: u128 = field(&line, "sent").and_then(|s| s.parse().ok()).expect("sent stamp");
                    let rv: u64 = field(&line, "resourceVersion").and_then(|s| s.parse().ok()).expect("resourceVersion");
                    mine.push((rv, sent, now));
                    count += 1;
                }
            }
            seen.lock().expect("seen").extend(mine);
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
    let seen = seen.lock().expect("seen").clone();
    WatchRun { seen, acks: sorted(acks) }
}

/// Prints the watch figures, joining the watchers' receipts with the committer's records.
fn report_watch(run: &WatchRun, records: &[Record]) {
    let batches: Vec<&Record> = records.iter().filter(|r| r.message == "batch committed").collect();
    let mut committed = std::collections::HashMap::new();
    for b in &batches {
        for rev in b.get("first_rev")..=b.get("last_rev") {
            committed.insert(rev, b.get("committed_unix_ns") as u128);
        }
    }
    let post: Vec<f64> = run.seen.iter().map(|(_, sent, at)| at.saturating_sub(*sent) as f64 / 1e6).collect();
    let from_commit: Vec<f64> =
        run.seen.iter().filter_map(|(rv, _, at)| committed.get(rv).map(|c| at.saturating_sub(*c) as f64 / 1e6)).collect();
    let mut first: std::collections::HashMap<u64, u128> = std::collections::HashMap::new();
    for (rv, _, at) in &run.seen {
        let e = first.entry(*rv).or_insert(*at);
        *e = (*e).min(*at);
    }
    let spread: Vec<f64> = run.seen.iter().map(|(rv, _, at)| at.saturating_sub(first[rv]) as f64 / 1e6).collect();
    let n = run.seen.len();
    println!("ours  watch, {WATCHERS} watchers x {WATCH_EVENTS} events ({n} receipts):");
    println!("        POST sent -> event received (includes the fsync'd commit): {}", dist(&sorted(post)));
    println!("        commit durable -> event received ({} receipts joined):     {}", from_commit.len(), dist(&sorted(from_commit)));
    println!("        fan-out, after the first watcher received it:               {}", dist(&sorted(spread)));
    println!("        create round trip (ack):                                    {}", dist(&run.acks));
    let phase = |name: &str| sorted(batches.iter().map(|b| b.get(name) as f64 / 1000.0).collect());
    println!("      committer, {} batches during the watch phase (all writers, controllers too):", batches.len());
    for (label, name) in [("queued", "queued_us"), ("checks+SQL", "sql_us"), ("COMMIT (WAL write + fsync)", "commit_us"), ("publish", "publish_us")] {
        println!("        {label:<27} {}", dist(&phase(name)));
    }
    let checkpoints: Vec<&Record> = records.iter().filter(|r| r.message == "wal checkpoint").collect();
    let took: Vec<String> =
        checkpoints.iter().map(|c| format!("{} {} frames {:.1} ms", c.mode, c.get("frames"), c.get("took_us") as f64 / 1000.0)).collect();
    println!("        WAL checkpoints (background thread): {} [{}]", checkpoints.len(), took.join(", "));
}

fn main() {
    let records = Arc::new(std::sync::Mutex::new(Vec::new()));
    let targets = tracing_subscriber::filter::Targets::new().with_target("minion_apiserver::sqlite", tracing::Level::TRACE);
    let subscriber = tracing_subscriber::registry().with(Collect(records.clone()).with_filter(targets));
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
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
        let waited = settle(port).await;
        println!("ours  waited {waited:.1} s for the controllers to finish with the 10k pods before the watch phase");
        let probe_dir = dir.path().to_path_buf();
        let fsync = tokio::task::spawn_blocking(move || fsync_times(&probe_dir, 200, Duration::from_millis(5))).await.expect("probe");
        println!("disk  raw fsync of a 4 KiB append, same run, 5 ms apart: {}", dist(&fsync));
        records.lock().expect("records").clear();
        let run = watch_latency(port).await;
        let taken = std::mem::take(&mut *records.lock().expect("records"));
        report_watch(&run, &taken);
        let _ = stop.send(());
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
}
