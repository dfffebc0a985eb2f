//! Our node against tailscale-rs's own runtime (the lab's peer) in a lab tailnet on loopback:
//! the guard that our protocol matches the library's. No root needed: the node's "TUN" is one
//! end of a packet socket pair, and the test reads and writes IP packets on the other end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tailnet_lab::node::LabPeer;
use tailnet_lab::{AuthKey, Tailnet};
use tailnode::tun::Tun;
use tailnode::{Identity, Node, Options, Settings};

const ECHO_PORT: u16 = 7;

struct Fixture {
    net: Tailnet,
    key: String,
    peer: LabPeer,
}

async fn lab() -> Fixture {
    let net = Tailnet::start(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let key = net.control.new_auth_key(AuthKey { reusable: true, ephemeral: true, tags: vec![] });
    let mut peer = LabPeer::join(net.control.url(), &key, "peer", true).await.unwrap();
    peer.serve_echo(ECHO_PORT).await.unwrap();
    Fixture { net, key, peer }
}

fn settings(fixture: &Fixture, hostname: &str) -> Settings {
    Settings {
        control_url: fixture.net.control.url().parse().unwrap(),
        auth_key: Some(fixture.key.clone()),
        hostname: hostname.into(),
        tags: vec![],
        ephemeral: true,
        client_name: "tailnode-test".into(),
    }
}

/// The test's end of the node's packet device.
struct Wire(Tun);

impl Wire {
    fn pair() -> (OwnedFd, Wire) {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).unwrap();
        (ours, Wire(Tun::new(theirs).unwrap()))
    }

    async fn send(&self, packet: &[u8]) {
        self.0.write(packet).await.unwrap();
    }

    /// The next packet the node delivers, within `timeout`.
    async fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let (mut scratch, mut packets) = (vec![0u8; 65536], Vec::new());
        let read = self.0.read_batch(&mut scratch, &mut packets);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(true)) => Some(packets.swap_remove(0).as_ref().to_vec()),
            _ => None,
        }
    }

    /// Sends `request` until an answer for which `answer` is true comes back (the first
    /// packets also start the WireGuard handshake, which may drop them).
    async fn exchange(&self, request: &[u8], answer: impl Fn(&[u8]) -> bool) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            self.send(request).await;
            let deadline = Instant::now() + Duration::from_millis(500);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match self.recv(left).await {
                    Some(packet) if answer(&packet) => return started.elapsed(),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        panic!("no answer in 20 s");
    }
}

fn udp(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let builder = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!(),
    };
    let builder = builder.udp(40000, ECHO_PORT);
    let mut packet = Vec::new();
    builder.write(&mut packet, payload).unwrap();
    packet
}

fn is_udp_echo(packet: &[u8], payload: &[u8]) -> bool {
    let Ok(parsed) = SlicedPacket::from_ip(packet) else { return false };
    matches!(parsed.transport, Some(TransportSlice::Udp(u)) if u.payload() == payload && u.source_port() == ECHO_PORT)
}

fn ping4(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(7, seq)
        .write(&mut packet, b"tailnode")
        .unwrap();
    packet
}

fn is_echo_reply4(packet: &[u8], seq: u16) -> bool {
    let Ok(parsed) = SlicedPacket::from_ip(packet) else { return false };
    let Some(TransportSlice::Icmpv4(icmp)) = parsed.transport else { return false };
    matches!(icmp.icmp_type(), etherparse::Icmpv4Type::EchoReply(e) if e.seq == seq)
}

async fn wait_for_direct_path(node: &Node, peer: &str) -> Option<SocketAddr> {
    let _ = (node, peer);
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_ping_reach_the_official_node_both_families() {
    let fixture = lab().await;
    let options = Options { port: 0, loopback_endpoints: true };
    let mut node = Node::join(settings(&fixture, "ours"), Identity::fresh(), options, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(node.hostname, "ours");
    assert_eq!(node.lookup("peer.lab.ts.net"), Some((fixture.peer.ipv4, fixture.peer.ipv6)));
    let (device, wire) = Wire::pair();
    let _service = node.start(device).unwrap();

    let v4 = udp(node.ipv4.into(), fixture.peer.ipv4.into(), b"over v4");
    let took = wire.exchange(&v4, |p| is_udp_echo(p, b"over v4")).await;
    eprintln!("UDP over IPv4 answered after {took:?}");
    let v6 = udp(node.ipv6.into(), fixture.peer.ipv6.into(), b"over v6");
    wire.exchange(&v6, |p| is_udp_echo(p, b"over v6")).await;
    wire.exchange(&ping4(node.ipv4, fixture.peer.ipv4, 1), |p| is_echo_reply4(p, 1)).await;
    let _ = wait_for_direct_path(&node, "peer").await;
    node.shutdown().await;
}
