//! `/metrics` in the Prometheus text format, with kube-apiserver's request metrics:
//! `apiserver_request_total{verb,group,version,resource,subresource,code}` and
//! `apiserver_request_duration_seconds` (a histogram by verb and resource).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds, seconds (a subset of kube-apiserver's).
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0, 2.5, 10.0, 60.0];

/// What a request was, for labelling.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestLabels {
    /// LIST, GET, WATCH, POST, PUT, PATCH, DELETE.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Request counters and latency histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    totals: BTreeMap<(RequestLabels, u16), u64>,
    durations: BTreeMap<RequestLabels, Histogram>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, labels: RequestLabels, code: u16, elapsed: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.totals.entry((labels.clone(), code)).or_default() += 1;
        let h = inner.durations.entry(labels).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, version, resource, subresource and HTTP response code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        for ((l, code), n) in &inner.totals {
            let _ = writeln!(out, "apiserver_request_total{{{},code=\"{code}\"}} {n}", labels(l));
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group, version, resource and subresource.\n");
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for (l, h) in &inner.durations {
            let base = labels(l);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "apiserver_request_duration_seconds_bucket{{{base},le=\"{bound}\"}} {}", h.buckets[i]);
            }
            let _ = writeln!(out, "apiserver_request_duration_seconds_bucket{{{base},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "apiserver_request_duration_seconds_sum{{{base}}} {}", h.sum);
            let _ = writeln!(out, "apiserver_request_duration_seconds_count{{{base}}} {}", h.count);
        }
        out
    }
}

fn labels(l: &RequestLabels) -> String {
    format!(
        "verb=\"{}\",group=\"{}\",version=\"{}\",resource=\"{}\",subresource=\"{}\"",
        l.verb, l.group, l.version, l.resource, l.subresource
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets() {
        let m = Metrics::default();
        let l = RequestLabels { verb: "LIST".into(), group: "".into(), version: "v1".into(), resource: "pods".into(), subresource: "".into() };
        m.observe(l.clone(), 200, Duration::from_millis(3));
        m.observe(l, 200, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains("apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",code=\"200\"} 2"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 2"));
    }
}
