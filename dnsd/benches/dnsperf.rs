//! `cargo bench -p minion-dnsd --bench dnsperf`: dnsperf against minion-dnsd and
//! against unbound in the same run, both on loopback serving the same 1,000 Service
//! names (dnsd from a hand-made snapshot in-process, unbound with them as
//! local-data in a `static` local-zone, private config, killed by pid at the end).
//!
//! Two query mixes: all hits, and the ndots:5 search-list walk (per Service a
//! wrong-namespace NXDOMAIN, the hit, an AAAA NODATA and an external-name
//! candidate). For each: the highest QPS dnsperf reaches, and p50/p99 latency at a
//! fixed 20k QPS (`dnsperf -Q 20000 -v`, per-query latencies). Medians over rounds.
//!
//! Env: `DNSPERF_SECONDS` (per run, default 4), `DNSPERF_ROUNDS` (default 3),
//! `DNSD_WORKERS` (default 2, like unbound's 2 threads).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_dnsd::{build_records, DnsHandler, DnsServer, Zone};
use serde_json::json;

const SERVICES: usize = 1000;
const NAMESPACES: usize = 10;
const FIXED_QPS: &str = "20000";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn service_name(i: usize) -> (String, String, String) {
    let ns = format!("ns-{}", i % NAMESPACES);
    let ip = format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250);
    (format!("svc-{i}"), ns, ip)
}

fn fqdn(i: usize) -> String {
    let (name, ns, _) = service_name(i);
    format!("{name}.{ns}.svc.cluster.local")
}

fn write_mixes(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let hits: String = (0..SERVICES).map(|i| format!("{} A\n", fqdn(i))).collect();
    let walk: String = (0..SERVICES)
        .map(|i| {
            let (name, ns, _) = service_name(i);
            let other = format!("ns-{}", (i + 1) % NAMESPACES);
            format!(
                "{name}.{other}.svc.cluster.local A\n{} A\n{} AAAA\n\
                 ext-{i}.example.com.{ns}.svc.cluster.local A\n",
                fqdn(i),
                fqdn(i)
            )
        })
        .collect();
    let (h, w) = (dir.join("hits.txt"), dir.join("walk.txt"));
    std::fs::write(&h, hits)?;
    std::fs::write(&w, walk)?;
    Ok((h, w))
}

fn snapshot() -> minion_dnsd::Records {
    let services: Vec<Service> = (0..SERVICES)
        .map(|i| {
            let (name, ns, ip) = service_name(i);
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}
            }))
            .expect("service")
        })
        .collect();
    let namespaces: Vec<String> = (0..NAMESPACES).map(|n| format!("ns-{n}")).collect();
    build_records(
        &Zone::new("cluster.local", 30).expect("zone"),
        1,
        namespaces.iter().map(String::as_str),
        &services,
        &Vec::<Endpoints>::new(),
    )
}

/// unbound on loopback, killed by pid on drop.
struct Unbound {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn start_unbound(dir: &Path) -> Result<Unbound> {
    let port = free_port()?;
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  num-threads: 2\n  so-reuseport: yes\n\
         \x20 do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n\
         \x20 pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n\
         \x20 verbosity: 0\n  do-ip6: no\n  module-config: \"iterator\"\n\
         \x20 access-control: 127.0.0.0/8 allow\n  local-zone: \"cluster.local.\" static\n",
        d = dir.display()
    );
    for i in 0..SERVICES {
        let (_, _, ip) = service_name(i);
        conf.push_str(&format!("  local-data: \"{}. 30 IN A {ip}\"\n", fqdn(i)));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("unbound")
        .args(["-d", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start unbound (apt-get install unbound)")?;
    let unbound = Unbound {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    wait_answering(unbound.addr)?;
    Ok(unbound)
}

/// A query packet for `name` (no trailing dot) and `qtype`, RD set.
fn query_packet(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// CPU cost of one request on the handler (no sockets): each query kind of the
/// ndots:5 walk, and a forwarded name answered from the cache.
fn micro(records: Arc<ArcSwap<minion_dnsd::Records>>) -> Result<()> {
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    const N: u32 = 300_000;
    let external = query_packet("www.example.com", 1);
    let mut reply = Message::response(0x1234, OpCode::Query);
    let name = Name::from_ascii("www.example.com.")?;
    reply.add_query(Query::query(name.clone(), RecordType::A));
    reply.add_answer(Record::from_rdata(
        name,
        300,
        RData::A(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
    ));
    let forwarder = minion_dnsd::Forwarder::new(vec![SocketAddr::from(([127, 0, 0, 1], 9))], 1000);
    let parsed = minion_dnsd::wire::parse(&external).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    forwarder
        .cache()
        .insert(minion_dnsd::cache::cache_key(&parsed), &reply.to_vec()?);
    let handler = DnsHandler::new(records, Some(forwarder));
    let kinds = [
        ("hit (A)", query_packet(&fqdn(1), 1)),
        (
            "wrong-namespace NXDOMAIN",
            query_packet("svc-1.ns-2.svc.cluster.local", 1),
        ),
        ("NODATA (AAAA)", query_packet(&fqdn(1), 28)),
        (
            "search candidate NXDOMAIN",
            query_packet("www.example.com.ns-1.svc.cluster.local", 1),
        ),
        ("forwarded, cache hit", external),
    ];
    println!("handler CPU per request ({N} each, no sockets):");
    let mut out = Vec::with_capacity(512);
    for (kind, packet) in &kinds {
        if handler.handle(packet, false, &mut out) != minion_dnsd::Handled::Reply {
            bail!("{kind}: not answered synchronously");
        }
        let start = Instant::now();
        for _ in 0..N {
            std::hint::black_box(handler.handle(std::hint::black_box(packet), false, &mut out));
        }
        println!(
            "  {kind:<26} {:>6.0} ns",
            start.elapsed().as_nanos() as f64 / f64::from(N)
        );
    }
    Ok(())
}

/// Polls (bounded) until `addr` answers a query for the first name.
fn wait_answering(addr: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let q = query_packet(&fqdn(0), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(&q, addr)?;
        if socket.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    bail!("{addr} did not answer within 10s")
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    qps: f64,
    lost: f64,
    p50_us: f64,
    p99_us: f64,
}

fn dnsperf(
    addr: SocketAddr,
    data: &Path,
    seconds: u64,
    fixed: bool,
) -> Result<(f64, f64, Vec<f64>)> {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &addr.port().to_string()])
        .arg("-d")
        .arg(data)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "8",
            "-T",
            "2",
            "-q",
            "500",
            "-t",
            "2",
        ]);
    if fixed {
        cmd.args(["-Q", FIXED_QPS, "-v"]);
    }
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .context("run dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let qps = field("Queries per second");
    let lost = field("Queries lost");
    let mut latencies: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e6)
        .collect();
    latencies.sort_by(f64::total_cmp);
    if qps == 0.0 {
        bail!("dnsperf printed no QPS:\n{text}");
    }
    Ok((qps, lost, latencies))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn measure(addr: SocketAddr, data: &Path, seconds: u64) -> Result<Figures> {
    let (qps, lost, _) = dnsperf(addr, data, seconds, false)?;
    let (_, _, lat) = dnsperf(addr, data, seconds, true)?;
    Ok(Figures {
        qps,
        lost,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summarize(rounds: &[Figures]) -> Figures {
    let pick = |f: fn(&Figures) -> f64| median(rounds.iter().map(f).collect());
    Figures {
        qps: pick(|f| f.qps),
        lost: pick(|f| f.lost),
        p50_us: pick(|f| f.p50_us),
        p99_us: pick(|f| f.p99_us),
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let seconds = env_or("DNSPERF_SECONDS", 4);
    let rounds = env_or("DNSPERF_ROUNDS", 3).max(1);
    let workers = usize::try_from(env_or("DNSD_WORKERS", 2))?;
    let dir = tempfile::tempdir()?;
    let (hits, walk) = write_mixes(dir.path())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let records = Arc::new(ArcSwap::from_pointee(snapshot()));
    micro(records.clone())?;
    let handler = DnsHandler::new(records, None);
    let server = runtime.block_on(DnsServer::bind("127.0.0.1:0".parse()?, workers, handler))?;
    let dnsd = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    wait_answering(dnsd)?;
    let unbound = start_unbound(dir.path())?;

    println!("dnsperf: {SERVICES} names, {seconds}s per run, {rounds} rounds, dnsd {workers} UDP workers, unbound 2 threads");
    for (mix, data) in [("all hits", &hits), ("ndots:5 walk", &walk)] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(measure(dnsd, data, seconds)?);
            theirs.push(measure(unbound.addr, data, seconds)?);
        }
        let (o, t) = (summarize(&ours), summarize(&theirs));
        for (who, f) in [("minion-dnsd", o), ("unbound", t)] {
            println!(
                "  {mix:<13} {who:<12} {:>9.0} QPS (lost {:>5.0})  at 20k QPS: p50 {:>6.0} us  p99 {:>6.0} us",
                f.qps, f.lost, f.p50_us, f.p99_us
            );
        }
        println!("  {mix:<13} ratio dnsd/unbound QPS: {:.2}x", o.qps / t.qps);
    }
    drop(unbound);
    let _ = stop.send(());
    let _ = runtime.block_on(serving);
    Ok(())
}
