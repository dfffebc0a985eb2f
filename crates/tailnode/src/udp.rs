//! The direct underlay: one UDP socket per IP family, on one port, with large kernel buffers.
//!
//! The kernel's default socket buffers (about 200 KiB here) drop a burst from a fast sender
//! before our loop gets to it; Tailscale asks for 7 MiB and so do we.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd as _;

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, MsgFlags, MultiHeaders, SockFlag, SockType,
    SockaddrStorage, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use ts_packet::PacketMut;

/// The socket buffer size asked for, each way.
pub const BUFFER: usize = 7 << 20;
/// The most datagrams taken or sent per system call.
pub const BATCH: usize = 64;
/// Room for one datagram in a receive batch. The tailnet's MTU is 1280, so WireGuard's
/// datagrams are at most about 1360 bytes; a larger one is cut short and dropped.
pub const SLOT: usize = 2048;
/// The scratch space [`recv_batch`] wants.
pub const SCRATCH: usize = BATCH * SLOT;

/// The node's UDP sockets.
#[derive(Debug)]
pub struct Underlay {
    pub v4: UdpSocket,
    pub v6: Option<UdpSocket>,
}

impl Underlay {
    /// Binds `port` (0: one the kernel picks) on IPv4, and the same port on IPv6 when the host
    /// has IPv6.
    pub fn bind(port: u16) -> io::Result<Underlay> {
        let v4 = open(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
        let port = v4.local_addr()?.port();
        let v6 = match open(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
            Ok(v6) => Some(v6),
            Err(e) => {
                log::debug!("no IPv6 underlay on port {port}: {e}");
                None
            }
        };
        Ok(Underlay { v4, v6 })
    }

    pub fn port(&self) -> u16 {
        self.v4.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn socket(&self, to: SocketAddr) -> Option<&UdpSocket> {
        match to {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Sends every packet to `to`, [`BATCH`] at a time (`sendmmsg`); waits while the socket
    /// is full (back-pressure for the caller's reads), drops what the kernel refuses.
    pub async fn send(&self, to: SocketAddr, packets: &[PacketMut]) {
        let Some(socket) = self.socket(to) else { return };
        let address = SockaddrStorage::from(to);
        let mut rest = packets;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(BATCH)];
            let sent = socket.try_io(Interest::WRITABLE, || send_many(socket, &address, chunk));
            match sent {
                Ok(count) => rest = &rest[count.max(1)..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::debug!("UDP to {to}: {e}");
                    rest = &rest[1..];
                }
            }
        }
    }
}

fn send_many(socket: &UdpSocket, to: &SockaddrStorage, packets: &[PacketMut]) -> io::Result<usize> {
    let slices: Vec<[IoSlice<'_>; 1]> =
        packets.iter().map(|p| [IoSlice::new(p.as_ref())]).collect();
    let addresses = vec![Some(*to); packets.len()];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(packets.len(), None);
    let no_control: [ControlMessage<'_>; 0] = [];
    let flags = MsgFlags::MSG_DONTWAIT;
    let fd = socket.as_raw_fd();
    let sent = socket::sendmmsg(fd, &mut headers, &slices, addresses, no_control, flags)?;
    Ok(sent.count())
}

/// Reads what is waiting on `socket`, up to [`BATCH`] datagrams in one `recvmmsg`, into `out`;
/// `scratch` should hold [`SCRATCH`] bytes.
pub fn recv_batch(socket: &UdpSocket, scratch: &mut [u8], out: &mut Vec<(SocketAddr, PacketMut)>) {
    let slots = (scratch.len() / SLOT).clamp(1, BATCH);
    let received = socket.try_io(Interest::READABLE, || {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> =
            scratch.chunks_mut(SLOT).take(slots).map(|c| [IoSliceMut::new(c)]).collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slots, None);
        let flags = MsgFlags::MSG_DONTWAIT;
        let fd = socket.as_raw_fd();
        let results = socket::recvmmsg(fd, &mut headers, slices.iter_mut(), flags, None)?;
        let received: Vec<(usize, Option<SocketAddr>, bool)> = results
            .map(|r| {
                let truncated = r.flags.contains(MsgFlags::MSG_TRUNC);
                (r.bytes, r.address.and_then(|a| socket_addr(&a)), truncated)
            })
            .collect();
        Ok(received)
    });
    let Ok(received) = received else { return };
    for ((len, from, truncated), slot) in received.into_iter().zip(scratch.chunks(SLOT)) {
        if let (Some(from), false) = (from, truncated) {
            out.push((from, PacketMut::from(&slot[..len])));
        }
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

fn open(address: SocketAddr) -> io::Result<UdpSocket> {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd: OwnedFd = socket::socket(family, SockType::Datagram, flags, None)?;
    if address.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    // The privileged variants pass the system's cap; fall back to the capped request.
    if socket::setsockopt(&fd, sockopt::RcvBufForce, &BUFFER).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &BUFFER);
    }
    if socket::setsockopt(&fd, sockopt::SndBufForce, &BUFFER).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::SndBuf, &BUFFER);
    }
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(address))?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_families_share_a_port_and_carry_batches() {
        let underlay = Underlay::bind(0).unwrap();
        let port = underlay.port();
        assert_ne!(port, 0);
        let buffer = socket::getsockopt(&underlay.v4, sockopt::RcvBuf).unwrap();
        assert!(buffer >= 200_000, "receive buffer {buffer}");
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let packets: Vec<PacketMut> = (0..10u8).map(|i| PacketMut::from(&[i; 100][..])).collect();
        underlay.send(to, &packets).await;
        let mut out = Vec::new();
        let mut scratch = vec![0u8; SCRATCH];
        while out.len() < 10 {
            underlay.v4.readable().await.unwrap();
            recv_batch(&underlay.v4, &mut scratch, &mut out);
        }
        assert_eq!(
            out.iter().map(|(_, p)| p.as_ref()[0]).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        if let Some(v6) = &underlay.v6 {
            assert_eq!(v6.local_addr().unwrap().port(), port);
        }
    }
}
