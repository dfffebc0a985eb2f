//! The node's view of the tailnet: itself, its peers, the DERP map and the packet filter, kept
//! up to date from control's stream (full maps and deltas alike).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ts_control::{DerpMap, Node, NodeId, PeerUpdate, StateUpdate};
use ts_packetfilter::HashbrownFilter;

/// What control last told us. Cheap to share: the data path gets it behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Netmap {
    /// This node, once control has sent it.
    pub node: Option<Node>,
    pub peers: BTreeMap<NodeId, Node>,
    pub derp: DerpMap,
    /// The packet filter's rule sets, as control's updates leave them.
    pub filter: HashbrownFilter,
}

impl Netmap {
    /// Folds one update in; `true` when anything changed.
    pub fn apply(&mut self, update: StateUpdate) -> bool {
        let mut changed = false;
        if let Some(node) = update.node {
            changed |= self.node.as_ref() != Some(&node);
            self.node = Some(node);
        }
        if let Some(derp) = update.derp {
            changed |= self.derp != derp;
            self.derp = derp;
        }
        if let Some((ruleset, named)) = update.packetfilter {
            ts_packetfilter_state::apply_update(&mut self.filter, ruleset, &named);
            changed = true;
        }
        match update.peer_update {
            None => {}
            Some(PeerUpdate::Full(peers)) => {
                self.peers = peers.into_iter().map(|p| (p.id, p)).collect();
                changed = true;
            }
            Some(PeerUpdate::Delta { patch, upsert, remove }) => {
                for id in remove {
                    self.peers.remove(&id);
                }
                for peer in upsert {
                    self.peers.insert(peer.id, peer);
                }
                for change in patch {
                    if let Some(peer) = self.peers.get_mut(&change.id) {
                        peer.apply_update(&change);
                    }
                }
                changed = true;
            }
        }
        changed
    }

    /// The peer named `name` (bare or fully qualified, any case) or holding tailnet address
    /// `name`: how an exit node is chosen.
    pub fn peer(&self, name: &str) -> Option<&Node> {
        let name = name.trim_end_matches('.');
        let ip = name.parse::<std::net::IpAddr>().ok();
        self.peers.values().find(|n| match ip {
            Some(std::net::IpAddr::V4(ip)) => n.tailnet_address.ipv4.addr() == ip,
            Some(std::net::IpAddr::V6(ip)) => n.tailnet_address.ipv6.addr() == ip,
            None => n.matches_name(&name.to_ascii_lowercase()),
        })
    }

    /// A peer's (or our own) addresses by bare or fully qualified name, for MagicDNS.
    pub fn lookup(&self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        let addresses = |n: &Node| (n.tailnet_address.ipv4.addr(), n.tailnet_address.ipv6.addr());
        let name = name.trim_end_matches('.');
        self.node.iter().chain(self.peers.values()).find(|n| n.matches_name(name)).map(addresses)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ts_control::{NodeUpdate, TailnetAddress};

    pub(crate) fn node(id: NodeId, name: &str) -> Node {
        Node {
            id,
            stable_id: ts_control::StableNodeId(format!("n{id}")),
            hostname: name.to_owned(),
            capability_version: Default::default(),
            status: Default::default(),
            tailnet: Some("lab.ts.net".into()),
            node_capabilities: Default::default(),
            tags: vec![],
            tailnet_address: TailnetAddress {
                ipv4: format!("100.64.0.{id}/32").parse().unwrap(),
                ipv6: format!("fd7a:115c:a1e0::{id}/128").parse().unwrap(),
            },
            node_key: ts_keys::NodeKeyPair::random().public,
            node_key_expiry: None,
            machine_key: None,
            disco_key: None,
            tailnet_lock_key_signature: None,
            accepted_routes: vec![],
            underlay_addresses: vec![],
            derp_region: None,
        }
    }

    fn update() -> StateUpdate {
        StateUpdate {
            derp: None,
            node: None,
            peer_update: None,
            ping: None,
            packetfilter: None,
            pop_browser_url: None,
            dial_plan: None,
        }
    }

    #[test]
    fn deltas_add_patch_and_remove_peers_and_names_resolve() {
        let mut netmap = Netmap::default();
        let full = StateUpdate {
            node: Some(node(1, "web")),
            peer_update: Some(PeerUpdate::Full(vec![node(2, "db"), node(3, "cache")])),
            ..update()
        };
        assert!(netmap.apply(full));
        assert_eq!(
            netmap.lookup("db.lab.ts.net.").map(|a| a.0),
            Some("100.64.0.2".parse().unwrap())
        );
        assert_eq!(netmap.lookup("web").map(|a| a.0), Some("100.64.0.1".parse().unwrap()));
        assert_eq!(netmap.lookup("db.other.net"), None);

        let endpoint = "192.0.2.9:41641".parse().unwrap();
        let delta = StateUpdate {
            peer_update: Some(PeerUpdate::Delta {
                patch: vec![NodeUpdate {
                    id: 2,
                    underlay_addresses: Some(vec![endpoint]),
                    ..Default::default()
                }],
                upsert: vec![node(4, "queue")],
                remove: vec![3],
            }),
            ..update()
        };
        assert!(netmap.apply(delta));
        assert_eq!(netmap.peers.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(netmap.peers[&2].underlay_addresses, vec![endpoint]);
        assert_eq!(netmap.lookup("cache"), None);
        assert!(!netmap.apply(update()), "an empty update changes nothing");
    }
}
