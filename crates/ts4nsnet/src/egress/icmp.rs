//! Ping to the host's network through unprivileged ICMP sockets ("ping sockets"), where the
//! host allows them (`net.ipv4.ping_group_range` includes ts4nsnet's group; Fedora CoreOS
//! allows every group). The kernel gives each socket its own echo identifier, so answers are
//! given the container's identifier back. Where the host does not allow them, echo requests
//! are dropped, once said in the log.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::time::Instant;

use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::Limits;
use super::flows::{Flows, Reply};
use super::policy::Policy;
use super::wire;

/// An echo flow: the container's address and echo identifier, and the destination.
pub type Key = (IpAddr, u16, IpAddr);

/// The echo flows.
#[derive(Debug)]
pub struct Icmp {
    flows: Flows<Key>,
    /// The container interface's MTU.
    mtu: usize,
    refused_said: bool,
}

impl Icmp {
    pub fn new(replies: mpsc::Sender<Reply<Key>>, limits: Limits, mtu: usize) -> Icmp {
        let flows = Flows::new("ping", replies, limits.udp_flows, limits.udp_idle);
        Icmp { flows, mtu, refused_said: false }
    }

    /// Sends an echo request from the container: `message` is its ICMP message.
    pub fn send(&mut self, echo: wire::Echo<'_>, policy: &Policy, now: Instant) {
        let flow = (echo.src, echo.id, echo.dst);
        // The longest echo reply that fits in one packet for the container.
        let largest = self.mtu - if echo.dst.is_ipv6() { 40 } else { 20 };
        let socket = self.flows.socket(flow, now, largest, || {
            let target = policy.target(echo.dst).map_err(|_| None)?;
            open(target, policy.source_for(target)).map_err(Some)
        });
        match socket {
            Ok(socket) => {
                let _dropped_when_full = socket.try_send(echo.message);
            }
            Err(Some(e)) if !self.refused_said => {
                log::info!(
                    "egress: ping is not carried: the host refuses ping sockets ({e}; \
                     see net.ipv4.ping_group_range)"
                );
                self.refused_said = true;
            }
            Err(_) => {}
        }
    }

    /// The IP packet for the container answering `reply`, if its flow is still open.
    pub fn answer(&mut self, reply: &Reply<Key>, now: Instant) -> Option<Vec<u8>> {
        if !self.flows.answered(&reply.flow, now) {
            return None;
        }
        let (container, id, destination) = reply.flow;
        wire::echo_reply(destination, container, id, &reply.bytes)
    }

    /// Ends the flows idle for longer than the limit.
    pub fn sweep(&mut self, now: Instant) {
        self.flows.sweep(now);
    }
}

fn open(target: IpAddr, source: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let (family, protocol) = match target {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6),
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = nix::sys::socket::socket(family, SockType::Datagram, flags, protocol)?;
    if let Some(source) = source {
        let source = SockaddrStorage::from(SocketAddr::new(source, 0));
        nix::sys::socket::bind(fd.as_raw_fd(), &source)?;
    }
    let socket = std::net::UdpSocket::from(fd);
    socket.connect(SocketAddr::new(target, 0))?;
    UdpSocket::from_std(socket)
}
