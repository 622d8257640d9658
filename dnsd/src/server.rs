//! The DNS server of the cluster (the CoreDNS role behind the `kube-dns` Service).
//!
//! UDP is served by several worker threads, each on its own `SO_REUSEPORT` socket
//! bound to the same address (the kernel spreads clients over them), each batching
//! with `recvmmsg`/`sendmmsg` over preallocated buffers (`crate::udp`); TCP (RFC 7766
//! framing) by a tokio task per connection. Every request is answered by
//! [`crate::wire::respond`] from the current [`Records`] snapshot, which lives in an
//! `ArcSwap`: the watch task replaces it while queries keep being answered, without
//! locks. Names outside the zone go to the [`Forwarder`]: a cache hit is answered on
//! the worker thread, a miss on the tokio runtime.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::forward::Forwarder;
use crate::records::Records;
use crate::spin::{SpinGate, DEFAULT_UDP_SPIN_US};
use crate::udp;
use crate::wire::{self, code_reply, Action, Rcode};

/// Idle timeout of a TCP connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TCP connections served at once.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// How often an idle UDP worker checks for shutdown.
const UDP_POLL: Duration = Duration::from_millis(100);
/// Attempts to find a port free for both UDP and TCP when asked for port 0.
const PORT_ZERO_ATTEMPTS: usize = 20;
/// Most forwarded UDP queries waiting for an upstream at once; beyond, queries are
/// dropped (the client retries) instead of piling up tasks.
const MAX_INFLIGHT_FORWARDS: usize = 4096;
/// Kernel receive buffer asked for each UDP socket.
const SOCKET_RECV_BUFFER: usize = 4 << 20;

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
    /// A UDP worker thread could not be started.
    #[error("failed to start UDP worker for {addr}: {source}")]
    Worker {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The serving task panicked or was cancelled.
    #[error("DNS server task ended abnormally: {0}")]
    Stopped(String),
}

/// What a handled request needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The response is in the output buffer.
    Reply,
    /// Send nothing.
    Drop,
    /// Out of zone and not cached: resolve with [`DnsHandler::forward`].
    Forward,
}

/// Answers requests from the current snapshot; forwards out-of-zone questions when
/// upstreams are configured, else refuses them.
pub struct DnsHandler {
    records: Arc<ArcSwap<Records>>,
    forwarder: Option<Arc<Forwarder>>,
    inflight: Arc<AtomicUsize>,
}

/// One forwarded query in flight; releases its slot on drop.
pub(crate) struct Inflight(Arc<AtomicUsize>);

impl Inflight {
    /// A slot, unless `MAX_INFLIGHT_FORWARDS` are taken.
    pub(crate) fn acquire(counter: &Arc<AtomicUsize>) -> Option<Self> {
        if counter.fetch_add(1, Ordering::Relaxed) >= MAX_INFLIGHT_FORWARDS {
            counter.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DnsHandler {
    /// A handler over `records`, forwarding out-of-zone names with `forwarder` if given.
    pub fn new(records: Arc<ArcSwap<Records>>, forwarder: Option<Forwarder>) -> Self {
        Self {
            records,
            forwarder: forwarder.map(Arc::new),
            inflight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Answers `packet` synchronously into `out` when possible (zone answers, errors,
    /// cached forwards).
    pub fn handle(&self, packet: &[u8], tcp: bool, out: &mut Vec<u8>) -> Handled {
        let recursion = self.forwarder.is_some();
        let records = self.records.load();
        match wire::respond(&records, packet, out, tcp, recursion) {
            Action::Reply => Handled::Reply,
            Action::Drop => Handled::Drop,
            Action::Forward(query) => match &self.forwarder {
                Some(forwarder) if forwarder.cached(&query, tcp, out) => Handled::Reply,
                Some(_) => Handled::Forward,
                None => {
                    code_reply(&query, Rcode::Refused, false, out);
                    Handled::Reply
                }
            },
        }
    }

    /// Resolves an out-of-zone `packet` upstream (after [`Handled::Forward`]).
    pub async fn forward(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        self.forwarder.as_ref()?.resolve(packet, tcp).await
    }

    pub(crate) fn forwarder(&self) -> Option<Arc<Forwarder>> {
        self.forwarder.clone()
    }

    /// The count of forwarded UDP queries in flight.
    pub(crate) fn inflight(&self) -> &Arc<AtomicUsize> {
        &self.inflight
    }
}

/// A bound DNS server (UDP and TCP on the same address), not yet serving.
pub struct DnsServer {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
    addr: SocketAddr,
    handler: Arc<DnsHandler>,
    udp_spin: Duration,
}

impl DnsServer {
    /// Binds one UDP socket per worker and a TCP listener on `listen`. With port 0,
    /// picks one port free for both.
    pub async fn bind(
        listen: SocketAddr,
        workers: usize,
        handler: DnsHandler,
    ) -> Result<Self, ServerError> {
        let attempts = if listen.port() == 0 {
            PORT_ZERO_ATTEMPTS
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let first = reuseport_udp(listen)?;
            let addr = first.local_addr().map_err(|source| ServerError::Bind {
                proto: "udp",
                addr: listen,
                source,
            })?;
            let tcp = match TcpListener::bind(addr).await {
                Ok(tcp) => tcp,
                Err(source) => {
                    last_error = Some(ServerError::Bind {
                        proto: "tcp",
                        addr,
                        source,
                    });
                    continue;
                }
            };
            let mut udp = vec![first];
            for _ in 1..workers.max(1) {
                udp.push(reuseport_udp(addr)?);
            }
            return Ok(Self {
                udp,
                tcp,
                addr,
                handler: Arc::new(handler),
                udp_spin: Duration::from_micros(DEFAULT_UDP_SPIN_US),
            });
        }
        Err(last_error.unwrap_or_else(|| ServerError::Bind {
            proto: "tcp",
            addr: listen,
            source: std::io::Error::other("no attempt made"),
        }))
    }

    /// Sets how long a UDP worker may busy-poll for the next datagram under dense
    /// traffic before blocking (default [`DEFAULT_UDP_SPIN_US`] µs; zero: never).
    #[must_use]
    pub fn with_udp_spin(mut self, budget: Duration) -> Self {
        self.udp_spin = budget;
        self
    }

    /// The address both protocols listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops the workers.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let addr = self.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let gate = Arc::new(SpinGate::new(self.udp_spin));
        let sockets: Arc<[Arc<UdpSocket>]> = self.udp.into_iter().map(Arc::new).collect();
        let mut threads = Vec::new();
        for i in 0..sockets.len() {
            let (sockets, handler) = (sockets.clone(), self.handler.clone());
            let (gate, stop, runtime) = (gate.clone(), stop.clone(), runtime.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dnsd-udp-{i}"))
                .spawn(move || udp::worker(i, sockets, handler, gate, stop, runtime))
                .map_err(|source| ServerError::Worker { addr, source })?;
            threads.push(thread);
        }
        tracing::info!(%addr, udp_workers = threads.len(), udp_spin = ?self.udp_spin,
            "serving cluster DNS on udp and tcp");
        tokio::select! {
            () = tcp_accept(self.tcp, self.handler.clone()) => {}
            () = shutdown => {}
        }
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        Ok(())
    }
}

/// A UDP socket with SO_REUSEPORT bound to `addr`, blocking with a read timeout.
fn reuseport_udp(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    let err = |source| ServerError::Bind {
        proto: "udp",
        addr,
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    // A smaller buffer than asked is fine: the kernel caps it at rmem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_RECV_BUFFER);
    socket.bind(&addr.into()).map_err(err)?;
    socket.set_read_timeout(Some(UDP_POLL)).map_err(err)?;
    Ok(socket.into())
}

async fn tcp_accept(listener: TcpListener, handler: Arc<DnsHandler>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "tcp accept failed");
                tokio::time::sleep(UDP_POLL).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many DNS TCP connections, closing");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(error) = tcp_connection(stream, &handler).await {
                tracing::debug!(%error, %peer, "dns tcp connection ended");
            }
            drop(permit);
        });
    }
}

/// Serves length-prefixed queries on one connection until EOF or idle timeout.
async fn tcp_connection(mut stream: TcpStream, handler: &DnsHandler) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_TIMEOUT, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        buf.resize(len, 0);
        tokio::time::timeout(TCP_TIMEOUT, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let reply = match handler.handle(&buf, true, &mut out) {
            Handled::Reply => std::mem::take(&mut out),
            Handled::Drop => return Ok(()),
            Handled::Forward => match handler.forward(&buf, true).await {
                Some(reply) => reply,
                None => return Ok(()),
            },
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
        out = reply;
    }
}
