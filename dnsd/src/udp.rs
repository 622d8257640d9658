//! The UDP fast path of cluster DNS (what answers most queries sent to the `kube-dns`
//! Service): a few plain threads, each with its own `SO_REUSEPORT` socket, each
//! looping `recvmmsg` → [`DnsHandler::handle`] per datagram into preallocated buffers
//! → one `sendmmsg` for the batch's replies. `MSG_WAITFORONE` makes the receive
//! return as soon as one datagram is there (it never waits to fill a batch) and take
//! whatever else is already queued, so a burst costs two system calls and a quiet
//! socket no added latency. Under dense traffic one worker at a time busy-polls all
//! sockets for a short budget before blocking (`crate::spin`), so a datagram arriving
//! between batches does not wait for a thread wakeup. Out-of-zone misses are handed to the tokio runtime
//! ([`DnsHandler::forward`]) without blocking the loop.
//!
//! `recvmmsg`/`sendmmsg` are called through libc: the headers
//! point into buffers this module owns and never moves.

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::{DnsHandler, Handled, Inflight};
use crate::spin::{Density, SpinGate};
use crate::wire;

/// Most datagrams taken by one `recvmmsg`.
const BATCH: usize = 32;
/// Receive buffer of one datagram (the largest UDP message).
const UDP_BUFFER: usize = 65535;
/// `sockaddr_storage` size, as the kernel wants it.
const ADDR_LEN: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Serves `sockets[index]` until `stop` is set (checked at least every read timeout
/// of the socket). While traffic is dense and no other worker spins, polls every
/// socket of the server for up to the gate's budget before blocking (`crate::spin`).
pub(crate) fn worker(
    index: usize,
    sockets: Arc<[Arc<UdpSocket>]>,
    handler: Arc<DnsHandler>,
    gate: Arc<SpinGate>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) {
    let mut batch = Batch::new();
    let mut density = Density::idle();
    let (mut marked_at, mut marked_total) = (Instant::now(), gate.total());
    while !stop.load(Ordering::Relaxed) {
        let polled = gate
            .try_spin(&density)
            .and_then(|_spinning| poll(&sockets, index, &mut batch, gate.budget(), &stop));
        let (from, received) = match polled {
            Some(polled) => polled,
            None => match batch.recv(sockets[index].as_raw_fd(), libc::MSG_WAITFORONE) {
                Ok(received) => (index, received),
                Err(error) => {
                    if !quiet(&error) {
                        tracing::debug!(%error, "udp receive failed");
                    }
                    (index, 0)
                }
            },
        };
        gate.received(received);
        serve_batch(&mut batch, received, &sockets[from], &handler, &runtime);
        let (now, total) = (Instant::now(), gate.total());
        density.observe(now - marked_at, total - marked_total);
        (marked_at, marked_total) = (now, total);
    }
}

/// A receive error that only means "nothing yet" (timeout, signal).
fn quiet(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Polls every socket without blocking, starting with `sockets[first]`, until one
/// yields datagrams (returns its index and their count), `budget` has passed or
/// `stop` is set.
fn poll(
    sockets: &[Arc<UdpSocket>],
    first: usize,
    batch: &mut Batch,
    budget: Duration,
    stop: &AtomicBool,
) -> Option<(usize, usize)> {
    let start = Instant::now();
    loop {
        for k in 0..sockets.len() {
            let i = (first + k) % sockets.len();
            if let Ok(received @ 1..) = batch.recv(sockets[i].as_raw_fd(), libc::MSG_DONTWAIT) {
                return Some((i, received));
            }
        }
        if start.elapsed() >= budget || stop.load(Ordering::Relaxed) {
            return None;
        }
        // Yield rather than spin in place: a client or the other worker runnable on
        // this CPU (2-core nodes) runs at once instead of waiting out the spin.
        std::thread::yield_now();
    }
}

/// Answers the `received` datagrams of the last receive on `socket`: replies go out
/// in one `sendmmsg`, out-of-zone misses to the runtime.
fn serve_batch(
    batch: &mut Batch,
    received: usize,
    socket: &Arc<UdpSocket>,
    handler: &Arc<DnsHandler>,
    runtime: &tokio::runtime::Handle,
) {
    for slot in 0..received {
        let (packet, out, src) = batch.slot(slot);
        match handler.handle(packet, false, out) {
            Handled::Reply => batch.reply(slot),
            Handled::Drop => {}
            Handled::Forward => {
                forward(handler, socket, runtime, packet, socket_addr(src));
            }
        }
    }
    batch.send(socket.as_raw_fd());
}

/// Hands an out-of-zone miss to the runtime; the reply goes out on the same socket.
fn forward(
    handler: &DnsHandler,
    socket: &Arc<UdpSocket>,
    runtime: &tokio::runtime::Handle,
    packet: &[u8],
    src: Option<SocketAddr>,
) {
    let (Some(forwarder), Some(src)) = (handler.forwarder(), src) else {
        return;
    };
    let Some(slot) = Inflight::acquire(handler.inflight()) else {
        tracing::debug!(%src, "too many forwarded queries in flight, dropped");
        return;
    };
    let (packet, socket) = (packet.to_vec(), socket.clone());
    runtime.spawn(async move {
        if let Some(reply) = forwarder.resolve(&packet, false).await {
            if let Err(error) = socket.send_to(&reply, src) {
                tracing::debug!(%error, to = %src, "udp send failed");
            }
        }
        drop(slot);
    });
}

/// One worker's receive and send headers over its own buffers. Every pointer in the
/// headers points into a boxed slice of this struct, allocated once and never
/// resized, so the headers stay valid while the struct lives (moving the struct
/// does not move the heap buffers).
struct Batch {
    /// `BATCH` receive buffers of `UDP_BUFFER` bytes, back to back.
    bufs: Box<[u8]>,
    /// The source address of each received datagram (the destination of its reply).
    addrs: Box<[libc::sockaddr_storage]>,
    recv_iov: Box<[libc::iovec]>,
    recv_hdrs: Box<[libc::mmsghdr]>,
    /// The reply to each datagram.
    outs: Vec<Vec<u8>>,
    /// Which datagrams get their reply sent, in order.
    replies: [usize; BATCH],
    reply_count: usize,
    send_iov: Box<[libc::iovec]>,
    send_hdrs: Box<[libc::mmsghdr]>,
}

impl Batch {
    fn new() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which
        // all-zero bytes are a valid value (null pointers, zero lengths).
        let (addr, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        let mut batch = Self {
            bufs: vec![0u8; BATCH * UDP_BUFFER].into_boxed_slice(),
            addrs: vec![addr; BATCH].into_boxed_slice(),
            recv_iov: vec![iov; BATCH].into_boxed_slice(),
            recv_hdrs: vec![hdr; BATCH].into_boxed_slice(),
            outs: (0..BATCH)
                .map(|_| Vec::with_capacity(wire::CLASSIC_UDP_SIZE * 2))
                .collect(),
            replies: [0; BATCH],
            reply_count: 0,
            send_iov: vec![iov; BATCH].into_boxed_slice(),
            send_hdrs: vec![hdr; BATCH].into_boxed_slice(),
        };
        for (i, chunk) in batch.bufs.chunks_exact_mut(UDP_BUFFER).enumerate() {
            batch.recv_iov[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: UDP_BUFFER,
            };
        }
        for i in 0..BATCH {
            let msg = &mut batch.recv_hdrs[i].msg_hdr;
            msg.msg_name = std::ptr::from_mut(&mut batch.addrs[i]).cast();
            msg.msg_iov = &mut batch.recv_iov[i];
            msg.msg_iovlen = 1;
        }
        batch
    }

    /// Takes the datagrams queued on `fd` (up to `BATCH`); with `MSG_WAITFORONE`
    /// waits for the first, with `MSG_DONTWAIT` fails with `WouldBlock` if there is
    /// none. Returns how many were received.
    fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        self.reply_count = 0;
        for hdr in self.recv_hdrs.iter_mut() {
            hdr.msg_hdr.msg_namelen = ADDR_LEN;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: recv_hdrs holds BATCH headers whose name and iovec pointers point
        // into self.addrs / self.bufs with the lengths set above; all live as long as
        // self, which is borrowed mutably for the call. A null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.recv_hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Datagram `i` of the last receive, the buffer for its reply, and its source.
    fn slot(&mut self, i: usize) -> (&[u8], &mut Vec<u8>, &libc::sockaddr_storage) {
        let len = (self.recv_hdrs[i].msg_len as usize).min(UDP_BUFFER);
        let start = i * UDP_BUFFER;
        (
            &self.bufs[start..start + len],
            &mut self.outs[i],
            &self.addrs[i],
        )
    }

    /// Queues the reply in slot `i` for [`Batch::send`].
    fn reply(&mut self, i: usize) {
        self.replies[self.reply_count] = i;
        self.reply_count += 1;
    }

    /// Sends the queued replies, each to the source of its request. A reply the
    /// kernel refuses is skipped (the client retries); the others still go out.
    fn send(&mut self, fd: RawFd) {
        let count = self.reply_count;
        for (j, &i) in self.replies[..count].iter().enumerate() {
            self.send_iov[j] = libc::iovec {
                iov_base: self.outs[i].as_mut_ptr().cast(),
                iov_len: self.outs[i].len(),
            };
            let msg = &mut self.send_hdrs[j].msg_hdr;
            msg.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            msg.msg_namelen = self.recv_hdrs[i].msg_hdr.msg_namelen;
            msg.msg_iov = &mut self.send_iov[j];
            msg.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: send_hdrs[sent..count] were filled above with pointers into
            // self.addrs, self.send_iov and the reply buffers self.outs, none of
            // which is touched until the call returns.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.send_hdrs[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(_) => {
                    let error = io::Error::last_os_error();
                    let to = socket_addr(&self.addrs[self.replies[sent]]);
                    tracing::debug!(%error, ?to, "udp send failed");
                    sent += 1;
                }
            }
        }
        self.reply_count = 0;
    }
}

/// The address the kernel wrote into `storage` (IPv4 or IPv6).
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into this
            // sockaddr_storage, which is larger and at least as aligned.
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6 for family AF_INET6.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
