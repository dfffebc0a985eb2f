//! Tailscale's service address inside the container: quad-100 DNS, answered here from the
//! netmap (MagicDNS) or forwarded to the host's resolver.
//!
//! The node hands us every packet the container sends to 100.100.100.100; answers are written
//! straight into its TUN device.

use std::net::SocketAddr;

use tailnode::{Names, ServiceTraffic};

use crate::dns;
use tailnode::packet;

/// Answers DNS on quad-100 until the node stops handing out packets.
pub async fn serve(traffic: ServiceTraffic, names: Names, tailnet: Option<String>) {
    let ServiceTraffic { mut packets, tun, .. } = traffic;
    let upstream = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|text| dns::upstream_from_resolv_conf(&text));
    while let Some(packet) = packets.recv().await {
        let Some(udp) = packet::parse_udp4(packet.as_ref()) else { continue };
        if udp.dst != dns::QUAD100 || udp.dst_port != 53 {
            continue;
        }
        let (tun, names, tailnet) = (tun.clone(), names.clone(), tailnet.clone());
        let (client, client_port, message) = (udp.src, udp.src_port, udp.payload.to_vec());
        tokio::spawn(async move {
            let Some(answer) = resolve(&names, tailnet.as_deref(), &message, upstream).await else {
                return;
            };
            let reply = packet::Udp4 {
                src: dns::QUAD100,
                src_port: 53,
                dst: client,
                dst_port: client_port,
                payload: &answer,
            };
            let _ = tun.write(&packet::build_udp4(&reply)).await;
        });
    }
}

async fn resolve(
    names: &Names,
    tailnet: Option<&str>,
    message: &[u8],
    upstream: Option<SocketAddr>,
) -> Option<Vec<u8>> {
    let query = dns::parse_query(message)?;
    if dns::is_tailnet_name(&query.name, tailnet) {
        return Some(match names.lookup(&query.name) {
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
