//! Disco: finding a direct UDP path to each peer, and keeping it only while pongs prove it.
//!
//! [`Message`] is the wire side (sealed with the disco keys, `ts_disco_protocol`'s layout).
//! [`Paths`] is the decision side, pure and driven by the caller's clock so it is tested without
//! sockets: which endpoints to ping when, and which path a peer's packets take. Unlike
//! tailscale-rs's runtime, which publishes a better path only at its next five-second round, a
//! path is used from the first pong that proves it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ts_disco_protocol::{CallMeMaybe, Packet, Ping, Pong};
use ts_keys::{DiscoKeyPair, DiscoPrivateKey, DiscoPublicKey, NodePublicKey};
use ts_transport::PeerId;

/// A direct path is trusted this long after its last pong (Tailscale's own figure).
pub const TRUST: Duration = Duration::from_millis(6500);
/// A trusted path is pinged this often, so it stays trusted while in use.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// Without a trusted path, every candidate is pinged this often.
pub const ROUND: Duration = Duration::from_secs(5);
/// A ping unanswered this long is forgotten.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many candidate endpoints a peer; control and call-me-maybe could send more.
const MAX_CANDIDATES: usize = 32;
/// At most this many pings in flight in all, so a hostile netmap cannot make us a flooder.
const MAX_PINGS: usize = 4096;

/// A disco transaction id.
pub type TxId = [u8; 12];

/// One disco message, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping { tx: TxId, node_key: NodePublicKey },
    Pong { tx: TxId, src: SocketAddr },
    CallMeMaybe(Vec<SocketAddr>),
}

impl Message {
    /// The message sealed for `to` with our disco keys (a fresh random nonce).
    pub fn seal(&self, keys: &DiscoKeyPair, to: &DiscoPublicKey) -> Vec<u8> {
        let nonce = random();
        match self {
            Message::Ping { tx, node_key } => {
                seal::<Ping>(Ping::size_with_padding(0), keys, to, nonce, |ping| {
                    ping.tx_id = *tx;
                    ping.node_key = *node_key;
                })
            }
            Message::Pong { tx, src } => seal::<Pong>(Pong::size(), keys, to, nonce, |pong| {
                pong.tx_id = *tx;
                pong.src = (*src).into();
            }),
            Message::CallMeMaybe(endpoints) => {
                let size = CallMeMaybe::size_for_endpoint_count(endpoints.len());
                seal::<CallMeMaybe>(size, keys, to, nonce, |cmm| {
                    for (slot, endpoint) in cmm.endpoints.iter_mut().zip(endpoints) {
                        *slot = (*endpoint).into();
                    }
                })
            }
        }
    }

    /// Decrypts a disco packet in place: the sender's disco key and the message, or `None` for
    /// anything that does not decrypt or is not a message we know.
    pub fn open(packet: &mut [u8], key: &DiscoPrivateKey) -> Option<(DiscoPublicKey, Message)> {
        let encrypted = Packet::from_encrypted_bytes_mut(packet).ok()?;
        let sender = *encrypted.sender_pubkey();
        let plain = encrypted.decrypt_in_place(key).ok()?;
        let message = if let Some(ping) = plain.as_msg::<Ping>() {
            Message::Ping { tx: ping.tx_id, node_key: ping.node_key }
        } else if let Some(pong) = plain.as_msg::<Pong>() {
            let src = pong.src;
            Message::Pong { tx: pong.tx_id, src: src.into() }
        } else if let Some(cmm) = plain.as_msg::<CallMeMaybe>() {
            let endpoints = cmm.endpoints.iter().take(MAX_CANDIDATES).map(|e| (*e).into());
            Message::CallMeMaybe(endpoints.collect())
        } else {
            return None;
        };
        Some((sender, message))
    }
}

fn seal<M>(
    size: usize,
    keys: &DiscoKeyPair,
    to: &DiscoPublicKey,
    nonce: [u8; 24],
    init: impl FnOnce(&mut M),
) -> Vec<u8>
where
    M: ?Sized
        + ts_disco_protocol::Message
        + zerocopy::Immutable
        + zerocopy::TryFromBytes
        + zerocopy::IntoBytes
        + zerocopy::KnownLayout,
{
    let mut buffer = vec![0u8; Packet::size_for_message(size)];
    let plain = Packet::init_from_bytes::<M>(&mut buffer, init).expect("sized for the message");
    plain.encrypt_in_place(&keys.private, to, nonce).expect("sealing cannot fail");
    buffer
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

/// A ping to send: to `peer` at `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub peer: PeerId,
    pub to: SocketAddr,
    pub tx: TxId,
}

/// What a round of path discovery wants sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub pings: Vec<Probe>,
    /// Peers to send our endpoints over DERP, so they ping us too (NAT traversal).
    pub call_me_maybe: Vec<PeerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Direct {
    addr: SocketAddr,
    rtt: Duration,
    confirmed: Instant,
}

#[derive(Debug, Default)]
struct Peer {
    from_control: BTreeSet<SocketAddr>,
    learned: BTreeSet<SocketAddr>,
    best: Option<Direct>,
    last_round: Option<Instant>,
    last_heartbeat: Option<Instant>,
}

impl Peer {
    fn trusted(&self, now: Instant) -> Option<Direct> {
        self.best.filter(|b| now.saturating_duration_since(b.confirmed) < TRUST)
    }
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    peer: PeerId,
    to: SocketAddr,
    at: Instant,
}

/// Every peer's candidate endpoints, pings in flight and chosen direct path.
#[derive(Debug, Default)]
pub struct Paths {
    peers: HashMap<PeerId, Peer>,
    in_flight: HashMap<TxId, Sent>,
}

impl Paths {
    /// The endpoints control lists for `peer` (replacing the previous list). New ones are
    /// pinged at the next round without waiting out the interval.
    pub fn set_endpoints(&mut self, peer: PeerId, endpoints: &[SocketAddr]) {
        let entry = self.peers.entry(peer).or_default();
        let endpoints: BTreeSet<SocketAddr> =
            endpoints.iter().copied().take(MAX_CANDIDATES).collect();
        if !endpoints.is_subset(&entry.from_control) {
            entry.last_round = None;
        }
        entry.from_control = endpoints;
    }

    /// Forgets a peer that left the netmap.
    pub fn remove(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        self.in_flight.retain(|_, sent| sent.peer != peer);
    }

    /// Adds an endpoint learned from the peer itself (call-me-maybe, or where its ping came
    /// from), and pings it at once when the peer has no trusted path.
    pub fn learn(&mut self, peer: PeerId, addr: SocketAddr, now: Instant) -> Option<Probe> {
        let entry = self.peers.get_mut(&peer)?;
        if entry.learned.len() < MAX_CANDIDATES {
            entry.learned.insert(addr);
        }
        if entry.trusted(now).is_some() || !entry.learned.contains(&addr) {
            return None;
        }
        self.probe(peer, addr, now)
    }

    fn probe(&mut self, peer: PeerId, to: SocketAddr, now: Instant) -> Option<Probe> {
        self.in_flight.retain(|_, sent| now.saturating_duration_since(sent.at) < PING_TIMEOUT);
        if self.in_flight.len() >= MAX_PINGS {
            return None;
        }
        let tx = random();
        self.in_flight.insert(tx, Sent { peer, to, at: now });
        Some(Probe { peer, to, tx })
    }

    /// The pings (and call-me-maybes) due now for the peers in use.
    pub fn due(&mut self, now: Instant, active: impl IntoIterator<Item = PeerId>) -> Round {
        let mut round = Round::default();
        for peer in active {
            let Some(entry) = self.peers.get_mut(&peer) else { continue };
            let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
            let targets: Vec<SocketAddr> = if let Some(best) = entry.trusted(now) {
                if since(entry.last_heartbeat).is_some_and(|d| d < HEARTBEAT) {
                    continue;
                }
                entry.last_heartbeat = Some(now);
                vec![best.addr]
            } else {
                if since(entry.last_round).is_some_and(|d| d < ROUND) {
                    continue;
                }
                entry.last_round = Some(now);
                round.call_me_maybe.push(peer);
                entry.from_control.union(&entry.learned).copied().collect()
            };
            for to in targets {
                round.pings.extend(self.probe(peer, to, now));
            }
        }
        round
    }

    /// A pong arrived from `from`: returns the peer whose path changed, if one did.
    pub fn pong(&mut self, tx: &TxId, from: SocketAddr, now: Instant) -> Option<PeerId> {
        let sent = self.in_flight.remove(tx)?;
        if sent.to != from {
            // Not the endpoint we pinged: the answer proves nothing about that path.
            return None;
        }
        let entry = self.peers.get_mut(&sent.peer)?;
        let rtt = now.saturating_duration_since(sent.at);
        let candidate = Direct { addr: from, rtt, confirmed: now };
        let changed = match entry.trusted(now) {
            None => true,
            Some(best) if best.addr == from => {
                entry.best = Some(Direct { rtt: best.rtt.min(rtt), ..candidate });
                return None;
            }
            // Switch only for a clearly faster path, so two close ones do not flap.
            Some(best) => rtt < best.rtt * 3 / 4,
        };
        if changed {
            entry.best = Some(candidate);
            entry.last_heartbeat = Some(now);
            return Some(sent.peer);
        }
        None
    }

    /// The direct path to use for `peer`, if one is trusted.
    pub fn direct(&self, peer: PeerId, now: Instant) -> Option<SocketAddr> {
        self.peers.get(&peer)?.trusted(now).map(|b| b.addr)
    }

    /// Peers whose direct path stopped being trusted; they go back to DERP.
    pub fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let mut lost = Vec::new();
        for (peer, entry) in &mut self.peers {
            if entry.best.is_some() && entry.trusted(now).is_none() {
                entry.best = None;
                lost.push(*peer);
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn messages_survive_sealing_and_only_the_recipient_opens_them() {
        let (a, b) = (DiscoKeyPair::random(), DiscoKeyPair::random());
        let node_key = ts_keys::NodeKeyPair::random().public;
        for message in [
            Message::Ping { tx: [7; 12], node_key },
            Message::Pong { tx: [8; 12], src: addr("[2001:db8::1]:41641") },
            Message::Pong { tx: [9; 12], src: addr("198.51.100.4:1") },
            Message::CallMeMaybe(vec![addr("192.0.2.1:2"), addr("[fd00::2]:3")]),
        ] {
            let sealed = message.seal(&a, &b.public);
            let mut wrong = sealed.clone();
            assert_eq!(Message::open(&mut wrong, &a.private), None, "{message:?}");
            let mut packet = sealed;
            assert!(ts_disco_protocol::is_disco_message(&packet));
            assert_eq!(Message::open(&mut packet, &b.private), Some((a.public, message)));
        }
        assert_eq!(Message::open(&mut [0u8; 80], &b.private), None);
    }

    #[test]
    fn the_first_pong_picks_the_path_and_silence_drops_it() {
        let t0 = Instant::now();
        let peer = PeerId(1);
        let mut paths = Paths::default();
        paths.set_endpoints(peer, &[addr("192.0.2.1:1"), addr("192.0.2.2:1")]);
        let round = paths.due(t0, [peer]);
        assert_eq!(round.call_me_maybe, vec![peer]);
        assert_eq!(round.pings.len(), 2);
        assert_eq!(paths.due(t0 + Duration::from_secs(1), [peer]), Round::default(), "not again");
        assert_eq!(paths.direct(peer, t0), None);

        let slow = &round.pings[1];
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(paths.pong(&slow.tx, slow.to, t1), Some(peer), "first pong wins at once");
        assert_eq!(paths.direct(peer, t1), Some(slow.to));
        let fast = &round.pings[0];
        assert_eq!(paths.pong(&fast.tx, fast.to, t1), None, "20 ms vs 20 ms: no flapping");
        assert_eq!(paths.pong(&slow.tx, slow.to, t1), None, "a pong counts once");

        let heartbeat = paths.due(t1 + HEARTBEAT, [peer]);
        assert_eq!(heartbeat.pings.len(), 1, "only the chosen path is kept alive");
        assert!(heartbeat.call_me_maybe.is_empty());
        assert_eq!(paths.expired(t1 + TRUST - Duration::from_millis(1)), vec![]);
        assert_eq!(paths.expired(t1 + TRUST), vec![peer]);
        assert_eq!(paths.direct(peer, t1 + TRUST), None);
    }

    #[test]
    fn new_endpoints_are_pinged_without_waiting_for_the_next_round() {
        let t0 = Instant::now();
        let peer = PeerId(2);
        let mut paths = Paths::default();
        paths.set_endpoints(peer, &[]);
        assert!(paths.due(t0, [peer]).pings.is_empty(), "nothing to ping yet");
        paths.set_endpoints(peer, &[addr("192.0.2.1:1")]);
        let round = paths.due(t0 + Duration::from_millis(300), [peer]);
        assert_eq!(round.pings.len(), 1, "the new endpoint at once");
        paths.set_endpoints(peer, &[addr("192.0.2.1:1")]);
        assert!(paths.due(t0 + Duration::from_secs(1), [peer]).pings.is_empty(), "same list");
    }

    #[test]
    fn a_pong_from_elsewhere_or_unknown_proves_nothing() {
        let t0 = Instant::now();
        let peer = PeerId(1);
        let mut paths = Paths::default();
        paths.set_endpoints(peer, &[addr("192.0.2.1:1")]);
        let ping = paths.due(t0, [peer]).pings.remove(0);
        assert_eq!(paths.pong(&ping.tx, addr("192.0.2.9:1"), t0), None);
        assert_eq!(paths.pong(&[0; 12], addr("192.0.2.1:1"), t0), None);
        assert_eq!(paths.direct(peer, t0), None);
    }

    #[test]
    fn a_ping_from_a_new_address_is_answered_with_our_own_ping() {
        let t0 = Instant::now();
        let peer = PeerId(4);
        let mut paths = Paths::default();
        assert_eq!(paths.learn(peer, addr("192.0.2.1:1"), t0), None, "unknown peer");
        paths.set_endpoints(peer, &[]);
        let probe = paths.learn(peer, addr("192.0.2.1:1"), t0).expect("pinged back");
        assert_eq!(paths.pong(&probe.tx, probe.to, t0), Some(peer));
        assert_eq!(paths.learn(peer, addr("192.0.2.5:1"), t0), None, "already direct");
    }
}
