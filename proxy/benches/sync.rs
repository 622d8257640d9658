//! `cargo bench -p minion-proxy --bench sync`: our syncs against the floor, the raw
//! `iptables-restore` of the same ruleset text, in a private network namespace per
//! backend (nft, and legacy when `iptables-legacy-restore` exists).
//!
//! Scenarios at 1k and 10k Services × 3 endpoints:
//! - full: a full resync of a populated table (ours: `Syncer::sync(_, true)`; floor:
//!   `iptables-restore` replacing the nat table with the whole rendered text);
//! - one: one Service's endpoints change (ours: a partial sync; floor: the same
//!   `--noflush` text ours applied, fed to `iptables-restore` directly).
//!
//! Also, at 1k only, kube-proxy's single `--noflush` full restore on nft, to show the
//! growth the batching avoids (at 10k it takes about a minute, so it is not run).
//!
//! Wall-clock medians are the figures; on a shared machine they move with its
//! load, so each line also gives the median CPU time (user + system, of the bench
//! process and of the `iptables-restore` children), which does not.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_proxy::applier::{ApplyError, IptablesApplier, JumpRule, RulesetApplier};
use minion_proxy::backend::Backend;
use minion_proxy::{render, RecordingApplier, RenderConfig, Snapshot, Syncer};
use serde_json::json;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("mbench-proxy-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Forwards to the real applier and keeps the last input (the floor replays it).
#[derive(Clone)]
struct Recording {
    real: IptablesApplier,
    last: Arc<Mutex<Vec<String>>>,
    in_restore: Arc<Mutex<Duration>>,
}

impl RulesetApplier for Recording {
    fn apply(&self, input: &str) -> Result<(), ApplyError> {
        self.last.lock().unwrap().push(input.to_string());
        let start = Instant::now();
        let r = self.real.apply(input);
        *self.in_restore.lock().unwrap() += start.elapsed();
        r
    }
    fn current_chains(&self, t: &str) -> Result<std::collections::BTreeSet<String>, ApplyError> {
        self.real.current_chains(t)
    }
    fn ensure_rule(&self, rule: &JumpRule) -> Result<bool, ApplyError> {
        self.real.ensure_rule(rule)
    }
    fn backend(&self) -> Result<Backend, ApplyError> {
        self.real.backend()
    }
    fn conntrack(&self, args: &[String]) -> Result<(), ApplyError> {
        self.real.conntrack(args)
    }
}

fn snapshot(n: usize, drop_one_of: Option<usize>) -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..n {
        let name = format!("svc{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        // As the watch stores them: API objects carry a uid and resourceVersion,
        // the Endpoints folded from EndpointSlices carry neither.
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "bench", "name": name,
                         "uid": format!("uid-{i}"), "resourceVersion": format!("{}", i + 1)},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        let k = if drop_one_of == Some(i) { 2 } else { 3 };
        let addrs: Vec<_> = (0..k)
            .map(|e| json!({"ip": format!("10.244.{}.{}", i / 80, (i % 80) * 3 + e + 1)}))
            .collect();
        let eps: Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "bench", "name": name},
            "subsets": [{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]
        }))
        .unwrap();
        s.services.push(svc);
        s.endpoints.push(eps);
    }
    s
}

fn restore(ns: &str, bin: &str, noflush: bool, input: &str) -> Duration {
    let mut args = vec!["netns", "exec", ns, bin, "--wait"];
    if noflush {
        args.push("--noflush");
    }
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn iptables-restore");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{bin} failed");
    start.elapsed()
}

/// CPU time (user + system) used so far by this process and its reaped children.
fn cpu_used() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let total = |who| {
        getrusage(who)
            .map(|u| {
                let t = |tv: nix::sys::time::TimeVal| {
                    Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
                };
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or_default()
    };
    total(UsageWho::RUSAGE_SELF) + total(UsageWho::RUSAGE_CHILDREN)
}

/// Runs `f`, returning its wall-clock and CPU time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_used());
    let out = f();
    (out, wall.elapsed(), cpu_used().saturating_sub(cpu))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Wall-clock and CPU samples of ours and of the floor.
#[derive(Default)]
struct Samples {
    ours: Vec<Duration>,
    ours_cpu: Vec<Duration>,
    floor: Vec<Duration>,
    floor_cpu: Vec<Duration>,
}

fn report(backend: &str, what: &str, s: Samples) {
    let (ours, floor) = (median(s.ours), median(s.floor));
    let (ours_cpu, floor_cpu) = (median(s.ours_cpu), median(s.floor_cpu));
    println!(
        "{backend:6} {what:22} ours {:>11}  floor {:>11}  ratio {:.2}x   (cpu: ours {}, floor {}, ratio {:.2}x)",
        ms(ours),
        ms(floor),
        ours.as_secs_f64() / floor.as_secs_f64(),
        ms(ours_cpu),
        ms(floor_cpu),
        ours_cpu.as_secs_f64() / floor_cpu.as_secs_f64()
    );
}

/// The CPU side of a sync alone (render, plan, bookkeeping), with a fake applier.
fn bench_cpu() {
    let cfg = RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: None,
    };
    for n in [1000usize, 10_000] {
        let mut syncer = Syncer::new(RecordingApplier::default(), cfg.clone());
        let full = snapshot(n, None);
        let changed = snapshot(n, Some(n / 2));
        let start = Instant::now();
        syncer.sync(&full, true).expect("fake sync");
        let first = start.elapsed();
        let mut one = Vec::new();
        for r in 0..6 {
            syncer.applier().calls.lock().unwrap().clear();
            let start = Instant::now();
            syncer
                .sync(if r % 2 == 0 { &changed } else { &full }, false)
                .unwrap();
            one.push(start.elapsed());
        }
        println!(
            "cpu    {n:>5} services: full render+plan {}, one-service {}",
            ms(first),
            ms(median(one))
        );
    }
}

fn bench_backend(tag: &str, restore_bin: &str, iptables_bin: &str) {
    for (n, runs) in [(1000usize, 5usize), (10_000, 3)] {
        let ns = Netns::new(&format!("{tag}{n}"));
        let real = IptablesApplier::new(restore_bin.into(), iptables_bin.into()).with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.0.clone(),
        ]);
        let rec = Recording {
            real,
            last: Arc::default(),
            in_restore: Arc::default(),
        };
        let cfg = RenderConfig {
            cluster_cidr: "10.244.0.0/16".into(),
            node_name: None,
        };
        let mut syncer = Syncer::new(rec.clone(), cfg.clone());
        let full = snapshot(n, None);
        let start = Instant::now();
        let first = syncer.sync(&full, true).expect("first sync");
        println!(
            "{tag:6} {n:>5} services: first sync {} ({} restores, {} commits, {} rules)",
            ms(start.elapsed()),
            first.restores,
            first.commits,
            first.rules
        );
        let text = render(&full, &cfg);
        let (mut samples, mut restoring) = (Samples::default(), Vec::new());
        for _ in 0..runs {
            *rec.in_restore.lock().unwrap() = Duration::ZERO;
            let (r, wall, cpu) = timed(|| syncer.sync(&full, true));
            r.expect("full sync");
            samples.ours.push(wall);
            samples.ours_cpu.push(cpu);
            restoring.push(*rec.in_restore.lock().unwrap());
            let (_, wall, cpu) = timed(|| restore(&ns.0, restore_bin, false, &text));
            samples.floor.push(wall);
            samples.floor_cpu.push(cpu);
        }
        println!(
            "{tag:6} full {n}: ours spends {} inside iptables-restore",
            ms(median(restoring))
        );
        // The floor replaced the table: resync ours so its memory matches the kernel.
        syncer.sync(&full, true).expect("resync");
        report(tag, &format!("full {n}"), samples);
        let mut samples = Samples::default();
        for r in 0..runs * 2 {
            let changed = snapshot(n, Some(n / 2));
            let snap = if r % 2 == 0 { &changed } else { &full };
            rec.last.lock().unwrap().clear();
            let (stats, wall, cpu) = timed(|| syncer.sync(snap, false));
            let stats = stats.expect("partial sync");
            samples.ours.push(wall);
            samples.ours_cpu.push(cpu);
            assert_eq!(stats.restores, 1);
            let input = rec.last.lock().unwrap()[0].clone();
            let (_, wall, cpu) = timed(|| restore(&ns.0, restore_bin, true, &input));
            samples.floor.push(wall);
            samples.floor_cpu.push(cpu);
        }
        report(tag, &format!("one service {n}"), samples);
        if tag == "nft" && n == 1000 {
            let ns1 = Netns::new("kp");
            let kube_proxy_style = restore(&ns1.0, restore_bin, true, &text);
            println!(
                "{tag:6} kube-proxy single --noflush full load at {n}: {}",
                ms(kube_proxy_style)
            );
        }
    }
}

fn main() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        eprintln!("skipping: the sync bench needs root (network namespaces, iptables)");
        return;
    }
    let started = Instant::now();
    bench_cpu();
    if std::env::var_os("MINION_BENCH_CPU_ONLY").is_some() {
        return;
    }
    let version = |bin: &str| {
        Command::new(bin)
            .arg("-V")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| Backend::from_version(&String::from_utf8_lossy(&o.stdout)))
    };
    match version("iptables") {
        Some(Backend::Nft) => bench_backend("nft", "iptables-restore", "iptables"),
        Some(Backend::Legacy) => bench_backend("legacy", "iptables-restore", "iptables"),
        None => eprintln!("no iptables found"),
    }
    if version("iptables-nft") == Some(Backend::Nft) && version("iptables") != Some(Backend::Nft) {
        bench_backend("nft", "iptables-nft-restore", "iptables-nft");
    }
    if version("iptables-legacy") == Some(Backend::Legacy)
        && version("iptables") != Some(Backend::Legacy)
    {
        bench_backend("legacy", "iptables-legacy-restore", "iptables-legacy");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "total {:.1} s, load average {}",
        started.elapsed().as_secs_f64(),
        load.trim()
    );
}
