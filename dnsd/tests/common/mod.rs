//! Shared helpers of dnsd's integration tests: an in-process minion-apiserver on
//! 127.0.0.1:0, kubeconfigs, free ports, and `dig` with its output parsed.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts minion-apiserver in-process on 127.0.0.1:0; returns its port and a stopper.
pub async fn start_apiserver(dir: &Path) -> (u16, tokio::sync::oneshot::Sender<()>) {
    minion_apiserver::testing::start_local(dir).await.expect("start the API server")
}

/// A kubeconfig for http://127.0.0.1:`port`.
pub fn write_kubeconfig(dir: &Path, port: u16) -> PathBuf {
    minion_apiserver::testing::write_kubeconfig(dir, port).expect("write a kubeconfig")
}

/// A port free for UDP and TCP on `ip` (probe; a small race is accepted).
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// The parts of dig's output the tests assert on.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub raw: String,
}

impl Dig {
    /// The answer's RDATA, sorted.
    pub fn data(&self) -> Vec<String> {
        let mut d: Vec<String> = self.answer.iter().map(|r| r.data.clone()).collect();
        d.sort();
        d
    }
}

/// Runs `dig @addr -p port +time=2 +tries=1 ARGS` (bounded) and parses it.
pub fn dig(addr: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig (bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

fn parse_dig(text: &str) -> Dig {
    let mut dig = Dig {
        raw: text.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if line.starts_with(";; ") && line.ends_with("SECTION:") {
            section = if line.contains("ANSWER") {
                "answer"
            } else if line.contains("AUTHORITY") {
                "authority"
            } else {
                "other"
            };
            continue;
        }
        if line.is_empty() || line.starts_with(';') {
            if line.is_empty() {
                section = "";
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 {
            continue;
        }
        let rr = Rr {
            name: fields[0].to_string(),
            ttl: fields[1].parse().unwrap_or(u32::MAX),
            rtype: fields[3].to_string(),
            data: fields[4..].join(" "),
        };
        match section {
            "answer" => dig.answer.push(rr),
            "authority" => dig.authority.push(rr),
            _ => {}
        }
    }
    dig
}

/// Polls `check` every 50 ms until true or `limit` passes; returns the time taken.
pub async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// [`dig`] on a blocking thread.
pub async fn adig(addr: SocketAddr, args: &[&str]) -> Dig {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dig(addr, &refs)
    })
    .await
    .expect("dig task")
}
