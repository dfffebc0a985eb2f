//! Moves IP packets between the container's TUN and the tailnet.
//!
//! The tailnet side is behind [`PacketPath`], so a better packet path than today's can replace
//! it without touching the rest. Today's, [`RawSocketPath`], uses raw sockets on tailscale-rs's
//! own network stack: the stack hands every TCP, UDP and ICMP packet for the node's addresses
//! to them before its own handling (so it neither answers nor resets), and sends what we give
//! it as is. Limits, measured: other IP protocols are not carried, and bursts of inbound UDP
//! beyond a few packets can be dropped (the stack's raw buffers are small).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex, mpsc};
use ts_netstack_smoltcp::CreateSocket as _;
use ts_netstack_smoltcp::netcore::{Channel, smoltcp::wire::IpProtocol};
use ts_netstack_smoltcp::netsock::RawSocket;

use crate::dns;
use crate::node::Node;
use crate::packet;

/// Where the container's packets go, and come from.
pub trait PacketPath: Send + Sync + 'static {
    /// Sends one IP packet to the tailnet; `false` if it was not carried.
    fn send(&self, packet: &[u8]) -> impl Future<Output = bool> + Send;
    /// The next IP packet from the tailnet for the container; `None` once the path is gone.
    fn recv(&self) -> impl Future<Output = Option<Bytes>> + Send;
}

/// Raw sockets on the library's stack, one per IP version and protocol.
pub struct RawSocketPath {
    sockets: Vec<(u8, u8, Arc<RawSocket>)>,
    inbound: Mutex<mpsc::Receiver<Bytes>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RawSocketPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSocketPath").field("sockets", &self.sockets.len()).finish()
    }
}

impl RawSocketPath {
    pub async fn open(channel: &Channel, ipv6: bool) -> Result<RawSocketPath, String> {
        let mut wanted = vec![
            (4, packet::TCP, IpProtocol::Tcp),
            (4, packet::UDP, IpProtocol::Udp),
            (4, packet::ICMP, IpProtocol::Icmp),
        ];
        if ipv6 {
            wanted.extend([
                (6, packet::TCP, IpProtocol::Tcp),
                (6, packet::UDP, IpProtocol::Udp),
                (6, packet::ICMPV6, IpProtocol::Icmpv6),
            ]);
        }
        let (tx, rx) = mpsc::channel(1024);
        let mut sockets = Vec::new();
        let mut tasks = Vec::new();
        for (version, number, protocol) in wanted {
            let socket = channel
                .raw_open(version == 4, protocol)
                .await
                .map_err(|e| format!("opening a raw {protocol} socket: {e}"))?;
            let socket = Arc::new(socket);
            let (reader, tx) = (socket.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok(packet) = reader.recv_bytes().await {
                    if tx.send(packet).await.is_err() {
                        break;
                    }
                }
            }));
            sockets.push((version, number, socket));
        }
        Ok(RawSocketPath { sockets, inbound: Mutex::new(rx), tasks })
    }
}

impl Drop for RawSocketPath {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl PacketPath for RawSocketPath {
    async fn send(&self, bytes: &[u8]) -> bool {
        let Some((version, protocol)) = packet::version_and_protocol(bytes) else { return false };
        let socket = self.sockets.iter().find(|(v, p, _)| (*v, *p) == (version, protocol));
        match socket {
            Some((_, _, socket)) => socket.send(bytes).await.is_ok(),
            None => false,
        }
    }

    async fn recv(&self) -> Option<Bytes> {
        self.inbound.lock().await.recv().await
    }
}

/// The container's TUN, non-blocking under tokio.
#[derive(Debug)]
pub struct Tun(AsyncFd<OwnedFd>);

impl Tun {
    pub fn new(fd: OwnedFd) -> io::Result<Tun> {
        crate::sys::async_fd(fd).map(Tun)
    }

    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buffer).map_err(io::Error::from))
            {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.0.writable().await?;
            let written = ready.try_io(|fd| {
                nix::unistd::write(fd.get_ref().as_fd(), packet).map_err(io::Error::from)
            });
            match written {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Pumps packets both ways until either side fails; answers DNS for quad-100 on the way.
pub async fn pump(tun: Arc<Tun>, path: Arc<impl PacketPath>, node: Arc<Node>) {
    let upstream = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|text| dns::upstream_from_resolv_conf(&text));
    let inbound = {
        let (tun, path) = (tun.clone(), path.clone());
        tokio::spawn(async move {
            while let Some(packet) = path.recv().await {
                if let Err(e) = tun.write(&packet).await {
                    log::warn!("writing to the container's interface: {e}");
                    break;
                }
            }
        })
    };
    let mut buffer = vec![0u8; 65536];
    loop {
        let len = match tun.read(&mut buffer).await {
            Ok(0) => break,
            Ok(len) => len,
            Err(e) => {
                log::info!("the container's interface is gone: {e}");
                break;
            }
        };
        let bytes = &buffer[..len];
        if let Some(udp) = packet::parse_udp4(bytes)
            && udp.dst == dns::QUAD100
            && udp.dst_port == 53
        {
            let (tun, node, message) = (tun.clone(), node.clone(), udp.payload.to_vec());
            let (client, client_port) = (udp.src, udp.src_port);
            tokio::spawn(async move {
                let Some(answer) = resolve(&node, &message, upstream).await else { return };
                let reply = packet::Udp4 {
                    src: dns::QUAD100,
                    src_port: 53,
                    dst: client,
                    dst_port: client_port,
                    payload: &answer,
                };
                let _ = tun.write(&packet::build_udp4(&reply)).await;
            });
            continue;
        }
        path.send(bytes).await;
    }
    inbound.abort();
}

async fn resolve(
    node: &Node,
    message: &[u8],
    upstream: Option<std::net::SocketAddr>,
) -> Option<Vec<u8>> {
    let query = dns::parse_query(message)?;
    if dns::is_tailnet_name(&query.name, node.tailnet.as_deref()) {
        return Some(match node.lookup(&query.name).await {
            Some((ipv4, ipv6)) => dns::answer(&query, ipv4, ipv6),
            None => dns::error(&query, dns::NXDOMAIN),
        });
    }
    match upstream {
        Some(upstream) => match dns::forward(upstream, message).await {
            Some(answer) => Some(answer),
            None => Some(dns::error(&query, dns::SERVFAIL)),
        },
        None => Some(dns::error(&query, dns::REFUSED)),
    }
}
