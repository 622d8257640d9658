//! `cargo bench -p minion-dnsd --bench dnsperf`: dnsperf against minion-dnsd and
//! against unbound in the same run, both on loopback serving the same 1,000 Service
//! names (dnsd from a hand-made snapshot in-process, unbound with them as
//! local-data in a `static` local-zone, private config, killed by pid at the end).
//!
//! Two query mixes: all hits, and the ndots:5 search-list walk (per Service a
//! wrong-namespace NXDOMAIN, the hit, an AAAA NODATA and an external-name
//! candidate). For each: the highest QPS dnsperf reaches, and p50/p99 latency at a
//! fixed 20k QPS (`dnsperf -Q 20000 -v`, per-query latencies). Medians over rounds.
//! At the fixed rate it also reads the scheduler's counters
//! (`/proc/<pid>/task/*/schedstat`) of the server's serving threads and of dnsperf,
//! per query: CPU time, time spent runnable but waiting for a CPU (the run-queue
//! wait that bounds the tail on a loaded machine), and how often they were run.
//! Before the runs it prints the machine's wakeup floor: how late a 200 µs sleep
//! wakes up (p50/p99/p99.9), the bound under any p99 on this host.
//!
//! Env: `DNSPERF_SECONDS` (per run, default 4), `DNSPERF_ROUNDS` (default 3),
//! `DNSD_WORKERS` (default 2, like unbound's 2 threads), `DNSD_SPIN_US` (the UDP
//! workers' busy-poll budget, default dnsd's; 0 turns it off).

use std::collections::HashMap;
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
    /// At the fixed rate, per query: the server threads' CPU time, their run-queue
    /// wait, how often they were put on a CPU, and dnsperf's run-queue wait (µs).
    server_cpu_us: f64,
    /// The server's CPU seconds over the whole fixed-rate run (the cost of spinning).
    server_cpu_s: f64,
    server_wait_us: f64,
    server_runs: f64,
    client_wait_us: f64,
}

/// Scheduler counters summed over threads (`/proc/<pid>/task/*/schedstat`: time on
/// CPU, time runnable but waiting on a run queue, times run).
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    cpu_ns: u64,
    wait_ns: u64,
    runs: u64,
}

impl Sched {
    /// The threads of `pid` whose name starts with `prefix`.
    fn of(pid: u32, prefix: &str) -> Self {
        Self::per_thread(pid, prefix)
            .values()
            .fold(Self::default(), |total, t| total.plus(*t))
    }

    /// The same, by thread id.
    fn per_thread(pid: u32, prefix: &str) -> HashMap<String, Self> {
        let mut threads = HashMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return threads;
        };
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let v: Vec<u64> = stat
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [cpu_ns, wait_ns, runs] = v[..] {
                let tid = task.file_name().to_string_lossy().into_owned();
                threads.insert(
                    tid,
                    Self {
                        cpu_ns,
                        wait_ns,
                        runs,
                    },
                );
            }
        }
        threads
    }

    fn plus(self, other: Self) -> Self {
        Self {
            cpu_ns: self.cpu_ns + other.cpu_ns,
            wait_ns: self.wait_ns + other.wait_ns,
            runs: self.runs + other.runs,
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(before.wait_ns),
            runs: self.runs.saturating_sub(before.runs),
        }
    }
}

/// The server under test: its address and how to find its serving threads.
#[derive(Debug, Clone, Copy)]
struct Target {
    addr: SocketAddr,
    pid: u32,
    threads: &'static str,
}

/// One dnsperf run: QPS, lost, sorted latencies (µs), queries sent, and dnsperf's own
/// scheduler counters (sampled until it exits).
struct Run {
    qps: f64,
    lost: f64,
    latencies: Vec<f64>,
    sent: f64,
    client: Sched,
}

fn dnsperf(addr: SocketAddr, data: &Path, seconds: u64, fixed: bool, out: &Path) -> Result<Run> {
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
    let mut child = cmd
        .stdout(std::fs::File::create(out)?)
        .stderr(Stdio::null())
        .spawn()
        .context("run dnsperf (apt-get install dnsperf)")?;
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    // Threads that exit leave /proc: keep each one's last reading.
    let mut threads = HashMap::new();
    loop {
        let sample = Sched::per_thread(child.id(), "");
        if child.try_wait()?.is_some() {
            break;
        }
        threads.extend(sample);
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dnsperf did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(out)?;
    let field = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let qps = field("Queries per second");
    let client = threads
        .values()
        .fold(Sched::default(), |total, t| total.plus(*t));
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
    Ok(Run {
        qps,
        lost: field("Queries lost"),
        latencies,
        sent: field("Queries sent"),
        client,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The machine's own floor for a tail latency: how late a thread that sleeps
/// 200 µs wakes up (as cyclictest measures), 20,000 times. Any server answering
/// from a blocking receive pays this wakeup once per quiet-socket query.
fn wakeup_floor() {
    const SLEEP: Duration = Duration::from_micros(200);
    let mut late: Vec<f64> = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            std::thread::sleep(SLEEP);
            start.elapsed().saturating_sub(SLEEP).as_secs_f64() * 1e6
        })
        .collect();
    late.sort_by(f64::total_cmp);
    println!(
        "machine floor: a 200 us sleep wakes up late by p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us",
        percentile(&late, 0.50),
        percentile(&late, 0.99),
        percentile(&late, 0.999)
    );
}

fn measure(target: Target, data: &Path, seconds: u64, out: &Path) -> Result<Figures> {
    let top = dnsperf(target.addr, data, seconds, false, out)?;
    let before = Sched::of(target.pid, target.threads);
    let fixed = dnsperf(target.addr, data, seconds, true, out)?;
    let server = Sched::of(target.pid, target.threads).since(before);
    let per_query = |ns: u64| ns as f64 / 1e3 / fixed.sent.max(1.0);
    Ok(Figures {
        qps: top.qps,
        lost: top.lost,
        p50_us: percentile(&fixed.latencies, 0.50),
        p99_us: percentile(&fixed.latencies, 0.99),
        server_cpu_us: per_query(server.cpu_ns),
        server_cpu_s: server.cpu_ns as f64 / 1e9,
        server_wait_us: per_query(server.wait_ns),
        server_runs: server.runs as f64 / fixed.sent.max(1.0),
        client_wait_us: per_query(fixed.client.wait_ns),
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
        server_cpu_us: pick(|f| f.server_cpu_us),
        server_cpu_s: pick(|f| f.server_cpu_s),
        server_wait_us: pick(|f| f.server_wait_us),
        server_runs: pick(|f| f.server_runs),
        client_wait_us: pick(|f| f.client_wait_us),
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let seconds = env_or("DNSPERF_SECONDS", 4);
    let rounds = env_or("DNSPERF_ROUNDS", 3).max(1);
    let workers = usize::try_from(env_or("DNSD_WORKERS", 2))?;
    let spin_us = env_or("DNSD_SPIN_US", minion_dnsd::spin::DEFAULT_UDP_SPIN_US);
    let dir = tempfile::tempdir()?;
    let (hits, walk) = write_mixes(dir.path())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let records = Arc::new(ArcSwap::from_pointee(snapshot()));
    micro(records.clone())?;
    wakeup_floor();
    let handler = DnsHandler::new(records, None);
    let server = runtime
        .block_on(DnsServer::bind("127.0.0.1:0".parse()?, workers, handler))?
        .with_udp_spin(Duration::from_micros(spin_us));
    let dnsd = Target {
        addr: server.local_addr(),
        pid: std::process::id(),
        threads: "dnsd-udp",
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    wait_answering(dnsd.addr)?;
    let unbound = start_unbound(dir.path())?;
    let them = Target {
        addr: unbound.addr,
        pid: unbound.child.id(),
        threads: "",
    };
    // dnsperf -v writes a line per query: keep that file in memory (tmpfs), so the
    // client's own log writes to disk do not show up as query latency.
    let shm = Path::new("/dev/shm");
    let out_dir = if shm.is_dir() { tempfile::tempdir_in(shm)? } else { tempfile::tempdir()? };
    let out = out_dir.path().join("dnsperf.out");

    println!(
        "dnsperf: {SERVICES} names, {seconds}s per run, {rounds} rounds, dnsd {workers} UDP workers \
         (spin {spin_us} us), unbound 2 threads"
    );
    for (mix, data) in [("all hits", &hits), ("ndots:5 walk", &walk)] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(measure(dnsd, data, seconds, &out)?);
            theirs.push(measure(them, data, seconds, &out)?);
        }
        let (o, t) = (summarize(&ours), summarize(&theirs));
        for (who, f) in [("minion-dnsd", o), ("unbound", t)] {
            println!(
                "  {mix:<13} {who:<12} {:>9.0} QPS (lost {:>5.0})  at 20k QPS: p50 {:>6.0} us  p99 {:>6.0} us",
                f.qps, f.lost, f.p50_us, f.p99_us
            );
        }
        println!("  {mix:<13} ratio dnsd/unbound QPS: {:.2}x", o.qps / t.qps);
        for (who, f) in [("minion-dnsd", o), ("unbound", t)] {
            println!(
                "  {mix:<13} {who:<12} per query at 20k: server CPU {:>5.1} us, run-queue wait {:>5.1} us, \
                 {:.2} runs; dnsperf run-queue wait {:>5.1} us; server CPU in the {seconds}s run {:.2} s",
                f.server_cpu_us, f.server_wait_us, f.server_runs, f.client_wait_us, f.server_cpu_s
            );
        }
    }
    drop(unbound);
    let _ = stop.send(());
    let _ = runtime.block_on(serving);
    Ok(())
}
