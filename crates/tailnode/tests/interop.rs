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
    let _ = env_logger::builder().is_test(true).try_init();
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

/// The test's end of the node's packet device, with what a read brought beyond one packet.
struct Wire(Tun, std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>);

impl Wire {
    fn pair() -> (OwnedFd, Wire) {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).unwrap();
        (ours, Wire(Tun::new(theirs).unwrap(), Default::default()))
    }

    async fn send(&self, packet: &[u8]) {
        self.0.write(packet).await.unwrap();
    }

    /// The next packet the node delivers, within `timeout`.
    async fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        if let Some(packet) = self.1.lock().unwrap().pop_front() {
            return Some(packet);
        }
        let (mut scratch, mut packets) = (vec![0u8; 65536], Vec::new());
        let read = self.0.read_batch(&mut scratch, &mut packets);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(true)) => {
                let mut queue = self.1.lock().unwrap();
                queue.extend(packets.iter().map(|p| p.as_ref().to_vec()));
                queue.pop_front()
            }
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

async fn joined(fixture: &Fixture, hostname: &str, options: Options) -> (Node, Wire) {
    let timeout = Duration::from_secs(20);
    let settings = settings(fixture, hostname);
    let mut node = Node::join(settings, Identity::fresh(), options, timeout).await.unwrap();
    assert_eq!(node.hostname, hostname);
    let (device, wire) = Wire::pair();
    let _service = node.start(device).unwrap();
    assert!(node.reachable(Duration::from_secs(10)).await, "no DERP connection");
    (node, wire)
}

/// UDP both families and ping to the peer, and UDP from the peer answered by us.
async fn exchange_everything(node: &Node, wire: &Wire, peer: &LabPeer) {
    let v4 = udp(node.ipv4.into(), peer.ipv4.into(), b"over v4");
    let took = wire.exchange(&v4, |p| is_udp_echo(p, b"over v4")).await;
    eprintln!("UDP over IPv4 answered after {took:?}");
    let v6 = udp(node.ipv6.into(), peer.ipv6.into(), b"over v6");
    wire.exchange(&v6, |p| is_udp_echo(p, b"over v6")).await;
    wire.exchange(&ping4(node.ipv4, peer.ipv4, 1), |p| is_echo_reply4(p, 1)).await;

    // The other way: the official node sends, we answer from our side of the wire.
    let socket = peer.udp_bind(6000).await.unwrap();
    let ours = SocketAddr::new(node.ipv4.into(), 5000);
    let reply = async {
        loop {
            let Some(packet) = wire.recv(Duration::from_secs(20)).await else { return false };
            let Ok(parsed) = SlicedPacket::from_ip(&packet) else { continue };
            if let Some(TransportSlice::Udp(u)) = parsed.transport
                && u.destination_port() == 5000
            {
                let mut answer = Vec::new();
                PacketBuilder::ipv4(node.ipv4.octets(), peer.ipv4.octets(), 64)
                    .udp(5000, u.source_port())
                    .write(&mut answer, b"answered")
                    .unwrap();
                wire.send(&answer).await;
                return true;
            }
        }
    };
    let ask = async {
        for _ in 0..40 {
            socket.send_to(ours, b"hello").await.unwrap();
            let answer = tokio::time::timeout(Duration::from_millis(500), socket.recv_from_bytes());
            if let Ok(Ok((_, data))) = answer.await {
                return data.as_ref() == b"answered";
            }
        }
        false
    };
    let (answered, received) = tokio::join!(ask, reply);
    assert!(received, "the peer's datagram never reached our side");
    assert!(answered, "our answer never reached the peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_derp_udp_and_ping_work_both_families_and_both_ways() {
    let fixture = lab().await;
    let options = Options { derp_only: true, loopback_endpoints: true, ..Options::default() };
    let (node, wire) = joined(&fixture, "relayed", options).await;
    assert_eq!(node.lookup("peer.lab.ts.net"), Some((fixture.peer.ipv4, fixture.peer.ipv6)));
    exchange_everything(&node, &wire, &fixture.peer).await;
    assert!(node.direct_paths().borrow().is_empty(), "a DERP-only node went direct");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_path_to_the_official_node_is_found_and_carries_everything() {
    let fixture = lab().await;
    let options = Options { loopback_endpoints: true, ..Options::default() };
    let (node, wire) = joined(&fixture, "direct", options).await;
    let v4 = udp(node.ipv4.into(), fixture.peer.ipv4.into(), b"warm up");
    wire.exchange(&v4, |p| is_udp_echo(p, b"warm up")).await;
    let mut direct = node.direct_paths();
    let found =
        tokio::time::timeout(Duration::from_secs(10), direct.wait_for(|d| d.contains_key("peer")));
    let path = found.await.expect("no direct path within 10 s").unwrap()["peer"];
    eprintln!("direct path to the peer: {path}");
    exchange_everything(&node, &wire, &fixture.peer).await;
    assert!(node.direct_paths().borrow().contains_key("peer"), "the direct path was lost");
    node.shutdown().await;
}

/// Answers every UDP datagram that reaches `wire` with the same payload, until dropped.
fn udp_echo_behind(wire: Wire) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(packet) = wire.recv(Duration::from_secs(3600)).await {
            let Ok(parsed) = SlicedPacket::from_ip(&packet) else { continue };
            let Some(TransportSlice::Udp(u)) = parsed.transport else { continue };
            let (src, dst) = match parsed.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => (
                    IpAddr::from(ip.header().source_addr()),
                    IpAddr::from(ip.header().destination_addr()),
                ),
                Some(etherparse::NetSlice::Ipv6(ip)) => (
                    IpAddr::from(ip.header().source_addr()),
                    IpAddr::from(ip.header().destination_addr()),
                ),
                _ => continue,
            };
            let builder = match (dst, src) {
                (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
                (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
                _ => continue,
            };
            let mut answer = Vec::new();
            builder
                .udp(u.destination_port(), u.source_port())
                .write(&mut answer, u.payload())
                .unwrap();
            wire.send(&answer).await;
        }
    })
}

fn echo_port_datagram(from: Ipv4Addr, to: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    udp(from.into(), to.into(), payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_starts_on_derp_moves_to_udp_without_loss() {
    let fixture = lab().await;
    let options = Options { loopback_endpoints: true, ..Options::default() };
    let (a, wire_a) = joined(&fixture, "upgrader", options.clone()).await;
    let (b, wire_b) = joined(&fixture, "upgraded", options).await;
    let echo = udp_echo_behind(wire_b);
    let mut direct = a.direct_paths();
    assert!(direct.borrow().is_empty());

    // One datagram every 5 ms, each answered; see what comes back while the path changes.
    let started = Instant::now();
    let (mut sent, mut answers, mut direct_after) = (0u32, Vec::new(), None);
    let collect = |packet: Vec<u8>, answers: &mut Vec<u32>| {
        let Ok(parsed) = SlicedPacket::from_ip(&packet) else { return };
        if let Some(TransportSlice::Udp(u)) = parsed.transport
            && let Ok(sequence) = u.payload().try_into()
        {
            answers.push(u32::from_be_bytes(sequence));
        }
    };
    while started.elapsed() < Duration::from_secs(4) {
        wire_a.send(&echo_port_datagram(a.ipv4, b.ipv4, &sent.to_be_bytes())).await;
        sent += 1;
        while let Some(packet) = wire_a.recv(Duration::from_millis(5)).await {
            collect(packet, &mut answers);
        }
        if direct_after.is_none() && direct.borrow_and_update().contains_key("upgraded") {
            direct_after = Some((started.elapsed(), sent));
        }
    }
    while let Some(packet) = wire_a.recv(Duration::from_millis(300)).await {
        collect(packet, &mut answers);
    }
    let (after, switched_at) = direct_after.expect("the flow never went direct");
    let first = *answers.first().expect("nothing was answered");
    eprintln!(
        "direct after {after:?} (datagram {switched_at}); {} of {sent} answered, from {first}",
        answers.len()
    );
    assert!(after < Duration::from_secs(1), "direct only after {after:?}");
    // WireGuard keeps one datagram while it handshakes (over DERP) and drops the others; from
    // the handshake on, nothing may be lost across the switch to UDP. (Order may change once:
    // the datagram kept can arrive after the first ones sent direct.)
    let queued = *answers.iter().min().expect("nothing was answered");
    let delivered: std::collections::BTreeSet<u32> =
        answers.iter().copied().filter(|&s| s > queued).collect();
    let settled = *delivered.first().expect("only one datagram was answered");
    let lost: Vec<u32> = (settled..sent).filter(|s| !delivered.contains(s)).collect();
    assert!(lost.is_empty(), "lost after the handshake (from {settled}): {lost:?}");
    assert_eq!(delivered.len(), answers.len() - 1, "answered twice: {answers:?}");
    echo.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_control_and_derp_restart() {
    let fixture = lab().await;
    let options = Options { derp_only: true, ..Options::default() };
    let (a, wire_a) = joined(&fixture, "steady", options.clone()).await;
    let (b, wire_b) = joined(&fixture, "other", options.clone()).await;
    let echo = udp_echo_behind(wire_b);
    let before = echo_port_datagram(a.ipv4, b.ipv4, b"before");
    wire_a.exchange(&before, |p| is_udp_echo(p, b"before")).await;

    fixture.net.outage(Duration::from_secs(3)).await.unwrap();
    let came_back = Instant::now();
    let after = echo_port_datagram(a.ipv4, b.ipv4, b"after");
    let took = wire_a.exchange(&after, |p| is_udp_echo(p, b"after")).await;
    eprintln!("relayed again {:?} after the servers came back", came_back.elapsed().min(took));

    // Control streams again: a node that joins now is in the others' netmaps.
    let (late, _wire) = joined(&fixture, "late", options).await;
    let mut seen = false;
    for _ in 0..100 {
        if a.lookup("late").is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "a node that joined after the restart never reached the netmap");
    let names: Vec<String> = fixture.net.control.nodes().into_iter().map(|n| n.hostname).collect();
    for name in ["steady", "other", "late"] {
        assert!(names.iter().any(|n| n == name), "{name} is gone: {names:?}");
    }
    echo.abort();
    for node in [a, b, late] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_s_packet_filter_decides_what_comes_in() {
    let fixture = lab().await;
    let options = Options { derp_only: true, ..Options::default() };
    let (a, wire_a) = joined(&fixture, "client", options.clone()).await;
    let (b, wire_b) = joined(&fixture, "server", options).await;
    let echo = udp_echo_behind(wire_b);
    // Only UDP to port 7 of the server, and the answers back to the client's port 40000.
    fixture.net.control.set_packet_filter(serde_json::json!([
        { "SrcIPs": ["*"], "DstPorts": [{ "IP": b.ipv4.to_string(), "Ports": { "First": 7, "Last": 7 } }], "IPProto": [17] },
        { "SrcIPs": ["*"], "DstPorts": [{ "IP": a.ipv4.to_string(), "Ports": { "First": 40000, "Last": 40000 } }], "IPProto": [17] },
    ]));
    let allowed = echo_port_datagram(a.ipv4, b.ipv4, b"allowed");
    wire_a.exchange(&allowed, |p| is_udp_echo(p, b"allowed")).await;

    let mut denied = Vec::new();
    PacketBuilder::ipv4(a.ipv4.octets(), b.ipv4.octets(), 64)
        .udp(40000, 8)
        .write(&mut denied, b"denied")
        .unwrap();
    for _ in 0..5 {
        wire_a.send(&denied).await;
    }
    while let Some(packet) = wire_a.recv(Duration::from_secs(1)).await {
        assert!(!is_udp_echo(&packet, b"denied"), "port 8 got through the filter");
    }
    echo.abort();
    a.shutdown().await;
    b.shutdown().await;
}
