//! UDP to the host's network: one host socket per container flow (its address and port, and
//! the destination), connected, so only the destination's answers come back; idle flows end.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::policy::Policy;
use super::{AbortOnDrop, Limits};

/// A flow: the container's address and port, and the destination as the container addressed it.
pub type Key = (SocketAddr, SocketAddr);

/// An answer from the host's network for the container.
#[derive(Debug)]
pub struct Reply {
    pub flow: Key,
    pub payload: Vec<u8>,
}

struct Flow {
    socket: Arc<UdpSocket>,
    last_used: Instant,
    _reader: AbortOnDrop,
}

/// The UDP flows.
pub struct Udp {
    flows: HashMap<Key, Flow>,
    replies: mpsc::Sender<Reply>,
    limits: Limits,
    /// The largest payload that fits in one packet for the container, per family (v4, v6).
    max_payload: [usize; 2],
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp").field("flows", &self.flows.len()).finish_non_exhaustive()
    }
}

impl Udp {
    pub fn new(replies: mpsc::Sender<Reply>, limits: Limits, mtu: usize) -> Udp {
        Udp { flows: HashMap::new(), replies, limits, max_payload: [mtu - 28, mtu - 48] }
    }

    /// Sends a datagram from the container; a full host socket drops it, as a full link would.
    pub fn send(
        &mut self,
        flow: Key,
        payload: &[u8],
        policy: &Policy,
        now: Instant,
    ) -> Result<(), String> {
        if !self.flows.contains_key(&flow) {
            let target = policy.target(flow.1.ip()).map_err(|why| why.to_string())?;
            let target = SocketAddr::new(target, flow.1.port());
            if self.flows.len() >= self.limits.udp_flows {
                self.evict_least_recently_used();
            }
            let socket = open(target, policy.source_for(target.ip()))
                .map_err(|e| format!("a UDP socket to {target}: {e}"))?;
            let socket = Arc::new(socket);
            let max = self.max_payload[usize::from(target.is_ipv6())];
            let reader = tokio::spawn(read(flow, socket.clone(), max, self.replies.clone()));
            let flow_state = Flow { socket, last_used: now, _reader: AbortOnDrop(reader) };
            self.flows.insert(flow, flow_state);
            log::trace!("egress: UDP {} → {}", flow.0, flow.1);
        }
        let Some(state) = self.flows.get_mut(&flow) else { return Ok(()) };
        state.last_used = now;
        match state.socket.try_send(payload) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("UDP to {}: {e}", flow.1)),
        }
    }

    /// Notes that `flow` is in use (an answer came back).
    pub fn answered(&mut self, flow: &Key, now: Instant) -> bool {
        match self.flows.get_mut(flow) {
            Some(state) => {
                state.last_used = now;
                true
            }
            None => false,
        }
    }

    /// Ends the flows idle for longer than the limit.
    pub fn sweep(&mut self, now: Instant) {
        let idle = self.limits.udp_idle;
        self.flows.retain(|_, flow| now.duration_since(flow.last_used) < idle);
    }

    fn evict_least_recently_used(&mut self) {
        let oldest = self.flows.iter().min_by_key(|(_, flow)| flow.last_used).map(|(k, _)| *k);
        if let Some(oldest) = oldest {
            log::debug!(
                "egress: {} UDP flows, the most allowed; ending the oldest",
                self.flows.len()
            );
            self.flows.remove(&oldest);
        }
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

/// Hands the destination's answers to the main loop until the flow ends. Answers too big for
/// one packet to the container are dropped (there is no fragmenting on the way back).
async fn read(flow: Key, socket: Arc<UdpSocket>, max: usize, replies: mpsc::Sender<Reply>) {
    let mut buffer = vec![0u8; max + 1];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(len) if len <= max => {
                let reply = Reply { flow, payload: buffer[..len].to_vec() };
                if let Err(mpsc::error::TrySendError::Closed(_)) = replies.try_send(reply) {
                    return;
                }
            }
            Ok(len) => log::debug!("egress: dropped a {len}-byte UDP answer from {}", flow.1),
            // ICMP errors (port unreachable) show up here; the flow stays until idle.
            Err(e) => {
                log::trace!("egress: UDP from {}: {e}", flow.1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
