//! The little packet reading and writing egress needs besides smoltcp's TCP: which flow a
//! packet belongs to, and UDP datagrams built back for the container.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket,
    UdpPacket, UdpRepr,
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
    /// An ICMP or ICMPv6 echo request.
    Echo(Echo<'a>),
    /// Other ICMP, fragments, other protocols: not carried.
    Other,
}

/// An echo request: addresses, the container's identifier, and the ICMP message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u16,
    pub message: &'a [u8],
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

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
        IpProtocol::Icmp | IpProtocol::Icmpv6 => {
            let request = if src.is_ipv4() { ECHO_REQUEST_V4 } else { ECHO_REQUEST_V6 };
            match payload {
                [kind, 0, _, _, id_high, id_low, ..] if *kind == request && payload.len() >= 8 => {
                    let id = u16::from_be_bytes([*id_high, *id_low]);
                    Transport::Echo(Echo { src, dst, id, message: payload })
                }
                _ => Transport::Other,
            }
        }
        _ => Transport::Other,
    }
}

/// The IP packet carrying an echo reply from `src` to `dst`, made from the reply a ping socket
/// received (`message`, with the kernel's identifier), given identifier `id` back and fresh
/// checksums. `None` for anything but an echo reply of the family.
pub fn echo_reply(src: IpAddr, dst: IpAddr, id: u16, message: &[u8]) -> Option<Vec<u8>> {
    let reply = if src.is_ipv4() { ECHO_REPLY_V4 } else { ECHO_REPLY_V6 };
    if message.len() < 8 || message[0] != reply || message[1] != 0 {
        return None;
    }
    let mut icmp = message.to_vec();
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    let protocol = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            Icmpv4Packet::new_unchecked(&mut icmp).fill_checksum();
            IpProtocol::Icmp
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Icmpv6Packet::new_unchecked(&mut icmp).fill_checksum(&s, &d);
            IpProtocol::Icmpv6
        }
        _ => return None,
    };
    let mut packet = ip_header(src, dst, protocol, icmp.len())?;
    packet.extend_from_slice(&icmp);
    Some(packet)
}

/// An IP packet carrying a UDP datagram from `src` to `dst`, checksums filled in; `None` when
/// the families differ or it would not fit in `mtu`.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8], mtu: usize) -> Option<Vec<u8>> {
    let udp = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let udp_len = udp.header_len() + payload.len();
    let mut buffer = ip_header(src.ip(), dst.ip(), IpProtocol::Udp, udp_len)?;
    let offset = buffer.len();
    if offset + udp_len > mtu {
        return None;
    }
    buffer.resize(offset + udp_len, 0);
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buffer[offset..]),
        &src.ip().into(),
        &dst.ip().into(),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    Some(buffer)
}

/// The IP header of a packet from `src` to `dst` carrying `payload_len` bytes of `protocol`
/// (with its checksum for IPv4); `None` when the families differ.
fn ip_header(
    src: IpAddr,
    dst: IpAddr,
    protocol: IpProtocol,
    payload_len: usize,
) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
            let ip =
                Ipv4Repr { src_addr, dst_addr, next_header: protocol, payload_len, hop_limit: 64 };
            let mut buffer = vec![0u8; ip.buffer_len()];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buffer), &ChecksumCapabilities::default());
            Some(buffer)
        }
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => {
            let ip =
                Ipv6Repr { src_addr, dst_addr, next_header: protocol, payload_len, hop_limit: 64 };
            let mut buffer = vec![0u8; ip.buffer_len()];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buffer));
            Some(buffer)
        }
        _ => None,
    }
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
    fn echo_requests_are_read_and_replies_get_the_containers_identifier_back() {
        // 100.64.0.1 pings 198.51.100.2, identifier 0x1234, sequence 1.
        let mut ping = vec![0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 1, 0, 0];
        ping.extend_from_slice(&[100, 64, 0, 1, 198, 51, 100, 2]);
        ping.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g', 0, 0, 0, 0]);
        let (src, dst): (IpAddr, IpAddr) =
            ("100.64.0.1".parse().unwrap(), "198.51.100.2".parse().unwrap());
        let Transport::Echo(echo) = transport(&ping) else { panic!("not an echo") };
        assert_eq!((echo.src, echo.dst, echo.id, echo.message), (src, dst, 0x1234, &ping[20..]));
        // The kernel's reply, with its own identifier 0x0099.
        let kernels = [0, 0, 0xaa, 0xbb, 0x00, 0x99, 0, 1, b'p', b'i', b'n', b'g', 0, 0, 0, 0];
        let reply = echo_reply(dst, src, 0x1234, &kernels).unwrap();
        let ip = Ipv4Packet::new_checked(&reply[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            ("198.51.100.2".parse().unwrap(), "100.64.0.1".parse().unwrap())
        );
        assert_eq!(&reply[24..26], &[0x12, 0x34]);
        assert_eq!(tailnode::packet::checksum(&reply[20..]), 0, "ICMP checksum");
        assert_eq!(echo_reply(dst, src, 1, &ping[20..]), None, "a request is not a reply");

        let (src6, dst6): (IpAddr, IpAddr) =
            ("fd7a:115c:a1e0::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        let kernels6 = [129, 0, 0, 0, 0x00, 0x99, 0, 1, b'x'];
        let reply6 = echo_reply(dst6, src6, 0x1234, &kernels6).unwrap();
        assert_eq!(&reply6[44..46], &[0x12, 0x34]);
        let mut pseudo = reply6[8..40].to_vec();
        pseudo.extend_from_slice(&9u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&reply6[40..]);
        assert_eq!(tailnode::packet::checksum(&pseudo), 0, "ICMPv6 checksum");
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
