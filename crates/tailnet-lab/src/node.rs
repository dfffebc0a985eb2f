//! A plain tailscale-rs node, as a peer for tests and benchmarks: it joins a tailnet with the
//! library's own userspace network stack and answers TCP echo, UDP echo and ping.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ts_netstack_smoltcp::CreateSocket as _;
use ts_netstack_smoltcp::netcore::{Channel, smoltcp::wire::IpProtocol};
use ts_runtime::{ActorRef, Runtime, Spawn as _};

/// How long joining may take before it counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node; shut it down with [`LabPeer::shutdown`].
pub struct LabPeer {
    runtime: ActorRef<Runtime>,
    channel: Channel,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The name control gave us (first label of the node's DNS name).
    pub hostname: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for LabPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabPeer")
            .field("ipv4", &self.ipv4)
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl LabPeer {
    /// Registers with `control_url` and waits for the first netmap.
    pub async fn join(
        control_url: &str,
        auth_key: &str,
        hostname: &str,
        ephemeral: bool,
    ) -> Result<LabPeer, String> {
        let server_url = control_url.parse().map_err(|e| format!("control URL: {e}"))?;
        let runtime = Runtime::spawn(ts_runtime::Config {
            control_config: ts_control::Config {
                server_url,
                hostname: Some(hostname.to_owned()),
                client_name: Some("tailnet-lab".to_owned()),
                tags: Vec::new(),
                ephemeral,
            },
            auth_key: Some(auth_key.to_owned()),
            keys: ts_keys::NodeState::generate(),
        });
        let joined = async {
            runtime.wait_for_startup_result().await.map_err(|e| e.to_string())?;
            let (channel,) =
                runtime.ask(ts_runtime::GetChannel).await.map_err(|e| e.to_string())?;
            let node = runtime
                .ask(ts_runtime::SelfNode)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("control sent no self node")?;
            Ok::<_, String>((channel, node))
        };
        let (channel, node) = match tokio::time::timeout(JOIN_TIMEOUT, joined).await {
            Ok(Ok(joined)) => joined,
            Ok(Err(e)) => return Err(format!("joining the tailnet: {e}")),
            Err(_) => return Err("joining the tailnet timed out".into()),
        };
        Ok(LabPeer {
            runtime,
            channel,
            ipv4: node.tailnet_address.ipv4.addr(),
            ipv6: node.tailnet_address.ipv6.addr(),
            hostname: node.hostname,
            tasks: Vec::new(),
        })
    }

    /// Answers TCP and UDP echo on `port` and ping, until shut down.
    pub async fn serve_echo(&mut self, port: u16) -> Result<(), String> {
        let listen = SocketAddr::new(IpAddr::V4(self.ipv4), port);
        let listener = self.channel.tcp_listen(listen).await.map_err(|e| e.to_string())?;
        self.tasks.push(tokio::spawn(async move {
            while let Ok(stream) = listener.accept().await {
                tokio::spawn(async move {
                    while let Ok(data) = stream.recv_bytes().await {
                        if data.is_empty() || stream.send(&data).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }));
        let udp = self.channel.udp_bind(listen).await.map_err(|e| e.to_string())?;
        self.tasks.push(tokio::spawn(async move {
            while let Ok((from, data)) = udp.recv_from_bytes().await {
                let _ = udp.send_to(from, &data).await;
            }
        }));
        let icmp =
            self.channel.raw_open(true, IpProtocol::Icmp).await.map_err(|e| e.to_string())?;
        self.tasks.push(tokio::spawn(async move {
            while let Ok(packet) = icmp.recv_bytes().await {
                if let Some(reply) = echo_reply(&packet) {
                    let _ = icmp.send(&reply).await;
                }
            }
        }));
        Ok(())
    }

    /// Opens a TCP connection from this node.
    pub async fn tcp_connect(
        &self,
        remote: SocketAddr,
    ) -> Result<ts_netstack_smoltcp::netsock::TcpStream, String> {
        // Right after joining, the netstack may not hold our address yet and resets the
        // attempt; the library's own `Device::tcp_connect` has the same race.
        let mut attempts = 0;
        loop {
            let local = SocketAddr::new(IpAddr::V4(self.ipv4), 49152 + random_port_offset());
            match self.channel.tcp_connect(local, remote).await {
                Ok(stream) => return Ok(stream),
                Err(e) if attempts == 20 => return Err(e.to_string()),
                Err(_) => attempts += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Binds a UDP socket on this node.
    pub async fn udp_bind(
        &self,
        port: u16,
    ) -> Result<ts_netstack_smoltcp::netsock::UdpSocket, String> {
        let local = SocketAddr::new(IpAddr::V4(self.ipv4), port);
        self.channel.udp_bind(local).await.map_err(|e| e.to_string())
    }

    /// Stops the node; an ephemeral node then leaves the tailnet.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.runtime.stop_gracefully().await;
            self.runtime.wait_for_shutdown().await;
        })
        .await;
        self.runtime.kill();
    }
}

fn random_port_offset() -> u16 {
    u16::from_str_radix(&crate::random_hex(2), 16).unwrap_or(0) % 16000
}

/// The IPv4 ICMP echo reply to `packet`, if it is an echo request.
pub fn echo_reply(packet: &[u8]) -> Option<Vec<u8>> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if packet.first()? >> 4 != 4 || packet.len() < header_len + 8 || packet[9] != 1 {
        return None;
    }
    if packet[header_len] != 8 {
        return None;
    }
    let mut reply = packet.to_vec();
    reply[12..16].copy_from_slice(&packet[16..20]);
    reply[16..20].copy_from_slice(&packet[12..16]);
    reply[8] = 64;
    reply[header_len] = 0;
    reply[header_len + 2..header_len + 4].fill(0);
    let icmp_sum = checksum(&reply[header_len..]);
    reply[header_len + 2..header_len + 4].copy_from_slice(&icmp_sum.to_be_bytes());
    reply[10..12].fill(0);
    let ip_sum = checksum(&reply[..header_len]);
    reply[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    Some(reply)
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
