//! Host egress: the container's packets for outside the tailnet leave through the host's own
//! network, as the user ts4nsnet runs as, the way slirp4netns gives a container the internet.
//!
//! The node hands over every packet whose destination is outside the tailnet. TCP is ended
//! here by smoltcp and carried on by a host socket ([`tcp`]); UDP is relayed per flow through
//! a connected host socket ([`udp`]); ping through the host's ping sockets where it allows
//! them ([`icmp`]); other protocols are dropped. Where a packet may go is
//! [`policy`]'s to say; how much is held at once is bounded by [`Limits`], so a container that
//! opens too much degrades itself, not ts4nsnet or the host.

pub mod flows;
pub mod icmp;
pub mod policy;
pub mod tcp;
pub mod udp;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tailnode::PacketMut;
use tailnode::tun::Tun;
use tokio::sync::{Notify, mpsc};

pub use policy::Policy;
use wire::Transport;

/// What egress holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP connections open or being opened; a SYN beyond this is reset.
    pub tcp_connections: usize,
    /// smoltcp's receive buffer per connection, at least (with a large MTU it holds four
    /// segments, or one segment would fill the window); send buffers are two or eight times
    /// it (see `tcp.rs`).
    pub tcp_buffer: usize,
    /// How long making a host connection may take (and a half-open one may last).
    pub connect_timeout: Duration,
    /// UDP flows; a new one beyond this ends the least recently used.
    pub udp_flows: usize,
    /// A UDP flow with nothing sent or received for this long ends.
    pub udp_idle: Duration,
}

impl Default for Limits {
    /// What TCP may hold however the container behaves: 256 connections, each with a receive
    /// buffer, a send buffer (eight of them large) and 128 KiB queued for the host; about
    /// 80 MiB at MTU 1500 and 240 MiB at podman's 65520 (256 KiB receive buffers). Far less in
    /// practice: buffers are touched only as they fill.
    fn default() -> Limits {
        Limits {
            tcp_connections: 256,
            tcp_buffer: 64 * 1024,
            connect_timeout: Duration::from_secs(30),
            udp_flows: 512,
            udp_idle: Duration::from_secs(60),
        }
    }
}

/// Answers (UDP, ping) waiting to be written to the container; beyond this they are dropped.
const UDP_REPLY_QUEUE: usize = 1024;
/// Packets taken from the node per turn of the loop.
const BATCH: usize = 64;
/// How often idle UDP flows are looked for.
const SWEEP: Duration = Duration::from_secs(5);

/// A task that ends when its owner is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Carries packets for outside the tailnet until the node stops handing them out. `mtu` is the
/// container interface's.
pub async fn run(
    mut packets: mpsc::Receiver<PacketMut>,
    tun: Arc<Tun>,
    policy: Policy,
    limits: Limits,
    mtu: usize,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (replies_tx, mut replies) = mpsc::channel(UDP_REPLY_QUEUE);
    let wake = Arc::new(Notify::new());
    let limits = Limits { tcp_buffer: limits.tcp_buffer.max(4 * mtu), ..limits };
    let mut tcp = tcp::Tcp::new(mtu, limits, events_tx, wake.clone());
    let mut udp = udp::Udp::new(replies_tx, limits, mtu);
    let (echoes_tx, mut echoes) = mpsc::channel(UDP_REPLY_QUEUE);
    let mut icmp = icmp::Icmp::new(echoes_tx, limits, mtu);
    let mut waits = futures_util::stream::FuturesUnordered::new();
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    log::debug!(
        "egress: on (host loopback {}, IPv6 {})",
        if policy.host_loopback { "open" } else { "closed" },
        if policy.ipv6 { "on" } else { "off" }
    );
    loop {
        let delay = tcp.poll_delay().unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            packet = packets.recv() => {
                let Some(packet) = packet else { return };
                let mut batch = vec![packet];
                while batch.len() < BATCH {
                    match packets.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let now = Instant::now();
                for packet in &batch {
                    from_container(packet.as_ref(), &mut tcp, &mut udp, &mut icmp, &policy, now);
                }
            }
            Some(event) = events.recv() => {
                tcp.event(event);
                while let Ok(more) = events.try_recv() {
                    tcp.event(more);
                }
            }
            Some(reply) = replies.recv() => {
                if let Some(packet) = udp.answer(&reply, Instant::now()) {
                    write(&tun, &packet).await;
                }
            }
            Some(echo) = echoes.recv() => {
                if let Some(packet) = icmp.answer(&echo, Instant::now()) {
                    write(&tun, &packet).await;
                }
            }
            Some(ready) = futures_util::StreamExt::next(&mut waits), if !waits.is_empty() => {
                if let Ok(id) = ready {
                    tcp.host_readable(id);
                }
            }
            () = wake.notified() => {}
            () = tokio::time::sleep(delay) => {}
            _ = sweep.tick() => {
                udp.sweep(Instant::now());
                icmp.sweep(Instant::now());
            }
        }
        for packet in tcp.pump() {
            write(&tun, &packet).await;
        }
        waits.extend(tcp.take_waits());
    }
}

fn from_container(
    packet: &[u8],
    tcp: &mut tcp::Tcp,
    udp: &mut udp::Udp,
    icmp: &mut icmp::Icmp,
    policy: &Policy,
    now: Instant,
) {
    match wire::transport(packet) {
        Transport::Tcp { src, dst, opens } => tcp.from_container(packet, (src, dst), opens, policy),
        Transport::Udp { src, dst, payload } => {
            if let Err(e) = udp.send((src, dst), payload, policy, now) {
                log::debug!("egress: UDP {src} → {dst}: {e}");
            }
        }
        Transport::Echo(echo) => icmp.send(echo, policy, now),
        Transport::Other => log::trace!("egress: dropped a packet that is not TCP, UDP or ping"),
    }
}

async fn write(tun: &Tun, packet: &[u8]) {
    if let Err(e) = tun.write(packet).await {
        log::debug!("egress: writing to the container: {e}");
    }
}
