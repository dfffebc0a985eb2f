//! The packet loop: one task that owns the data plane and moves batches between the TUN device,
//! the UDP sockets and the DERP relays.
//!
//! TUN batch → `process_outbound` → UDP or DERP; UDP or DERP batch → `process_inbound` → TUN.
//! No per-packet hand-off between tasks and no unbounded queue: a full socket makes the loop
//! wait, which leaves the TUN device unread, which is the back-pressure the container's own
//! TCP sees. Disco and STUN answers are handled in the same loop, so a direct path is used
//! from the pong that proves it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use ts_control_serde::EndpointType;
use ts_dataplane::DataPlane;
use ts_derp::{IpUsage, RegionId};
use ts_keys::{DiscoKeyPair, NodePublicKey};
use ts_packet::PacketMut;
use ts_transport::{PeerId, UnderlayTransportId};

use crate::control::Reachability;
use crate::derp::{Inbound, Relays};
use crate::disco::{self, Message, Paths, Probe};
use crate::netmap::Netmap;
use crate::peers::{Peers, Routing, UDP};
use crate::stun;
use crate::tun::Tun;
use crate::udp::{self, Underlay};

/// How often path discovery, path expiry and the endpoint refresh are looked at.
const TICK: Duration = Duration::from_millis(250);
/// How often local addresses and the STUN mapping are checked again.
const REFRESH: Duration = Duration::from_secs(20);
/// Tailscale's service addresses (quad-100), answered on the node rather than on the tailnet.
const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);
/// The largest packet the tailnet carries: what Tailscale's WireGuard fits in every path.
pub const TAILNET_MTU: usize = 1280;
/// At most this many endpoints are offered to control.
const MAX_ENDPOINTS: usize = 16;

/// How the data path reaches the world.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The UDP port for direct paths; 0 lets the kernel pick.
    pub port: u16,
    /// Offer loopback addresses as endpoints too: for nodes that share one host (tests and
    /// benchmarks); never useful across machines.
    pub loopback_endpoints: bool,
    /// Never look for direct paths: everything goes through DERP (for networks that drop UDP,
    /// and to test the relay path).
    pub derp_only: bool,
    /// Hand packets for destinations outside the tailnet to [`Wiring::egress`] (the host's own
    /// network) instead of dropping them at the tailnet's edge.
    pub egress: bool,
    /// Send what is outside the tailnet through this peer (its name or tailnet address) once
    /// it offers default routes; never around it: while it cannot, such packets are dropped.
    pub exit_node: Option<String>,
    /// With an exit node, private LAN ranges still go to [`Options::egress`].
    pub exit_node_allow_lan: bool,
    /// Deliver peers' packets for any destination to the TUN, for a host that forwards them
    /// (an exit node or subnet router); otherwise only those for our own addresses.
    pub forward: bool,
}

/// Where a packet from the TUN goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Service,
    Tailnet,
    Egress,
}

/// Private ranges of a LAN, which `exit_node_allow_lan` keeps off the exit node.
const LAN: [IpNet; 5] = [
    IpNet::V4(v4_net([10, 0, 0, 0], 8)),
    IpNet::V4(v4_net([172, 16, 0, 0], 12)),
    IpNet::V4(v4_net([192, 168, 0, 0], 16)),
    IpNet::V4(v4_net([169, 254, 0, 0], 16)),
    IpNet::V6(v6_net([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)),
];

/// The direct paths in use, by peer name; what is not here goes through DERP.
pub type DirectPaths = std::collections::BTreeMap<String, SocketAddr>;

/// Where an underlay packet came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Udp(SocketAddr),
    Derp,
}

/// The loop's state; see the module docs.
pub struct DataPath {
    dp: DataPlane,
    disco_keys: DiscoKeyPair,
    node_key: NodePublicKey,
    options: Options,
    tun: Arc<Tun>,
    udp: Underlay,
    relays: Relays,
    relayed: mpsc::Receiver<Inbound>,
    peers: Peers,
    paths: Paths,
    netmap_rx: watch::Receiver<Arc<Netmap>>,
    netmap: Arc<Netmap>,
    reachability: watch::Sender<Reachability>,
    service: mpsc::Sender<PacketMut>,
    egress: Option<mpsc::Sender<PacketMut>>,
    /// Where the tailnet is: its address ranges and the routes peers offer.
    tailnet_routes: Vec<IpNet>,
    /// The exit node's state, as last logged.
    exit_state: Option<ExitState>,
    direct: watch::Sender<DirectPaths>,
    home: Option<RegionId>,
    /// What STUN last reported, per family (v4, v6).
    mapped: [Option<SocketAddr>; 2],
    stun_pending: HashMap<stun::TransactionId, Instant>,
    next_refresh: Instant,
    active_seen: usize,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath").field("udp", &self.udp).finish_non_exhaustive()
    }
}

/// How the data path talks with the rest of the node.
#[derive(Debug)]
pub struct Wiring {
    /// Control's view of the tailnet, in.
    pub netmap: watch::Receiver<Arc<Netmap>>,
    /// Our endpoints and home region, out to control.
    pub reachability: watch::Sender<Reachability>,
    /// Packets for the service address, out to whoever answers them.
    pub service: mpsc::Sender<PacketMut>,
    /// Packets for outside the tailnet, out to the host's network, when [`Options::egress`].
    pub egress: Option<mpsc::Sender<PacketMut>>,
    /// The direct paths in use, out.
    pub direct: watch::Sender<DirectPaths>,
    /// The DERP regions connected now, out.
    pub relayed_by: watch::Sender<crate::derp::Connected>,
}

impl DataPath {
    pub fn new(
        keys: &ts_keys::NodeState,
        options: Options,
        tun: Arc<Tun>,
        wiring: Wiring,
    ) -> std::io::Result<DataPath> {
        let Wiring { netmap: netmap_rx, reachability, service, egress, direct, relayed_by } =
            wiring;
        let udp = Underlay::bind(options.port)?;
        let (relayed_tx, relayed) = mpsc::channel(1024);
        let netmap = netmap_rx.borrow().clone();
        Ok(DataPath {
            dp: DataPlane::new(keys.node_keys.clone()),
            disco_keys: keys.disco_keys.clone(),
            node_key: keys.node_keys.public,
            options: options.clone(),
            tun,
            udp,
            relays: Relays::new(keys.node_keys.clone(), relayed_tx, relayed_by),
            relayed,
            peers: Peers::default(),
            paths: Paths::default(),
            netmap,
            netmap_rx,
            reachability,
            service,
            egress: egress.filter(|_| options.egress),
            tailnet_routes: Vec::new(),
            exit_state: None,
            direct,
            home: None,
            mapped: [None, None],
            stun_pending: HashMap::new(),
            next_refresh: Instant::now(),
            active_seen: 0,
        })
    }

    /// Runs until `stop` is set or the TUN device goes away; says why it ended.
    #[allow(clippy::mutable_key_type)] // see `send`
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> String {
        log::debug!("data path: UDP port {}", self.udp.port());
        self.netmap_changed();
        let mut scratch = vec![0u8; udp::SCRATCH.max(65536)];
        let mut from_tun = Vec::with_capacity(crate::tun::BATCH);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.dp.next_event().map(tokio::time::Instant::from_std);
            tokio::select! {
                read = self.tun.read_batch(&mut scratch, &mut from_tun) => match read {
                    Ok(true) => {
                        let packets = std::mem::take(&mut from_tun);
                        self.outbound(packets).await;
                    }
                    Ok(false) => return "the TUN device was closed".into(),
                    Err(e) => return format!("the TUN device failed: {e}"),
                },
                ready = self.udp.v4.readable() => {
                    if ready.is_ok() {
                        let mut datagrams = Vec::new();
                        udp::recv_batch(&self.udp.v4, &mut scratch, &mut datagrams);
                        self.receive_udp(datagrams).await;
                    }
                },
                ready = readable(self.udp.v6.as_ref()) => {
                    if let (Ok(()), Some(v6)) = (ready, self.udp.v6.as_ref()) {
                        let mut datagrams = Vec::new();
                        udp::recv_batch(v6, &mut scratch, &mut datagrams);
                        self.receive_udp(datagrams).await;
                    }
                },
                Some(first) = self.relayed.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < udp::BATCH {
                        match self.relayed.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    self.receive_relayed(batch).await;
                },
                changed = self.netmap_rx.changed() => {
                    if changed.is_err() {
                        return "the control client stopped".into();
                    }
                    self.netmap_changed();
                },
                _ = sleep_until(wake) => {
                    let due = self.dp.process_events();
                    self.send(due).await;
                },
                _ = tick.tick() => self.tick().await,
                () = stop_requested(&mut stop) => return "asked to stop".into(),
            }
        }
    }

    async fn outbound(&mut self, packets: Vec<PacketMut>) {
        let mut to_tailnet = Vec::with_capacity(packets.len());
        for packet in packets {
            let way = packet.get_dst_addr().map_or(Way::Tailnet, |dst| self.way(dst));
            match way {
                Way::Service => {
                    let _dropped_when_busy = self.service.try_send(packet);
                }
                Way::Egress => {
                    if let Some(egress) = &self.egress {
                        // Dropped when busy, as a full link would: the container's TCP resends.
                        let _dropped_when_busy = egress.try_send(packet);
                    }
                }
                // Bigger than the tailnet carries (the container's interface has a larger MTU
                // for the internet, and a peer's subnet route took the default route's): tell
                // the sender, whose path MTU discovery then sends smaller.
                _ if packet.len() > TAILNET_MTU => {
                    if let Some(answer) =
                        crate::packet::too_big(packet.as_ref(), TAILNET_MTU as u16)
                        && let Err(e) = self.tun.write(&answer).await
                    {
                        log::debug!("writing to the TUN device: {e}");
                    }
                }
                _ => to_tailnet.push(packet),
            }
        }
        if to_tailnet.is_empty() {
            return;
        }
        let result = self.dp.process_outbound(to_tailnet);
        self.send(result.to_peers).await;
        if self.dp.active_peers.len() != self.active_seen {
            self.active_seen = self.dp.active_peers.len();
            self.discover().await;
        }
    }

    /// Where a packet for `dst` goes. The tailnet's own ranges stay on the tailnet (a packet
    /// for an address no peer holds stops here, never leaking to the host's network), and so
    /// do routes peers offer. A peer's default route is used only when it is the exit node
    /// chosen; with one chosen, everything else goes to it (the LAN aside, when allowed), and
    /// nothing falls back to the host's network.
    fn way(&self, dst: IpAddr) -> Way {
        if dst == IpAddr::V4(SERVICE_V4) || dst == IpAddr::V6(SERVICE_V6) {
            return Way::Service;
        }
        if self.tailnet_routes.iter().any(|net| net.contains(&dst)) {
            return Way::Tailnet;
        }
        let lan = || LAN.iter().any(|net| net.contains(&dst));
        match &self.options.exit_node {
            Some(_) if self.options.exit_node_allow_lan && self.egress.is_some() && lan() => {
                Way::Egress
            }
            Some(_) => Way::Tailnet,
            None if self.egress.is_some() => Way::Egress,
            None => Way::Tailnet,
        }
    }

    async fn receive_udp(&mut self, datagrams: Vec<(SocketAddr, PacketMut)>) {
        let mut wireguard = Vec::with_capacity(datagrams.len());
        for (from, packet) in datagrams {
            if ts_disco_protocol::is_disco_message(packet.as_ref()) {
                self.disco(Source::Udp(from), packet).await;
            } else if stun::is_stun(packet.as_ref()) {
                self.stun_answer(packet.as_ref());
            } else {
                wireguard.push(packet);
            }
        }
        self.inbound(wireguard).await;
    }

    async fn receive_relayed(&mut self, batch: Vec<Inbound>) {
        let mut wireguard = Vec::with_capacity(batch.len());
        for (_region, _from, packet) in batch {
            if ts_disco_protocol::is_disco_message(packet.as_ref()) {
                self.disco(Source::Derp, packet).await;
            } else {
                wireguard.push(packet);
            }
        }
        self.inbound(wireguard).await;
    }

    async fn inbound(&mut self, packets: Vec<PacketMut>) {
        if packets.is_empty() {
            return;
        }
        let result = self.dp.process_inbound(packets);
        for packet in result.to_local.into_values().flatten() {
            if let Err(e) = self.tun.write(packet.as_ref()).await {
                log::debug!("writing to the TUN device: {e}");
            }
        }
        self.send(result.to_peers).await;
    }

    /// Sends the data plane's output: UDP now, DERP through the region's queue.
    // The map's keys hold `DynEndpoint`s, which clippy cannot see are immutable; it is the
    // library's type, and only iterated here.
    #[allow(clippy::mutable_key_type)]
    async fn send(&mut self, to_peers: ts_underlay_router::outbound::Result) {
        for ((transport, endpoint), packets) in to_peers {
            if transport == UDP {
                if let Some(to) = endpoint.as_udp() {
                    self.udp.send(to, &packets).await;
                }
            } else if let (Some(region), Some(to)) = (region_of(transport), endpoint.as_derp()) {
                self.relay(region, to, packets);
            }
        }
    }

    fn relay(&mut self, region: RegionId, to: NodePublicKey, packets: Vec<PacketMut>) {
        if let Some(info) = self.netmap.derp.get(&region) {
            self.relays.ensure(region, &info.servers);
        }
        self.relays.send(region, to, packets);
    }

    async fn disco(&mut self, source: Source, mut packet: PacketMut) {
        let Some((sender, message)) = Message::open(packet.as_mut(), &self.disco_keys.private)
        else {
            return;
        };
        let Some(peer) = self.peers.by_disco(&sender) else {
            log::trace!("disco from an unknown key");
            return;
        };
        let now = Instant::now();
        log::trace!("disco {message:?} via {source:?}");
        match (message, source) {
            (Message::Ping { tx, node_key }, Source::Udp(from)) => {
                if self.peers.get(peer).map(|p| p.node_key) != Some(node_key) {
                    return;
                }
                let pong = Message::Pong { tx, src: from }.seal(&self.disco_keys, &sender);
                self.udp.send(from, &[PacketMut::from(pong)]).await;
                if let Some(probe) = self.paths.learn(peer, from, now) {
                    self.ping(probe).await;
                }
            }
            (Message::Pong { tx, .. }, Source::Udp(from))
                if self.paths.pong(&tx, from, now) == Some(peer) =>
            {
                self.path_changed(peer, now);
            }
            (Message::CallMeMaybe(endpoints), Source::Derp) => {
                for endpoint in endpoints {
                    if let Some(probe) = self.paths.learn(peer, endpoint, now) {
                        self.ping(probe).await;
                    }
                }
            }
            // Pings over DERP prove no direct path; call-me-maybe over UDP is not how it works.
            _ => {}
        }
    }

    /// Routes `peer` by its current best path, and says so.
    fn path_changed(&mut self, peer: PeerId, now: Instant) {
        self.peers.route(peer, &mut self.dp, &self.paths, now);
        let Some(name) = self.peers.get(peer).map(|p| p.name.clone()) else { return };
        match self.paths.direct(peer, now) {
            Some(addr) => {
                log::info!("direct path to {name} at {addr}");
                self.direct.send_modify(|paths| {
                    paths.insert(name, addr);
                });
            }
            None => {
                log::info!("direct path to {name} lost; relaying through DERP");
                self.direct.send_modify(|paths| {
                    paths.remove(&name);
                });
            }
        }
    }

    async fn ping(&mut self, probe: Probe) {
        if self.options.derp_only {
            return;
        }
        let Some(disco_key) = self.peers.get(probe.peer).and_then(|p| p.disco_key) else { return };
        let ping = Message::Ping { tx: probe.tx, node_key: self.node_key };
        log::trace!("disco ping to {}", probe.to);
        let sealed = ping.seal(&self.disco_keys, &disco_key);
        self.udp.send(probe.to, &[PacketMut::from(sealed)]).await;
    }

    /// Pings what is due for the peers in use, and asks those without a path to ping us.
    async fn discover(&mut self) {
        let now = Instant::now();
        let active: Vec<PeerId> = self.dp.active_peers.keys().copied().collect();
        if self.options.derp_only {
            return;
        }
        let round = self.paths.due(now, active.iter().copied());
        log::trace!("discovery: {} active, {} pings due", active.len(), round.pings.len());
        for probe in round.pings {
            self.ping(probe).await;
        }
        let ours: Vec<SocketAddr> =
            self.reachability.borrow().endpoints.iter().map(|(e, _)| *e).collect();
        if ours.is_empty() {
            return;
        }
        for peer in round.call_me_maybe {
            let Some(info) = self.peers.get(peer) else { continue };
            let (Some(disco_key), Some(region)) = (info.disco_key, info.derp_region) else {
                continue;
            };
            let to = info.node_key;
            let sealed = Message::CallMeMaybe(ours.clone()).seal(&self.disco_keys, &disco_key);
            self.relay(region, to, vec![PacketMut::from(sealed)]);
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        for peer in self.paths.expired(now) {
            self.path_changed(peer, now);
        }
        self.discover().await;
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH;
            self.stun_pending.retain(|_, sent| now.duration_since(*sent) < REFRESH);
            self.send_stun().await;
            self.report();
        }
    }

    fn netmap_changed(&mut self) {
        self.netmap = self.netmap_rx.borrow_and_update().clone();
        let now = Instant::now();
        let exit = self.options.exit_node.as_deref().map(|name| ExitState::of(&self.netmap, name));
        if exit != self.exit_state {
            if let (Some(state), Some(name)) = (&exit, &self.options.exit_node) {
                state.log(name);
            }
            self.exit_state = exit;
        }
        let routing = Routing {
            exit: match self.exit_state {
                Some(ExitState::Ready(id)) => Some(id),
                _ => None,
            },
            forward: self.options.forward,
        };
        self.peers.sync(&self.netmap, routing, &mut self.dp, &mut self.paths, now);
        self.tailnet_routes = tailnet_routes(&self.netmap);
        let derp = &self.netmap.derp;
        self.relays.retain(|region| derp.contains_key(&region));
        // The home region: the lowest-numbered one that may be a home. Measuring latency
        // would pick better among many regions; control's own map order is what we have.
        let home = derp.iter().find(|(_, r)| !r.info.no_measure_no_home).map(|(id, _)| *id);
        if let Some(home) = home {
            self.relays.ensure(home, &derp[&home].servers);
        }
        if home != self.home {
            self.home = home;
            self.next_refresh = now;
        }
    }

    /// Tells control our endpoints and home region when they changed.
    fn report(&mut self) {
        let mut endpoints = local_endpoints(&self.udp, self.options.loopback_endpoints);
        for mapped in self.mapped.iter().flatten() {
            if !endpoints.iter().any(|(e, _)| e == mapped) {
                endpoints.push((*mapped, EndpointType::Stun));
            }
        }
        endpoints.truncate(MAX_ENDPOINTS);
        let wanted = Reachability { endpoints, home: self.home };
        self.reachability.send_if_modified(|current| {
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
    }

    /// Asks the home region's STUN servers what our UDP socket looks like from outside.
    async fn send_stun(&mut self) {
        let Some(region) = self.home.and_then(|home| self.netmap.derp.get(&home)) else { return };
        let mut targets = Vec::new();
        for server in &region.servers {
            let Some(port) = server.stun_port else { continue };
            if let IpUsage::FixedAddr(ip) = server.ipv4 {
                targets.push(SocketAddr::from((ip, port)));
            }
            if let IpUsage::FixedAddr(ip) = server.ipv6 {
                targets.push(SocketAddr::from((ip, port)));
            }
            if server.ipv4 == IpUsage::UseDns || server.ipv6 == IpUsage::UseDns {
                let lookup = tokio::net::lookup_host((server.hostname.as_str(), port));
                if let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(2), lookup).await {
                    targets.extend(found);
                }
            }
        }
        for target in targets {
            let id: stun::TransactionId = disco::random();
            self.stun_pending.insert(id, Instant::now());
            let request = stun::binding_request(&id);
            self.udp.send(target, &[PacketMut::from(&request[..])]).await;
        }
    }

    fn stun_answer(&mut self, packet: &[u8]) {
        let Some((id, mapped)) = stun::parse_binding_success(packet) else { return };
        if self.stun_pending.remove(&id).is_none() {
            return;
        }
        let slot = usize::from(mapped.is_ipv6());
        if self.mapped[slot] != Some(mapped) {
            log::debug!("STUN: our endpoint is {mapped}");
            self.mapped[slot] = Some(mapped);
            self.report();
        }
    }
}

fn region_of(transport: UnderlayTransportId) -> Option<RegionId> {
    NonZeroU32::new(transport.0).map(RegionId)
}

/// Resolves once `stop` is set (or its sender is gone).
pub(crate) async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn readable(socket: Option<&UdpSocket>) -> std::io::Result<()> {
    match socket {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake).await,
        None => std::future::pending().await,
    }
}

/// This host's addresses a peer might reach, with our port: no multicast, link-local or
/// tailnet addresses (that would route the tailnet through itself), loopback only when asked.
fn local_endpoints(udp: &Underlay, loopback: bool) -> Vec<(SocketAddr, EndpointType)> {
    let port = udp.port();
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut endpoints = Vec::new();
    for interface in interfaces {
        let Some(address) = interface.address else { continue };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            if udp.v6.is_none() {
                continue;
            }
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if usable(ip, loopback) {
            endpoints.push((SocketAddr::new(ip, port), EndpointType::Local));
        }
    }
    endpoints.sort_by_key(|(endpoint, _)| *endpoint);
    endpoints.dedup_by_key(|(endpoint, _)| *endpoint);
    endpoints
}

/// The tailnet's own address ranges (CGNAT for IPv4, Tailscale's ULA prefix for IPv6).
pub const TAILNET_V4: Ipv4Net = v4_net([100, 64, 0, 0], 10);
pub const TAILNET_V6: Ipv6Net = v6_net([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0], 48);

/// A prefix as a constant (a bad length fails the build).
const fn v4_net(octets: [u8; 4], len: u8) -> Ipv4Net {
    let [a, b, c, d] = octets;
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
        Ok(net) => net,
        Err(_) => panic!("a valid prefix"),
    }
}

const fn v6_net(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len) {
        Ok(net) => net,
        Err(_) => panic!("a valid prefix"),
    }
}

/// Whether the chosen exit node can carry traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitState {
    Ready(ts_control::NodeId),
    NotOnTheTailnet,
    NoDefaultRoutes,
}

impl ExitState {
    fn of(netmap: &Netmap, name: &str) -> ExitState {
        match netmap.peer(name) {
            None => ExitState::NotOnTheTailnet,
            Some(peer) if peer.accepted_routes.iter().any(|r| r.prefix_len() == 0) => {
                ExitState::Ready(peer.id)
            }
            Some(_) => ExitState::NoDefaultRoutes,
        }
    }

    fn log(&self, name: &str) {
        match self {
            ExitState::Ready(_) => log::info!("exit node {name}: the internet goes through it"),
            ExitState::NotOnTheTailnet => log::warn!(
                "exit node {name} is not on the tailnet: traffic for the internet is dropped until it is"
            ),
            ExitState::NoDefaultRoutes => log::warn!(
                "exit node {name} offers no default routes (not approved as an exit node?): traffic for the internet is dropped until it does"
            ),
        }
    }
}

/// The tailnet's ranges and every non-default route a peer offers (a subnet router's).
fn tailnet_routes(netmap: &Netmap) -> Vec<IpNet> {
    let mut routes = vec![IpNet::V4(TAILNET_V4), IpNet::V6(TAILNET_V6)];
    for peer in netmap.peers.values() {
        routes.extend(peer.accepted_routes.iter().filter(|route| route.prefix_len() > 0));
    }
    routes.sort();
    routes.dedup();
    routes
}

fn usable(ip: IpAddr, loopback: bool) -> bool {
    let (tailnet_v4, tailnet_v6) = (TAILNET_V4, TAILNET_V6);
    match ip {
        IpAddr::V4(v4) => {
            let unreachable = v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_link_local()
                || (v4.is_loopback() && !loopback);
            !unreachable && !tailnet_v4.contains(&v4)
        }
        IpAddr::V6(v6) => {
            let unreachable = v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || (v6.is_loopback() && !loopback);
            !unreachable && !tailnet_v6.contains(&v6)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_a_peer_could_reach_are_offered() {
        for ip in ["192.0.2.2", "10.0.0.1", "2001:db8::1", "fd00::2", "203.0.113.9"] {
            assert!(usable(ip.parse().unwrap(), false), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "100.64.0.3",
            "fd7a:115c:a1e0::3",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!usable(ip.parse().unwrap(), false), "{ip}");
        }
        assert!(usable("127.0.0.1".parse().unwrap(), true));
        assert!(!usable("100.100.100.100".parse().unwrap(), true), "quad-100 is the tailnet's");
    }

    #[test]
    fn the_tailnet_is_its_ranges_and_peer_routes_but_not_an_exit_nodes_default_route() {
        let mut netmap = Netmap::default();
        let mut router = crate::netmap::tests::node(2, "router");
        router.accepted_routes = ["100.64.0.2/32", "192.168.5.0/24", "0.0.0.0/0", "::/0"]
            .map(|r| r.parse().unwrap())
            .into();
        netmap.peers.insert(2, router);
        let routes = tailnet_routes(&netmap);
        let in_tailnet =
            |ip: &str| routes.iter().any(|net| net.contains(&ip.parse::<IpAddr>().unwrap()));
        for ip in ["100.64.0.2", "100.127.255.1", "fd7a:115c:a1e0::99", "192.168.5.20"] {
            assert!(in_tailnet(ip), "{ip} is the tailnet's");
        }
        for ip in ["198.51.100.7", "192.168.6.1", "2001:db8::1", "100.128.0.1", "10.0.2.2"] {
            assert!(!in_tailnet(ip), "{ip} is outside the tailnet");
        }
    }

    #[test]
    fn transports_map_to_regions_and_udp_is_none() {
        assert_eq!(region_of(UDP), None);
        assert_eq!(
            region_of(crate::peers::derp_transport(RegionId(NonZeroU32::new(7).unwrap()))),
            Some(RegionId(NonZeroU32::new(7).unwrap()))
        );
    }
}
