//! DERP: the relay every peer can reach, used until a direct path is proven and whenever none is.
//!
//! One task a region: it dials, keeps the connection and dials again (with backoff) when it
//! drops, so a restarted relay costs a reconnect, not the node. Packets to a region wait in a
//! bounded queue and are dropped when it is full, as a router would; packets from every region
//! share one bounded queue into the data path, which pushes back on the relay connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use ts_derp::{RegionId, ServerConnInfo};
use ts_http_util::Client as _;
use ts_keys::{NodeKeyPair, NodePublicKey};
use ts_packet::PacketMut;

/// Packets queued to one region before new ones are dropped.
const QUEUE: usize = 1024;
/// How long one dial (TCP, TLS, upgrade, handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between dials to a region that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A packet from a relay: the region, the sending node and the bytes.
pub type Inbound = (RegionId, NodePublicKey, PacketMut);

type Client = ts_derp::Client<ts_http_util::Upgraded>;

/// The regions with a live connection now.
pub type Connected = std::collections::BTreeSet<RegionId>;

/// The node's relay connections, one a region in use.
#[derive(Debug)]
pub struct Relays {
    keys: NodeKeyPair,
    inbound: mpsc::Sender<Inbound>,
    links: HashMap<RegionId, Link>,
    connected: Arc<watch::Sender<Connected>>,
}

#[derive(Debug)]
struct Link {
    servers: Vec<ServerConnInfo>,
    outbound: mpsc::Sender<(NodePublicKey, PacketMut)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relays {
    pub fn new(
        keys: NodeKeyPair,
        inbound: mpsc::Sender<Inbound>,
        connected: watch::Sender<Connected>,
    ) -> Relays {
        Relays { keys, inbound, links: HashMap::new(), connected: Arc::new(connected) }
    }

    /// Keeps a connection to `region` open (dialing it now if it is not).
    pub fn ensure(&mut self, region: RegionId, servers: &[ServerConnInfo]) {
        if self.links.get(&region).is_some_and(|link| link.servers == servers) {
            return;
        }
        let (outbound, queue) = mpsc::channel(QUEUE);
        let task = tokio::spawn(keep_connected(
            region,
            servers.to_vec(),
            self.keys.clone(),
            queue,
            self.inbound.clone(),
            self.connected.clone(),
        ));
        self.links.insert(region, Link { servers: servers.to_vec(), outbound, task });
    }

    /// Closes the connections to regions no longer in `keep`.
    pub fn retain(&mut self, keep: impl Fn(RegionId) -> bool) {
        self.links.retain(|region, _| keep(*region));
        self.connected.send_if_modified(|connected| {
            let before = connected.len();
            connected.retain(|region| keep(*region));
            connected.len() != before
        });
    }

    /// Queues `packets` for `to` through `region`; `false` if the region is unknown.
    pub fn send(&self, region: RegionId, to: NodePublicKey, packets: Vec<PacketMut>) -> bool {
        let Some(link) = self.links.get(&region) else { return false };
        for packet in packets {
            if link.outbound.try_send((to, packet)).is_err() {
                log::trace!("DERP region {region}: queue full, packet dropped");
            }
        }
        true
    }
}

async fn keep_connected(
    region: RegionId,
    servers: Vec<ServerConnInfo>,
    keys: NodeKeyPair,
    mut outbound: mpsc::Receiver<(NodePublicKey, PacketMut)>,
    inbound: mpsc::Sender<Inbound>,
    connected: Arc<watch::Sender<Connected>>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut was_connected = false;
    loop {
        let client = match tokio::time::timeout(DIAL_TIMEOUT, dial(&servers, &keys)).await {
            Ok(Ok(client)) => Arc::new(client),
            Ok(Err(e)) => {
                log::warn!("DERP region {region}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                log::warn!("DERP region {region}: no connection within {DIAL_TIMEOUT:?}; retrying");
                continue;
            }
        };
        if was_connected {
            log::info!("DERP region {region}: reconnected");
        } else {
            log::debug!("DERP region {region}: connected");
        }
        was_connected = true;
        backoff = Duration::from_secs(1);
        connected.send_modify(|regions| {
            regions.insert(region);
        });
        let reader = {
            let (client, inbound) = (client.clone(), inbound.clone());
            async move {
                loop {
                    let (from, packet) = client.recv_one().await.map_err(|e| e.to_string())?;
                    if inbound.send((region, from, packet)).await.is_err() {
                        return Ok::<(), String>(());
                    }
                }
            }
        };
        let writer = async {
            while let Some((to, packet)) = outbound.recv().await {
                client.send_one(to, packet.as_ref()).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        let ended = tokio::select! {
            ended = reader => ended,
            ended = writer => match ended {
                // The node dropped this region.
                Ok(()) => Ok(()),
                Err(e) => Err(e),
            },
        };
        connected.send_modify(|regions| {
            regions.remove(&region);
        });
        match ended {
            Ok(()) => return,
            Err(e) => log::warn!("DERP region {region}: connection lost ({e}); reconnecting"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Dials a region's servers (in order) and completes the DERP handshake. Written over the
/// library's parts rather than `ts_derp::Client::connect`, which panics on a TLS failure.
async fn dial(servers: &[ServerConnInfo], keys: &NodeKeyPair) -> Result<Client, String> {
    let (conn, server, addr) = ts_derp::dial::dial_region_tls(servers)
        .await
        .map_err(|e| format!("dialing: {e}"))?
        .ok_or("no server of the region could be reached")?;
    let url = url::Url::parse(&format!("https://{addr}/derp")).map_err(|e| e.to_string())?;
    let http = ts_http_util::http1::connect::<ts_http_util::EmptyBody>(conn)
        .await
        .map_err(|e| format!("{}: HTTP: {e}", server.hostname))?;
    let request = ts_http_util::make_upgrade_req(&url, "DERP", None)
        .map_err(|e| format!("{}: upgrade request: {e}", server.hostname))?;
    let response =
        http.send(request).await.map_err(|e| format!("{}: upgrade: {e}", server.hostname))?;
    let upgraded = ts_http_util::do_upgrade(response)
        .await
        .map_err(|e| format!("{}: upgrade refused: {e}", server.hostname))?;
    Client::handshake(upgraded, keys)
        .await
        .map_err(|e| format!("{}: handshake: {e}", server.hostname))
}
