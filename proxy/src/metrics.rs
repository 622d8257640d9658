//! kube-proxy's `/metrics` and `/healthz` (its metrics/healthz server on
//! `--metrics-bind-address`): a sync duration histogram, the number of rules in the
//! desired ruleset and the time of the last successful sync, in Prometheus text
//! format; `/healthz` answers 500 once the last successful sync (or the start, before
//! any) is older than twice the sync period.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// Upper bounds (seconds) of the sync duration histogram buckets (kube-proxy's
/// exponential buckets from 1 ms).
pub const BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];

/// Failures of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("failed to listen on {addr} for /metrics: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Inner {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    rules: usize,
    last_success: Option<(Instant, SystemTime)>,
    started: Instant,
}

/// Sync metrics shared by the sync loop and the HTTP server.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    sync_period: Duration,
}

impl Metrics {
    /// Fresh metrics; healthz allows `2 × sync_period` between successful syncs.
    pub fn new(sync_period: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                counts: [0; BUCKETS.len()],
                count: 0,
                sum: 0.0,
                rules: 0,
                last_success: None,
                started: Instant::now(),
            })),
            sync_period,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one sync attempt of `took`; a success also records the rule count.
    pub fn observe(&self, took: Duration, success: Option<usize>) {
        let mut m = self.lock();
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                m.counts[i] += 1;
            }
        }
        m.count += 1;
        m.sum += secs;
        if let Some(rules) = success {
            m.rules = rules;
            m.last_success = Some((Instant::now(), SystemTime::now()));
        }
    }

    /// True while the last successful sync (or the start) is recent enough.
    pub fn healthy_at(&self, now: Instant) -> bool {
        let m = self.lock();
        let since = m.last_success.map_or(m.started, |(i, _)| i);
        now.saturating_duration_since(since) <= self.sync_period * 2
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let h = "kubeproxy_sync_proxy_rules_duration_seconds";
        let _ = writeln!(out, "# HELP {h} SyncProxyRules latency in seconds");
        let _ = writeln!(out, "# TYPE {h} histogram");
        for (le, n) in BUCKETS.iter().zip(m.counts) {
            let _ = writeln!(out, "{h}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{h}_bucket{{le=\"+Inf\"}} {}", m.count);
        let _ = writeln!(out, "{h}_sum {}", m.sum);
        let _ = writeln!(out, "{h}_count {}", m.count);
        let r = "kubeproxy_sync_proxy_rules_iptables_total";
        let _ = writeln!(
            out,
            "# HELP {r} Total number of iptables rules owned by kube-proxy"
        );
        let _ = writeln!(out, "# TYPE {r} gauge");
        let _ = writeln!(out, "{r} {}", m.rules);
        let t = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {t} The last time proxy rules were successfully synced"
        );
        let _ = writeln!(out, "# TYPE {t} gauge");
        let ts = m
            .last_success
            .and_then(|(_, s)| s.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(out, "{t} {ts:.3}");
        out
    }
}

async fn metrics(State(m): State<Metrics>) -> String {
    m.render()
}

async fn healthz(State(m): State<Metrics>) -> (StatusCode, &'static str) {
    if m.healthy_at(Instant::now()) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "proxy rules are not being synced",
        )
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    m: Metrics,
) -> Result<impl std::future::Future<Output = ()>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Listen { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(m);
    Ok(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "metrics server stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_cumulatively() {
        let m = Metrics::new(Duration::from_secs(30));
        m.observe(Duration::from_millis(3), Some(42));
        m.observe(Duration::from_millis(300), None);
        let text = m.render();
        assert!(text.contains("_bucket{le=\"0.002\"} 0\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.004\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.512\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("_count 2\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_iptables_total 42\n"));
        assert!(!text.contains("last_timestamp_seconds 0.000"));
    }

    #[test]
    fn healthz_goes_bad_after_two_sync_periods() {
        let m = Metrics::new(Duration::from_secs(30));
        let now = Instant::now();
        assert!(m.healthy_at(now));
        assert!(!m.healthy_at(now + Duration::from_secs(61)));
        m.observe(Duration::from_millis(1), Some(1));
        let synced = Instant::now();
        assert!(m.healthy_at(synced + Duration::from_secs(59)));
        assert!(!m.healthy_at(synced + Duration::from_secs(61)));
    }
}
