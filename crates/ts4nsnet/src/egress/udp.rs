//! UDP to the host's network: one host socket per container flow (its address and port, and
//! the destination), connected, so only the destination's answers come back; idle flows end.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::Limits;
use super::flows::{Flows, Reply};
use super::policy::Policy;
use super::wire;

/// A flow: the container's address and port, and the destination as the container addressed it.
pub type Key = (SocketAddr, SocketAddr);

/// The UDP flows.
#[derive(Debug)]
pub struct Udp {
    flows: Flows<Key>,
    /// The container interface's MTU.
    mtu: usize,
}

impl Udp {
    pub fn new(replies: mpsc::Sender<Reply<Key>>, limits: Limits, mtu: usize) -> Udp {
        let flows = Flows::new("UDP", replies, limits.udp_flows, limits.udp_idle);
        Udp { flows, mtu }
    }

    /// Sends a datagram from the container; a full host socket drops it, as a full link would.
    pub fn send(
        &mut self,
        flow: Key,
        payload: &[u8],
        policy: &Policy,
        now: Instant,
    ) -> Result<(), String> {
        // The largest payload that fits in one packet for the container.
        let largest = self.mtu - if flow.1.is_ipv6() { 48 } else { 28 };
        let socket = self.flows.socket(flow, now, largest, || {
            let target = policy.target(flow.1.ip()).map_err(|why| why.to_string())?;
            let target = SocketAddr::new(target, flow.1.port());
            log::trace!("egress: UDP {} → {}", flow.0, flow.1);
            open(target, policy.source_for(target.ip()))
                .map_err(|e| format!("a UDP socket to {target}: {e}"))
        })?;
        match socket.try_send(payload) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("UDP to {}: {e}", flow.1)),
        }
    }

    /// The IP packet for the container carrying `reply`, if its flow is still open: from the
    /// address the container sent to, whatever the host reached.
    pub fn answer(&mut self, reply: &Reply<Key>, now: Instant) -> Option<Vec<u8>> {
        if !self.flows.answered(&reply.flow, now) {
            return None;
        }
        let (container, destination) = reply.flow;
        wire::udp_packet(destination, container, &reply.bytes, self.mtu)
    }

    /// Ends the flows idle for longer than the limit.
    pub fn sweep(&mut self, now: Instant) {
        self.flows.sweep(now);
    }
}

fn open(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let bind = match (source, target) {
        (Some(source), _) => SocketAddr::new(source, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (None, SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
