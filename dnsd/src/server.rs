//! The DNS server of the cluster (the CoreDNS role behind the `kube-dns` Service):
//! hickory-server's UDP and TCP front end with a [`RequestHandler`] that answers
//! from the current [`Records`] snapshot. The snapshot lives in an `ArcSwap`, so the
//! watch task replaces it while queries keep being answered, without locks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::answer::{answer, Answer, Outcome};
use crate::forward::Forwarder;
use crate::records::Records;

/// Idle timeout of a TCP connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection buffer of outgoing TCP responses.
const TCP_RESPONSE_BUFFER: usize = 16;
/// Attempts to find a port free for both UDP and TCP when asked for port 0.
const PORT_ZERO_ATTEMPTS: usize = 20;

/// Errors of the DNS front end.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listening socket could not be bound.
    #[error("failed to bind DNS {proto} socket on {addr}: {source}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server's tasks failed.
    #[error("DNS server on {addr} failed: {reason}")]
    Serve {
        /// The listen address.
        addr: SocketAddr,
        /// hickory's error text.
        reason: String,
    },
}

/// Answers every request from the current snapshot; forwards out-of-zone questions
/// when an upstream is configured, else refuses them.
pub struct DnsHandler {
    records: Arc<ArcSwap<Records>>,
    forwarder: Option<Forwarder>,
}

impl DnsHandler {
    /// A handler over `records`, forwarding out-of-zone names to `upstream` if given.
    pub fn new(records: Arc<ArcSwap<Records>>, upstream: Option<SocketAddr>) -> Self {
        Self {
            records,
            forwarder: upstream.map(Forwarder::new),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return send_error(request, ResponseCode::NotImp, response_handle).await;
        }
        let Ok(info) = request.request_info() else {
            return send_error(request, ResponseCode::FormErr, response_handle).await;
        };
        let query = info.query.original().clone();
        // The guard is dropped before any await: lookups never hold the snapshot.
        let result = answer(&self.records.load(), &query);
        if result.outcome == Outcome::OutOfZone {
            if let Some(forwarder) = &self.forwarder {
                return forwarder.forward(request, response_handle).await;
            }
        }
        send_answer(request, &result, self.forwarder.is_some(), response_handle).await
    }
}

/// The EDNS section of a response to `request` (only when the request had one).
pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    let req = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(req.max_payload().max(512));
    edns.set_version(0);
    Some(edns)
}

async fn send_answer<R: ResponseHandler>(
    request: &Request,
    result: &Answer,
    recursion_available: bool,
    mut response_handle: R,
) -> ResponseInfo {
    let edns = response_edns(request);
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = result.authoritative();
    metadata.response_code = result.response_code();
    metadata.recursion_available = recursion_available;
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        result.answers.iter(),
        result.authority.iter(),
        [],
        [],
    );
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, src = %request.src(), "failed to send DNS response");
            serve_failed(request)
        }
    }
}

pub(crate) async fn send_error<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    mut response_handle: R,
) -> ResponseInfo {
    let edns = response_edns(request);
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref())
        .error_msg(&request.metadata, code);
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, src = %request.src(), "failed to send DNS error response");
            serve_failed(request)
        }
    }
}

pub(crate) fn serve_failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// A bound DNS server (UDP and TCP on the same address), not yet serving.
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    handler: DnsHandler,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen`. With port 0, picks one port free for both.
    pub async fn bind(listen: SocketAddr, handler: DnsHandler) -> Result<Self, ServerError> {
        let attempts = if listen.port() == 0 {
            PORT_ZERO_ATTEMPTS
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(listen)
                .await
                .map_err(|source| ServerError::Bind {
                    proto: "udp",
                    addr: listen,
                    source,
                })?;
            let addr = udp.local_addr().map_err(|source| ServerError::Bind {
                proto: "udp",
                addr: listen,
                source,
            })?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(Self { udp, tcp, handler }),
                Err(source) => {
                    last_error = Some(ServerError::Bind {
                        proto: "tcp",
                        addr,
                        source,
                    })
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ServerError::Bind {
            proto: "tcp",
            addr: listen,
            source: std::io::Error::other("no attempt made"),
        }))
    }

    /// The address both sockets listen on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.udp.local_addr().map_err(|source| ServerError::Bind {
            proto: "udp",
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let addr = self.local_addr()?;
        let mut server = Server::new(self.handler);
        server.register_socket(self.udp);
        server.register_listener(self.tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(%addr, "serving cluster DNS on udp and tcp");
        let token = server.shutdown_token().clone();
        tokio::select! {
            result = server.block_until_done() => {
                return result.map_err(|e| ServerError::Serve { addr, reason: e.to_string() });
            }
            () = shutdown => token.cancel(),
        }
        server
            .block_until_done()
            .await
            .map_err(|e| ServerError::Serve {
                addr,
                reason: e.to_string(),
            })
    }
}
