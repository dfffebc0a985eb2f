//! The lab's servers on loopback at the protocol level, through tailscale-rs's own clients
//! (control over Noise, DERP, netcheck's STUN prober): logout, packet filters, outages, STUN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tailnet_lab::{AuthKey, Control, ControlConfig, Derp, Tailnet};
use tokio::net::{TcpStream, UdpSocket};
use ts_capabilityversion::CapabilityVersion;
use ts_control::client::HttpConn;
use ts_control::{PeerUpdate, StateUpdate};
use ts_control_serde::{RegisterRequest, RegisterResponse};
use ts_http_util::{ClientExt, ResponseExt};
use ts_keys::NodeState;
use url::Url;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

type Updates = Pin<Box<dyn Stream<Item = StateUpdate> + Send>>;

/// A node as tailscale-rs's control client is one: keys and a Noise connection to control.
struct Session {
    url: Url,
    keys: NodeState,
    conn: HttpConn,
    hostname: String,
    ephemeral: bool,
}

impl Session {
    /// A fresh Noise connection for `keys`.
    async fn connect(
        control: &Control,
        keys: NodeState,
        hostname: &str,
        ephemeral: bool,
    ) -> Session {
        let url: Url = control.url().parse().unwrap();
        let conn = within("connect", ts_control::connect(&url, &keys.machine_keys)).await.unwrap();
        Session { url, keys, conn, hostname: hostname.to_owned(), ephemeral }
    }

    /// Connects with new keys and registers with `auth_key`.
    async fn join(control: &Control, auth_key: &str, hostname: &str, ephemeral: bool) -> Session {
        let session = Session::connect(control, NodeState::generate(), hostname, ephemeral).await;
        session.register(auth_key).await.unwrap();
        session
    }

    fn config(&self) -> ts_control::Config {
        ts_control::Config {
            server_url: self.url.clone(),
            hostname: Some(self.hostname.clone()),
            client_name: None,
            tags: Vec::new(),
            ephemeral: self.ephemeral,
        }
    }

    async fn register(&self, auth_key: &str) -> Result<(), ts_control::RegistrationError> {
        let config = self.config();
        let register =
            ts_control::register(&config, &self.url, Some(auth_key), None, &self.keys, &self.conn);
        within("register", register).await
    }

    /// Opens a map stream.
    async fn updates(&self) -> Updates {
        let config = self.config();
        let stream =
            ts_control::client::start_stream(&self.url, &self.keys, &config, self.conn.clone());
        Box::pin(within("map request", stream).await.unwrap())
    }

    /// Sends a register request with only our node key and `expiry`, as a logout does;
    /// returns the response's `NodeKeyExpired` and `MachineAuthorized`.
    async fn register_expiring(&self, expiry: DateTime<Utc>) -> (bool, bool) {
        let request = RegisterRequest {
            version: CapabilityVersion::CURRENT,
            node_key: self.keys.node_keys.public,
            expiry: Some(expiry),
            ..RegisterRequest::default()
        };
        let body = serde_json::to_vec(&request).unwrap();
        let url = self.url.join("machine/register").unwrap();
        let response = within("register", self.conn.post(&url, None, body.into())).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.collect_bytes().await.unwrap();
        let response: RegisterResponse = serde_json::from_slice(&body).unwrap();
        (response.node_key_expired, response.machine_authorized)
    }
}

/// Reads netmaps until `check` accepts one.
async fn until(updates: &mut Updates, what: &str, check: impl Fn(&StateUpdate) -> bool) {
    let found = async {
        while let Some(update) = updates.next().await {
            if check(&update) {
                return;
            }
        }
        panic!("the map stream ended before {what}");
    };
    within(what, found).await;
}

/// The ids of a full peer list.
fn peer_ids(update: &StateUpdate) -> Option<Vec<i64>> {
    match &update.peer_update {
        Some(PeerUpdate::Full(peers)) => Some(peers.iter().map(|p| p.id).collect()),
        _ => None,
    }
}

/// The base packet filter (Tailscale's `PacketFilter`), as the node reads it.
fn packet_filter(update: &StateUpdate) -> Option<&[ts_packetfilter::Rule]> {
    update.packetfilter.as_ref()?.0.as_deref()
}

/// The DERP server of the first netmap; and rustls' crypto provider picked for the DERP client
/// (a workspace build enables two, and rustls then refuses to guess).
async fn derp_server(updates: &mut Updates) -> ts_derp::ServerConnInfo {
    tailnode::node::install_crypto_provider();
    let update = within("a netmap", updates.next()).await.expect("a netmap");
    let map = update.derp.expect("a DERP map");
    let region = map.values().next().expect("a region");
    region.servers[0].clone()
}

fn id_of(control: &Control, hostname: &str) -> i64 {
    control.nodes().iter().find(|n| n.hostname == hostname).expect("registered").id
}

fn hostnames(control: &Control) -> Vec<String> {
    control.nodes().into_iter().map(|n| n.hostname).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_removes_the_node_at_once_and_its_peers_see_it_go() {
    let net = Tailnet::start(LOOPBACK).await.unwrap();
    let key = net.control.new_auth_key(AuthKey { reusable: true, ..AuthKey::default() });
    let leaver = Session::join(&net.control, &key, "leaver", false).await;
    let stayer = Session::join(&net.control, &key, "stayer", false).await;
    let leaver_id = id_of(&net.control, "leaver");
    let mut updates = stayer.updates().await;
    let has_leaver = |u: &StateUpdate| peer_ids(u).map(|peers| peers.contains(&leaver_id));
    until(&mut updates, "leaver among the peers", |u| has_leaver(u) == Some(true)).await;

    // Go clients send the zero time when they ask for no expiry: that is no logout.
    let go_zero = NaiveDate::from_ymd_opt(1, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    assert_eq!(leaver.register_expiring(go_zero.and_utc()).await, (false, true));
    assert_eq!(hostnames(&net.control), ["leaver", "stayer"]);

    let past = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(leaver.register_expiring(past).await, (true, false), "expired, not authorized");
    let gone = net.control.wait_for_gone(Duration::from_secs(1), "leaver").await;
    gone.unwrap_or_else(|nodes| panic!("still registered after a second: {nodes:?}"));
    until(&mut updates, "leaver gone from the peers", |u| has_leaver(u) == Some(false)).await;

    // Logging out a node key nobody registered changes nothing.
    let stranger = Session::connect(&net.control, NodeState::generate(), "stranger", false).await;
    assert_eq!(stranger.register_expiring(past).await, (true, false));
    assert_eq!(hostnames(&net.control), ["stayer"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_packet_filter_reaches_every_map_stream() {
    let net = Tailnet::start(LOOPBACK).await.unwrap();
    let key = net.control.new_auth_key(AuthKey { reusable: true, ..AuthKey::default() });
    let guarded = Session::join(&net.control, &key, "guarded", false).await;
    let mut updates = guarded.updates().await;
    let allows_all = |u: &StateUpdate| {
        packet_filter(u)
            .is_some_and(|rules| rules.iter().any(|r| r.dst.iter().any(|d| d.ports == (0..=65535))))
    };
    until(&mut updates, "the allow-all filter", allows_all).await;

    net.control.set_packet_filter(json!([{
        "SrcIPs": ["100.64.0.9/32"],
        "DstPorts": [{ "IP": "*", "Ports": { "First": 22, "Last": 22 } }],
        "IPProto": [6],
    }]));
    let from: ipnet::IpNet = "100.64.0.9/32".parse().unwrap();
    let only_ssh = |u: &StateUpdate| {
        packet_filter(u).is_some_and(|rules| {
            !rules.is_empty()
                && rules
                    .iter()
                    .all(|r| r.src.pfxs == [from] && r.dst.iter().all(|d| d.ports == (22..=22)))
        })
    };
    until(&mut updates, "the SSH-only filter", only_ssh).await;

    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.control.set_packet_filter(json!({ "SrcIPs": ["*"] }));
    }));
    assert!(refused.is_err(), "a filter that is not an array was taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_cuts_every_connection_and_keeps_the_state() {
    let _ = env_logger::builder().is_test(true).try_init();
    // A short reconnect grace, to see a node that never comes back removed after it.
    let derp = Derp::start(SocketAddr::new(LOOPBACK, 0)).await.unwrap();
    let config =
        ControlConfig { reconnect_grace: Duration::from_secs(3), ..Tailnet::config(&derp) };
    let control = Control::start(SocketAddr::new(LOOPBACK, 0), config).await.unwrap();
    let net = Tailnet { control, derp };
    let key = net.control.new_auth_key(AuthKey { reusable: true, ephemeral: true, tags: vec![] });

    let survivor = Session::join(&net.control, &key, "survivor", true).await;
    let no_show = Session::join(&net.control, &key, "no-show", true).await;
    let mut updates = survivor.updates().await;
    let mut no_show_updates = no_show.updates().await;
    let server = derp_server(&mut updates).await;
    let online = net.control.wait_for(Duration::from_secs(10), |n| n.iter().all(|n| n.online));
    online.await.expect("both nodes online");
    let derp_keys = NodeState::generate().node_keys;
    let relayed = ts_derp::DefaultClient::connect([&server], &derp_keys).await.unwrap();

    let control_addr: SocketAddr = net.control.url().trim_start_matches("http://").parse().unwrap();
    let derp_addr = net.derp.addr();
    let while_down = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for addr in [control_addr, derp_addr] {
            assert!(TcpStream::connect(addr).await.is_err(), "{addr} accepted during the outage");
        }
        let cut = async {
            while updates.next().await.is_some() {}
            while no_show_updates.next().await.is_some() {}
            relayed.recv_one().await
        };
        assert!(within("the connections to be cut", cut).await.is_err(), "DERP client not cut");
    };
    let (back, ()) = tokio::join!(net.outage(Duration::from_secs(2)), while_down);
    back.unwrap();
    assert!(survivor.register(&key).await.is_err(), "the old Noise connection still works");
    // Two seconds down is past the ephemeral grace (one second): nodes were kept.
    assert_eq!(hostnames(&net.control), ["survivor", "no-show"]);

    // Back on the same addresses: the survivor reconnects as a node does, and DERP relays.
    let survivor = Session::connect(&net.control, survivor.keys, "survivor", true).await;
    survivor.register(&key).await.unwrap();
    let mut updates = survivor.updates().await;
    assert_eq!(derp_server(&mut updates).await, server);
    let clients = [NodeState::generate().node_keys, NodeState::generate().node_keys];
    let [a, b] = clients.each_ref().map(|keys| ts_derp::DefaultClient::connect([&server], keys));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    a.send_one(clients[1].public, b"after the outage").await.unwrap();
    let (from, packet) = within("a relayed packet", b.recv_one()).await.unwrap();
    assert_eq!((from, packet.as_ref()), (clients[0].public, &b"after the outage"[..]));

    // The node that did not come back goes once the reconnect grace is over; the other stays.
    let gone = net.control.wait_for_gone(Duration::from_secs(10), "no-show").await;
    let nodes = gone.unwrap_or_else(|nodes| panic!("no-show was kept: {nodes:?}"));
    assert!(nodes.iter().any(|n| n.hostname == "survivor" && n.online), "{nodes:?}");
}

/// Sends garbage and then a binding request from a socket on `ip`; the one answer must be the
/// request's, naming the socket's address.
async fn check_binding(stun: SocketAddr, ip: IpAddr) {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let transaction: [u8; 12] = *b"lab-stun-txn";
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(&transaction);
    let mut response_shaped = request.clone();
    response_shaped[0] = 0x01;
    let garbage: [&[u8]; 4] = [b"hello", &request[..19], &response_shaped, &[0; 1500]];
    for packet in garbage.into_iter().chain([&request[..]]) {
        socket.send_to(packet, stun).await.unwrap();
    }
    let mut answer = [0; 1500];
    let (len, from) = within("a STUN answer", socket.recv_from(&mut answer)).await.unwrap();
    assert_eq!(from, stun);
    assert_eq!(xor_mapped_address(&answer[..len], transaction), Some(socket.local_addr().unwrap()));
    let more = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut answer));
    assert!(more.await.is_err(), "garbage was answered");
}

/// The address in a binding success response (RFC 5389) for `transaction`.
fn xor_mapped_address(response: &[u8], transaction: [u8; 12]) -> Option<SocketAddr> {
    let cookie = [0x21, 0x12, 0xa4, 0x42];
    if response.get(..2)? != [0x01, 0x01] || response.get(4..8)? != cookie {
        return None;
    }
    if response.get(8..20)? != transaction || response.len() != 20 + usize::from(response[3]) {
        return None;
    }
    let mut attributes = &response[20..];
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + len)?;
        if kind == 0x0020 {
            let key: Vec<u8> = cookie.iter().chain(&transaction).copied().collect();
            let port = u16::from_be_bytes([value[2] ^ key[0], value[3] ^ key[1]]);
            let ip: Vec<u8> = value[4..].iter().zip(&key).map(|(b, k)| b ^ k).collect();
            let ip = match value[1] {
                1 => IpAddr::from(<[u8; 4]>::try_from(ip).ok()?),
                2 => IpAddr::from(<[u8; 16]>::try_from(ip).ok()?),
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        attributes = attributes.get(4 + len.next_multiple_of(4)..)?;
    }
    None
}

/// STUN beside a relay on `ip`: raw binding requests, the DERP map's STUN port, and
/// tailscale-rs's own STUN prober.
async fn stun_on(ip: IpAddr) {
    // Control stays on IPv4: the library's HTTP client cannot dial a bracketed IPv6 host.
    let net =
        Tailnet::start_on(SocketAddr::new(LOOPBACK, 0), SocketAddr::new(ip, 0)).await.unwrap();
    let stun = net.derp.stun_addr();
    assert_eq!(stun.ip(), ip);
    check_binding(stun, ip).await;

    let key = net.control.new_auth_key(AuthKey::default());
    let node = Session::join(&net.control, &key, "prober", false).await;
    let server = derp_server(&mut node.updates().await).await;
    assert_eq!(server.stun_port, Some(stun.port()));
    match ip {
        IpAddr::V4(ip) => assert_eq!(server.ipv4, ts_derp::IpUsage::FixedAddr(ip)),
        IpAddr::V6(ip) => assert_eq!(server.ipv6, ts_derp::IpUsage::FixedAddr(ip)),
    }
    let prober = ts_netcheck::StunProber::try_new().await.unwrap();
    let (_, mapped) = within("netcheck's STUN probe", prober.measure(stun)).await.unwrap();
    assert_eq!(mapped.ip(), ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_tells_an_ipv4_client_its_address() {
    stun_on(LOOPBACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_tells_an_ipv6_client_its_address() {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if UdpSocket::bind(SocketAddr::new(ip, 0)).await.is_err() {
        return tailnet_lab::skip("needs IPv6 on loopback");
    }
    stun_on(ip).await;
}
