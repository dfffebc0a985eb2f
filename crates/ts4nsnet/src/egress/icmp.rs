//! Ping to the host's network through unprivileged ICMP sockets ("ping sockets"), where the
//! host allows them (`net.ipv4.ping_group_range` includes ts4nsnet's group; Fedora CoreOS
//! allows every group). The kernel gives each socket its own echo identifier, so answers are
//! given the container's identifier back. Where the host does not allow them, echo requests
//! are dropped, once said in the log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd as _;

use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::AbortOnDrop;
use super::policy::Policy;
use super::wire;

/// An echo flow: the container's address and echo identifier, and the destination.
pub type Key = (IpAddr, u16, IpAddr);

/// An echo reply for the container.
#[derive(Debug)]
pub struct Reply {
    pub flow: Key,
    /// The ICMP message as the kernel gave it (identifier still the kernel's).
    pub message: Vec<u8>,
}

struct Flow {
    socket: Arc<UdpSocket>,
    last_used: Instant,
    _reader: AbortOnDrop,
}

/// The echo flows.
pub struct Icmp {
    flows: HashMap<Key, Flow>,
    replies: mpsc::Sender<Reply>,
    max_flows: usize,
    idle: Duration,
    refused_said: bool,
}

impl std::fmt::Debug for Icmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Icmp").field("flows", &self.flows.len()).finish_non_exhaustive()
    }
}

impl Icmp {
    pub fn new(replies: mpsc::Sender<Reply>, max_flows: usize, idle: Duration) -> Icmp {
        Icmp { flows: HashMap::new(), replies, max_flows, idle, refused_said: false }
    }

    /// Sends an echo request from the container: `message` is its ICMP message.
    pub fn send(&mut self, echo: wire::Echo<'_>, policy: &Policy, now: Instant) {
        let flow = (echo.src, echo.id, echo.dst);
        if !self.flows.contains_key(&flow) {
            let Ok(target) = policy.target(echo.dst) else { return };
            if self.flows.len() >= self.max_flows {
                let oldest = self.flows.iter().min_by_key(|(_, f)| f.last_used).map(|(k, _)| *k);
                oldest.map(|oldest| self.flows.remove(&oldest));
            }
            let socket = match open(target, policy.source_for(target)) {
                Ok(socket) => Arc::new(socket),
                Err(e) => {
                    if !self.refused_said {
                        log::info!(
                            "egress: ping is not carried: the host refuses ping sockets ({e}; \
                             see net.ipv4.ping_group_range)"
                        );
                        self.refused_said = true;
                    }
                    return;
                }
            };
            let reader = tokio::spawn(read(flow, socket.clone(), self.replies.clone()));
            self.flows.insert(flow, Flow { socket, last_used: now, _reader: AbortOnDrop(reader) });
        }
        let Some(state) = self.flows.get_mut(&flow) else { return };
        state.last_used = now;
        let _dropped_when_full = state.socket.try_send(echo.message);
    }

    /// The IP packet for the container answering `reply`, if its flow is still open.
    pub fn answer(&mut self, reply: &Reply, now: Instant) -> Option<Vec<u8>> {
        let state = self.flows.get_mut(&reply.flow)?;
        state.last_used = now;
        let (container, id, destination) = reply.flow;
        wire::echo_reply(destination, container, id, &reply.message)
    }

    /// Ends the flows idle for longer than the limit.
    pub fn sweep(&mut self, now: Instant) {
        let idle = self.idle;
        self.flows.retain(|_, flow| now.duration_since(flow.last_used) < idle);
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

async fn read(flow: Key, socket: Arc<UdpSocket>, replies: mpsc::Sender<Reply>) {
    let mut buffer = vec![0u8; 2048];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(len) => {
                let reply = Reply { flow, message: buffer[..len].to_vec() };
                if let Err(mpsc::error::TrySendError::Closed(_)) = replies.try_send(reply) {
                    return;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
