//! The netmap's peers turned into the data plane's tables.
//!
//! `ts_dataplane::DataPlane` keeps four tables that must agree (WireGuard peers, the outbound
//! overlay routes, the inbound source filter, the underlay route per peer) and has no single
//! "add a peer" call, so this module is the one place that writes them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ts_bart::RoutingTable as _;
use ts_dataplane::DataPlane;
use ts_derp::RegionId;
use ts_keys::{DiscoPublicKey, NodePublicKey};
use ts_overlay_router::{inbound, outbound};
use ts_transport::{DynEndpoint, OverlayTransportId, PeerId, UnderlayTransportId};

use crate::disco::Paths;
use crate::netmap::Netmap;

/// The underlay transport id of direct UDP; DERP regions use their region id (never 0).
pub const UDP: UnderlayTransportId = UnderlayTransportId(0);
/// The one overlay: the TUN.
pub const TUN: OverlayTransportId = OverlayTransportId(0);

/// The transport id of a DERP region.
pub fn derp_transport(region: RegionId) -> UnderlayTransportId {
    UnderlayTransportId(region.0.get())
}

/// What the data path needs to know of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_key: NodePublicKey,
    pub disco_key: Option<DiscoPublicKey>,
    pub derp_region: Option<RegionId>,
    pub endpoints: Vec<SocketAddr>,
    pub name: String,
}

/// The peers by data-plane id, with stable ids per node key.
/// How a node routes beyond its peers' own addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routing {
    /// The exit node chosen: the one peer whose default routes are used.
    pub exit: Option<ts_control::NodeId>,
    /// Deliver peers' packets for any destination to the TUN.
    pub forward: bool,
}

#[derive(Debug, Default)]
pub struct Peers {
    by_id: HashMap<PeerId, Peer>,
    ids: HashMap<NodePublicKey, PeerId>,
    by_disco: HashMap<DiscoPublicKey, PeerId>,
    next_id: u32,
}

impl Peers {
    pub fn get(&self, id: PeerId) -> Option<&Peer> {
        self.by_id.get(&id)
    }

    pub fn by_disco(&self, key: &DiscoPublicKey) -> Option<PeerId> {
        self.by_disco.get(key).copied()
    }

    pub fn by_node_key(&self, key: &NodePublicKey) -> Option<PeerId> {
        self.ids.get(key).copied()
    }

    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.by_id.keys().copied()
    }

    /// Brings the data plane's tables and the path finder in line with `netmap`. A peer's
    /// default routes are used only when it is the `exit` node chosen; with `forward`, packets
    /// from peers for any address reach the TUN (a forwarding host's exit node or router).
    pub fn sync(
        &mut self,
        netmap: &Netmap,
        routing: Routing,
        dp: &mut DataPlane,
        paths: &mut Paths,
        now: Instant,
    ) {
        let mut wanted: HashMap<PeerId, Peer> = HashMap::new();
        let mut routes_out = ts_bart::Table::default();
        let mut sources = ts_bart::Table::default();
        for node in netmap.peers.values() {
            let id = match self.ids.get(&node.node_key) {
                Some(id) => *id,
                None => {
                    self.next_id += 1;
                    self.ids.insert(node.node_key, PeerId(self.next_id));
                    PeerId(self.next_id)
                }
            };
            for route in &node.accepted_routes {
                if route.prefix_len() == 0 && routing.exit != Some(node.id) {
                    continue;
                }
                routes_out.insert(*route, outbound::RouteAction::Wireguard(id));
                sources.insert(*route, id);
            }
            let peer = Peer {
                node_key: node.node_key,
                disco_key: node.disco_key,
                derp_region: node.derp_region,
                endpoints: node.underlay_addresses.clone(),
                name: node.hostname.clone(),
            };
            wanted.insert(id, peer);
        }
        for (id, old) in &self.by_id {
            if wanted.get(id).is_none_or(|new| new.node_key != old.node_key) {
                dp.wireguard.remove_peer(ts_tunnel::PeerId(id.0));
                dp.ur_out.table.remove(id);
                paths.remove(*id);
            }
        }
        self.ids.retain(|_, id| wanted.contains_key(id));
        for (id, peer) in &wanted {
            if self.by_id.get(id).is_none_or(|old| old.node_key != peer.node_key) {
                let config =
                    ts_tunnel::PeerConfig::new(ts_tunnel::PeerId(id.0), peer.node_key, [0; 32]);
                dp.wireguard.upsert_peer(config);
            }
            paths.set_endpoints(*id, &peer.endpoints);
        }
        self.by_disco =
            wanted.iter().filter_map(|(id, peer)| Some((peer.disco_key?, *id))).collect();
        self.by_id = wanted;
        dp.or_out.swap(routes_out);
        dp.src_filter_in = Arc::new(sources);
        let mut routes_in = ts_bart::Table::default();
        if let Some(node) = &netmap.node {
            routes_in
                .insert(node.tailnet_address.ipv4.into(), inbound::RouteAction::ToOverlay(TUN));
            routes_in
                .insert(node.tailnet_address.ipv6.into(), inbound::RouteAction::ToOverlay(TUN));
        }
        if routing.forward {
            for any in ["0.0.0.0/0", "::/0"] {
                let any: ipnet::IpNet = any.parse().expect("a valid prefix");
                routes_in.insert(any, inbound::RouteAction::ToOverlay(TUN));
            }
        }
        dp.or_in.swap(routes_in);
        dp.packet_filter = Arc::new(netmap.filter.clone());
        let ids: Vec<PeerId> = self.by_id.keys().copied().collect();
        for id in ids {
            self.route(id, dp, paths, now);
        }
    }

    /// Points `id`'s underlay route at its direct path when one is trusted, else its DERP home.
    pub fn route(&self, id: PeerId, dp: &mut DataPlane, paths: &Paths, now: Instant) {
        let Some(peer) = self.by_id.get(&id) else { return };
        let route = match (paths.direct(id, now), peer.derp_region) {
            (Some(addr), _) => (UDP, DynEndpoint::udp(addr)),
            (None, Some(region)) => (derp_transport(region), DynEndpoint::derp(peer.node_key)),
            (None, None) => {
                dp.ur_out.table.remove(&id);
                return;
            }
        };
        dp.ur_out.table.insert(id, route);
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::netmap::tests::node;

    fn netmap(peers: Vec<ts_control::Node>) -> Netmap {
        Netmap {
            node: Some(node(1, "self")),
            peers: peers.into_iter().map(|p| (p.id, p)).collect(),
            ..Netmap::default()
        }
    }

    fn with_route(mut n: ts_control::Node, region: u32) -> ts_control::Node {
        n.accepted_routes = vec![n.tailnet_address.ipv4.into(), n.tailnet_address.ipv6.into()];
        n.derp_region = Some(RegionId(NonZeroU32::new(region).unwrap()));
        n
    }

    #[test]
    fn default_routes_are_used_only_from_the_chosen_exit_node() {
        let now = Instant::now();
        let mut dp = DataPlane::new(ts_keys::NodeKeyPair::random());
        let (mut peers, mut paths) = (Peers::default(), Paths::default());
        let mut exits = Vec::new();
        for (id, name) in [(2, "exit"), (3, "other")] {
            let mut n = with_route(node(id, name), 1);
            n.accepted_routes
                .extend(["0.0.0.0/0", "::/0"].map(|r| r.parse::<ipnet::IpNet>().unwrap()));
            exits.push(n);
        }
        let internet: std::net::IpAddr = "198.51.100.2".parse().unwrap();
        peers.sync(&netmap(exits.clone()), Routing::default(), &mut dp, &mut paths, now);
        assert_eq!(dp.src_filter_in.lookup(internet), None, "no exit node chosen");
        let routing = Routing { exit: Some(2), forward: false };
        peers.sync(&netmap(exits.clone()), routing, &mut dp, &mut paths, now);
        let exit = peers.by_node_key(&exits[0].node_key).unwrap();
        assert_eq!(dp.src_filter_in.lookup(internet), Some(&exit));
        assert_eq!(dp.src_filter_in.lookup("2001:db8::1".parse().unwrap()), Some(&exit));
    }

    #[test]
    fn peers_get_stable_ids_and_leave_every_table_together() {
        let now = Instant::now();
        let mut dp = DataPlane::new(ts_keys::NodeKeyPair::random());
        let (mut peers, mut paths) = (Peers::default(), Paths::default());
        let (a, b) = (with_route(node(2, "a"), 1), with_route(node(3, "b"), 2));
        peers.sync(
            &netmap(vec![a.clone(), b.clone()]),
            Routing::default(),
            &mut dp,
            &mut paths,
            now,
        );
        let (id_a, id_b) =
            (peers.by_node_key(&a.node_key).unwrap(), peers.by_node_key(&b.node_key).unwrap());
        assert_ne!(id_a, id_b);
        assert_eq!(dp.wireguard.peer_id(a.node_key), Some(ts_tunnel::PeerId(id_a.0)));
        let (transport, endpoint) = dp.ur_out.table[&id_b].clone();
        assert_eq!((transport, endpoint.as_derp()), (UnderlayTransportId(2), Some(b.node_key)));
        assert_eq!(dp.src_filter_in.lookup("100.64.0.2".parse().unwrap()), Some(&id_a));

        peers.sync(&netmap(vec![b.clone()]), Routing::default(), &mut dp, &mut paths, now);
        assert_eq!(peers.by_node_key(&b.node_key), Some(id_b), "b keeps its id");
        assert_eq!(peers.by_node_key(&a.node_key), None);
        assert_eq!(dp.wireguard.peer_id(a.node_key), None);
        assert!(!dp.ur_out.table.contains_key(&id_a));
        assert_eq!(dp.src_filter_in.lookup("100.64.0.2".parse().unwrap()), None);

        let mut rekeyed = b.clone();
        rekeyed.node_key = ts_keys::NodeKeyPair::random().public;
        peers.sync(&netmap(vec![rekeyed.clone()]), Routing::default(), &mut dp, &mut paths, now);
        assert_eq!(dp.wireguard.peer_id(b.node_key), None, "the old key is gone");
        assert!(dp.wireguard.peer_id(rekeyed.node_key).is_some());
    }
}
