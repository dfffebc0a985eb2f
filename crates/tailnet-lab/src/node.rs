//! A plain tailscale-rs node, as a peer for tests and benchmarks: it joins a tailnet with the
//! library's own runtime and userspace network stack and answers TCP echo, UDP echo and ping.
//! It is the independent implementation our own node (`tailnode`) is tested against.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tailnode::packet::echo_reply4;
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
        tailnode::node::install_crypto_provider();
        let control_config = ts_control::Config {
            server_url: control_url.parse().map_err(|e| format!("{control_url}: {e}"))?,
            hostname: Some(hostname.to_owned()),
            client_name: Some("tailnet-lab".to_owned()),
            tags: Vec::new(),
            ephemeral,
        };
        let runtime = Runtime::spawn(ts_runtime::Config {
            control_config,
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
                .map_err(|_| "control refused the registration")?
                .ok_or("control sent no node")?;
            Ok::<_, String>((channel, node))
        };
        let (channel, node) = match tokio::time::timeout(JOIN_TIMEOUT, joined).await {
            Ok(Ok(joined)) => joined,
            Ok(Err(e)) => {
                runtime.kill();
                return Err(format!("joining the tailnet: {e}"));
            }
            Err(_) => {
                runtime.kill();
                return Err(format!("joining the tailnet: no answer within {JOIN_TIMEOUT:?}"));
            }
        };
        Ok(LabPeer {
            ipv4: node.tailnet_address.ipv4.addr(),
            ipv6: node.tailnet_address.ipv6.addr(),
            hostname: node.hostname.clone(),
            channel,
            runtime,
            tasks: Vec::new(),
        })
    }

    /// Answers TCP and UDP echo on `port` (both addresses) and ping, until shut down.
    pub async fn serve_echo(&mut self, port: u16) -> Result<(), String> {
        for ip in [IpAddr::V4(self.ipv4), IpAddr::V6(self.ipv6)] {
            let listen = SocketAddr::new(ip, port);
            let listener = self.channel.tcp_listen(listen).await.map_err(|e| e.to_string())?;
            self.tasks.push(tokio::spawn(async move {
                while let Ok(stream) = listener.accept().await {
                    tokio::spawn(async move {
                        while let Ok(data) = stream.recv_bytes().await {
                            if data.is_empty() || send_all(&stream, &data).await.is_err() {
                                break;
                            }
                        }
                        // Dropping the socket resets the connection, and a reset that overtakes
                        // the last echo makes the client's kernel discard it: let it leave first.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    });
                }
            }));
            let udp = self.channel.udp_bind(listen).await.map_err(|e| e.to_string())?;
            self.tasks.push(tokio::spawn(async move {
                while let Ok((from, data)) = udp.recv_from_bytes().await {
                    let _ = udp.send_to(from, &data).await;
                }
            }));
        }
        let icmp =
            self.channel.raw_open(true, IpProtocol::Icmp).await.map_err(|e| e.to_string())?;
        self.tasks.push(tokio::spawn(async move {
            while let Ok(packet) = icmp.recv_bytes().await {
                if let Some(reply) = echo_reply4(&packet) {
                    let _ = icmp.send(&reply).await;
                }
            }
        }));
        Ok(())
    }

    /// Serves throughput measurements on `port` (IPv4). A client sends a 9-byte header, `U` or
    /// `D` and a big-endian u64 N: after `U` it uploads N bytes and gets the count received
    /// back as 8 bytes once all arrived; after `D` it downloads N bytes.
    pub async fn serve_bulk(&mut self, port: u16) -> Result<(), String> {
        let listen = SocketAddr::new(IpAddr::V4(self.ipv4), port);
        let listener = self.channel.tcp_listen(listen).await.map_err(|e| e.to_string())?;
        self.tasks.push(tokio::spawn(async move {
            while let Ok(stream) = listener.accept().await {
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    while received.len() < 9 {
                        match stream.recv_bytes().await {
                            Ok(data) if !data.is_empty() => received.extend_from_slice(&data),
                            _ => return,
                        }
                    }
                    let n = u64::from_be_bytes(received[1..9].try_into().expect("8 bytes"));
                    if received[0] == b'U' {
                        let mut total = (received.len() - 9) as u64;
                        while total < n {
                            match stream.recv_bytes().await {
                                Ok(data) if !data.is_empty() => total += data.len() as u64,
                                _ => return,
                            }
                        }
                        let _ = send_all(&stream, &total.to_be_bytes()).await;
                    } else {
                        let chunk = vec![0x5a; 64 * 1024];
                        let mut left = n;
                        while left > 0 {
                            let part = left.min(chunk.len() as u64) as usize;
                            if send_all(&stream, &chunk[..part]).await.is_err() {
                                return;
                            }
                            left -= part as u64;
                        }
                    }
                    // Dropping the socket closes it: let the last segments leave first.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                });
            }
        }));
        Ok(())
    }

    /// A tailnet name's IPv4 address, from this node's netmap.
    pub async fn lookup(&self, name: &str) -> Option<IpAddr> {
        let name = name.trim_end_matches('.').to_owned();
        let peer = self.runtime.ask(ts_runtime::PeerByName { name }).await.ok().flatten()?;
        Some(IpAddr::V4(peer.tailnet_address.ipv4.addr()))
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
        let graceful = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.runtime.stop_gracefully().await;
            self.runtime.wait_for_shutdown().await;
        })
        .await;
        if graceful.is_err() {
            self.runtime.kill();
        }
    }
}

/// Sends all of `data`: the library's `send` queues only what fits.
pub async fn send_all(
    stream: &ts_netstack_smoltcp::netsock::TcpStream,
    mut data: &[u8],
) -> Result<(), String> {
    while !data.is_empty() {
        let sent = stream.send(data).await.map_err(|e| e.to_string())?;
        data = &data[sent..];
    }
    Ok(())
}

fn random_port_offset() -> u16 {
    u16::from_str_radix(&crate::random_hex(2), 16).unwrap_or(0) % 16000
}
