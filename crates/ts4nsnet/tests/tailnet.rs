//! End to end on loopback, as root: ts4nsnet puts a network namespace on a lab tailnet (control
//! and DERP from tailnet-lab) next to a plain tailscale-rs peer, and traffic flows both ways.
//! Skips, saying why, when not root or without `ip`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

mod support;
use support::{
    BULK_PORT, ECHO_PORT, Lab, Netns, can_run, peer_echoes, ping, ping6, start, start_with,
};

fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn two_containers_talk_through_their_own_kernel_stacks() {
    if !can_run() {
        return;
    }
    let Lab { rt, net, key, url, peer } = Lab::start();
    let id = std::process::id();
    let (a, b) = (Netns::add(&format!("ts4nsnet-a-{id}")), Netns::add(&format!("ts4nsnet-b-{id}")));
    let env = [("TS_AUTHKEY", key.as_str())];
    let mut alpha = start_with(&a, &url, "alpha", &["--enable-ipv6"], &env);
    let mut beta = start_with(&b, &url, "beta", &["--enable-ipv6"], &env);
    alpha.wait_ready().unwrap();
    beta.wait_ready().unwrap();
    let beta_node = net.control.nodes().into_iter().find(|n| n.hostname == "beta").unwrap();
    let (v4, v6) = (beta_node.ipv4, beta_node.ipv6);

    // Dual-stack sockets: one each for both families.
    let echo =
        b.run(|| (UdpSocket::bind("[::]:7000").unwrap(), TcpListener::bind("[::]:7001").unwrap()));
    let servers = std::thread::spawn(move || {
        let (udp, tcp) = echo;
        for _ in 0..2 {
            let mut buffer = [0u8; 64];
            let (len, from) = udp.recv_from(&mut buffer).unwrap();
            udp.send_to(&buffer[..len], from).unwrap();
        }
        for _ in 0..2 {
            let (mut stream, _) = tcp.accept().unwrap();
            let mut buffer = [0u8; 5];
            stream.read_exact(&mut buffer).unwrap();
            stream.write_all(&buffer).unwrap();
        }
    });
    a.run(|| {
        for to in [IpAddr::V4(v4), IpAddr::V6(v6)] {
            let local: SocketAddr =
                if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
            let udp = UdpSocket::bind(local).unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buffer = [0u8; 64];
            let answered = (0..5).any(|_| {
                udp.send_to(b"datagram", (to, 7000)).unwrap();
                udp.recv_from(&mut buffer).is_ok_and(|(len, _)| &buffer[..len] == b"datagram")
            });
            assert!(answered, "no UDP echo from {to}");
        }
        for to in [IpAddr::V4(v4), IpAddr::V6(v6)] {
            let mut tcp =
                TcpStream::connect_timeout(&SocketAddr::new(to, 7001), Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("TCP to {to}: {e}"));
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            tcp.write_all(b"hello").unwrap();
            let mut back = [0u8; 5];
            tcp.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"hello");
        }
        assert!(ping(v4), "no IPv4 echo reply from beta");
        assert!(ping6(v6), "no IPv6 echo reply from beta");
    });
    servers.join().unwrap();

    // Kernel TCP both ways, well past any window: 64 MiB up and down.
    let bulk = support::between_namespaces(&a, &b, v4.into(), 64 << 20).unwrap();
    eprintln!(
        "alpha to beta: up {:.1} MB/s, down {:.1} MB/s",
        bulk.upload_mb_s, bulk.download_mb_s
    );

    // TCP over IPv6 to the official peer (its echo listens on both families).
    let peer_v6 = peer.ipv6;
    a.run(|| {
        peer_echoes(peer_v6.into(), b"six");
    });

    // A download from the official peer into a container completes too.
    let size: u64 = 64 << 20;
    let peer_ip = peer.ipv4;
    let started = std::time::Instant::now();
    a.run(|| {
        let mut bulk = TcpStream::connect((peer_ip, BULK_PORT)).expect("TCP to the bulk port");
        bulk.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = vec![b'D'];
        request.extend_from_slice(&size.to_be_bytes());
        bulk.write_all(&request).unwrap();
        let (mut received, mut buffer) = (0, vec![0u8; 65536]);
        while received < size {
            match bulk.read(&mut buffer) {
                Ok(n) if n > 0 => received += n as u64,
                other => panic!("download stalled after {received} bytes: {other:?}"),
            }
        }
    });
    eprintln!("64 MiB from the official peer in {:?}", started.elapsed());

    // Ephemeral nodes log out on exit: gone from control within a second.
    for (node, name, other) in [(&mut alpha, "alpha", "beta"), (&mut beta, "beta", "alpha")] {
        node.exit = None;
        let (code, stderr) = node.finish(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stderr.contains(&format!("direct path to {other} at")), "{name} relayed: {stderr}");
        let gone = rt.block_on(
            net.control.wait_for(Duration::from_secs(1), |n| n.iter().all(|n| n.hostname != name)),
        );
        assert!(gone.is_ok(), "{name} stayed on the tailnet: {gone:?}");
    }
    rt.block_on(peer.shutdown());
}

#[test]
fn a_restart_with_a_state_dir_is_the_same_node() {
    if !can_run() {
        return;
    }
    let Lab { rt, net, url, peer, .. } = Lab::start();
    let grants = tailnet_lab::AuthKey { reusable: false, ephemeral: false, tags: vec![] };
    let key = net.control.new_auth_key(grants);
    let state = std::env::temp_dir().join(format!("ts4nsnet-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let netns = Netns::add(&format!("ts4nsnet-keep-{}", std::process::id()));
    let state_dir = state.to_str().unwrap();
    let mut first =
        start_with(&netns, &url, "keep", &[], &[("TS_AUTHKEY", &key), ("TS_STATE_DIR", state_dir)]);
    first.wait_ready().unwrap();
    let before = net.control.nodes().into_iter().find(|n| n.hostname == "keep").unwrap();
    first.exit = None;
    assert_eq!(first.finish(Duration::from_secs(10)).0, Some(0));

    // The key was single-use: the node comes back on its own identity.
    let mut second = start_with(&netns, &url, "keep", &[], &[("TS_STATE_DIR", state_dir)]);
    second.wait_ready().unwrap();
    let after: Vec<_> =
        net.control.nodes().into_iter().filter(|n| n.requested_hostname == "keep").collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].id, after[0].ipv4, after[0].ipv6), (before.id, before.ipv4, before.ipv6));
    assert_eq!(after[0].hostname, "keep", "no -1 rename");
    second.exit = None;
    assert_eq!(second.finish(Duration::from_secs(10)).0, Some(0));
    std::fs::remove_dir_all(&state).unwrap();
    rt.block_on(peer.shutdown());
}

#[test]
fn a_namespace_joins_the_tailnet_through_ts4nsnet() {
    if !can_run() {
        return;
    }
    let Lab { rt, net, key, url, peer } = Lab::start();

    let netns = Netns::add(&format!("ts4nsnet-e2e-{}", std::process::id()));
    let mut node = start(&netns, &url, &key, "web");
    node.wait_ready().unwrap();

    // The interface is configured as slirp4netns would: up, podman's MTU for the internet (the
    // tailnet's ranges routed at the tailnet's), address, routes.
    let link = netns.ip(&["link", "show", "tap0"]);
    assert!(link.contains("mtu 65520") && link.contains(",UP"), "{link}");
    let tailnet = netns.ip(&["route", "show", "100.64.0.0/10"]);
    assert!(tailnet.contains("dev tap0") && tailnet.contains("mtu 1280"), "{tailnet}");
    assert!(netns.ip(&["link", "show", "lo"]).contains(",UP"));
    let ours = net.control.nodes().into_iter().find(|n| n.hostname == "web").unwrap();
    let addr = netns.ip(&["-4", "addr", "show", "tap0"]);
    assert!(addr.contains(&format!("inet {}/32", ours.ipv4)), "{addr}");
    let route = netns.ip(&["route", "show", "default"]);
    assert!(route.contains("dev tap0"), "{route}");

    // Container to peer: TCP, UDP, ping.
    let peer_ip = peer.ipv4;
    netns.run(|| {
        peer_echoes(peer_ip.into(), &[7u8; 1000]);

        // A download from the peer: its bursts must not outrun the packet path.
        let mut bulk = TcpStream::connect((peer_ip, BULK_PORT)).expect("TCP to the bulk port");
        bulk.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let size: u64 = 1 << 20;
        let mut request = vec![b'D'];
        request.extend_from_slice(&size.to_be_bytes());
        bulk.write_all(&request).unwrap();
        let mut received = 0;
        let mut buffer = vec![0u8; 65536];
        while received < size {
            match bulk.read(&mut buffer) {
                Ok(n) if n > 0 => received += n as u64,
                other => panic!("download stalled after {received} bytes: {other:?}"),
            }
        }

        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        udp.send_to(b"datagram", (peer_ip, ECHO_PORT)).unwrap();
        let mut buffer = [0u8; 64];
        let (len, from) = udp.recv_from(&mut buffer).expect("UDP echo");
        assert_eq!(
            (&buffer[..len], from),
            (&b"datagram"[..], SocketAddr::new(peer_ip.into(), ECHO_PORT))
        );

        assert!(ping(peer_ip), "no echo reply from the peer");

        // MagicDNS names through quad-100.
        // Over UDP, so asked up to three times, as a resolver would.
        let ask = |name: &str, buffer: &mut [u8]| {
            (0..3)
                .find_map(|_| {
                    udp.send_to(&dns_query(name), "100.100.100.100:53").unwrap();
                    udp.recv_from(buffer).ok().map(|(len, _)| len)
                })
                .unwrap_or_else(|| panic!("no DNS answer for {name}"))
        };
        for name in ["peer", "peer.lab.ts.net"] {
            let len = ask(name, &mut buffer);
            assert_eq!(buffer[3] & 0x0f, 0, "{name}: rcode");
            assert_eq!(&buffer[len - 4..len], &peer_ip.octets(), "{name}");
        }
        ask("nobody", &mut buffer);
        assert_eq!(buffer[3] & 0x0f, 3, "NXDOMAIN");
    });

    // Peer to container: a server inside the namespace, on a port nobody declared.
    let listener = netns.run(|| TcpListener::bind("0.0.0.0:8080").unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, from) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = [0u8; 5];
        stream.read_exact(&mut request).unwrap();
        stream.write_all(&request).unwrap();
        from
    });
    let echoed = rt.block_on(async {
        let stream = peer.tcp_connect(SocketAddr::new(ours.ipv4.into(), 8080)).await?;
        stream.send(b"hello").await.map_err(|e| e.to_string())?;
        let reply = tokio::time::timeout(Duration::from_secs(10), stream.recv_bytes()).await;
        reply.map_err(|_| "no reply within 10 s".to_owned())?.map_err(|e| e.to_string())
    });
    assert_eq!(echoed.as_deref(), Ok(&b"hello"[..]));
    let from = server.join().unwrap();
    assert_eq!(from.ip(), IpAddr::from(peer_ip), "the source address is preserved");

    // Podman closing the exit pipe ends it, and the ephemeral node leaves the tailnet.
    node.exit = None;
    let (code, stderr) = node.finish(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("exit fd"), "{stderr}");
    let gone = rt.block_on(
        net.control.wait_for(Duration::from_secs(15), |n| n.iter().all(|n| n.hostname != "web")),
    );
    assert!(gone.is_ok(), "the ephemeral node stayed: {gone:?}");

    // Removing the namespace ends it too.
    netns.delete();
    let again = Netns::add(&netns.0);
    let mut node = start(&again, &url, &key, "web");
    node.wait_ready().unwrap();
    again.delete();
    let (code, stderr) = node.finish(Duration::from_secs(15));
    assert!(stderr.contains("is gone") || stderr.contains("went away"), "{code:?} {stderr}");

    // A name taken by another node is refused, not silently renamed.
    let third = Netns::add(&format!("ts4nsnet-e2e-c{}", std::process::id()));
    let mut clash = start(&third, &url, &key, "peer");
    assert!(clash.wait_ready().unwrap_err().contains("hostname collision"));

    rt.block_on(peer.shutdown());
}

/// Runs `ts4nsnet VERB ARGS` as netavark does: JSON on stdin, JSON on stdout.
fn plugin(verb: &str, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ts4nsnet"))
        .arg(verb)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_netavark_plugin_sets_up_and_tears_down_a_node() {
    if !can_run() {
        return;
    }
    let Lab { rt, net, key, url, peer } = Lab::start();

    let netns = Netns::add(&format!("ts4nsnet-plugin-{}", std::process::id()));
    let runtime_dir = std::env::temp_dir().join(format!("ts4nsnet-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&runtime_dir).unwrap();
    let id = format!("{:064x}", std::process::id());
    let request = serde_json::json!({
        "container_id": id,
        "container_name": "shop",
        "port_mappings": [],
        "network": {"name": "tailnet", "driver": "ts4nsnet", "options": {"control_url": url}},
        "network_options": {"interface_name": "eth0", "static_ips": []}
    })
    .to_string();
    let netns_path = netns.path().display().to_string();
    let env = [("TS_AUTHKEY", key.as_str()), ("XDG_RUNTIME_DIR", runtime_dir.to_str().unwrap())];

    let (ok, out) = plugin("info", &[], "", &[]);
    assert!(ok && out.contains("\"api_version\":\"1.0.0\""), "{out}");

    // setup: the node joins under the container's name and the status block says where.
    let (ok, out) = plugin("setup", &[&netns_path], &request, &env);
    assert!(ok, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ours = net.control.nodes().into_iter().find(|n| n.hostname == "shop").expect("joined");
    assert_eq!(
        status["interfaces"]["eth0"]["subnets"][0]["ipnet"],
        format!("{}/32", ours.ipv4),
        "{out}"
    );
    assert_eq!(status["dns_server_ips"][0], "100.100.100.100");
    let peer_ip = peer.ipv4;
    netns.run(|| {
        peer_echoes(peer_ip.into(), b"plugin");
    });

    // teardown: the daemon leaves the tailnet and its state goes; a second one is a no-op.
    let (ok, out) = plugin("teardown", &[&netns_path], &request, &env);
    assert!(ok && out.is_empty(), "{out}");
    let gone = rt.block_on(
        net.control.wait_for(Duration::from_secs(15), |n| n.iter().all(|n| n.hostname != "shop")),
    );
    assert!(gone.is_ok(), "the plugin's node stayed: {gone:?}");
    assert!(!runtime_dir.join("ts4nsnet").join(&id).exists());
    assert!(plugin("teardown", &[&netns_path], &request, &env).0);

    // A key the control server refuses: an error for netavark, and nothing left running.
    let bad = [("TS_AUTHKEY", "tskey-auth-nope"), env[1]];
    let (ok, out) = plugin("setup", &[&netns_path], &request, &bad);
    assert!(!ok && out.starts_with("{\"error\":"), "{out}");
    assert!(!out.contains("tskey-auth-nope"), "the key leaked: {out}");
    assert!(out.contains("auth"), "the error says why: {out}");
    eprintln!("setup with a refused key: {out}");
    let daemon =
        std::fs::read_to_string(runtime_dir.join("ts4nsnet").join(&id).join("daemon.json"));
    let pid = daemon.ok().and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok());
    let pid = pid.and_then(|d| d["pid"].as_i64()).expect("the failed daemon was recorded");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
    assert!(matches!(state, None | Some(Some('Z'))), "the failed daemon still runs: {stat}");

    let _ = std::fs::remove_dir_all(&runtime_dir);
    rt.block_on(peer.shutdown());
}
