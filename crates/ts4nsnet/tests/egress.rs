//! Host egress, as root: a container on the lab tailnet reaches "the internet" (servers in a
//! namespace of their own, behind a veth pair, not an outside address) through the host's
//! network, TCP and UDP over both families, while its tailnet peer stays reachable; the host's
//! loopback only when podman leaves it open; nothing when egress is off; a flood of connections
//! bounded. Skips, saying why, when not root or without `ip`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

mod support;
use support::{
    HOST_V4, Internet, Lab, Netns, SERVER_V4, SERVER_V6, can_run, peer_echoes, ping, ping6,
    start_with,
};

const PORT: u16 = 8080;

/// The internet with TCP and UDP echo servers on both families that also tell each client the
/// address it came from.
fn internet(lab: &Lab) -> Internet {
    let internet = Internet::start();
    for server in [SERVER_V4, SERVER_V6] {
        let addr = SocketAddr::new(server.parse().unwrap(), PORT);
        let (tcp, udp) = internet
            .netns
            .run(|| (TcpListener::bind(addr).unwrap(), UdpSocket::bind(addr).unwrap()));
        serve(lab, tcp, udp);
    }
    internet
}

/// TCP: the client's address as a line, then its bytes echoed until it closes. UDP: each
/// datagram back, prefixed with the sender's address.
fn serve(lab: &Lab, tcp: TcpListener, udp: UdpSocket) {
    tcp.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    let _guard = lab.rt.enter();
    let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
    let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
    lab.rt.spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, from)) = tcp.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(format!("{}\n", from.ip()).as_bytes()).await;
                let mut buffer = vec![0u8; 65536];
                while let Ok(len) = stream.read(&mut buffer).await {
                    if len == 0 || stream.write_all(&buffer[..len]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    lab.rt.spawn(async move {
        let mut buffer = vec![0u8; 65536];
        while let Ok((len, from)) = udp.recv_from(&mut buffer).await {
            let mut answer = format!("{} ", from.ip()).into_bytes();
            answer.extend_from_slice(&buffer[..len]);
            let _ = udp.send_to(&answer, from).await;
        }
    });
}

/// The host's `net.ipv4.ping_group_range` opened to every group until dropped (it also governs
/// IPv6 ping sockets).
struct PingGroups(String);

impl PingGroups {
    const PATH: &str = "/proc/sys/net/ipv4/ping_group_range";

    /// Whether the range includes root's group already (ts4nsnet runs as root here).
    fn root_allowed() -> bool {
        let range = std::fs::read_to_string(Self::PATH).unwrap();
        let bounds: Vec<i64> = range.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        matches!(bounds[..], [low, high] if low <= 0 && 0 <= high)
    }

    fn allow_all() -> PingGroups {
        let before = std::fs::read_to_string(Self::PATH).unwrap();
        std::fs::write(Self::PATH, "0 2147483647").unwrap();
        PingGroups(before)
    }
}

impl Drop for PingGroups {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.trim());
    }
}

/// Connects, reads the line naming where the server saw us come from, and echoes `bytes`.
fn tcp_echo(to: SocketAddr, bytes: usize) -> Result<String, std::io::Error> {
    tcp_echo_segments(to, bytes).map(|(seen, _)| seen)
}

/// [`tcp_echo`], and the largest segment the connection carried by then, as the container's
/// kernel settled it with the other end (after data, once both windows are known).
fn tcp_echo_segments(to: SocketAddr, bytes: usize) -> Result<(String, u32), std::io::Error> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        seen.push(byte[0]);
    }
    let sent: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone()?;
        let sent = sent.clone();
        std::thread::spawn(move || stream.write_all(&sent))
    };
    let mut back = vec![0u8; bytes];
    stream.read_exact(&mut back)?;
    writer.join().unwrap()?;
    assert!(back == sent, "the echo of {bytes} bytes from {to} differs");
    let mss = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::TcpMaxSeg)?;
    Ok((String::from_utf8(seen).unwrap(), mss))
}

/// Sends a datagram (up to three times: UDP may drop one) and returns the answer.
fn udp_echo(to: SocketAddr) -> Option<String> {
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let socket = UdpSocket::bind(bind).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buffer = [0u8; 2048];
    (0..3).find_map(|_| {
        socket.send_to(b"datagram", to).unwrap();
        let (len, from) = socket.recv_from(&mut buffer).ok()?;
        assert_eq!(from, to, "the answer comes from the address asked");
        Some(String::from_utf8_lossy(&buffer[..len]).into_owned())
    })
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

#[test]
fn a_container_reaches_the_internet_and_its_peer_at_once() {
    if !can_run() {
        return;
    }
    let lab = Lab::start();
    let _internet = internet(&lab);
    let host_loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback_port = host_loopback.local_addr().unwrap().port();

    let netns = Netns::add(&format!("ts4nsnet-egress-{}", std::process::id()));
    let args = ["--enable-ipv6", "--disable-host-loopback"];
    let mut node = start_with(&netns, &lab.url, "web", &args, &[("TS_AUTHKEY", &lab.key)]);
    node.wait_ready().unwrap();
    let peer_ip = lab.peer.ipv4;
    // The internet gets podman's MTU; the tailnet's ranges keep the tailnet's, in both families.
    assert!(netns.ip(&["link", "show", "tap0"]).contains("mtu 65520"));
    let tailnet6 = netns.ip(&["-6", "route", "show", "fd7a:115c:a1e0::/48"]);
    assert!(tailnet6.contains("dev tap0") && tailnet6.contains("mtu 1280"), "{tailnet6}");

    netns.run(|| {
        // TCP both families, a megabyte each way at once, seen from the host's address, in
        // segments as large as podman's MTU allows, as slirp4netns gives them (the tailnet's
        // 1240 bytes would be fifty times the packets, and half slirp4netns's speed).
        let (seen, mss) =
            tcp_echo_segments(addr(SERVER_V4, PORT), 1 << 20).expect("TCP to the internet (v4)");
        assert_eq!(seen, HOST_V4);
        assert!(mss > 60_000, "TCP segments to the internet (v4) are {mss} bytes");
        let (seen, mss) =
            tcp_echo_segments(addr(SERVER_V6, PORT), 1 << 20).expect("TCP to the internet (v6)");
        assert_eq!(seen, "2001:db8:51::1");
        assert!(mss > 60_000, "TCP segments to the internet (v6) are {mss} bytes");
        // UDP both families.
        assert_eq!(udp_echo(addr(SERVER_V4, PORT)).as_deref(), Some("198.51.100.1 datagram"));
        assert_eq!(udp_echo(addr(SERVER_V6, PORT)).as_deref(), Some("2001:db8:51::1 datagram"));
        // A closed port is refused at once, as on the host.
        let refused = TcpStream::connect_timeout(&addr(SERVER_V4, 1), Duration::from_secs(5));
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionRefused);
        // The host's loopback is closed (--disable-host-loopback): its alias is just an address.
        let alias =
            TcpStream::connect_timeout(&addr("10.0.2.2", loopback_port), Duration::from_secs(3));
        assert!(alias.is_err(), "the host's loopback must be closed");
        // And the tailnet is still the tailnet.
        peer_echoes(peer_ip.into(), b"still here");
        // An address in the tailnet's range that no peer holds never leaks to the host.
        let stray = TcpStream::connect_timeout(&addr("100.100.7.7", PORT), Duration::from_secs(2));
        assert_eq!(stray.unwrap_err().kind(), ErrorKind::TimedOut);
    });

    // Ping goes out only where the host allows ping sockets (this machine's default does not;
    // Fedora CoreOS's does). The setting is the host namespace's, so it is changed out here.
    if !PingGroups::root_allowed() {
        let pinged = netns.run(|| ping(SERVER_V4.parse().unwrap()));
        assert!(!pinged, "ping sockets are not allowed yet");
    }
    let allowed = PingGroups::allow_all();
    netns.run(|| {
        assert!(ping(SERVER_V4.parse().unwrap()), "no echo reply from the internet (v4)");
        assert!(ping6(SERVER_V6.parse().unwrap()), "no echo reply from the internet (v6)");
    });
    drop(allowed);
    drop(node);
}

#[test]
fn the_host_loopback_opens_without_disable_host_loopback_and_egress_can_be_off() {
    if !can_run() {
        return;
    }
    let lab = Lab::start();
    let _internet = internet(&lab);
    let host_loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback_port = host_loopback.local_addr().unwrap().port();

    let open = Netns::add(&format!("ts4nsnet-open-{}", std::process::id()));
    let mut node = start_with(&open, &lab.url, "open", &[], &[("TS_AUTHKEY", &lab.key)]);
    node.wait_ready().unwrap();
    open.run(|| {
        let stream =
            TcpStream::connect_timeout(&addr("10.0.2.2", loopback_port), Duration::from_secs(10));
        stream.expect("the host's loopback through 10.0.2.2");
    });
    let (_accepted, from) = host_loopback.accept().unwrap();
    assert!(from.ip().is_loopback(), "{from}");
    drop(node);

    let off = Netns::add(&format!("ts4nsnet-off-{}", std::process::id()));
    let env = [("TS_AUTHKEY", lab.key.as_str()), ("TS_EGRESS", "off")];
    let mut node = start_with(&off, &lab.url, "closed", &[], &env);
    node.wait_ready().unwrap();
    off.run(|| {
        let blocked = TcpStream::connect_timeout(&addr(SERVER_V4, PORT), Duration::from_secs(2));
        assert_eq!(blocked.unwrap_err().kind(), ErrorKind::TimedOut, "egress is off");
        assert_eq!(udp_echo(addr(SERVER_V4, PORT)), None);
    });
    drop(node);
}

#[test]
fn a_connection_flood_is_bounded_and_the_tailnet_keeps_working() {
    if !can_run() {
        return;
    }
    let lab = Lab::start();
    let _internet = internet(&lab);
    let netns = Netns::add(&format!("ts4nsnet-flood-{}", std::process::id()));
    let mut node = start_with(&netns, &lab.url, "flood", &[], &[("TS_AUTHKEY", &lab.key)]);
    node.wait_ready().unwrap();
    let limit = ts4nsnet::egress::Limits::default().tcp_connections;
    let peer_ip = lab.peer.ipv4;
    netns.run(|| {
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..limit + 50 {
            match TcpStream::connect_timeout(&addr(SERVER_V4, PORT), Duration::from_secs(10)) {
                Ok(stream) => open.push(stream),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => panic!("after {} connections: {e}", open.len()),
            }
        }
        assert_eq!((open.len(), refused), (limit, 50), "the limit holds, and only it");
        // The tailnet is unaffected by a full egress table.
        peer_echoes(peer_ip.into(), b"x");
        // Closed connections free their places.
        drop(open);
        let again = (0..50).find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            tcp_echo(addr(SERVER_V4, PORT), 10).ok()
        });
        assert_eq!(again.as_deref(), Some(HOST_V4), "a new connection once the old ones closed");
    });
    drop(node);
}

/// The lab's exit node: a tailnode node that takes peers' packets for any address
/// (`forward`) on a TUN in a namespace of its own, whose kernel forwards them to the internet
/// over a second veth pair, and the internet's answers back. (The lab's tailscale-rs peer has a
/// socket stack, not a kernel to forward with.)
struct ExitPeer {
    node: Option<tailnode::Node>,
    _netns: Netns,
}

impl ExitPeer {
    fn start(lab: &Lab, internet: &Internet) -> ExitPeer {
        let id = std::process::id() % 100_000;
        let netns = Netns::add(&format!("ts4nsnet-exit-{id}"));
        let (exit_if, inet_if) = (format!("tpx{id}e"), format!("tpx{id}i"));
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["link", "add", &exit_if, "netns", &netns.0, "type", "veth", "peer", "name", &inet_if]);
        ip(&["link", "set", &inet_if, "netns", &internet.netns.0]);
        ip(&["-n", &netns.0, "addr", "add", "203.0.113.1/24", "dev", &exit_if]);
        ip(&["-n", &netns.0, "link", "set", &exit_if, "up"]);
        ip(&["-n", &internet.netns.0, "addr", "add", "203.0.113.2/24", "dev", &inet_if]);
        ip(&["-n", &internet.netns.0, "link", "set", &inet_if, "up"]);
        ip(&["-n", &netns.0, "route", "add", "198.51.100.0/24", "via", "203.0.113.2"]);
        ip(&["-n", &internet.netns.0, "route", "add", "100.64.0.0/10", "via", "203.0.113.1"]);
        netns.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap());

        let target = ts4nsnet::cli::Netns::Path(netns.path());
        let mut interface = ts4nsnet::netns::Interface::create(&target, "tap0").unwrap();
        let settings = tailnode::Settings {
            control_url: lab.url.parse().unwrap(),
            auth_key: Some(lab.key.clone()),
            hostname: "exit".into(),
            tags: vec![],
            ephemeral: true,
            client_name: "exit-peer".into(),
        };
        let options = tailnode::Options { forward: true, ..tailnode::Options::default() };
        let identity = tailnode::Identity::fresh();
        let join = tailnode::Node::join(settings, identity, options, Duration::from_secs(30));
        let mut node = lab.rt.block_on(join).unwrap();
        interface.configure(node.ipv4, None, 1280).unwrap();
        let _guard = lab.rt.enter();
        node.start(interface.tun).unwrap();
        ExitPeer { node: Some(node), _netns: netns }
    }

    /// Leaves the tailnet (an ephemeral node logs out: gone from every netmap at once).
    fn stop(&mut self, lab: &Lab) {
        if let Some(node) = self.node.take() {
            lab.rt.block_on(node.shutdown());
        }
    }
}

#[test]
fn an_exit_node_carries_the_internet_and_nothing_falls_back_when_it_goes() {
    if !can_run() {
        return;
    }
    let lab = Lab::start();
    let internet = internet(&lab);
    let mut exit = ExitPeer::start(&lab, &internet);
    let routes = ["0.0.0.0/0", "::/0"].map(|r| r.parse().unwrap()).to_vec();
    assert!(lab.net.control.approve_routes("exit", routes));

    let netns = Netns::add(&format!("ts4nsnet-via-exit-{}", std::process::id()));
    let env = [("TS_AUTHKEY", lab.key.as_str()), ("TS_EXIT_NODE", "exit")];
    let mut node = start_with(&netns, &lab.url, "client", &[], &env);
    node.wait_ready().unwrap();
    let client = lab.net.control.nodes().into_iter().find(|n| n.hostname == "client").unwrap();
    let peer_ip = lab.peer.ipv4;
    netns.run(|| {
        // The internet sees the client's tailnet address: it came through the exit node, not
        // the host (which would show as 198.51.100.1).
        let seen = tcp_echo(addr(SERVER_V4, PORT), 64 * 1024).expect("TCP through the exit node");
        assert_eq!(seen, client.ipv4.to_string());
        let answer = udp_echo(addr(SERVER_V4, PORT)).expect("UDP through the exit node");
        assert_eq!(answer, format!("{} datagram", client.ipv4));
    });

    exit.stop(&lab);
    netns.run(|| {
        // Fail closed: once the exit node is gone, nothing reaches the internet, and the host's
        // own network is not used instead; the tailnet still works.
        let gone = (0..50).find(|_| {
            let attempt =
                TcpStream::connect_timeout(&addr(SERVER_V4, PORT), Duration::from_secs(1));
            attempt.is_err()
        });
        assert!(gone.is_some(), "the internet is still reached with the exit node gone");
        assert_eq!(udp_echo(addr(SERVER_V4, PORT)), None);
        peer_echoes(peer_ip.into(), b"x");
    });
    let log = node.log();
    assert!(log.contains("exit node exit: the internet goes through it"), "{log}");
    assert!(log.contains("exit node exit is not on the tailnet"), "{log}");
}
