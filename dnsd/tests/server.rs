//! In-process DNS server on 127.0.0.1:0 with a hand-made snapshot (no API server):
//! queries over UDP and TCP with hickory-proto messages, and with `dig`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use minion_dnsd::{build_records, DnsHandler, DnsServer, Forwarder, Records, Zone};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(5);

fn snapshot(serial: u32, web_ip: &str) -> Records {
    let services: Vec<Service> = vec![
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": web_ip, "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap(),
        serde_json::from_value(json!({
            "metadata": {"namespace": "db", "name": "pg"},
            "spec": {"clusterIP": "None"}
        }))
        .unwrap(),
    ];
    let endpoints: Vec<Endpoints> = vec![serde_json::from_value(json!({
        "metadata": {"namespace": "db", "name": "pg"},
        "subsets": [{"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.7"}]}]
    }))
    .unwrap()];
    build_records(
        &Zone::new("cluster.local", 5).unwrap(),
        serial,
        ["default", "db"],
        &services,
        &endpoints,
    )
}

struct Running {
    addr: SocketAddr,
    records: Arc<ArcSwap<Records>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), minion_dnsd::server::ServerError>>,
}

async fn start(upstream: Option<SocketAddr>) -> Result<Running> {
    let records = Arc::new(ArcSwap::from_pointee(snapshot(1, "10.96.0.20")));
    let forwarder = upstream.map(|u| Forwarder::new(vec![u], 100));
    let handler = DnsHandler::new(records.clone(), forwarder);
    let server = DnsServer::bind("127.0.0.1:0".parse()?, 2, handler).await?;
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        records,
        stop: Some(stop),
        task,
    })
}

impl Running {
    async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .context("server did not stop")???;
        Ok(())
    }
}

fn query(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

async fn ask_udp(addr: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(addr).await?;
    socket.send(&query(name, qtype, 4242)).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf)).await??;
    let msg = Message::from_vec(&buf[..n])?;
    assert_eq!(msg.metadata.id, 4242);
    Ok(msg)
}

async fn ask_tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await??;
    let q = query(name, qtype, 777);
    let mut framed = u16::try_from(q.len())?.to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await?;
    let len = tokio::time::timeout(TIMEOUT, stream.read_u16()).await??;
    let mut buf = vec![0u8; usize::from(len)];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut buf)).await??;
    Ok(Message::from_vec(&buf)?)
}

fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

#[tokio::test]
async fn udp_answers_service_headless_nxdomain_nodata_refused() -> Result<()> {
    let server = start(None).await?;
    let a = ask_udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(a_records(&a), vec![Ipv4Addr::new(10, 96, 0, 20)]);
    assert_eq!(a.answers[0].ttl, 5);

    let h = ask_udp(server.addr, "PG.db.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(
        a_records(&h),
        vec![Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 7)]
    );

    let nx = ask_udp(
        server.addr,
        "nope.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

    let nodata = ask_udp(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await?;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

    let refused = ask_udp(server.addr, "example.com.", RecordType::A).await?;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(!refused.metadata.authoritative);
    server.shutdown().await
}

#[tokio::test]
async fn tcp_answers_and_snapshot_swap_is_seen() -> Result<()> {
    let server = start(None).await?;
    let a = ask_tcp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(a.metadata.id, 777);
    assert_eq!(a_records(&a), vec![Ipv4Addr::new(10, 96, 0, 20)]);

    server.records.store(Arc::new(snapshot(2, "10.96.0.99")));
    let b = ask_tcp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(a_records(&b), vec![Ipv4Addr::new(10, 96, 0, 99)]);
    let nx = ask_tcp(
        server.addr,
        "gone.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await
}

/// A fake upstream answering every A question with 192.0.2.1 (loopback only).
async fn fake_upstream() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        for _ in 0..16 {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::response(req.metadata.id, OpCode::Query);
            resp.metadata.recursion_available = true;
            for q in &req.queries {
                resp.add_query(q.clone());
                let rdata = RData::A(Ipv4Addr::new(192, 0, 2, 1).into());
                resp.add_answer(hickory_proto::rr::Record::from_rdata(
                    q.name().clone(),
                    60,
                    rdata,
                ));
            }
            let _ = socket.send_to(&resp.to_vec().unwrap(), from).await;
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn out_of_zone_is_forwarded_with_upstream() -> Result<()> {
    let (upstream, upstream_task) = fake_upstream().await?;
    let server = start(Some(upstream)).await?;
    let fwd = ask_udp(server.addr, "example.com.", RecordType::A).await?;
    assert_eq!(fwd.metadata.response_code, ResponseCode::NoError);
    assert!(!fwd.metadata.authoritative);
    assert_eq!(a_records(&fwd), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    let local = ask_udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(a_records(&local), vec![Ipv4Addr::new(10, 96, 0, 20)]);
    upstream_task.abort();
    server.shutdown().await
}

fn dig(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn dig_over_udp_and_tcp() -> Result<()> {
    let server = start(None).await?;
    let addr = server.addr;
    let run = |args: Vec<&'static str>| tokio::task::spawn_blocking(move || dig(addr, &args));
    let Some(short) = run(vec!["+short", "web.default.svc.cluster.local", "A"]).await? else {
        eprintln!("SKIP: dig not installed");
        return server.shutdown().await;
    };
    assert_eq!(short.trim(), "10.96.0.20");
    let tcp = run(vec!["+tcp", "+short", "pg.db.svc.cluster.local", "A"])
        .await?
        .unwrap_or_default();
    let mut lines: Vec<&str> = tcp.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["10.244.1.5", "10.244.2.7"]);
    let nx = run(vec!["nope.default.svc.cluster.local", "A"])
        .await?
        .unwrap_or_default();
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("flags: qr aa rd"), "{nx}");
    assert!(
        nx.contains("ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    let refused = run(vec!["example.com", "A"]).await?.unwrap_or_default();
    assert!(refused.contains("status: REFUSED"), "{refused}");
    server.shutdown().await
}

/// Bursts from several clients, mixing answers, FORMERR (a header claiming one
/// question and carrying none) and dropped datagrams (shorter than a header): the
/// batched UDP path answers each request once, to its own sender, with its id.
#[tokio::test]
async fn udp_bursts_answer_each_request_to_its_sender() -> Result<()> {
    const CLIENTS: u16 = 4;
    const PER_CLIENT: u16 = 60;
    let server = start(None).await?;
    let kind = |k: u16| k % 10; // 3: dropped, 7: FORMERR, else an answer.
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server.addr).await?;
        clients.push((c, socket));
    }
    for k in 0..PER_CLIENT {
        for (c, socket) in &clients {
            let id = c * 1000 + k;
            let packet = match kind(k) {
                3 => vec![0x12, 0x34, 0x01],
                7 => {
                    let mut header = vec![0u8; 12];
                    header[..2].copy_from_slice(&id.to_be_bytes());
                    header[5] = 1;
                    header
                }
                _ => query("web.default.svc.cluster.local.", RecordType::A, id),
            };
            socket.send(&packet).await?;
        }
    }
    let expected = PER_CLIENT - PER_CLIENT / 10;
    for (c, socket) in &clients {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; 4096];
        while seen.len() < usize::from(expected) {
            let n = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf))
                .await
                .with_context(|| format!("client {c}: only {} replies", seen.len()))??;
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert_eq!(id / 1000, *c, "reply to another client's request");
            let k = id % 1000;
            assert!(seen.insert(k), "request {id} answered twice");
            let rcode = buf[3] & 0x0F;
            if kind(k) == 7 {
                assert_eq!(rcode, 1, "request {id}: FORMERR expected");
            } else {
                assert_ne!(kind(k), 3, "a dropped datagram was answered");
                let msg = Message::from_vec(&buf[..n])?;
                assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 96, 0, 20)]);
            }
        }
    }
    server.shutdown().await
}
