//! An idle dnsd burns no CPU: after a dense burst of UDP queries (which makes a worker
//! busy-poll), the UDP workers fall back to blocking receives and use almost no CPU
//! over the next second. Its own test binary, so no other test's server shares the
//! process whose threads are measured.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_dnsd::{build_records, DnsHandler, DnsServer, Zone};
use serde_json::json;

/// Queries in the burst, sent one after the other from each client socket.
const BURST: usize = 3000;
/// Most CPU all UDP workers may use in the idle second (spinning would take ~1 s).
const IDLE_CPU_LIMIT: Duration = Duration::from_millis(100);

fn records() -> minion_dnsd::Records {
    let web: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.20"}
    }))
    .unwrap();
    build_records(
        &Zone::new("cluster.local", 5).unwrap(),
        1,
        ["default"],
        &[web],
        &Vec::<Endpoints>::new(),
    )
}

/// An A query for web.default.svc.cluster.local with id `id`.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["web", "default", "svc", "cluster", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// utime + stime of this process's threads named `dnsd-udp-*`
/// (`/proc/self/task/<tid>/stat`, fields 14 and 15, in clock ticks).
fn udp_workers_cpu() -> Duration {
    let ticks_per_second = 100u64; // USER_HZ on Linux
    let mut ticks = 0u64;
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("dnsd-udp") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        threads += 1;
    }
    assert!(threads > 0, "no dnsd-udp threads found");
    Duration::from_millis(ticks * 1000 / ticks_per_second)
}

/// Sends `BURST` queries back to back (each waits for its answer) from two sockets.
fn burst(addr: SocketAddr) {
    let clients: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    let mut buf = [0u8; 512];
    let mut answered = 0;
    for i in 0..BURST {
        let client = &clients[i % clients.len()];
        client.send_to(&query(i as u16), addr).unwrap();
        if client.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
    }
    assert!(answered > BURST * 9 / 10, "{answered} of {BURST} answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_udp_workers_use_no_cpu_after_a_burst() {
    let handler = DnsHandler::new(Arc::new(ArcSwap::from_pointee(records())), None);
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), 2, handler)
        .await
        .unwrap()
        .with_udp_spin(Duration::from_micros(minion_dnsd::spin::DEFAULT_UDP_SPIN_US));
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    tokio::task::spawn_blocking(move || burst(addr)).await.unwrap();
    let busy = udp_workers_cpu();
    println!("burst of {BURST} queries: {:?}, UDP workers' CPU {busy:?}", started.elapsed());

    // Let the last spin and its fall-back end, then measure one idle second.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = udp_workers_cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = udp_workers_cpu().saturating_sub(before);
    println!("idle second: UDP workers' CPU {idle:?}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(idle <= IDLE_CPU_LIMIT, "idle UDP workers used {idle:?} of CPU in 1 s");
}
