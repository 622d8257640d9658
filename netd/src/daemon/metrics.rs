//! `/healthz` and `/metrics` of the node network daemon: plain-text Prometheus
//! counters over a tiny HTTP/1.0 server (one request per connection).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The daemon's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Route reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that failed.
    pub reconcile_errors: AtomicU64,
    /// Routes added.
    pub routes_added: AtomicU64,
    /// Routes deleted.
    pub routes_deleted: AtomicU64,
    /// Our routes installed now.
    pub routes_installed: AtomicU64,
    /// Allocations released by the start-up GC.
    pub ipam_gc_released: AtomicU64,
    /// Stale pod veths (down, no allocation) removed by the sweep.
    pub stale_veths_removed: AtomicU64,
    /// Times the CNI config file was (re)written.
    pub cni_config_writes: AtomicU64,
    /// Node watch events seen.
    pub node_events: AtomicU64,
    /// True once the first reconcile succeeded.
    pub ready: AtomicBool,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64, &str); 9] = [
            ("minion_netd_reconciles_total", "counter", &self.reconciles, "Route reconciles run."),
            ("minion_netd_reconcile_errors_total", "counter", &self.reconcile_errors, "Route reconciles that failed."),
            ("minion_netd_routes_added_total", "counter", &self.routes_added, "Pod routes added."),
            ("minion_netd_routes_deleted_total", "counter", &self.routes_deleted, "Pod routes deleted."),
            ("minion_netd_routes_installed", "gauge", &self.routes_installed, "Pod routes to other nodes installed now."),
            ("minion_netd_ipam_gc_released_total", "counter", &self.ipam_gc_released, "IP allocations released by garbage collection."),
            ("minion_netd_stale_veths_removed_total", "counter", &self.stale_veths_removed, "Stale pod veths (down, no IP allocation) removed."),
            ("minion_netd_cni_config_writes_total", "counter", &self.cni_config_writes, "Times the CNI config file was written."),
            ("minion_netd_node_events_total", "counter", &self.node_events, "Node watch events seen."),
        ];
        let mut out = String::new();
        for (name, kind, v, help) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}

fn response(metrics: &Metrics, request: &str) -> (u16, String) {
    let path = request.split_whitespace().nth(1).unwrap_or("");
    match path {
        "/healthz" if metrics.ready.load(Ordering::Relaxed) => (200, "ok".into()),
        "/healthz" => (503, "not synced yet".into()),
        "/metrics" => (200, metrics.render()),
        _ => (404, "not found".into()),
    }
}

async fn serve_one(mut s: TcpStream, metrics: Arc<Metrics>) {
    let mut buf = vec![0u8; 2048];
    let n = match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    let (code, body) = response(&metrics, &String::from_utf8_lossy(&buf[..n]));
    let reason = match code { 200 => "OK", 503 => "Service Unavailable", _ => "Not Found" };
    let head = format!(
        "HTTP/1.0 {code} {reason}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
}

/// Serves until the task is dropped/aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(serve_one(s, metrics.clone()));
            }
            Err(error) => tracing::warn!(%error, "metrics accept failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_and_metrics() {
        let m = Metrics::default();
        assert_eq!(response(&m, "GET /healthz HTTP/1.0\r\n").0, 503);
        m.ready.store(true, Ordering::Relaxed);
        m.routes_added.fetch_add(2, Ordering::Relaxed);
        assert_eq!(response(&m, "GET /healthz HTTP/1.1\r\n"), (200, "ok".into()));
        let (code, body) = response(&m, "GET /metrics HTTP/1.1\r\n");
        assert_eq!(code, 200);
        assert!(body.contains("\nminion_netd_routes_added_total 2\n"), "{body}");
        assert!(body.contains("# TYPE minion_netd_routes_installed gauge"));
        assert_eq!(response(&m, "GET /x HTTP/1.1\r\n").0, 404);
    }
}
