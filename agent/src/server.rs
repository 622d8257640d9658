//! The kubelet's HTTP server (port 10250): `GET /containerLogs/{namespace}/{pod}/{container}`,
//! which the API server proxies `pods/log` (`kubectl logs`) to, and `/healthz`.
//!
//! Plain HTTP, on the node's InternalIP. With a kubelet client token configured, every
//! path but `/healthz` needs `Authorization: Bearer <token>` (compared in constant
//! time), which only the API server holds; pods on the node's bridge can reach the port
//! but not read logs. A real kubelet serves HTTPS and authenticates the API server by
//! its client certificate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::cri::{RuntimeService, RuntimeStatus};
use crate::logs::{self, Follower, LogOptions, LogsError};

/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Idle polls between checks that the container still runs (about 1 s).
const FOLLOW_CHECK_EVERY: u32 = 5;

/// Where the server finds the pods bound to this node (the kubelet's pod manager).
#[async_trait]
pub trait PodSource: Send + Sync {
    /// The pod `namespace/name`, if it exists.
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Pod>, String>;
}

/// Pods read from the API server.
#[derive(Clone)]
pub struct ApiPods(pub kube::Client);

#[async_trait]
impl PodSource for ApiPods {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Pod>, String> {
        let api: Api<Pod> = Api::namespaced(self.0.clone(), namespace);
        api.get_opt(name).await.map_err(|e| format!("failed to get pod {namespace}/{name}: {e}"))
    }
}

/// What the handlers need.
#[derive(Clone)]
pub struct KubeletServer {
    /// The node's config (name, root dir).
    pub config: Arc<Config>,
    /// Pod lookup.
    pub pods: Arc<dyn PodSource>,
    /// To tell whether a followed container still runs.
    pub runtime: Arc<dyn RuntimeService>,
    /// One permit per followed stream (each holds a blocking thread while it lives).
    pub follows: Arc<tokio::sync::Semaphore>,
}

/// Streams followed at once on one node (`kubectl logs -f`); more get 429.
pub const MAX_FOLLOWS: usize = 64;

impl std::fmt::Debug for KubeletServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletServer").field("node", &self.config.node_name).finish()
    }
}

/// The server's routes.
pub fn router(server: KubeletServer) -> Router {
    let token = server.config.kubelet_client_token.clone();
    let api = Router::new()
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route_layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let allowed = authorized(token.as_deref(), req.headers().get(header::AUTHORIZATION));
            async move {
                if allowed {
                    next.run(req).await
                } else {
                    text(StatusCode::UNAUTHORIZED, "Unauthorized")
                }
            }
        }));
    Router::new().route("/healthz", get(|| async { "ok" })).merge(api).with_state(server)
}

/// Whether a request's Authorization header carries the expected bearer token (any
/// request, when no token is configured).
pub fn authorized(expected: Option<&str>, header: Option<&header::HeaderValue>) -> bool {
    let Some(expected) = expected else { return true };
    let Some(given) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    // Constant time over the token's bytes: no early exit on the first difference.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    server: KubeletServer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(server)).with_graceful_shutdown(shutdown).await
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

fn logs_error(e: LogsError) -> Response {
    match e {
        LogsError::Read { .. } => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        _ => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn container_logs(
    State(s): State<KubeletServer>,
    UrlPath((namespace, pod_name, container)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let pod = match s.pods.get(&namespace, &pod_name).await {
        Ok(Some(p)) if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(s.config.node_name.as_str()) => p,
        Ok(_) => return text(StatusCode::NOT_FOUND, format!("pod \"{namespace}/{pod_name}\" does not exist")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if !has_container(&pod, &container) {
        return text(StatusCode::NOT_FOUND, format!("container \"{container}\" not found in pod \"{namespace}/{pod_name}\""));
    }
    let opts = match LogOptions::from_query(&query, chrono::Utc::now()) {
        Ok(o) => o,
        Err(e) => return logs_error(e),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = logs::container_log_dir(&s.config.root_dir, &uid, &container);
    let Some(run) = logs::select_run(&logs::runs(&dir), opts.previous) else {
        return logs_error(no_run_error(&pod, &pod_name, &container, opts.previous));
    };
    let files = logs::run_files(&dir, run);
    let read_opts = opts.clone();
    let (first, follower) = match tokio::task::spawn_blocking(move || logs::read_run(&files, &read_opts)).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return logs_error(e),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("log reader failed: {e}")),
    };
    let headers = [(header::CONTENT_TYPE, "text/plain")];
    if !opts.follow || opts.previous || follower.exhausted() {
        return (headers, first).into_response();
    }
    let Ok(permit) = s.follows.clone().try_acquire_owned() else {
        return text(StatusCode::TOO_MANY_REQUESTS, format!("more than {MAX_FOLLOWS} log streams are followed on this node; try again later"));
    };
    let running = running_check(&s, dir, run, crate::podworker::container_id(&uid, &container));
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        follow_loop(follower, tx, running);
        drop(permit);
    });
    let head = futures::stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(first))]);
    let rest = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) });
    (headers, Body::from_stream(futures::StreamExt::chain(head, rest))).into_response()
}

fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == name)
}

/// The kubelet's error when the run asked for has no log file.
fn no_run_error(pod: &Pod, pod_name: &str, container: &str, previous: bool) -> LogsError {
    if previous {
        return LogsError::NoPrevious { container: container.to_string(), pod: pod_name.to_string() };
    }
    let status = pod.status.as_ref();
    let statuses = status.iter().flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()));
    let reason = statuses
        .filter(|cs| cs.name == container)
        .find_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .unwrap_or_else(|| "ContainerCreating".to_string());
    LogsError::Waiting { container: container.to_string(), pod: pod_name.to_string(), reason }
}

/// A check, run from the follower's blocking thread, that run `run` of the container
/// is still the live one and its process still runs.
fn running_check(s: &KubeletServer, dir: PathBuf, run: u32, id: String) -> impl FnMut() -> bool + Send + 'static {
    let handle = tokio::runtime::Handle::current();
    let runtime = s.runtime.clone();
    move || {
        if logs::runs(&dir).last() != Some(&run) {
            return false;
        }
        match handle.block_on(runtime.container_status(&id)) {
            Ok(state) => matches!(state.status, RuntimeStatus::Running | RuntimeStatus::Created | RuntimeStatus::Creating),
            Err(e) => !e.is_not_found(),
        }
    }
}

/// Sends new output until the container stops, the limit is reached or the client
/// goes away. Runs on a blocking thread; polls every [`FOLLOW_POLL`].
pub fn follow_loop(mut f: Follower, tx: mpsc::Sender<Bytes>, mut running: impl FnMut() -> bool) {
    let mut idle: u32 = 0;
    while !tx.is_closed() && !f.exhausted() {
        match f.poll() {
            Ok(chunk) if !chunk.is_empty() => {
                idle = 0;
                if tx.blocking_send(Bytes::from(chunk)).is_err() {
                    return;
                }
                continue;
            }
            Ok(_) => idle += 1,
            Err(e) => {
                tracing::warn!(error = %e, "log follow stopped");
                return;
            }
        }
        if idle.is_multiple_of(FOLLOW_CHECK_EVERY) && !running() {
            if let Ok(chunk) = f.poll() {
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Bytes::from(chunk));
                }
            }
            return;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
