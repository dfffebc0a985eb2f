//! A node: join the tailnet, then carry a TUN device's packets until told to stop.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use ts_packet::PacketMut;

use crate::control::{self, Reachability, Refusal, Settings};
use crate::datapath::{DataPath, DirectPaths, Options, Wiring};
use crate::identity::Identity;
use crate::netmap::Netmap;
use crate::tun::Tun;

/// Packets the data path hands out instead of sending to the tailnet: those for Tailscale's
/// own service addresses (quad-100 DNS) and, with [`Options::egress`], those for outside the
/// tailnet. Answers go back through [`ServiceTraffic::tun`].
#[derive(Debug)]
pub struct ServiceTraffic {
    pub packets: mpsc::Receiver<PacketMut>,
    /// Set when the node was started with [`Options::egress`].
    pub egress: Option<mpsc::Receiver<PacketMut>>,
    pub tun: Arc<Tun>,
}

/// Packets for outside the tailnet waiting for the egress side; beyond this they are dropped,
/// as a full link drops them, rather than holding up the tailnet's traffic.
const EGRESS_QUEUE: usize = 1024;

/// The tailnet's names, always from the latest netmap.
#[derive(Debug, Clone)]
pub struct Names(watch::Receiver<Arc<Netmap>>);

impl Names {
    /// A peer's (or our own) addresses by bare or fully qualified name.
    pub fn lookup(&self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        self.0.borrow().lookup(name)
    }
}

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// Control refused the node.
    Refused(String),
    /// No netmap within the time allowed (control unreachable or silent).
    Timeout(Duration),
    /// The settings cannot work (a control URL that does not resolve, say).
    Settings(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Refused(why) | JoinError::Settings(why) => f.write_str(why),
            JoinError::Timeout(after) => write!(f, "no answer from control within {after:?}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// A node on the tailnet.
#[derive(Debug)]
pub struct Node {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The name control gave the node (the first label of its DNS name).
    pub hostname: String,
    /// The MagicDNS suffix, e.g. `example.ts.net`.
    pub tailnet: Option<String>,
    identity: Identity,
    options: Options,
    netmap: watch::Receiver<Arc<Netmap>>,
    direct: watch::Receiver<DirectPaths>,
    direct_tx: Option<watch::Sender<DirectPaths>>,
    reachability: Option<watch::Sender<Reachability>>,
    relays: Option<watch::Receiver<crate::derp::Connected>>,
    stop: watch::Sender<bool>,
    control: tokio::task::JoinHandle<()>,
    datapath: Option<tokio::task::JoinHandle<String>>,
}

impl Node {
    /// Registers and waits for the first netmap, within `timeout`.
    pub async fn join(
        settings: Settings,
        identity: Identity,
        options: Options,
        timeout: Duration,
    ) -> Result<Node, JoinError> {
        install_crypto_provider();
        let deadline = tokio::time::Instant::now() + timeout;
        resolve(&settings.control_url, deadline).await?;
        let (netmap_tx, netmap) = watch::channel(Arc::new(Netmap::default()));
        let (reachability, reachability_rx) = watch::channel(Reachability::default());
        let (stop, stop_rx) = watch::channel(false);
        let (joined_tx, joined) = oneshot::channel();
        let channels = control::Channels {
            netmap: netmap_tx,
            reachability: reachability_rx,
            stop: stop_rx,
            joined: joined_tx,
        };
        let control = tokio::spawn(control::run(
            settings,
            identity.keys.clone(),
            identity.persisted,
            channels,
        ));
        let outcome = tokio::time::timeout_at(deadline, joined).await;
        let failure = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(Refusal::Registration(why)))) => Some(JoinError::Refused(why)),
            Ok(Err(_)) => Some(JoinError::Refused("the control client stopped".into())),
            Err(_) => Some(JoinError::Timeout(timeout)),
        };
        if let Some(failure) = failure {
            control.abort();
            return Err(failure);
        }
        let (direct_tx, direct) = watch::channel(DirectPaths::new());
        let map = netmap.borrow().clone();
        let own = map.node.as_ref().expect("joined means our node is known");
        Ok(Node {
            ipv4: own.tailnet_address.ipv4.addr(),
            ipv6: own.tailnet_address.ipv6.addr(),
            hostname: own.hostname.clone(),
            tailnet: own.tailnet.clone(),
            identity,
            options,
            netmap,
            direct,
            direct_tx: Some(direct_tx),
            reachability: Some(reachability),
            relays: None,
            stop,
            control,
            datapath: None,
        })
    }

    /// Starts carrying packets between `tun` and the tailnet.
    pub fn start(&mut self, tun: OwnedFd) -> std::io::Result<ServiceTraffic> {
        let (Some(reachability), Some(direct)) = (self.reachability.take(), self.direct_tx.take())
        else {
            let e = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already started");
            return Err(e);
        };
        let tun = Arc::new(Tun::new(tun)?);
        let (service_tx, packets) = mpsc::channel(256);
        let (egress_tx, egress) = match self.options.egress {
            true => {
                let (tx, rx) = mpsc::channel(EGRESS_QUEUE);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let (relayed_by, relays) = watch::channel(crate::derp::Connected::new());
        self.relays = Some(relays);
        let wiring = Wiring {
            netmap: self.netmap.clone(),
            reachability,
            service: service_tx,
            egress: egress_tx,
            direct,
            relayed_by,
        };
        let datapath =
            DataPath::new(&self.identity.keys, self.options.clone(), tun.clone(), wiring)?;
        self.datapath = Some(tokio::spawn(datapath.run(self.stop.subscribe())));
        Ok(ServiceTraffic { packets, egress, tun })
    }

    /// A peer's (or our own) addresses by bare or fully qualified name.
    pub fn lookup(&self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        self.netmap.borrow().lookup(name)
    }

    /// Waits (up to `timeout`) until the node can be reached: connected to a DERP region.
    /// Until then a peer's first handshake is lost, and WireGuard only tries again after five
    /// seconds; so a caller that tells others "ready" should wait for this first.
    pub async fn reachable(&self, timeout: Duration) -> bool {
        let Some(mut relays) = self.relays.clone() else { return false };
        let connected = tokio::time::timeout(timeout, relays.wait_for(|r| !r.is_empty()));
        matches!(connected.await, Ok(Ok(_)))
    }

    /// Name lookups that outlive a borrow of the node (for a DNS responder's task).
    pub fn names(&self) -> Names {
        Names(self.netmap.clone())
    }

    /// The direct paths in use now, by peer name (the rest go through DERP).
    pub fn direct_paths(&self) -> watch::Receiver<DirectPaths> {
        self.direct.clone()
    }

    /// The latest netmap.
    pub fn netmap(&self) -> Arc<Netmap> {
        self.netmap.borrow().clone()
    }

    /// Waits until the data path ends on its own (the TUN device went away) and says why;
    /// never returns if the node was not started.
    pub async fn stopped(&mut self) -> String {
        match self.datapath.as_mut() {
            Some(task) => match task.await {
                Ok(why) => why,
                Err(e) => format!("the data path failed: {e}"),
            },
            None => std::future::pending().await,
        }
    }

    /// Stops the data path and the control client; an ephemeral node logs out first, so
    /// control removes it at once.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Some(datapath) = self.datapath {
            datapath.abort();
        }
        if tokio::time::timeout(Duration::from_secs(5), self.control).await.is_err() {
            log::warn!("the control client did not stop in time");
        }
    }
}

/// Resolves the control server's host first: the library's dialer only logs a name that does
/// not resolve and tries again, which would turn a typo into a timeout.
async fn resolve(url: &url::Url, deadline: tokio::time::Instant) -> Result<(), JoinError> {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(JoinError::Settings(format!("control URL {url}: no host and port")));
    };
    let lookup = tokio::net::lookup_host(format!("{host}:{port}"));
    let why = match tokio::time::timeout_at(deadline, lookup).await {
        Ok(Ok(mut addresses)) => match addresses.next() {
            Some(_) => return Ok(()),
            None => "no addresses".to_owned(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in time".to_owned(),
    };
    Err(JoinError::Settings(format!("cannot resolve control server host {host}: {why}")))
}

/// Picks rustls' process-wide crypto provider before the TLS clients (control over https,
/// DERP) need one. rustls refuses to guess when a build enables more than one provider, which
/// happens as soon as this crate shares a build with another user of rustls (cargo unifies
/// features); aws-lc-rs is the one the tailscale crates bring. A second call is a no-op.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
