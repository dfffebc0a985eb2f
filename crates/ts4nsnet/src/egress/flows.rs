//! A table of datagram flows, each a connected host socket with a task reading its answers:
//! what UDP and ping share. Bounded (the least recently used flow ends to make room) and
//! swept (idle flows end).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::AbortOnDrop;

/// An answer read from a flow's host socket, for the container.
#[derive(Debug)]
pub struct Reply<K> {
    pub flow: K,
    pub bytes: Vec<u8>,
}

struct Flow {
    socket: Arc<UdpSocket>,
    last_used: Instant,
    _reader: AbortOnDrop,
}

/// The flows of one kind, by key.
pub struct Flows<K> {
    flows: HashMap<K, Flow>,
    replies: mpsc::Sender<Reply<K>>,
    max: usize,
    idle: Duration,
    /// What the flows carry, for the log.
    what: &'static str,
}

impl<K> std::fmt::Debug for Flows<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("what", &self.what)
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl<K: Copy + Eq + Hash + std::fmt::Debug + Send + 'static> Flows<K> {
    pub fn new(
        what: &'static str,
        replies: mpsc::Sender<Reply<K>>,
        max: usize,
        idle: Duration,
    ) -> Flows<K> {
        Flows { flows: HashMap::new(), replies, max, idle, what }
    }

    /// The socket of `flow`, marked used; opened with `open` (ending the least recently used
    /// flow when the table is full) if there is none. `largest` is the longest answer the
    /// container can take; longer ones are dropped.
    pub fn socket<E>(
        &mut self,
        flow: K,
        now: Instant,
        largest: usize,
        open: impl FnOnce() -> Result<UdpSocket, E>,
    ) -> Result<&UdpSocket, E> {
        if !self.flows.contains_key(&flow) {
            // Opened first: a refused destination ends no other flow.
            let socket = Arc::new(open()?);
            if self.flows.len() >= self.max {
                let oldest = self.flows.iter().min_by_key(|(_, f)| f.last_used).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    let (count, what) = (self.flows.len(), self.what);
                    log::debug!(
                        "egress: {count} {what} flows, the most allowed; ending the oldest"
                    );
                    self.flows.remove(&oldest);
                }
            }
            let reader = tokio::spawn(read(flow, socket.clone(), largest, self.replies.clone()));
            self.flows.insert(flow, Flow { socket, last_used: now, _reader: AbortOnDrop(reader) });
        }
        let state = self.flows.get_mut(&flow).expect("inserted above");
        state.last_used = now;
        Ok(&state.socket)
    }

    /// Marks `flow` used (an answer came back); false when it has ended meanwhile.
    pub fn answered(&mut self, flow: &K, now: Instant) -> bool {
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
        let idle = self.idle;
        self.flows.retain(|_, flow| now.duration_since(flow.last_used) < idle);
    }
}

/// Hands a flow's answers to the main loop until the flow ends. An answer longer than
/// `largest` is dropped: there is no fragmenting on the way back.
async fn read<K: Copy + std::fmt::Debug>(
    flow: K,
    socket: Arc<UdpSocket>,
    largest: usize,
    replies: mpsc::Sender<Reply<K>>,
) {
    let mut buffer = vec![0u8; largest + 1];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(len) if len <= largest => {
                let reply = Reply { flow, bytes: buffer[..len].to_vec() };
                if let Err(mpsc::error::TrySendError::Closed(_)) = replies.try_send(reply) {
                    return;
                }
            }
            Ok(len) => log::debug!("egress: dropped a {len}-byte answer for {flow:?}"),
            // ICMP errors (port unreachable) show up here; the flow stays until idle.
            Err(e) => {
                log::trace!("egress: {flow:?}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> std::io::Result<UdpSocket> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    #[tokio::test]
    async fn full_tables_end_the_least_recently_used_and_refusals_end_nothing() {
        let (replies, _answers) = mpsc::channel(8);
        let mut flows = Flows::new("test", replies, 2, Duration::from_secs(60));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        flows.socket(1, at(0), 100, loopback).unwrap();
        flows.socket(2, at(1), 100, loopback).unwrap();
        flows.socket(1, at(2), 100, loopback).unwrap(); // 1 used again: 2 is the oldest
        let refused = flows.socket(3, at(3), 100, || Err("refused"));
        assert_eq!(refused.err(), Some("refused"));
        assert!(flows.answered(&2, at(3)), "a refusal ends no flow");
        flows.socket(3, at(4), 100, loopback).unwrap();
        assert!(!flows.answered(&1, at(5)), "1 was the least recently used");
        assert!(flows.answered(&2, at(5)) && flows.answered(&3, at(5)));
        flows.sweep(at(66));
        assert!(!flows.answered(&2, at(66)), "idle for 61 s");
    }
}
