//! Upstream forwarding for names outside the cluster zone (CoreDNS's `forward .`
//! plugin role): the client's query is relayed as is over UDP, retried over TCP when
//! the upstream truncates, and the upstream's answer is relayed back.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Metadata};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::server::{response_edns, send_error, serve_failed};

/// How long one upstream exchange may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest UDP answer accepted from the upstream.
const MAX_UDP_ANSWER: usize = 4096;

/// Errors talking to the upstream server.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Socket IO with the upstream failed.
    #[error("upstream {upstream} ({proto}): {source}")]
    Io {
        /// The upstream address.
        upstream: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} timed out")]
    Timeout {
        /// The upstream address.
        upstream: SocketAddr,
    },
    /// The upstream's answer did not parse or did not match the query.
    #[error("upstream {upstream} sent a bad answer: {reason}")]
    BadAnswer {
        /// The upstream address.
        upstream: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

/// Relays queries to one upstream resolver.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstream: SocketAddr,
}

impl Forwarder {
    /// A forwarder to `upstream` (e.g. the node's resolver, `IP:53`).
    pub fn new(upstream: SocketAddr) -> Self {
        Self { upstream }
    }

    /// Forwards `request` and sends the upstream's answer (SERVFAIL on failure).
    pub async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
    ) -> ResponseInfo {
        let reply = match self.exchange(request.as_slice(), request.metadata.id).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "forwarding failed");
                return send_error(request, hickory_proto::op::ResponseCode::ServFail, handle)
                    .await;
            }
        };
        let edns = response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.metadata.response_code;
        metadata.recursion_available = reply.metadata.recursion_available;
        metadata.authentic_data = reply.metadata.authentic_data;
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            [],
            reply.additionals.iter(),
        );
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "failed to relay upstream answer");
                serve_failed(request)
            }
        }
    }

    /// One query/answer exchange: UDP first, TCP when the UDP answer is truncated.
    async fn exchange(&self, query: &[u8], id: u16) -> Result<Message, ForwardError> {
        let reply = self.timed(self.exchange_udp(query)).await?;
        let reply = if reply.metadata.truncation {
            self.timed(self.exchange_tcp(query)).await?
        } else {
            reply
        };
        if reply.metadata.id != id {
            return Err(self.bad(format!(
                "id {} does not match query id {id}",
                reply.metadata.id
            )));
        }
        Ok(reply)
    }

    async fn timed<F: std::future::Future<Output = Result<Message, ForwardError>>>(
        &self,
        f: F,
    ) -> Result<Message, ForwardError> {
        tokio::time::timeout(UPSTREAM_TIMEOUT, f)
            .await
            .map_err(|_| ForwardError::Timeout {
                upstream: self.upstream,
            })?
    }

    async fn exchange_udp(&self, query: &[u8]) -> Result<Message, ForwardError> {
        let io = |source| ForwardError::Io {
            upstream: self.upstream,
            proto: "udp",
            source,
        };
        let local: SocketAddr = if self.upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(self.upstream).await.map_err(io)?;
        socket.send(query).await.map_err(io)?;
        let mut buf = vec![0u8; MAX_UDP_ANSWER];
        let n = socket.recv(&mut buf).await.map_err(io)?;
        Message::from_vec(&buf[..n]).map_err(|e| self.bad(e.to_string()))
    }

    async fn exchange_tcp(&self, query: &[u8]) -> Result<Message, ForwardError> {
        let io = |source| ForwardError::Io {
            upstream: self.upstream,
            proto: "tcp",
            source,
        };
        let len = u16::try_from(query.len()).map_err(|_| self.bad("query too long".into()))?;
        let mut stream = TcpStream::connect(self.upstream).await.map_err(io)?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(io)?;
        let answer_len = stream.read_u16().await.map_err(io)?;
        let mut buf = vec![0u8; usize::from(answer_len)];
        stream.read_exact(&mut buf).await.map_err(io)?;
        Message::from_vec(&buf).map_err(|e| self.bad(e.to_string()))
    }

    fn bad(&self, reason: String) -> ForwardError {
        ForwardError::BadAnswer {
            upstream: self.upstream,
            reason,
        }
    }
}
