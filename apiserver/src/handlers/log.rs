//! `GET pods/<name>/log` (`kubectl logs`), as kube-apiserver serves it: validate the
//! request against the Pod (container chosen or defaulted, pod scheduled), find the
//! kubelet of the pod's node (its InternalIP and `status.daemonEndpoints.kubeletEndpoint`
//! port) and proxy `GET /containerLogs/<ns>/<pod>/<container>?...` to it, streaming the
//! body as it comes (`follow=true` stays open chunk by chunk).
//!
//! The kubelet endpoint is plain HTTP: minion's kubelet listens on the node's address
//! only (in the lab, inside the node's network namespace); a real one is HTTPS with the
//! API server authenticated by a client certificate.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Req, Target};
use crate::error::ApiError;
use crate::server::AppState;

/// The kubelet's port when the Node does not publish one.
pub const DEFAULT_KUBELET_PORT: u16 = minion_api::KUBELET_PORT;
/// Bound on reaching the kubelet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the kubelet's response head (the body may then stream for long).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on an error body read from the kubelet.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// `PodLogOptions` fields passed on to the kubelet.
const FORWARDED: &[&str] = &["follow", "previous", "tailLines", "timestamps", "sinceSeconds", "sinceTime", "limitBytes"];

/// Serves `pods/<name>/log`.
pub async fn serve(app: &Arc<AppState>, req: &Req, target: &Target) -> Result<Response, ApiError> {
    let pod = app
        .db
        .get(&target.key())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found("pods", target.name()))?;
    let container = choose_container(&pod, target.name(), req.param("container").unwrap_or(""))?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {} does not have a host assigned", target.name())));
    }
    let (host, port) = kubelet_address(app, node).await?;
    let path = format!(
        "/containerLogs/{}/{}/{}{}",
        target.namespace.as_deref().unwrap_or("default"),
        target.name(),
        container,
        forwarded_query(req)
    );
    proxy(&host, port, &path, app.kubelet_token.as_deref()).await
}

/// The names in kube-apiserver's order: init containers, then containers.
fn container_names(pod: &Value) -> (Vec<&str>, Vec<&str>) {
    let names = |key: &str| -> Vec<&str> {
        pod["spec"][key].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
    };
    (names("initContainers"), names("containers"))
}

/// kube-apiserver's `validateContainer`: default the only container, else require one
/// of the pod's.
pub fn choose_container(pod: &Value, pod_name: &str, asked: &str) -> Result<String, ApiError> {
    let (init, main) = container_names(pod);
    if !asked.is_empty() {
        if init.iter().chain(&main).any(|n| *n == asked) {
            return Ok(asked.to_string());
        }
        return Err(ApiError::bad_request(format!("container {asked} is not valid for pod {pod_name}")));
    }
    match main.as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(ApiError::bad_request(format!("pod {pod_name} does not have a container"))),
        _ => {
            let all: Vec<&str> = init.iter().chain(&main).copied().collect();
            Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                all.join(" ")
            )))
        }
    }
}

/// The node's InternalIP (else ExternalIP, else Hostname) and kubelet port.
async fn kubelet_address(app: &Arc<AppState>, node: &str) -> Result<(String, u16), ApiError> {
    let key = crate::resources::find("", "nodes").map(|r| r.key(None, node)).unwrap_or_default();
    let found = app.db.get(&key).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(obj) = found else {
        return Err(ApiError::internal(format!("nodes \"{node}\" not found")));
    };
    let addresses = obj["status"]["addresses"].as_array().cloned().unwrap_or_default();
    let by_type = |t: &str| addresses.iter().find(|a| a["type"] == t).and_then(|a| a["address"].as_str()).map(String::from);
    let host = by_type("InternalIP")
        .or_else(|| by_type("ExternalIP"))
        .or_else(|| by_type("Hostname"))
        .ok_or_else(|| ApiError::internal(format!("node {node} has no address to reach its kubelet")))?;
    let port = obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((host, port))
}

/// `?k=v&...` of the forwarded options, percent-encoded.
fn forwarded_query(req: &Req) -> String {
    let pairs: Vec<String> = FORWARDED
        .iter()
        .filter_map(|k| req.param(k).map(|v| format!("{k}={}", encode(v))))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// GETs `path` from the kubelet at `host:port`; a 2xx body streams through as
/// text/plain, anything else becomes a Status carrying the kubelet's message.
async fn proxy(host: &str, port: u16, path: &str, token: Option<&str>) -> Result<Response, ApiError> {
    let addr = host_port(host, port);
    let url = format!("http://{addr}{path}");
    let unreachable = |why: String| {
        let mut e = ApiError::internal(format!("Get \"{url}\": dial tcp {addr}: {why}"));
        e.code = 503;
        e.reason = "ServiceUnavailable";
        e
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable(format!("connect: {e}"))),
        Err(_) => return Err(unreachable(format!("i/o timeout after {CONNECT_TIMEOUT:?}"))),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "kubelet log connection ended");
        }
    });
    let mut request = http::Request::get(path).header(header::HOST, addr.as_str());
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = match tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(ApiError::internal(format!("Get \"{url}\": {e}"))),
        Err(_) => return Err(ApiError::internal(format!("Get \"{url}\": no response within {HEAD_TIMEOUT:?}"))),
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(kubelet_error(status, resp.into_body()).await);
    }
    let body = Body::new(resp.into_body());
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// kube-apiserver's generic response check: the kubelet's text as a Status.
async fn kubelet_error(status: StatusCode, body: hyper::body::Incoming) -> ApiError {
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    let text = match tokio::time::timeout(HEAD_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => String::from_utf8_lossy(&c.to_bytes()).trim().to_string(),
        _ => String::new(),
    };
    let mut e = ApiError::internal(if text.is_empty() { format!("the kubelet answered {status}") } else { text });
    e.code = status.as_u16();
    e.reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(init: &[&str], main: &[&str]) -> Value {
        let list = |names: &[&str]| names.iter().map(|n| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>();
        json!({"spec": {"initContainers": list(init), "containers": list(main)}})
    }

    #[test]
    fn container_choice_like_kube_apiserver() {
        assert_eq!(choose_container(&pod(&[], &["a"]), "p", "").unwrap(), "a");
        assert_eq!(choose_container(&pod(&["i"], &["a", "b"]), "p", "b").unwrap(), "b");
        assert_eq!(choose_container(&pod(&["i"], &["a", "b"]), "p", "i").unwrap(), "i");
        let e = choose_container(&pod(&[], &["a", "b"]), "p", "").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "a container name must be specified for pod p, choose one of: [a b]"));
        let e = choose_container(&pod(&["i"], &["a", "b"]), "p", "").unwrap_err();
        assert!(e.message.ends_with("choose one of: [i a b]"), "{}", e.message);
        let e = choose_container(&pod(&[], &["a"]), "p", "zz").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "container zz is not valid for pod p"));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("2026-01-02T03:04:05+01:00"), "2026-01-02T03%3A04%3A05%2B01%3A00");
        assert_eq!(host_port("10.0.0.1", 10250), "10.0.0.1:10250");
        assert_eq!(host_port("fd00::1", 1), "[fd00::1]:1");
    }
}
