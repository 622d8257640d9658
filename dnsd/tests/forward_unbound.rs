//! Forwarding of names outside the cluster zone to a real upstream: unbound started
//! on loopback (port from a free-port probe, private config, killed by pid), and
//! dnsd's cache answering after the upstream is gone, positive and negative.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use common::*;
use minion_dnsd::{build_records, DnsHandler, DnsServer, Forwarder, Zone};

struct Unbound(Child);

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_unbound(dir: &std::path::Path) -> Option<(Unbound, SocketAddr)> {
    if Command::new("unbound").arg("-h").output().is_err() {
        return None;
    }
    let port = free_port("127.0.0.1");
    let d = dir.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  num-threads: 1\n  do-daemonize: no\n\
         \x20 chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n\
         \x20 use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  do-ip6: no\n  module-config: \"iterator\"\n\
         \x20 access-control: 127.0.0.0/8 allow\n  local-zone: \"example.test.\" static\n\
         \x20 local-data: \"example.test. 3600 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 60\"\n\
         \x20 local-data: \"www.example.test. 300 IN A 192.0.2.7\"\n\
         remote-control:\n  control-enable: no\n"
    );
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("unbound")
        .args(["-d", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start unbound");
    Some((Unbound(child), SocketAddr::from(([127, 0, 0, 1], port))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_zone_names_go_to_unbound_and_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let Some((unbound, upstream)) = start_unbound(dir.path()) else {
        assert!(std::env::var_os("CI").is_none(), "unbound missing under CI");
        eprintln!("SKIP: unbound not installed");
        return;
    };
    wait_until(Duration::from_secs(10), "unbound answering", || {
        dig(upstream, &["www.example.test", "A"]).status == "NOERROR"
    })
    .await;

    let zone = Zone::new("cluster.local", 30).unwrap();
    let records = build_records(&zone, 1, ["default"], &[], &[]);
    let handler = DnsHandler::new(
        Arc::new(ArcSwap::from_pointee(records)),
        Some(Forwarder::new(vec![upstream], 100)),
    );
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), 2, handler)
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let hit = adig(addr, &["WWW.example.test", "A"]).await;
    assert_eq!(hit.status, "NOERROR", "{}", hit.raw);
    assert_eq!(hit.data(), ["192.0.2.7"], "{}", hit.raw);
    assert!(hit.flags.contains(&"ra".to_string()), "{}", hit.raw);
    let tcp = adig(addr, &["+tcp", "www.example.test", "A"]).await;
    assert_eq!(tcp.data(), ["192.0.2.7"], "{}", tcp.raw);
    let nx = adig(addr, &["missing.example.test", "A"]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert_eq!(nx.authority[0].rtype, "SOA", "{}", nx.raw);
    let in_zone = adig(addr, &["svc.cluster.local", "A"]).await;
    assert_eq!(
        in_zone.status, "NOERROR",
        "in-zone names are not forwarded: {}",
        in_zone.raw
    );

    // The upstream goes away: cached answers (positive and negative) still come back,
    // with TTLs counting down; an uncached name gets SERVFAIL.
    drop(unbound);
    let cached = adig(addr, &["www.example.test", "A"]).await;
    assert_eq!(cached.data(), ["192.0.2.7"], "{}", cached.raw);
    assert!(cached.answer[0].ttl <= 300, "{}", cached.raw);
    let cached_nx = adig(addr, &["missing.example.test", "A"]).await;
    assert_eq!(cached_nx.status, "NXDOMAIN", "{}", cached_nx.raw);
    let failed = adig(addr, &["+time=5", "other.example.test", "A"]).await;
    assert_eq!(failed.status, "SERVFAIL", "{}", failed.raw);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn upstreams_come_from_the_resolv_conf_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(
        &path,
        "search x\nnameserver 127.0.0.53\nnameserver 10.0.0.1\n",
    )
    .unwrap();
    let config = minion_dnsd::Config {
        kubeconfig: dir.path().join("unused"),
        listen: "10.0.0.1:53".parse().unwrap(),
        cluster_domain: "cluster.local".into(),
        advertise_address: None,
        node_name: None,
        ttl: 30,
        upstreams: Vec::new(),
        resolv_conf: Some(path),
        cache_entries: 10,
        udp_workers: 1,
        udp_spin: std::time::Duration::from_micros(minion_dnsd::spin::DEFAULT_UDP_SPIN_US),
        lameduck: std::time::Duration::ZERO,
    };
    let forwarder = minion_dnsd::forwarder(&config)
        .unwrap()
        .expect("a forwarder");
    assert_eq!(
        forwarder.upstreams(),
        ["127.0.0.53:53".parse().unwrap()],
        "own address skipped"
    );
    let none = minion_dnsd::Config {
        resolv_conf: None,
        ..config
    };
    assert!(minion_dnsd::forwarder(&none).unwrap().is_none());
}
