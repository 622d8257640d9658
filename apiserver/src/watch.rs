//! WATCH: a chunked stream of newline-delimited `{"type","object"}` events
//! (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) replayed from the store's history and
//! then live; selectors filter, and an object that stops matching is sent as DELETED.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::handlers::{read::Filter, Req, Target};
use crate::resources::ResourceInfo;
use crate::server::AppState;
use crate::store::{Event, EventType, Revision, StoreError, Subscription};
use crate::table;

/// Default watch length when the client gives no timeoutSeconds.
const DEFAULT_TIMEOUT_SECS: u64 = 1800;
/// Interval between BOOKMARK events when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

type Chunk = Result<Bytes, std::io::Error>;

/// How one watch encodes its events.
#[derive(Debug, Clone)]
struct Encoder {
    res: &'static ResourceInfo,
    prefix: String,
    filter: Filter,
    table: bool,
    include: String,
}

/// Serves `?watch=true` on a collection.
pub async fn serve(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let filter = Filter::from_req(req)?;
    let from: Option<Revision> = match req.param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?),
    };
    let timeout = match req.param("timeoutSeconds") {
        Some(s) => s.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        None => DEFAULT_TIMEOUT_SECS,
    };
    let enc = Encoder {
        res: target.res,
        prefix: target.res.prefix(target.namespace.as_deref()),
        filter,
        table: req.wants_table(),
        include: req.param("includeObject").unwrap_or("").to_string(),
    };
    let opts = PumpOptions {
        bookmarks: req.param("allowWatchBookmarks") == Some("true"),
        initial_end: req.param("sendInitialEvents") == Some("true"),
        timeout: Duration::from_secs(timeout),
    };
    let (tx, rx) = mpsc::channel::<Chunk>(256);
    match app.db.watch(&enc.prefix, from).await {
        Ok(sub) => {
            tokio::spawn(pump(sub, enc, opts, tx, app.shutdown.clone()));
        }
        Err(StoreError::Expired { requested, oldest }) => {
            let status = ApiError::expired(format!("too old resource version: {requested} ({oldest})")).status();
            let _ = tx.try_send(Ok(line(&json!({"type": "ERROR", "object": status}))));
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    }
    let body = Body::from_stream(ReceiverStream::new(rx));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Clone, Copy)]
struct PumpOptions {
    bookmarks: bool,
    initial_end: bool,
    timeout: Duration,
}

fn line(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn pump(mut sub: Subscription, enc: Encoder, opts: PumpOptions, tx: mpsc::Sender<Chunk>, mut stop: watch::Receiver<bool>) {
    let mut last = sub.revision;
    for ev in std::mem::take(&mut sub.backlog) {
        last = last.max(ev.rev);
        if let Some(msg) = enc.encode(&ev) {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    }
    if opts.initial_end && tx.send(Ok(enc.bookmark(last, true))).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(opts.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    loop {
        let msg = tokio::select! {
            _ = &mut deadline => return,
            _ = stop.changed() => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if opts.bookmarks => Some(enc.bookmark(last, false)),
            got = sub.rx.recv() => match got {
                Ok(ev) => {
                    last = last.max(ev.rev);
                    enc.encode(&ev)
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, prefix = %enc.prefix, "watcher fell behind; closing");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Some(msg) = msg {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    }
}

impl Encoder {
    /// The event to send for a store event, if this watch sees it.
    fn encode(&self, ev: &Event) -> Option<Bytes> {
        if !ev.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.filter.matches(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        let kind = match ev.kind {
            EventType::Added if now => "ADDED",
            EventType::Deleted if now => "DELETED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            _ => return None,
        };
        if !self.table {
            let object = ev.object_json();
            let mut out = Vec::with_capacity(object.len() + 32);
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(kind.as_bytes());
            out.extend_from_slice(b"\",\"object\":");
            out.extend_from_slice(object);
            out.extend_from_slice(b"}\n");
            return Some(Bytes::from(out));
        }
        Some(line(&json!({"type": kind, "object": self.object(&ev.object)})))
    }

    fn object(&self, obj: &Value) -> Value {
        if !self.table {
            return obj.clone();
        }
        let rv = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
        table::render(self.res, std::slice::from_ref(obj), rv, &self.include)
    }

    fn bookmark(&self, rev: Revision, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta});
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use minion_api::selector::Selector;

    fn enc(fields: &str) -> Encoder {
        Encoder {
            res: find("", "pods").unwrap(),
            prefix: "/registry/pods/default/".into(),
            filter: Filter { labels: Selector::parse_labels("app=web").unwrap(), fields: Selector::parse_fields(fields).unwrap() },
            table: false,
            include: String::new(),
        }
    }

    fn pod(node: &str) -> Value {
        json!({"metadata":{"name":"p","labels":{"app":"web"},"resourceVersion":"5"},"spec":{"nodeName":node}})
    }

    fn event(kind: EventType, object: Value, prev: Option<Value>) -> Event {
        Event::new(5, kind, "/registry/pods/default/p".into(), object, prev)
    }

    fn ty(b: Option<Bytes>) -> Option<String> {
        b.map(|b| serde_json::from_slice::<Value>(&b).unwrap()["type"].as_str().unwrap().to_string())
    }

    #[test]
    fn selector_transitions() {
        let e = enc("spec.nodeName=n1");
        assert_eq!(ty(e.encode(&event(EventType::Added, pod("n1"), None))).as_deref(), Some("ADDED"));
        assert_eq!(ty(e.encode(&event(EventType::Added, pod("n2"), None))), None);
        assert_eq!(ty(e.encode(&event(EventType::Modified, pod("n1"), Some(pod(""))))).as_deref(), Some("ADDED"));
        assert_eq!(ty(e.encode(&event(EventType::Modified, pod("n2"), Some(pod("n1"))))).as_deref(), Some("DELETED"));
        assert_eq!(ty(e.encode(&event(EventType::Modified, pod("n1"), Some(pod("n1"))))).as_deref(), Some("MODIFIED"));
        assert_eq!(ty(e.encode(&event(EventType::Deleted, pod("n1"), Some(pod("n1"))))).as_deref(), Some("DELETED"));
        let mut other_ns = event(EventType::Added, pod("n1"), None);
        other_ns.key = "/registry/pods/kube-system/p".into();
        assert_eq!(ty(e.encode(&other_ns)), None);
    }

    #[test]
    fn table_events_and_bookmarks() {
        let mut e = enc("");
        e.table = true;
        let b = e.encode(&event(EventType::Added, pod("n1"), None)).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["object"]["kind"], "Table");
        assert_eq!(v["object"]["rows"].as_array().unwrap().len(), 1);
        let v: Value = serde_json::from_slice(&e.bookmark(9, true)).unwrap();
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "9");
    }
}
