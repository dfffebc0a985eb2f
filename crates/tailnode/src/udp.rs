//! The direct underlay: one UDP socket per IP family, on one port, with large kernel buffers.
//!
//! The kernel's default socket buffers (about 200 KiB here) drop a burst from a fast sender
//! before our loop gets to it; Tailscale asks for 7 MiB and so do we.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
use tokio::net::UdpSocket;
use ts_packet::PacketMut;

/// The socket buffer size asked for, each way.
pub const BUFFER: usize = 7 << 20;
/// The most datagrams taken per batch.
pub const BATCH: usize = 64;

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

    /// Sends every packet to `to`; waits while the socket is full (back-pressure for the
    /// caller's reads), drops what the kernel refuses.
    pub async fn send(&self, to: SocketAddr, packets: &[PacketMut]) {
        let Some(socket) = self.socket(to) else { return };
        for packet in packets {
            loop {
                match socket.try_send_to(packet.as_ref(), to) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if socket.writable().await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log::debug!("UDP to {to}: {e}");
                        break;
                    }
                }
            }
        }
    }
}

/// Reads what is waiting on `socket`, up to [`BATCH`] datagrams, into `out`.
pub fn recv_batch(socket: &UdpSocket, scratch: &mut [u8], out: &mut Vec<(SocketAddr, PacketMut)>) {
    while out.len() < BATCH {
        match socket.try_recv_from(scratch) {
            Ok((len, from)) => out.push((from, PacketMut::from(&scratch[..len]))),
            Err(_) => break,
        }
    }
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
        let mut scratch = vec![0u8; 65536];
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
