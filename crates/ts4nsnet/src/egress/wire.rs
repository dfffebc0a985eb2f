//! The little packet reading and writing egress needs besides smoltcp's TCP: which flow a
//! packet belongs to, and UDP datagrams built back for the container.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket, UdpRepr,
};

/// What egress needs of one packet from the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A TCP segment; `opens` when it is a bare SYN (a connection being opened).
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        opens: bool,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// ICMP, fragments, other protocols: not carried.
    Other,
}

/// Reads the addresses and ports of a packet (IPv4 without options' effect, IPv6 without
/// extension headers; fragments are [`Transport::Other`]).
pub fn transport(packet: &[u8]) -> Transport<'_> {
    let parsed = match packet.first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_checked(packet).ok().and_then(|ip| {
            if ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let header = usize::from(ip.header_len());
            let end = usize::from(ip.total_len());
            let payload = packet.get(header..end)?;
            Some((ip.next_header(), IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), payload))
        }),
        Some(6) => Ipv6Packet::new_checked(packet).ok().and_then(|ip| {
            let end = 40 + usize::from(ip.payload_len());
            let payload = packet.get(40..end)?;
            Some((ip.next_header(), IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), payload))
        }),
        _ => None,
    };
    let Some((protocol, src, dst, payload)) = parsed else { return Transport::Other };
    match protocol {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(tcp) => Transport::Tcp {
                src: SocketAddr::new(src, tcp.src_port()),
                dst: SocketAddr::new(dst, tcp.dst_port()),
                opens: tcp.syn() && !tcp.ack() && !tcp.rst(),
            },
            Err(_) => Transport::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(udp) => Transport::Udp {
                src: SocketAddr::new(src, udp.src_port()),
                dst: SocketAddr::new(dst, udp.dst_port()),
                payload: &payload[8..usize::from(udp.len())],
            },
            Err(_) => Transport::Other,
        },
        _ => Transport::Other,
    }
}

/// An IP packet carrying a UDP datagram from `src` to `dst`, checksums filled in; `None` when
/// the families differ or it would not fit in `mtu`.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8], mtu: usize) -> Option<Vec<u8>> {
    let udp = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let udp_len = udp.header_len() + payload.len();
    let checksums = ChecksumCapabilities::default();
    let (mut buffer, offset) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buffer = vec![0; ip.buffer_len() + udp_len];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buffer), &checksums);
            (buffer, ip.buffer_len())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buffer = vec![0; ip.buffer_len() + udp_len];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buffer));
            (buffer, ip.buffer_len())
        }
        _ => return None,
    };
    if buffer.len() > mtu {
        return None;
    }
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buffer[offset..]),
        &src.ip().into(),
        &dst.ip().into(),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &checksums,
    );
    Some(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_built_datagram_reads_back_with_valid_checksums() {
        for (src, dst) in [
            ("198.51.100.2:53", "100.64.0.1:40000"),
            ("[2001:db8::2]:53", "[fd7a:115c:a1e0::1]:40000"),
        ] {
            let (src, dst) = (addr(src), addr(dst));
            let packet = udp_packet(src, dst, b"answer", 1280).unwrap();
            assert_eq!(transport(&packet), Transport::Udp { src, dst, payload: b"answer" });
            let (ip_payload, s, d) = match src {
                SocketAddr::V4(_) => {
                    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
                    assert!(ip.verify_checksum());
                    (&packet[20..], ip.src_addr().into(), ip.dst_addr().into())
                }
                SocketAddr::V6(_) => {
                    let ip = Ipv6Packet::new_checked(&packet[..]).unwrap();
                    (&packet[40..], ip.src_addr().into(), ip.dst_addr().into())
                }
            };
            assert!(UdpPacket::new_checked(ip_payload).unwrap().verify_checksum(&s, &d));
        }
    }

    #[test]
    fn too_big_or_mixed_families_are_not_built() {
        let (v4, v6) = (addr("198.51.100.2:53"), addr("[2001:db8::2]:53"));
        assert_eq!(udp_packet(v4, v6, b"x", 1280), None);
        assert_eq!(udp_packet(v4, addr("100.64.0.1:1"), &[0; 1253], 1280), None);
        assert!(udp_packet(v4, addr("100.64.0.1:1"), &[0; 1252], 1280).is_some());
    }

    #[test]
    fn syns_open_and_everything_else_is_read_for_its_flow() {
        // A SYN from 100.64.0.1:40000 to 198.51.100.2:80, as the kernel sends it.
        let mut syn = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        syn.extend_from_slice(&[100, 64, 0, 1, 198, 51, 100, 2]);
        syn.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff]);
        syn.extend_from_slice(&[0, 0, 0, 0]);
        let (src, dst) = (addr("100.64.0.1:40000"), addr("198.51.100.2:80"));
        assert_eq!(transport(&syn), Transport::Tcp { src, dst, opens: true });
        syn[33] = 0x12; // SYN+ACK
        assert_eq!(transport(&syn), Transport::Tcp { src, dst, opens: false });
        syn[6] = 0x20; // more fragments
        assert_eq!(transport(&syn), Transport::Other);
        assert_eq!(transport(&[0x45, 0, 0]), Transport::Other);
    }
}
