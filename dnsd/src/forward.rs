//! Upstream forwarding for names outside the cluster zone (CoreDNS's `forward .` and
//! `cache` plugins): the client's query is relayed as is to the upstreams in order
//! (by default the node's `/etc/resolv.conf` nameservers) over UDP, retried over TCP
//! when the upstream truncates, and the answer is kept in a bounded cache, positive
//! and negative, for as long as its TTLs allow (RFC 2308 for negative answers).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::cache::{cache_key, Cache};
use crate::wire::{self, code_reply, parse, Rcode, CLASSIC_UDP_SIZE, HEADER_LEN};

/// How long one upstream exchange may take before the next upstream is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest UDP answer accepted from an upstream.
const MAX_UDP_ANSWER: usize = 65535;
/// Default number of cached answers.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Errors talking to upstream servers or reading their list.
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
        reason: &'static str,
    },
    /// The resolv.conf could not be read.
    #[error("failed to read {path}: {source}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The `nameserver` addresses of a resolv.conf (port 53).
pub fn resolv_conf_nameservers(path: &Path) -> Result<Vec<SocketAddr>, ForwardError> {
    let text = std::fs::read_to_string(path).map_err(|source| ForwardError::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_nameservers(&text))
}

/// Parses `nameserver IP` lines (comments and other options ignored).
pub fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Relays queries to upstream resolvers through a cache.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Cache,
}

impl Forwarder {
    /// A forwarder to `upstreams` (tried in order) caching up to `cache_entries` answers.
    pub fn new(upstreams: Vec<SocketAddr>, cache_entries: usize) -> Self {
        Self {
            upstreams,
            cache: Cache::new(cache_entries),
        }
    }

    /// The upstream servers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The cache (for statistics and tests).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Writes the cached answer to `query` into `out`; false on a miss.
    pub fn cached(&self, query: &wire::Query<'_>, tcp: bool, out: &mut Vec<u8>) -> bool {
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            query.udp_limit()
        };
        self.cache.answer(query, limit, out)
    }

    /// Resolves `packet` through the upstreams (caching the answer) and returns the
    /// response for the client: the upstream's answer, or SERVFAIL when every
    /// upstream failed. `None` when the packet is not a query.
    pub async fn resolve(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let query = parse(packet).ok()?;
        let mut out = Vec::new();
        if self.cached(&query, tcp, &mut out) {
            return Some(out);
        }
        for upstream in &self.upstreams {
            match exchange(*upstream, packet, &query).await {
                Ok(reply) => {
                    self.cache.insert(cache_key(&query), &reply);
                    let limit = if tcp {
                        usize::from(u16::MAX)
                    } else {
                        query.udp_limit()
                    };
                    crate::cache::fit_reply(&query, &reply, limit, &mut out);
                    return Some(out);
                }
                Err(error) => tracing::debug!(%error, "upstream failed, trying the next"),
            }
        }
        tracing::warn!(upstreams = ?self.upstreams, "every upstream failed");
        code_reply(&query, Rcode::ServFail, true, &mut out);
        Some(out)
    }
}

/// One exchange with `upstream`: UDP first, TCP when the UDP answer is truncated.
async fn exchange(
    upstream: SocketAddr,
    packet: &[u8],
    query: &wire::Query<'_>,
) -> Result<Vec<u8>, ForwardError> {
    let reply = timed(upstream, exchange_udp(upstream, packet)).await?;
    let reply = if reply.len() > 2 && reply[2] & 0x02 != 0 {
        timed(upstream, exchange_tcp(upstream, packet)).await?
    } else {
        reply
    };
    check_reply(upstream, query, &reply)?;
    Ok(reply)
}

async fn timed(upstream: SocketAddr, exchange: Exchange<'_>) -> Result<Vec<u8>, ForwardError> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| ForwardError::Timeout { upstream })?
}

type Exchange<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, ForwardError>> + Send + 'a>>;

/// An upstream reply must be a response with the query's id and question.
pub fn check_reply(
    upstream: SocketAddr,
    query: &wire::Query<'_>,
    reply: &[u8],
) -> Result<(), ForwardError> {
    let bad = |reason| ForwardError::BadAnswer { upstream, reason };
    if reply.len() < HEADER_LEN || reply[2] & 0x80 == 0 {
        return Err(bad("not a DNS response"));
    }
    if reply[..2] != query.packet[..2] {
        return Err(bad("id does not match the query"));
    }
    let question = reply
        .get(HEADER_LEN..query.question_end)
        .ok_or(bad("question missing"))?;
    if !question.eq_ignore_ascii_case(query.question()) {
        return Err(bad("question does not match the query"));
    }
    Ok(())
}

fn exchange_udp<'a>(upstream: SocketAddr, packet: &'a [u8]) -> Exchange<'a> {
    Box::pin(async move {
        let io = |source| ForwardError::Io {
            upstream,
            proto: "udp",
            source,
        };
        let local: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(upstream).await.map_err(io)?;
        socket.send(packet).await.map_err(io)?;
        let mut buf = vec![0u8; MAX_UDP_ANSWER.max(CLASSIC_UDP_SIZE)];
        let n = socket.recv(&mut buf).await.map_err(io)?;
        buf.truncate(n);
        Ok(buf)
    })
}

fn exchange_tcp<'a>(upstream: SocketAddr, packet: &'a [u8]) -> Exchange<'a> {
    Box::pin(async move {
        let io = |source| ForwardError::Io {
            upstream,
            proto: "tcp",
            source,
        };
        let len = u16::try_from(packet.len()).map_err(|_| ForwardError::BadAnswer {
            upstream,
            reason: "query too long for TCP",
        })?;
        let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(packet);
        stream.write_all(&framed).await.map_err(io)?;
        let answer_len = stream.read_u16().await.map_err(io)?;
        let mut buf = vec![0u8; usize::from(answer_len)];
        stream.read_exact(&mut buf).await.map_err(io)?;
        Ok(buf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_from_resolv_conf() {
        let text = "# c\nsearch default.svc.cluster.local\nnameserver 10.0.0.2\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
        assert_eq!(
            parse_nameservers(text),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
